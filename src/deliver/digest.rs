//! Storm digests, the deliver side: what a notification collected into a digest records
//! (so any replica can count it in the digest and answer its retries), who a digest goes
//! to, and how a taken digest's entries add up to a [`DigestSummary`].
//!
//! A notification whose recipients are short of budget is collected instead of sent: its
//! requests' ledger entries are pended (retries are answered 503 at once, nothing sends
//! them on their own) and an entry joins the pending digest of its route and audience. A
//! digest WeCom accepted records those ledger entries as accepted, so Alertmanager's next
//! retry of each notification is answered 200 and nothing goes out twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Mentions, Recipients, RouteConfig, StormSettings};
use crate::model::{Alert, AlertStatus};
use crate::render::fit::TEXTCARD_URL_MAX_BYTES;
use crate::render::helpers::alerts_url;
use crate::render::{AlertnameCount, DigestSummary, SeverityCount};
use crate::state::{key_from_hex, key_hex, DeliveryKey, DigestBatch};

/// A notification's alerts as a digest counts them, taken while the payload is at hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormProfile {
    /// The most severe severity among its alerts ("" if none has one).
    pub severity: String,
    pub alerts: Vec<AlertCount>,
    pub external_url: String,
}

/// Alerts of one alertname and severity in a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCount {
    pub alertname: String,
    pub severity: String,
    pub firing: u32,
    pub resolved: u32,
}

impl StormProfile {
    /// One pass over the alerts, each (alertname, severity) counted in a map: a group of
    /// 1,000 alerts of many alertnames stays linear.
    pub fn of(alerts: &[&Alert], external_url: &str, storm: &StormSettings) -> StormProfile {
        let mut counts: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
        for alert in alerts {
            let severity = alert.labels.get(&storm.severity_label).unwrap_or("");
            let (firing, resolved) = counts.entry((alert.name(), severity)).or_default();
            match alert.status {
                AlertStatus::Firing => *firing += 1,
                AlertStatus::Resolved => *resolved += 1,
            }
        }
        let severity = counts
            .keys()
            .map(|(_, severity)| *severity)
            .min_by_key(|severity| storm.rank(severity))
            .unwrap_or("")
            .to_string();
        StormProfile {
            severity,
            alerts: counts
                .into_iter()
                .map(|((alertname, severity), (firing, resolved))| AlertCount {
                    alertname: alertname.to_string(),
                    severity: severity.to_string(),
                    firing,
                    resolved,
                })
                .collect(),
            external_url: external_url.to_string(),
        }
    }
}

/// One notification collected into a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldNotification {
    /// Alertmanager's group key: of two versions of a group, the later is counted.
    pub group: String,
    /// When it joined, in Unix milliseconds.
    pub at: u64,
    /// The ledger keys (hex) of the requests the digest stands for.
    pub keys: Vec<String>,
    pub profile: StormProfile,
}

/// Who a digest goes to: a route's target and one notification's audience. The header of
/// the digest in the delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestAudience {
    pub route: String,
    pub recipients: Recipients,
    pub mentions: Mentions,
}

impl DigestAudience {
    pub fn of(route: &RouteConfig, recipients: &Recipients, mentions: &Mentions) -> DigestAudience {
        DigestAudience {
            route: route.name.clone(),
            recipients: recipients.clone(),
            mentions: mentions.clone(),
        }
    }

    /// 32 hex characters naming the digest in the delivery state.
    pub fn id(&self) -> String {
        let digest: [u8; 32] = Sha256::digest(self.encode()).into();
        let mut id: DeliveryKey = [0; 16];
        id.copy_from_slice(&digest[..16]);
        key_hex(&id)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audience serialises")
    }

    pub fn decode(bytes: &[u8]) -> Option<DigestAudience> {
        serde_json::from_slice(bytes).ok()
    }

    /// For logs: "3 user(s), 1 tag(s)".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let to = &self.recipients;
        for (n, kind) in [
            (to.users.len(), "user"),
            (to.parties.len(), "party"),
            (to.tags.len(), "tag"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {kind}(s)"));
            }
        }
        if parts.is_empty() {
            "the route's target".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A taken digest's entries, decoded: what its message says, and the ledger keys its
/// acceptance answers for.
pub struct Decoded {
    pub summary: DigestSummary,
    pub keys: Vec<DeliveryKey>,
    /// Entries that could not be read (written by an incompatible version): dropped.
    pub unreadable: usize,
}

/// Adds up a digest's entries: each group counted once (its latest version), severities
/// and alertnames most severe first.
pub fn summarize(batch: &DigestBatch, storm: &StormSettings) -> Decoded {
    let mut latest: HashMap<String, HeldNotification> = HashMap::new();
    let mut keys = Vec::new();
    let mut unreadable = 0;
    for (_, entry) in &batch.entries {
        let Ok(held) = serde_json::from_slice::<HeldNotification>(entry) else {
            unreadable += 1;
            continue;
        };
        keys.extend(held.keys.iter().filter_map(|key| key_from_hex(key.as_bytes())));
        match latest.get(&held.group) {
            Some(kept) if kept.at > held.at => {}
            _ => {
                latest.insert(held.group.clone(), held);
            }
        }
    }
    // Counted in maps (a storm's digest may stand for thousands of alertnames), sorted after.
    let mut severities: HashMap<&str, SeverityCount> = HashMap::new();
    let mut alertnames: HashMap<&str, AlertnameCount> = HashMap::new();
    let mut external_url = "";
    for held in latest.values() {
        if external_url.is_empty() {
            external_url = &held.profile.external_url;
        }
        for count in &held.profile.alerts {
            let (firing, resolved) = (count.firing as usize, count.resolved as usize);
            let by_severity = severities
                .entry(&count.severity)
                .or_insert_with(|| SeverityCount {
                    severity: count.severity.clone(),
                    firing: 0,
                    resolved: 0,
                });
            by_severity.firing += firing;
            by_severity.resolved += resolved;
            let by_name = alertnames
                .entry(&count.alertname)
                .or_insert_with(|| AlertnameCount {
                    alertname: count.alertname.clone(),
                    severity: count.severity.clone(),
                    firing: 0,
                    resolved: 0,
                });
            by_name.firing += firing;
            by_name.resolved += resolved;
            if storm.rank(&count.severity) < storm.rank(&by_name.severity) {
                by_name.severity = count.severity.clone();
            }
        }
    }
    let mut severities: Vec<SeverityCount> = severities.into_values().collect();
    let mut alertnames: Vec<AlertnameCount> = alertnames.into_values().collect();
    severities
        .sort_by(|a, b| (storm.rank(&a.severity), &a.severity).cmp(&(storm.rank(&b.severity), &b.severity)));
    alertnames.sort_by(|a, b| {
        (
            storm.rank(&a.severity),
            std::cmp::Reverse(a.firing + a.resolved),
            &a.alertname,
        )
            .cmp(&(
                storm.rank(&b.severity),
                std::cmp::Reverse(b.firing + b.resolved),
                &b.alertname,
            ))
    });
    let names: Vec<&str> = alertnames.iter().map(|a| a.alertname.as_str()).collect();
    let summary = DigestSummary {
        notifications: latest.len(),
        firing_count: severities.iter().map(|s| s.firing).sum(),
        resolved_count: severities.iter().map(|s| s.resolved).sum(),
        alerts_url: alerts_url(external_url, &names, TEXTCARD_URL_MAX_BYTES),
        severities,
        alertnames,
        waited_seconds: batch.waited.as_secs(),
    };
    Decoded {
        summary,
        keys,
        unreadable,
    }
}

/// Counts storm events per route and writes one line per route and interval instead of
/// one per webhook (a storm is thousands of webhooks a minute).
#[derive(Default)]
pub struct StormLog {
    routes: Mutex<HashMap<String, Tally>>,
}

struct Tally {
    /// Start of the period being counted.
    since: Instant,
    held: usize,
    collected: usize,
    reason: String,
    /// Whether a line was written for this route yet: the first event is logged at once.
    logged: bool,
}

impl StormLog {
    /// Counts one held notification; returns the line to log for the first one and then
    /// once the route's interval is over (counting starts again).
    pub fn held(&self, route: &str, collected: bool, reason: &str, interval: Duration) -> Option<String> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let tally = routes.entry(route.to_string()).or_insert_with(|| Tally {
            since: now,
            held: 0,
            collected: 0,
            reason: String::new(),
            logged: false,
        });
        tally.held += 1;
        tally.collected += usize::from(collected);
        if !reason.is_empty() {
            tally.reason = reason.to_string();
        }
        if tally.logged && now.duration_since(tally.since) < interval {
            return None;
        }
        let line = format!(
            "route {route}: storm: {} notification(s) answered 503 in the last {}s, {} of them newly collected into a digest ({})",
            tally.held,
            now.duration_since(tally.since).as_secs(),
            tally.collected,
            tally.reason
        );
        *tally = Tally {
            since: now,
            held: 0,
            collected: 0,
            reason: String::new(),
            logged: true,
        };
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storm() -> StormSettings {
        StormSettings {
            digest: true,
            reserve: 3,
            interval: Duration::from_secs(20),
            never_digest: ["critical".to_string()].into(),
            severity_label: "severity".into(),
            severities: ["critical", "warning", "info"].map(String::from).to_vec(),
            hold: Duration::from_secs(900),
        }
    }

    fn held(group: &str, at: u64, key: u8, alerts: &[(&str, &str, u32, u32)]) -> (DeliveryKey, Vec<u8>) {
        let held = HeldNotification {
            group: group.into(),
            at,
            keys: vec![key_hex(&[key; 16])],
            profile: StormProfile {
                severity: String::new(),
                alerts: alerts
                    .iter()
                    .map(|(alertname, severity, firing, resolved)| AlertCount {
                        alertname: alertname.to_string(),
                        severity: severity.to_string(),
                        firing: *firing,
                        resolved: *resolved,
                    })
                    .collect(),
                external_url: "http://am:9093".into(),
            },
        };
        ([key; 16], serde_json::to_vec(&held).unwrap())
    }

    #[test]
    fn a_group_counts_once_by_its_latest_version_but_every_version_is_answered_for() {
        let batch = DigestBatch {
            id: "d".repeat(32),
            header: vec![],
            entries: vec![
                held("g1", 1, 1, &[("Disk", "warning", 3, 0)]),
                held("g1", 2, 2, &[("Disk", "warning", 2, 1)]),
                held("g2", 1, 3, &[("Pod", "critical", 1, 0), ("Disk", "info", 1, 0)]),
                ([9; 16], b"not json".to_vec()),
            ],
            waited: Duration::from_secs(21),
        };
        let decoded = summarize(&batch, &storm());
        assert_eq!(decoded.keys, vec![[1; 16], [2; 16], [3; 16]]);
        assert_eq!(decoded.unreadable, 1);
        let summary = decoded.summary;
        assert_eq!(summary.notifications, 2);
        assert_eq!((summary.firing_count, summary.resolved_count), (4, 1));
        let severities: Vec<(&str, usize, usize)> = summary
            .severities
            .iter()
            .map(|s| (s.severity.as_str(), s.firing, s.resolved))
            .collect();
        assert_eq!(
            severities,
            vec![("critical", 1, 0), ("warning", 2, 1), ("info", 1, 0)]
        );
        let names: Vec<(&str, &str, usize)> = summary
            .alertnames
            .iter()
            .map(|a| (a.alertname.as_str(), a.severity.as_str(), a.firing + a.resolved))
            .collect();
        assert_eq!(names, vec![("Pod", "critical", 1), ("Disk", "warning", 4)]);
        assert!(
            summary
                .alerts_url
                .starts_with("http://am:9093/#/alerts?filter=%7Balertname%3D~%22Pod%7CDisk%22%7D"),
            "{}",
            summary.alerts_url
        );
        assert_eq!(summary.waited_seconds, 21);
    }

    #[test]
    fn the_most_severe_alert_names_a_notifications_severity() {
        let labels = |name: &str, severity: &str| {
            serde_json::from_value::<Alert>(serde_json::json!({
                "status": "firing",
                "labels": {"alertname": name, "severity": severity},
                "annotations": {},
                "startsAt": "2026-11-25T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "f"
            }))
            .unwrap()
        };
        let (a, b) = (labels("A", "info"), labels("B", "critical"));
        let profile = StormProfile::of(&[&a, &b], "http://am", &storm());
        assert_eq!(profile.severity, "critical");
        assert_eq!(profile.alerts.len(), 2);
    }

    #[test]
    fn the_storm_log_writes_the_first_event_then_one_line_per_interval() {
        let log = StormLog::default();
        let interval = Duration::from_millis(200);
        assert!(log.held("r", true, "why", interval).is_some());
        for _ in 0..100 {
            assert_eq!(log.held("r", false, "", interval), None);
        }
        assert!(log.held("other", false, "", interval).is_some(), "per route");
        std::thread::sleep(interval);
        let line = log.held("r", false, "", interval).unwrap();
        assert!(line.contains("101 notification(s) answered 503"), "{line}");
    }

    #[test]
    fn audiences_name_their_digest_stably() {
        let audience = DigestAudience {
            route: "r".into(),
            recipients: Recipients {
                users: vec!["alice".into()],
                parties: vec![],
                tags: vec!["2".into()],
            },
            mentions: Mentions::default(),
        };
        assert_eq!(audience.id().len(), 32);
        assert_eq!(audience.id(), audience.clone().id());
        assert_eq!(DigestAudience::decode(&audience.encode()), Some(audience.clone()));
        assert_eq!(audience.describe(), "1 user(s), 1 tag(s)");
    }
}
