//! High availability: two clustered Alertmanagers, each notifying its own replica of ours,
//! the two replicas sharing their delivery state in Redis (see [`HaStack`]).

use std::time::Duration;

use crate::fake_wecom::Fault;
use crate::harness::*;

/// One route, in markdown: its messages carry the notifying Alertmanager's silence links,
/// so a message sent by both replicas is two different WeCom requests.
const ROUTES: &str = "routes:\n  - {name: ops, app: ops, msgtype: markdown, to: {users: [alice]}}\n";

/// A WeCom send this slow (`Fault::Delay`) outlasts [`PEER_TIMEOUT`] by a second, so the
/// Alertmanager peer notifies the group too, through the other replica, while the first
/// is still sending; and it is a second within [`HA_WECOM_TIMEOUT`], so it is delivered,
/// never ambiguous (timed out by us, yet delivered).
const SLOW_SEND: Duration = Duration::from_secs(3);

/// Three group intervals: long enough for a late second notification (the peer's, or a
/// retry) to have turned into a message.
const SETTLE: Duration = Duration::from_secs(6);

/// Longer than [`DELIVERY_TIMEOUT`]: up to 4 failed sends in a row for one group, then
/// Alertmanager's backoff.
const ALL_DELIVERED_TIMEOUT: Duration = Duration::from_secs(20);

const DEGRADED: &str = "alertmanager_wecom_state_degraded";
const WEBHOOKS: &str = "alertmanager_wecom_webhooks_received_total";
const NOTIFICATIONS: &str = "alertmanager_wecom_notifications_total";

/// `HaAlert00`, `HaAlert01`, …: one Alertmanager group each (`group_by: [alertname]`);
/// none is a substring of another.
fn names(stem: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{stem}{i:02}")).collect()
}

/// One firing alert per name. The same values go to both Alertmanagers: same labels and
/// `startsAt`, as Prometheus sends them.
fn firing(names: &[String]) -> Vec<serde_json::Value> {
    names
        .iter()
        .map(|name| {
            alert(
                &[("alertname", name.as_str()), ("team", "ops")],
                &format!("{name} fires"),
            )
        })
        .collect()
}

async fn assert_redis_backend_in_use(stack: &HaStack) {
    let info = stack
        .replica_sums("alertmanager_wecom_state_backend_info", &[("backend", "redis")])
        .await;
    assert_eq!(info, [1.0, 1.0], "both replicas use the redis backend");
    assert_eq!(stack.replica_sums(DEGRADED, &[]).await, [0.0, 0.0]);
}

/// Waits until every name is in some delivered message, then [`SETTLE`] more; returns the
/// number of messages per name.
async fn delivered_then_settled(stack: &HaStack, names: &[String]) -> Vec<usize> {
    eventually(
        &format!("each of {names:?} delivered"),
        ALL_DELIVERED_TIMEOUT,
        || async {
            let counts = stack.deliveries_mentioning(names);
            counts.iter().all(|&n| n >= 1).then_some(())
        },
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    stack.deliveries_mentioning(names)
}

/// What the exactly-once test saw, printed for the record (`--nocapture`).
#[allow(dead_code)] // Read through Debug.
#[derive(Debug)]
struct Figures {
    /// Messages per group.
    per_group: Vec<usize>,
    /// Webhooks received by replica 1 and 2, in all, and answered 200 and 503.
    webhooks: [f64; 2],
    webhooks_200: [f64; 2],
    webhooks_503: [f64; 2],
    /// Our notification outcomes per replica.
    sent: [f64; 2],
    duplicate: [f64; 2],
    /// Messages carrying A's and B's silence links: whose notification got through.
    delivered_via: [usize; 2],
    send_calls: usize,
    silently_dropped: usize,
    suppressed_by_wecom: usize,
    redis_keys: usize,
}

/// Ten groups posted to both Alertmanagers while WeCom fails or stalls some sends; returns
/// what happened after all were delivered and [`SETTLE`] passed.
async fn ten_groups_through_both_peers(stack: &HaStack) -> Figures {
    // The first sends are slow (longer than the peer timeout, shorter than our WeCom
    // timeout: delivered, never ambiguous) or fail (an errcode, a bad gateway: retried by
    // us, and by Alertmanager once we answer 503). Either way the first notification of
    // most groups is still under way when the peer looks whether it was sent, so the peer
    // notifies the same group through the other replica.
    let faults: Vec<Fault> = [
        Fault::Delay(SLOW_SEND),
        Fault::Errcode(-1),
        Fault::HttpStatus(502),
    ]
    .into_iter()
    .cycle()
    .take(24)
    .collect();
    stack.wecom.inject_send_faults(faults);
    let names = names("HaAlert", 10);
    stack.post_alerts(&firing(&names)).await;
    let per_group = delivered_then_settled(stack, &names).await;

    let delivered = stack.wecom.delivered();
    let via = |url: &str| {
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        delivered.iter().filter(|m| content(m).contains(host)).count()
    };
    Figures {
        per_group,
        webhooks: stack.replica_sums(WEBHOOKS, &[]).await,
        webhooks_200: stack.replica_sums(WEBHOOKS, &[("code", "200")]).await,
        webhooks_503: stack.replica_sums(WEBHOOKS, &[("code", "503")]).await,
        sent: stack.replica_sums(NOTIFICATIONS, &[("outcome", "sent")]).await,
        duplicate: stack
            .replica_sums(NOTIFICATIONS, &[("outcome", "duplicate")])
            .await,
        delivered_via: [
            via(&stack.alertmanagers[0].address),
            via(&stack.alertmanagers[1].address),
        ],
        send_calls: stack.wecom.send_calls(),
        silently_dropped: stack.wecom.silently_dropped(),
        suppressed_by_wecom: stack.wecom.duplicates_suppressed(),
        redis_keys: stack.redis.keys(&format!("{}*", stack.key_prefix)).len(),
    }
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager and redis-server: apt-get install -y prometheus-alertmanager redis-server; run with cargo test --test e2e -- --ignored"]
async fn ha_alertmanagers_and_two_replicas_deliver_every_alert_exactly_once() {
    let stack = HaStack::start(HaOptions {
        routes: ROUTES.into(),
        ..HaOptions::default()
    })
    .await;
    assert_redis_backend_in_use(&stack).await;

    let figures = ten_groups_through_both_peers(&stack).await;
    eprintln!("{figures:#?}");
    assert_eq!(
        figures.per_group,
        vec![1; 10],
        "every group exactly once: {figures:#?}"
    );
    assert_eq!(figures.sent.iter().sum::<f64>(), 10.0, "{figures:#?}");
    assert_eq!(figures.silently_dropped, 0, "{figures:#?}");
    assert_eq!(
        figures.suppressed_by_wecom, 0,
        "a message was sent twice and only WeCom's duplicate check hid it: {figures:#?}"
    );
    // The test did what it is about: both peers notified, some group twice, and the
    // second notification was recognised as the same message.
    assert!(
        figures.webhooks_200.iter().all(|&n| n >= 1.0),
        "both replicas answered a notification: {figures:#?}"
    );
    assert!(
        figures.webhooks_200.iter().sum::<f64>() > 10.0,
        "some group was notified by both Alertmanagers: {figures:#?}"
    );
    assert!(figures.duplicate.iter().sum::<f64>() >= 1.0, "{figures:#?}");
    assert!(
        figures.redis_keys >= 1,
        "the state is in Redis, under the key prefix"
    );
    for (am, name) in stack.alertmanagers.iter().zip(["A", "B"]) {
        let theirs = am.metrics().await;
        assert_eq!(
            theirs.sum("alertmanager_notifications_failed_total", &WEBHOOK),
            0.0,
            "Alertmanager {name} got every notification through"
        );
    }
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager and redis-server: apt-get install -y prometheus-alertmanager redis-server; run with cargo test --test e2e -- --ignored"]
async fn redis_going_away_degrades_to_local_state_and_recovers() {
    let mut stack = HaStack::start(HaOptions {
        routes: ROUTES.into(),
        ..HaOptions::default()
    })
    .await;
    assert_redis_backend_in_use(&stack).await;

    let before = names("BeforeOutage", 1);
    stack.post_alerts(&firing(&before)).await;
    eventually("the first group delivered", DELIVERY_TIMEOUT, || async {
        (stack.deliveries_mentioning(&before)[0] >= 1).then_some(())
    })
    .await;

    // A replica notices that Redis is gone when it next needs it: one slow send makes the
    // peer notify too, so that both replicas get a webhook during the outage.
    stack.redis.stop();
    stack.wecom.inject_send_faults(vec![Fault::Delay(SLOW_SEND)]);
    let during = names("DuringOutage", 1);
    stack.post_alerts(&firing(&during)).await;
    eventually(
        "delivered without Redis, both replicas degraded",
        DELIVERY_TIMEOUT,
        || async {
            let delivered = stack.deliveries_mentioning(&during)[0] >= 1;
            let degraded = stack.replica_sums(DEGRADED, &[]).await == [1.0, 1.0];
            (delivered && degraded).then_some(())
        },
    )
    .await;

    stack.redis.start_again();
    eventually(
        "both replicas back on Redis, without a restart",
        Duration::from_secs(10),
        || async { (stack.replica_sums(DEGRADED, &[]).await == [0.0, 0.0]).then_some(()) },
    )
    .await;
    // Without the shared record the replicas could not tell each other's message apart:
    // with the peer's notification, the group went out twice (what the gauge warns of).
    let during_outage = stack.deliveries_mentioning(&during)[0];
    assert!(
        (1..=2).contains(&during_outage),
        "{during_outage} messages for one group"
    );

    // Both replicas get the next group again (a slow send again): shared state, once.
    let duplicates = stack
        .replica_sums(NOTIFICATIONS, &[("outcome", "duplicate")])
        .await;
    stack.wecom.inject_send_faults(vec![Fault::Delay(SLOW_SEND)]);
    let after = names("AfterRecovery", 1);
    stack.post_alerts(&firing(&after)).await;
    let counts = delivered_then_settled(&stack, &after).await;
    assert_eq!(counts, [1], "the group after the recovery exactly once");
    let duplicates_after = stack
        .replica_sums(NOTIFICATIONS, &[("outcome", "duplicate")])
        .await;
    assert!(
        duplicates_after.iter().sum::<f64>() > duplicates.iter().sum::<f64>(),
        "the peer's notification was recognised as the same message: {duplicates:?} then {duplicates_after:?}"
    );
    assert_eq!(stack.deliveries_mentioning(&before), [1]);
    assert!(
        !stack.redis.keys(&format!("{}*", stack.key_prefix)).is_empty(),
        "the recovered replicas record in Redis again"
    );
    assert_eq!(stack.wecom.silently_dropped(), 0);
    eprintln!(
        "during the outage: {during_outage} message(s); in all, per replica: webhooks {:?}, \
         duplicates {duplicates_after:?}",
        stack.replica_sums(WEBHOOKS, &[]).await
    );
}
