//! Alert storms against a fake WeCom that drops silently like WeCom: beyond a member's
//! budget notifications are collected into digests, a digest WeCom accepted answers their
//! retries with 200, and nothing is ever silently dropped or sent twice.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::fake_wecom::Fault;
use crate::helpers::*;

const ROBOT_KEY: &str = "TESTSECRET-robot-key-storm-5e2a";

/// Digests quickly, so tests need not wait the default 20 s.
const FAST_DIGESTS: &str = "storm: {interval: 1s, hold: 1m}\n";

fn to(recipients: &str) -> TestConfig {
    TestConfig {
        top_extra: FAST_DIGESTS.into(),
        ..TestConfig::routes(&format!(
            "routes:\n  - {{name: storm, app: ops, msgtype: markdown, to: {recipients}}}\n"
        ))
    }
}

/// Alert group `i` of a storm (Alertmanager grouping by alertname): one alert `Storm{i}`.
fn group(i: usize, severity: &str, status: &str) -> String {
    let name = format!("Storm{i:04}");
    let ends = if status == "resolved" {
        "2026-11-25T18:00:00Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "status": status,
        "receiver": "wecom",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "severity": severity},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "truncatedAlerts": 0,
        "alerts": [{
            "status": status,
            "labels": {"alertname": name, "severity": severity, "instance": "host-1"},
            "annotations": {"summary": format!("storm alert {i}")},
            "startsAt": "2026-11-25T17:46:42Z",
            "endsAt": ends,
            "generatorURL": "http://prometheus.example.com/graph",
            "fingerprint": format!("{i:016x}")
        }]
    })
    .to_string()
}

fn outcome(report: &Value) -> &str {
    report["routes"][0]["outcome"].as_str().unwrap_or("")
}

fn content(body: &Value) -> String {
    body["markdown"]["content"]
        .as_str()
        .or_else(|| body["text"]["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn digests(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(content)
        .filter(|text| text.contains("[STORM DIGEST]"))
        .collect()
}

/// Waits (bounded) until `probe` holds.
async fn until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts each group once; returns the statuses and outcomes.
async fn post_all(app: &TestApp, groups: &[String]) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    for body in groups {
        let (status, report) = app.post(body).await;
        answers.push((status, outcome(&report).to_string()));
    }
    answers
}

/// Waits until `n` digests of route `storm` were accepted: WeCom delivers a digest before
/// its answer is in, and only then are its notifications recorded (and their retries
/// answered 200).
async fn digests_accepted(app: &TestApp, n: usize) {
    digests_accepted_on(app, "storm", n).await
}

async fn digests_accepted_on(app: &TestApp, route: &str, n: usize) {
    let sample =
        format!(r#"alertmanager_wecom_storm_digest_messages_total{{outcome="sent",route="{route}"}}"#);
    let started = Instant::now();
    while metric(&app.metrics().await, &sample) < n as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{n} digest(s) accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_storm_to_one_user_sends_until_the_reserve_then_one_digest_answers_for_the_rest() {
    let app = spawn(to("{users: [alice]}")).await;
    let groups: Vec<String> = (0..40).map(|i| group(i, "warning", "firing")).collect();
    let answers = post_all(&app, &groups).await;
    // 30 a minute, 3 kept for digests.
    assert!(
        answers[..27].iter().all(|(s, o)| *s == 200 && o == "sent"),
        "{answers:?}"
    );
    assert!(
        answers[27..].iter().all(|(s, o)| *s == 503 && o == "digested"),
        "{answers:?}"
    );

    let messages = until("the digest", Duration::from_secs(10), || {
        let messages = app.wecom.member_messages("alice");
        (messages.len() == 28).then_some(messages)
    })
    .await;
    let digest = &digests(&messages)[0];
    assert!(
        digest.contains("13 firing") && digest.contains("in 13 notification(s)"),
        "{digest}"
    );
    for i in 27..40 {
        assert!(digest.contains(&format!("Storm{i:04}")), "{digest}");
    }
    assert!(digest.contains("/#/alerts?filter="), "{digest}");

    // Alertmanager's retries of the digested groups are now answered 200, sending nothing.
    digests_accepted(&app, 1).await;
    let retries = post_all(&app, &groups[27..]).await;
    assert!(
        retries.iter().all(|(s, o)| *s == 200 && o == "duplicate"),
        "{retries:?}"
    );
    let (_, report) = app.post(&groups[30]).await;
    assert_eq!(
        report["routes"][0]["messages"], 0,
        "answered before rendering: {report}"
    );
    assert_eq!(app.wecom.member_messages("alice").len(), 28);
    assert_eq!(app.wecom.silently_dropped(), 0);

    let scrape = app.metrics().await;
    for (sample, value) in [
        (r#"alertmanager_wecom_storm_digested_total{route="storm"}"#, 13.0),
        (
            r#"alertmanager_wecom_storm_represented_total{route="storm"}"#,
            13.0,
        ),
        (
            r#"alertmanager_wecom_storm_digest_messages_total{outcome="sent",route="storm"}"#,
            1.0,
        ),
        (
            r#"alertmanager_wecom_storm_held_total{reason="digest",route="storm"}"#,
            13.0,
        ),
    ] {
        assert_eq!(metric(&scrape, sample), value, "{sample}");
    }
}

#[tokio::test]
async fn a_retry_of_a_notification_waiting_for_its_digest_is_answered_at_once() {
    let app = spawn(TestConfig {
        top_extra: "storm: {interval: 30s, hold: 2m}\n".into(),
        ..to("{users: [alice]}")
    })
    .await;
    let groups: Vec<String> = (0..28).map(|i| group(i, "warning", "firing")).collect();
    post_all(&app, &groups).await;
    let calls = app.wecom.send_calls();
    let started = Instant::now();
    for _ in 0..20 {
        let (status, report) = app.post(&groups[27]).await;
        assert_eq!((status, outcome(&report)), (503, "digested"), "{report}");
        // Answered from the record: nothing rendered, no request built.
        assert_eq!(report["routes"][0]["messages"], 0, "{report}");
    }
    // No WeCom call, no waiting on a claim: each retry answers from the record.
    assert_eq!(app.wecom.send_calls(), calls);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_storm_held_total{reason="pending",route="storm"}"#
        ),
        20.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_storm_digested_total{route="storm"}"#
        ),
        1.0
    );
    assert!(metric(&scrape, "alertmanager_wecom_storm_oldest_pending_seconds") >= 0.0);
}

#[tokio::test]
async fn critical_groups_are_sent_on_their_own_while_budget_lasts_and_the_digest_takes_the_last_slot() {
    let app = spawn(to("{users: [alice]}")).await;
    let groups: Vec<String> = (0..35).map(|i| group(i, "critical", "firing")).collect();
    let answers = post_all(&app, &groups).await;
    assert!(answers[..29].iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert!(answers[29..].iter().all(|(s, _)| *s == 503), "{answers:?}");
    let messages = until("the digest", Duration::from_secs(10), || {
        let messages = app.wecom.member_messages("alice");
        (messages.len() == 30).then_some(messages)
    })
    .await;
    let digest = &digests(&messages)[0];
    assert!(digest.contains("critical</font>: 6 firing"), "{digest}");
    assert_eq!(app.wecom.silently_dropped(), 0);
}

#[tokio::test]
async fn storms_to_a_party_a_tag_and_everyone_are_budgeted_and_digested_not_dropped() {
    for recipients in ["{parties: [3]}", "{tags: [4]}", "{users: ['@all']}"] {
        let app = spawn(to(recipients)).await;
        app.wecom.add_party("3", &["alice", "bob"]);
        app.wecom.add_party("5", &["bob"]);
        app.wecom.add_tag("4", &["alice"], &["5"]);
        let groups: Vec<String> = (0..40).map(|i| group(i, "warning", "firing")).collect();
        let answers = post_all(&app, &groups).await;
        let sent = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(sent, 27, "{recipients}: {answers:?}");
        for member in ["alice", "bob"] {
            let messages = until("the digest", Duration::from_secs(10), || {
                let messages = app.wecom.member_messages(member);
                (messages.len() == 28).then_some(messages)
            })
            .await;
            assert_eq!(digests(&messages).len(), 1, "{recipients} {member}");
        }
        digests_accepted(&app, 1).await;
        let retries = post_all(&app, &groups[27..]).await;
        assert!(
            retries.iter().all(|(s, _)| *s == 200),
            "{recipients}: {retries:?}"
        );
        assert_eq!(app.wecom.silently_dropped(), 0, "{recipients}");
    }
}

#[tokio::test]
async fn a_member_reached_by_name_and_through_everyone_is_counted_once_for_both() {
    let app = spawn(TestConfig {
        top_extra: FAST_DIGESTS.into(),
        ..TestConfig::routes(
            "routes:\n  - {name: one, matchers: ['severity=\"warning\"'], app: ops, msgtype: markdown, to: {users: [alice]}}\n  - {name: all, app: ops, msgtype: markdown, to: {users: ['@all']}}\n",
        )
    })
    .await;
    // Alternately to alice by name and to everyone: alice gets both.
    let groups: Vec<String> = (0..40)
        .map(|i| group(i, if i % 2 == 0 { "warning" } else { "info" }, "firing"))
        .collect();
    let answers = post_all(&app, &groups).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 200).count(),
        27,
        "{answers:?}"
    );
    until("the digests", Duration::from_secs(10), || {
        (digests(&app.wecom.member_messages("alice")).len() == 2).then_some(())
    })
    .await;
    assert_eq!(app.wecom.silently_dropped(), 0);
}

#[tokio::test]
async fn resolved_notifications_in_a_storm_are_digested_too_and_nothing_fires_twice() {
    let app = spawn(TestConfig {
        top_extra: "storm: {interval: 3s, hold: 1m}\n".into(),
        ..to("{users: [alice]}")
    })
    .await;
    let firing: Vec<String> = (0..37).map(|i| group(i, "warning", "firing")).collect();
    let resolved: Vec<String> = (27..37).map(|i| group(i, "warning", "resolved")).collect();
    let answers = post_all(&app, &firing).await;
    assert_eq!(answers.iter().filter(|(s, _)| *s == 503).count(), 10);
    // The groups resolve before their digest went out: the digest counts their latest
    // version, resolved, and each group once.
    let answers = post_all(&app, &resolved).await;
    assert!(
        answers.iter().all(|(s, o)| *s == 503 && o == "digested"),
        "{answers:?}"
    );
    let messages = until("the digest", Duration::from_secs(10), || {
        let messages = app.wecom.member_messages("alice");
        (messages.len() == 28).then_some(messages)
    })
    .await;
    let digest = &digests(&messages)[0];
    assert!(
        digest.contains("0 firing, 10 resolved") && digest.contains("in 10 notification(s)"),
        "{digest}"
    );
    // Both versions' retries are answered 200 and nothing else is sent.
    digests_accepted(&app, 1).await;
    for body in firing[27..].iter().chain(&resolved) {
        assert_eq!(app.post(body).await.0, 200);
    }
    let messages = app.wecom.member_messages("alice");
    assert_eq!(messages.len(), 28);
    for i in 27..37 {
        let name = format!("Storm{i:04}");
        let firing_mentions = messages
            .iter()
            .map(content)
            .filter(|text| text.contains(&name) && text.contains("[FIRING]"))
            .count();
        assert_eq!(firing_mentions, 0, "{name} never fired on its own");
    }
    assert_eq!(app.wecom.silently_dropped(), 0);
}

#[tokio::test]
async fn a_robot_storm_becomes_a_digest_within_the_robots_20_a_minute() {
    let app = spawn(TestConfig {
        top_extra: FAST_DIGESTS.into(),
        ..TestConfig::routes(&format!(
            "robots: [{{name: chat, key: {ROBOT_KEY}}}]\nroutes:\n  - {{name: chat, robot: chat, msgtype: markdown}}\n"
        ))
    })
    .await;
    app.wecom.add_robot(ROBOT_KEY);
    let groups: Vec<String> = (0..25).map(|i| group(i, "warning", "firing")).collect();
    let answers = post_all(&app, &groups).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 200).count(),
        17,
        "{answers:?}"
    );
    let messages = until("the digest", Duration::from_secs(10), || {
        let messages = app.wecom.robot_messages(ROBOT_KEY);
        (messages.len() == 18).then_some(messages)
    })
    .await;
    assert!(content(&messages[17]).contains("in 8 notification(s)"));
    digests_accepted_on(&app, "chat", 1).await;
    assert!(post_all(&app, &groups[17..]).await.iter().all(|(s, _)| *s == 200));
}

#[tokio::test]
async fn a_digest_waits_for_budget_when_wecom_is_busy_and_is_sent_once_it_can() {
    let app = spawn(to("{users: [alice]}")).await;
    let groups: Vec<String> = (0..28).map(|i| group(i, "warning", "firing")).collect();
    post_all(&app, &groups).await;
    // WeCom is busy for the digest's first attempts: it is put back and tried again.
    app.wecom.inject_send_faults(vec![
        Fault::Errcode(-1),
        Fault::Errcode(-1),
        Fault::Errcode(-1),
        Fault::Errcode(-1),
    ]);
    until("the digest", Duration::from_secs(20), || {
        (app.wecom.member_messages("alice").len() == 28).then_some(())
    })
    .await;
    digests_accepted(&app, 1).await;
    assert_eq!(app.post(&groups[27]).await.0, 200);
    let scrape = app.metrics().await;
    assert!(
        metric(
            &scrape,
            r#"alertmanager_wecom_storm_digest_messages_total{outcome="retry",route="storm"}"#
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_digest_wecom_refuses_leaves_its_notifications_to_alertmanagers_retries() {
    let app = spawn(to("{users: [alice]}")).await;
    let groups: Vec<String> = (0..29).map(|i| group(i, "warning", "firing")).collect();
    post_all(&app, &groups).await;
    app.wecom.inject_send_faults(vec![Fault::Errcode(40058)]);
    until("the refused digest", Duration::from_secs(10), || {
        (app.wecom.send_calls() >= 28).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not represented: a retry is delivered anew (and, at the reserve, collected again).
    let (status, report) = app.post(&groups[28]).await;
    assert_eq!((status, outcome(&report)), (503, "digested"), "{report}");
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_storm_digest_messages_total{outcome="failed",route="storm"}"#
        ),
        1.0
    );
}

/// WeCom counts a message when it receives it. The first wave reaches WeCom late (slow
/// network) and WeCom answers slowly; a second wave exactly a minute after the first was
/// sent would land inside WeCom's minute. Nothing may be dropped.
#[tokio::test]
async fn waves_a_minute_apart_with_a_slow_wecom_are_never_dropped_at_the_minute_boundary() {
    let app = spawn(to("{users: [alice]}")).await;
    // Within the test config's 1 s call timeout: these calls succeed, slowly.
    app.wecom.set_answer_latency(Duration::from_millis(400));
    app.wecom.inject_send_faults(
        (0..27)
            .map(|_| Fault::Delay(Duration::from_millis(300)))
            .collect(),
    );
    let started = Instant::now();
    let wave = |from: usize| {
        (from..from + 30)
            .map(|i| group(i, "warning", "firing"))
            .collect::<Vec<_>>()
    };
    let first = wave(0);
    let answers = join_all(first.iter().map(|body| app.post(body))).await;
    assert!(
        answers.iter().filter(|(s, _)| *s == 200).count() >= 20,
        "{answers:?}"
    );
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;

    // Alertmanager retries every held group until it is answered 200.
    let second = wave(100);
    let mut open: Vec<&String> = first.iter().chain(&second).collect();
    while !open.is_empty() && started.elapsed() < Duration::from_secs(120) {
        let answers = join_all(open.iter().map(|body| app.post(body))).await;
        open = open
            .into_iter()
            .zip(answers)
            .filter(|(_, (status, _))| *status != 200)
            .map(|(body, _)| body)
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(open.is_empty(), "{} group(s) never answered 200", open.len());
    assert_eq!(app.wecom.silently_dropped(), 0);
}

/// A call that times out may still have reached WeCom, which counts it: each retry after
/// such a failure is booked as another message, and kept.
#[tokio::test]
async fn attempts_wecom_may_have_counted_are_booked_even_when_the_message_failed() {
    let app = spawn(to("{users: [alice]}")).await;
    // WeCom answers after the 1 s call timeout: every attempt times out, yet counts.
    app.wecom.set_answer_latency(Duration::from_millis(1_200));
    let slow = group(999, "warning", "firing");
    for _ in 0..5 {
        assert_eq!(app.post(&slow).await.0, 503);
    }
    // Attempts within one post, and a post after the first's claim expired (meanwhile a
    // retry waits for it: the first may still land).
    let counted = app.wecom.send_calls();
    assert!(counted >= 2, "several attempts: {counted}");
    app.wecom.set_answer_latency(Duration::ZERO);
    let groups: Vec<String> = (0..27).map(|i| group(i, "warning", "firing")).collect();
    let answers = post_all(&app, &groups).await;
    let sent = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(sent, 30 - 3 - counted, "{answers:?}");
    until("the digest", Duration::from_secs(10), || {
        (digests(&app.wecom.member_messages("alice")).len() == 1).then_some(())
    })
    .await;
    assert_eq!(app.wecom.silently_dropped(), 0);
}

/// A message with time for one call only: that call times out (WeCom took it, and counts
/// it) and no retry follows. Its booking is kept all the same; once it was given back, and
/// the next 27 messages were all sent: one more than WeCom lets through in the minute.
#[tokio::test]
async fn a_lone_attempt_that_timed_out_stays_booked() {
    let wecom = start_fake_wecom().await;
    let yaml = config_yaml(&to("{users: [alice]}"), &wecom.base_url())
        .replace("delivery_deadline: 3s", "delivery_deadline: 1400ms");
    let app = spawn_with_yaml(&yaml, wecom).await;
    app.wecom.set_answer_latency(Duration::from_millis(1_200));
    assert_eq!(app.post(&group(999, "warning", "firing")).await.0, 503);
    assert_eq!(app.wecom.send_calls(), 1, "one call, no room for a retry");
    app.wecom.set_answer_latency(Duration::ZERO);
    let groups: Vec<String> = (0..27).map(|i| group(i, "warning", "firing")).collect();
    let answers = post_all(&app, &groups).await;
    let sent = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(sent, 30 - 3 - 1, "{answers:?}");
    assert_eq!(app.wecom.silently_dropped(), 0);
}

#[tokio::test]
async fn digests_without_the_record_of_accepted_messages_say_they_hold_back_instead() {
    let app = spawn(TestConfig {
        wecom_extra: "  dedup_window: 0s\n".into(),
        ..to("{users: [alice]}")
    })
    .await;
    assert!(
        captured_logs().contains("storm.digest is on but wecom.dedup_window is 0s"),
        "the start-up says why there will be no digests"
    );
    let groups: Vec<String> = (0..31).map(|i| group(i, "warning", "firing")).collect();
    let answers = post_all(&app, &groups).await;
    // Held back, not collected: nothing could answer a digested group's retries.
    assert!(answers[..30].iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(answers[30], (503, "failed_transient".to_string()), "{answers:?}");
    assert_eq!(app.wecom.silently_dropped(), 0);
}

#[tokio::test]
async fn a_digest_whose_route_a_reload_removed_leaves_its_notifications_to_the_new_routes() {
    let wecom = start_fake_wecom().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    let write = |route: &str| {
        let config = TestConfig {
            top_extra: "storm: {interval: 2s, hold: 1m}\nserver: {reload_interval: 0s}\n".into(),
            ..TestConfig::routes(&format!(
                "routes:\n  - {{name: {route}, app: ops, msgtype: markdown, to: {{users: [alice]}}}}\n"
            ))
        };
        std::fs::write(&path, config_yaml(&config, &wecom.base_url())).unwrap();
    };
    write("before");
    let app = spawn_from(
        alertmanager_wecom::service::ConfigSource::File(path.clone()),
        wecom.clone(),
    )
    .await;
    let groups: Vec<String> = (0..28).map(|i| group(i, "warning", "firing")).collect();
    assert_eq!(post_all(&app, &groups).await[27].0, 503);

    // The route is renamed before its digest is due: the digest cannot be sent any more.
    write("after");
    let response = app
        .http
        .post(format!("{}/-/reload", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    until("the digest dropped", Duration::from_secs(10), || {
        captured_logs()
            .contains("its route is no longer configured")
            .then_some(())
    })
    .await;
    // Alertmanager's retry is delivered anew, through the new route (collected again).
    let (status, report) = app.post(&groups[27]).await;
    assert_eq!((status, outcome(&report)), (503, "digested"), "{report}");
    assert_eq!(report["routes"][0]["route"], "after");
    until("the new route's digest", Duration::from_secs(10), || {
        (digests(&app.wecom.member_messages("alice")).len() == 1).then_some(())
    })
    .await;
    assert_eq!(app.wecom.silently_dropped(), 0);
}
