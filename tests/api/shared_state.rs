//! Several replicas on one shared state (a real `redis-server` on a free loopback port):
//! exactly once and within WeCom's limits across replicas, claims against concurrent
//! retries, and paging going on while Redis is away.

use std::time::{Duration, Instant};

use futures_util::future::join;

use crate::fake_wecom::{FakeWeCom, Fault};
use crate::helpers::*;
use crate::redis_server::RedisServer;

/// Everything to alice as text: one message per group, each counted against her budget.
const TO_ALICE: &str = "routes:\n  - {name: all, app: ops, msgtype: text, to: {users: [alice]}}\n";

fn shared_config(redis_url: &str) -> TestConfig {
    TestConfig {
        top_extra: format!(
            "state:\n  backend: redis\n  url: '{redis_url}'\n  key_prefix: 'test-{}:'\n",
            fastrand::u64(..)
        ),
        ..TestConfig::routes(TO_ALICE)
    }
}

/// Two replicas of the service sharing `wecom` and the state `config` names.
async fn two_replicas(config: &TestConfig, wecom: &FakeWeCom) -> (TestApp, TestApp) {
    let yaml = config_yaml(config, &wecom.base_url());
    let a = spawn_with_yaml(&yaml, wecom.clone()).await;
    let b = spawn_with_yaml(&yaml, wecom.clone()).await;
    (a, b)
}

/// The crashloop group as distinct group `i`.
fn group(i: usize) -> String {
    CRASHLOOP.replace("api-7d9f", &format!("api-{i}"))
}

/// The same group as an HA peer sends it: its own externalURL, so its own links.
fn from_peer(body: &str) -> String {
    let payload: serde_json::Value = serde_json::from_str(body).unwrap();
    let external = payload["externalURL"].as_str().unwrap().to_string();
    body.replace(&external, "http://alertmanager-b.example.com:9093")
}

async fn degraded(app: &TestApp) -> f64 {
    metric(&app.metrics().await, "alertmanager_wecom_state_degraded")
}

#[tokio::test]
async fn a_group_posted_to_each_replica_by_ha_peers_is_delivered_once() {
    let redis = RedisServer::start();
    let wecom = start_fake_wecom().await;
    let (a, b) = two_replicas(&shared_config(&redis.url()), &wecom).await;
    let (status, report) = a.post(CRASHLOOP).await;
    assert_eq!(
        (status, report["routes"][0]["outcome"].as_str()),
        (200, Some("sent"))
    );
    let peer = from_peer(CRASHLOOP);
    assert_ne!(peer, CRASHLOOP, "the peer's body differs");
    let (status, report) = b.post(&peer).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "duplicate");
    assert_eq!(wecom.delivered().len(), 1);
    assert_eq!(
        metric(
            &b.metrics().await,
            r#"alertmanager_wecom_state_backend_info{backend="redis"}"#
        ),
        1.0
    );
}

/// The same group twice at once while WeCom is slow: the second waits for the first's
/// outcome instead of sending again.
async fn concurrent_twins_are_delivered_once(first: &TestApp, second: &TestApp, wecom: &FakeWeCom) {
    wecom.inject_send_faults(vec![Fault::Delay(Duration::from_millis(800))]);
    let peer = from_peer(CRASHLOOP);
    let started = Instant::now();
    let ((s1, r1), (s2, r2)) = join(first.post(CRASHLOOP), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        second.post(&peer).await
    })
    .await;
    assert_eq!((s1, s2), (200, 200), "{r1} {r2}");
    let mut outcomes = [
        r1["routes"][0]["outcome"].as_str().unwrap().to_string(),
        r2["routes"][0]["outcome"].as_str().unwrap().to_string(),
    ];
    outcomes.sort();
    assert_eq!(outcomes, ["duplicate", "sent"]);
    assert_eq!(wecom.delivered().len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the twin waited only for the outcome"
    );
}

#[tokio::test]
async fn concurrent_twins_on_one_replica_are_delivered_once_in_memory() {
    let app = spawn(TestConfig::routes(TO_ALICE)).await;
    concurrent_twins_are_delivered_once(&app, &app, &app.wecom).await;
}

#[tokio::test]
async fn concurrent_twins_on_one_replica_are_delivered_once_in_redis() {
    let redis = RedisServer::start();
    let wecom = start_fake_wecom().await;
    let (a, _b) = two_replicas(&shared_config(&redis.url()), &wecom).await;
    concurrent_twins_are_delivered_once(&a, &a, &wecom).await;
}

#[tokio::test]
async fn concurrent_twins_on_two_replicas_are_delivered_once() {
    let redis = RedisServer::start();
    let wecom = start_fake_wecom().await;
    let (a, b) = two_replicas(&shared_config(&redis.url()), &wecom).await;
    concurrent_twins_are_delivered_once(&a, &b, &wecom).await;
}

#[tokio::test]
async fn with_digests_off_sixty_groups_to_one_user_across_replicas_send_30_and_hold_30_back() {
    let redis = RedisServer::start();
    let wecom = start_fake_wecom().await;
    let mut config = shared_config(&redis.url());
    config.top_extra.push_str(NO_DIGESTS);
    let (a, b) = two_replicas(&config, &wecom).await;
    let mut statuses = Vec::new();
    for i in 0..60 {
        let replica = if i % 2 == 0 { &a } else { &b };
        statuses.push(replica.post(&group(i)).await.0);
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 30);
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 30);
    assert_eq!(wecom.delivered().len(), 30);
    assert_eq!(wecom.silently_dropped(), 0);
}

#[tokio::test]
async fn redis_going_away_degrades_to_local_state_and_coming_back_shares_again() {
    let mut redis = RedisServer::start_with_password("TESTSECRET-redis-pw-51c3");
    let wecom = start_fake_wecom().await;
    let (a, b) = two_replicas(&shared_config(&redis.url()), &wecom).await;
    assert_eq!(a.post(&group(1)).await.0, 200);
    assert_eq!(degraded(&a).await, 0.0);

    redis.stop();
    let started = Instant::now();
    let (status, report) = a.post(&group(2)).await;
    assert_eq!(status, 200, "paging goes on: {report}");
    assert!(started.elapsed() < Duration::from_secs(2), "not stuck on Redis");
    assert_eq!(degraded(&a).await, 1.0);
    // Degraded, the replica still knows what it delivered itself.
    let (status, report) = a.post(&group(1)).await;
    assert_eq!(
        (status, report["routes"][0]["outcome"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(b.post(&group(3)).await.0, 200);
    assert_eq!(wecom.delivered().len(), 3);

    redis.start_again();
    let back = Instant::now();
    while degraded(&a).await != 0.0 || degraded(&b).await != 0.0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "back on Redis without a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.post(&group(4)).await.0, 200);
    let (status, report) = b.post(&from_peer(&group(4))).await;
    assert_eq!(
        (status, report["routes"][0]["outcome"].as_str()),
        (200, Some("duplicate")),
        "shared again"
    );
    assert_eq!(wecom.delivered().len(), 4);

    let logs = captured_logs();
    assert!(
        logs.contains("shared state unreachable"),
        "one line when it went away"
    );
    assert!(logs.contains("shared state reachable again"));
    assert!(!logs.contains("redis-pw-51c3"), "the Redis password never shows");
}

#[tokio::test]
async fn a_wrong_redis_password_degrades_instead_of_failing_deliveries() {
    let redis = RedisServer::start_with_password("TESTSECRET-redis-right-9e0a");
    let wecom = start_fake_wecom().await;
    let (a, _b) = two_replicas(&shared_config(&redis.url_without_password()), &wecom).await;
    let (status, report) = a.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(degraded(&a).await, 1.0);
    assert!(!captured_logs().contains("redis-right-9e0a"));
}

#[tokio::test]
async fn a_redis_that_is_down_shows_in_the_gauge_before_any_alert_arrives() {
    let mut redis = RedisServer::start();
    redis.stop();
    let wecom = start_fake_wecom().await;
    let (a, _b) = two_replicas(&shared_config(&redis.url()), &wecom).await;
    let started = Instant::now();
    while degraded(&a).await != 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "noticed without traffic"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.start_again();
    while degraded(&a).await != 0.0 {
        assert!(started.elapsed() < Duration::from_secs(15), "and its return too");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_redis_slower_than_command_timeout_counts_as_away_and_paging_goes_on() {
    let redis = std::sync::Arc::new(RedisServer::start());
    let wecom = start_fake_wecom().await;
    let (a, _b) = two_replicas(&shared_config(&redis.url()), &wecom).await;
    assert_eq!(a.post(&group(1)).await.0, 200);
    // Redis answers nothing for 2 s (as under a long BGSAVE fork or a stalled network).
    let stalled = redis.clone();
    let sleeper = std::thread::spawn(move || stalled.command(&["DEBUG", "SLEEP", "2"]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, report) = a.post(&group(2)).await;
    assert_eq!(status, 200, "{report}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "one command_timeout (250 ms), not Redis's stall: {:?}",
        started.elapsed()
    );
    assert_eq!(degraded(&a).await, 1.0);
    sleeper.join().unwrap().expect("DEBUG SLEEP answers once done");
    let back = Instant::now();
    while degraded(&a).await != 0.0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "back once Redis answers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_storm_across_replicas_is_digested_once_and_either_replica_answers_the_retries() {
    let redis = RedisServer::start();
    let wecom = start_fake_wecom().await;
    let mut config = shared_config(&redis.url());
    // Redis slower than command_timeout (250 ms) under a loaded CI machine would send a
    // replica to its local state, where each counts WeCom's budget on its own (documented,
    // tested elsewhere): this test is about the shared digest, not about that.
    config
        .top_extra
        .push_str("  command_timeout: 2s\nstorm: {interval: 1s, hold: 1m}\n");
    let (a, b) = two_replicas(&config, &wecom).await;
    // Sixty distinct warning groups (the crashloop group is critical: sent on its own
    // while budget lasts).
    let groups: Vec<String> = (0..60)
        .map(|i| {
            group(i)
                .replace("\"critical\"", "\"warning\"")
                .replace(r#"team=\"pay\"}""#, &format!(r#"team=\"pay\", n=\"{i}\"}}""#))
        })
        .collect();
    let mut statuses = Vec::new();
    for (i, body) in groups.iter().enumerate() {
        let replica = if i % 2 == 0 { &a } else { &b };
        statuses.push(replica.post(body).await.0);
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 27, "{statuses:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wecom.member_messages("alice").len() < 28 {
        assert!(std::time::Instant::now() < deadline, "no digest");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Each held group retried on the replica that did not take it first.
    for (i, body) in groups.iter().enumerate().filter(|(i, _)| statuses[*i] == 503) {
        let other = if i % 2 == 0 { &b } else { &a };
        let (status, report) = other.post(body).await;
        assert_eq!(status, 200, "{report}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let messages = wecom.member_messages("alice");
    let digests: Vec<&serde_json::Value> = messages
        .iter()
        .filter(|m| m.to_string().contains("STORM DIGEST"))
        .collect();
    // What each message was, should this fail: the group (`n`) or the digest.
    let shown: Vec<String> = messages
        .iter()
        .map(|m| m.to_string().chars().take(160).collect())
        .collect();
    assert_eq!(
        (messages.len(), digests.len()),
        (28, 1),
        "one digest, sent once; messages:\n{}",
        shown.join("\n")
    );
    assert!(
        digests[0].to_string().contains("33 notification(s)"),
        "{}",
        digests[0]
    );
    assert_eq!(wecom.silently_dropped(), 0);
}
