//! Sample notifications every route's template is rendered against before a configuration
//! is accepted (`check`, start-up, reload), so a template that breaks only on a resolved
//! alert, a big group or a missing label is caught before it has to page someone.
//! The JSON files beside this one were captured from a real Alertmanager 0.25; tests use
//! them too, through the constants below.

use serde_json::json;

use crate::config::RouteConfig;
use crate::model::matcher::MatchOp;
use crate::model::{AlertStatus, WebhookPayload};

/// A firing group of one crash-looping pod (with a second, already resolved alert).
pub const CRASHLOOP: &str = include_str!("firing-crashloop.json");
/// Firing alerts whose labels and annotations are full of markup, emoji and CJK text.
pub const UNICODE_MARKUP: &str = include_str!("firing-unicode-markup.json");
/// A resolved group of down targets.
pub const RESOLVED: &str = include_str!("resolved-targetdown.json");

const CAPTURED: [&str; 3] = [CRASHLOOP, UNICODE_MARKUP, RESOLVED];

/// Firing, resolved, markup-laden, a group too big for one message, and an alert with
/// nothing but a name.
pub fn payloads() -> Vec<WebhookPayload> {
    let mut samples: Vec<WebhookPayload> = CAPTURED
        .iter()
        .map(|text| WebhookPayload::parse(text.as_bytes()).expect("bundled samples parse"))
        .collect();
    let many: Vec<_> = (0..60)
        .map(|i| {
            json!({
                "status": if i % 3 == 0 { "resolved" } else { "firing" },
                "labels": {"alertname": "HostDown", "instance": format!("host-{i}:9100"), "severity": "critical"},
                "annotations": {"summary": format!("host-{i} is down")},
                "startsAt": "2026-11-25T17:46:42Z",
                "endsAt": if i % 3 == 0 { "2026-11-25T18:00:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus.example.com/graph",
                "fingerprint": format!("{i:016x}"),
            })
        })
        .collect();
    let minimal = json!([{ "status": "firing", "labels": { "alertname": "Bare" } }]);
    for alerts in [json!(many), minimal] {
        let payload = json!({
            "version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "sample",
            "externalURL": "http://alertmanager.example.com", "alerts": alerts,
        });
        samples.push(WebhookPayload::parse(payload.to_string().as_bytes()).expect("sample parses"));
    }
    samples
}

/// One sample notification, named for the messages that quote it.
pub struct Sample {
    pub name: &'static str,
    /// What it stands for, in a few words.
    pub about: &'static str,
    pub payload: WebhookPayload,
}

const NAMES: [(&str, &str); 5] = [
    ("firing-crashloop", "a firing pod alert with one already resolved"),
    (
        "firing-unicode-markup",
        "firing alerts full of markup, emoji and CJK text",
    ),
    ("resolved-targetdown", "a resolved group"),
    ("big-group", "60 alerts, 20 of them resolved"),
    ("bare", "an alert with nothing but its name"),
];

/// The samples as `route` would really get them: without resolved alerts when it does
/// not send them (and without the samples left empty), and with the labels its equality
/// matchers guarantee (`team="pay"`: every alert has `team=pay`), so a template may use
/// what its route promises without guarding it. `payloads` are [`payloads`], parsed once
/// for all routes.
pub fn for_route(route: &RouteConfig, payloads: &[WebhookPayload]) -> Vec<Sample> {
    payloads
        .iter()
        .cloned()
        .zip(NAMES)
        .filter_map(|(mut payload, (name, about))| {
            if !route.send_resolved {
                payload.alerts.retain(|alert| alert.status == AlertStatus::Firing);
                if payload.alerts.is_empty() {
                    return None;
                }
            }
            for alert in &mut payload.alerts {
                for matcher in route.matchers.iter().filter(|m| m.op() == MatchOp::Equal) {
                    alert.labels.insert(matcher.name(), matcher.value());
                }
            }
            Some(Sample { name, about, payload })
        })
        .collect()
}
