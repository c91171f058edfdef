//! Sample notifications every route's template is rendered against before a configuration
//! is accepted (`check`, start-up, reload), so a template that breaks only on a resolved
//! alert, a big group or a missing label is caught before it has to page someone.
//! The JSON files beside this one were captured from a real Alertmanager 0.25; tests use
//! them too, through the constants below.

use serde_json::json;

use crate::model::WebhookPayload;

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
