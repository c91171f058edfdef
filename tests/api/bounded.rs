//! Outbound work stays bounded under a slow WeCom: a webhook of a hundred owners holds at
//! most `wecom.max_concurrent_calls` WeCom calls at once (and so that many sockets), several
//! such webhooks together no more, the answer comes within the webhook's deadline, and
//! Alertmanager-like retries while WeCom is slower than our timeout deliver each message
//! once: a call that timed out may still land, so its retry is the same bytes (WeCom's
//! duplicate check drops it) and waits while the first may be in flight.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::*;

/// One group of `owners` firing alerts, each owned (routed) to a different user.
fn owned_group(owners: usize, name: &str) -> String {
    let alerts: Vec<_> = (0..owners)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": name, "owner": format!("owner-{i:04}"), "instance": format!("host-{i}")},
                "annotations": {"summary": format!("{name} on host-{i}")},
                "startsAt": "2026-11-25T17:46:42Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example.com/graph",
                "fingerprint": format!("{i:016x}")
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "status": "firing",
        "receiver": "wecom",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "truncatedAlerts": 0,
        "alerts": alerts
    })
    .to_string()
}

const OWNERS: &str =
    "routes:\n  - {name: owners, app: ops, msgtype: text, to: {users: ['{{labels.owner}}']}}\n";

fn owners_config(concurrent_calls: usize) -> TestConfig {
    TestConfig {
        wecom_extra: format!("  max_concurrent_calls: {concurrent_calls}\n  max_parallel_sends: 8\n"),
        ..TestConfig::routes(OWNERS)
    }
}

/// Posts `body` until it is answered 200 (Alertmanager retries a 503), at most `tries`.
async fn until_delivered(app: &TestApp, body: &str, tries: usize) -> usize {
    for attempt in 1..=tries {
        let (status, report) = app.post(body).await;
        if status == 200 {
            return attempt;
        }
        assert_eq!(status, 503, "{report}");
    }
    panic!("not delivered after {tries} attempts");
}

#[tokio::test]
async fn a_hundred_owner_group_holds_at_most_the_apps_call_slots_and_is_delivered_once_each() {
    let app = spawn(owners_config(4)).await;
    let owners: Vec<String> = (0..100).map(|i| format!("owner-{i:04}")).collect();
    app.wecom
        .add_users(&owners.iter().map(String::as_str).collect::<Vec<_>>());
    app.wecom.set_answer_latency(Duration::from_millis(150));
    let body = owned_group(100, "Owned");
    let started = Instant::now();
    let (status, _) = app.post(&body).await;
    let first_answer = started.elapsed();
    // 100 messages, 4 at a time, 150 ms each: more than the 3 s deadline of one attempt.
    assert_eq!(status, 503, "the rest is left to the retry");
    assert!(
        first_answer < Duration::from_secs(5),
        "answered within the deadline: {first_answer:?}"
    );
    let attempts = until_delivered(&app, &body, 10).await;
    eprintln!(
        "100 owners, 4 call slots, WeCom 150 ms: first answer after {first_answer:?}, delivered in {} attempts, at most {} calls in flight",
        attempts + 1,
        app.wecom.max_in_flight()
    );
    // The token fetch may overlap the first calls.
    assert!(
        app.wecom.max_in_flight() <= 4 + 1,
        "{} in flight",
        app.wecom.max_in_flight()
    );
    for owner in &owners {
        assert_eq!(app.wecom.member_messages(owner).len(), 1, "{owner}");
    }
}

#[tokio::test]
async fn several_such_webhooks_at_once_share_the_apps_call_slots() {
    let app = spawn(owners_config(6)).await;
    let owners: Vec<String> = (0..40).map(|i| format!("owner-{i:04}")).collect();
    app.wecom
        .add_users(&owners.iter().map(String::as_str).collect::<Vec<_>>());
    app.wecom.set_answer_latency(Duration::from_millis(100));
    let bodies: Vec<String> = (0..4).map(|i| owned_group(40, &format!("Owned{i}"))).collect();
    let answers = join_all(bodies.iter().map(|body| until_delivered(&app, body, 10))).await;
    eprintln!(
        "4 webhooks of 40 owners, 6 call slots: attempts {answers:?}, at most {} calls in flight",
        app.wecom.max_in_flight()
    );
    assert!(
        app.wecom.max_in_flight() <= 6 + 1,
        "{} in flight",
        app.wecom.max_in_flight()
    );
    for owner in &owners {
        assert_eq!(
            app.wecom.member_messages(owner).len(),
            4,
            "{owner}: one per group"
        );
    }
}

#[tokio::test]
async fn a_wecom_slower_than_our_timeout_with_alertmanager_like_retries_delivers_each_group_once() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: slow, app: ops, msgtype: markdown, to: {users: [alice]}}\n",
    ))
    .await;
    // WeCom takes each message at once but answers after 1.5 s: past our 1 s call
    // timeout, so every call fails on our side although WeCom delivered it.
    app.wecom.set_answer_latency(Duration::from_millis(1500));
    let groups: Vec<String> = (0..10)
        .map(|i| {
            CRASHLOOP.replace(
                r#""alertname":"KubePodCrashLooping""#,
                &format!(r#""alertname":"Slow{i:02}""#),
            )
        })
        .collect();
    // Alertmanager retries each failed notification, here at once and three times over.
    let retries = join_all(groups.iter().map(|body| async {
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(app.post(body).await.0);
        }
        answers
    }))
    .await;
    eprintln!("answers per group: {retries:?}");
    let contents: Vec<String> = app
        .wecom
        .member_messages("alice")
        .iter()
        .map(|m| m.to_string())
        .collect();
    for i in 0..10 {
        let name = format!("Slow{i:02}");
        let copies = contents.iter().filter(|c| c.contains(&name)).count();
        assert_eq!(copies, 1, "{name} delivered {copies} times");
    }
    eprintln!(
        "duplicates WeCom's check suppressed: {}, send calls: {}",
        app.wecom.duplicates_suppressed(),
        app.wecom.send_calls()
    );
}
