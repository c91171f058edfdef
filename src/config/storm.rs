//! Storm settings: WeCom's rate limits as this deployment sees them (per app, per robot,
//! with a safety margin) and how notifications beyond them become digests. Validated here;
//! the deliver layer counts against them (docs/storms.md).

use std::collections::HashSet;
use std::time::Duration;

use super::file::{RateLimitSection, StormSection};

/// How many messages one member (one robot) may get from one app before WeCom drops or
/// refuses the rest (docs/wecom-api.md#rate-limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: usize,
    /// `None`: no hourly limit.
    pub per_hour: Option<usize>,
}

impl RateLimit {
    /// One app to one member: 30 a minute, 1,000 an hour.
    pub const APP_MEMBER: RateLimit = RateLimit {
        per_minute: 30,
        per_hour: Some(1000),
    };
    /// One group robot: 20 a minute.
    pub const ROBOT: RateLimit = RateLimit {
        per_minute: 20,
        per_hour: None,
    };
    /// One app to one member across its group chats: 200 a minute.
    pub const APPCHAT_MEMBER: RateLimit = RateLimit {
        per_minute: 200,
        per_hour: None,
    };
}

/// How storms are handled: when a recipient's budget runs low, notifications are
/// collected and represented by one digest message per interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormSettings {
    /// Collect notifications into digests (else they are held back with 503 until budget frees).
    pub digest: bool,
    /// Per-minute (and per-hour) slots individual notifications leave for digests.
    pub reserve: usize,
    /// At most one digest per audience and route this often; the first waits this long.
    pub interval: Duration,
    /// Severities sent individually while any budget lasts (one slot stays for the digest).
    pub never_digest: HashSet<String>,
    /// The label that carries an alert's severity.
    pub severity_label: String,
    /// Severities from most to least severe; digests list them in this order, others last.
    pub severities: Vec<String>,
    /// How long a collected notification waits for its digest before it is forgotten and
    /// Alertmanager's next retry is delivered anew.
    pub hold: Duration,
}

impl StormSettings {
    /// The rank of a severity in `severities` (unknown ones after all known ones).
    pub fn rank(&self, severity: &str) -> usize {
        self.severities
            .iter()
            .position(|s| s.eq_ignore_ascii_case(severity))
            .unwrap_or(self.severities.len())
    }

    pub fn is_never_digested(&self, severity: &str) -> bool {
        self.never_digest.contains(&severity.to_ascii_lowercase())
    }
}

type Invalid = (String, String);

/// Validates `storm:`; `limits` are the smallest per-minute limit of any target, which the
/// reserve must leave room under.
pub fn validate_storm(raw: StormSection, smallest_per_minute: usize) -> Result<StormSettings, Invalid> {
    let key = |field: &str| format!("storm.{field}");
    if raw.interval < Duration::from_secs(1) {
        return Err((key("interval"), "must be at least 1s".into()));
    }
    if raw.digest && raw.reserve == 0 {
        return Err((
            key("reserve"),
            "must be at least 1 while digests are on: the digest itself needs a slot".into(),
        ));
    }
    if raw.reserve >= smallest_per_minute {
        return Err((
            key("reserve"),
            format!(
                "{} leaves no slot for individual notifications: a target allows only {smallest_per_minute} messages a minute",
                raw.reserve
            ),
        ));
    }
    if raw.hold < raw.interval * 2 {
        return Err((
            key("hold"),
            format!(
                "must be at least twice storm.interval ({}s) so a digest that waited for budget is still sent",
                raw.interval.as_secs()
            ),
        ));
    }
    if raw.severity_label.trim().is_empty() {
        return Err((key("severity_label"), "must not be empty".into()));
    }
    Ok(StormSettings {
        digest: raw.digest,
        reserve: raw.reserve,
        interval: raw.interval,
        never_digest: raw.never_digest.iter().map(|s| s.to_ascii_lowercase()).collect(),
        severity_label: raw.severity_label,
        severities: raw.severities,
        hold: raw.hold,
    })
}

/// Validates a target's `rate_limit:` over its WeCom default.
pub fn validate_rate_limit(
    raw: Option<RateLimitSection>,
    default: RateLimit,
    key: &str,
) -> Result<RateLimit, Invalid> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let per_minute = raw.per_minute.unwrap_or(default.per_minute);
    if per_minute == 0 {
        return Err((format!("{key}.per_minute"), "must be at least 1".into()));
    }
    let per_hour = match raw.per_hour {
        None => default.per_hour,
        Some(0) => None,
        Some(hour) if hour < per_minute => {
            return Err((
                format!("{key}.per_hour"),
                format!("{hour} is below per_minute ({per_minute}); 0 means no hourly limit"),
            ))
        }
        Some(hour) => Some(hour),
    };
    Ok(RateLimit { per_minute, per_hour })
}
