//! Sample notifications every route's template is rendered against before a configuration
//! is accepted (`check`, start-up, reload), so a template that breaks only on a resolved
//! alert, a big group or a missing label is caught before it has to page someone.

use serde_json::json;

use crate::ingest::payload::WebhookPayload;

/// Captured from a real Alertmanager.
const CAPTURED: [&str; 3] = [
    include_str!("../../tests/fixtures/firing-crashloop.json"),
    include_str!("../../tests/fixtures/firing-unicode-markup.json"),
    include_str!("../../tests/fixtures/resolved-targetdown.json"),
];

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
