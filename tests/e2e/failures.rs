//! WeCom failures as Alertmanager experiences them: our 503 makes it retry, our 422 makes it
//! count a failure and stop.

use std::time::Duration;

use crate::fake_wecom::Fault;
use crate::harness::*;

/// Longer than Alertmanager's first retry backoff (0.5 s ± 50 %) and than our 2 s
/// group interval: long enough for a retry or a repeat to have shown up.
const SETTLE: Duration = Duration::from_secs(3);

/// Waits until the service has answered a webhook 200, checks that it answered 503 before
/// (what made Alertmanager retry), and returns the service's metrics.
async fn answered_503_then_200(stack: &Stack) -> Scrape {
    stack
        .service
        .wait_for_counter(
            "alertmanager_wecom_webhooks_received_total",
            &[("code", "200")],
            1.0,
        )
        .await;
    let ours = stack.service.metrics().await;
    let answered_503 = ours.sum("alertmanager_wecom_webhooks_received_total", &[("code", "503")]);
    assert!(answered_503 >= 1.0, "the failed attempt is answered 503");
    ours
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn a_transient_wecom_failure_is_answered_503_retried_by_alertmanager_and_delivered_exactly_once() {
    let stack = Stack::start(Options {
        routes: "routes:\n  - {name: ops, app: ops, msgtype: markdown, to: {users: [alice]}}\n".into(),
        ..Options::default()
    })
    .await;
    // Four failures: our first send and its 3 retries (the most our 2 s deadline allows)
    // all fail, so we answer 503; Alertmanager's retry then gets through.
    stack.wecom.inject_send_faults(vec![Fault::Errcode(-1); 4]);
    stack
        .alertmanager
        .post_alerts(&[alert(&[("alertname", "DiskFull"), ("team", "db")], "disk full")])
        .await;

    let delivered = stack.delivered_at_least(1).await;
    assert_eq!(delivered.len(), 1);
    assert!(content(&delivered[0]).contains("DiskFull"), "{delivered:#?}");
    assert_eq!(
        stack.wecom.send_calls(),
        5,
        "4 failed sends, then the one that got through"
    );

    let answered_503 = answered_503_then_200(&stack)
        .await
        .sum("alertmanager_wecom_webhooks_received_total", &[("code", "503")]);

    // Alertmanager's view: one notification, retried until it succeeded, never failed.
    eventually(
        "Alertmanager records the successful retry",
        DELIVERY_TIMEOUT,
        || async {
            let theirs = stack.alertmanager.metrics().await;
            let requests = theirs.sum("alertmanager_notification_requests_total", &WEBHOOK);
            let failed_requests = theirs.sum("alertmanager_notification_requests_failed_total", &WEBHOOK);
            (requests - failed_requests == 1.0).then_some((requests, failed_requests))
        },
    )
    .await;
    let theirs = stack.alertmanager.metrics().await;
    assert_eq!(
        theirs.sum("alertmanager_notification_requests_failed_total", &WEBHOOK),
        answered_503,
        "every 503 was an Alertmanager request that failed and was retried"
    );
    assert_eq!(theirs.sum("alertmanager_notifications_total", &WEBHOOK), 1.0);
    assert_eq!(
        theirs.sum("alertmanager_notifications_failed_total", &WEBHOOK),
        0.0
    );

    holds_for("delivered once, no further sends", SETTLE, || async {
        stack.wecom.delivered().len() == 1 && stack.wecom.send_calls() == 5
    })
    .await;
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn a_group_retried_after_one_route_failed_does_not_page_the_other_routes_recipients_twice() {
    // One Alertmanager group ({DiskFull, db}) whose alerts land on two routes.
    let stack = Stack::start(Options {
        routes: r#"routes:
  - {name: critical, matchers: ['severity="critical"'], app: ops, msgtype: markdown, to: {users: [alice]}}
  - {name: warning, app: ops, msgtype: text, to: {users: [bob]}}
"#
        .into(),
        ..Options::default()
    })
    .await;
    // bob's route fails for the whole delivery deadline; alice's goes through.
    stack
        .wecom
        .inject_send_faults_for_user("bob", vec![Fault::Errcode(-1); 4]);
    stack
        .alertmanager
        .post_alerts(&[
            alert(
                &[
                    ("alertname", "DiskFull"),
                    ("team", "db"),
                    ("severity", "critical"),
                    ("instance", "db-1"),
                ],
                "disk 99% full",
            ),
            alert(
                &[
                    ("alertname", "DiskFull"),
                    ("team", "db"),
                    ("severity", "warning"),
                    ("instance", "db-2"),
                ],
                "disk 85% full",
            ),
        ])
        .await;

    eventually("bob's message is delivered", DELIVERY_TIMEOUT, || async {
        stack
            .wecom
            .delivered()
            .iter()
            .any(|m| m.users == ["bob"])
            .then_some(())
    })
    .await;
    // Alertmanager's retry carried alice's share again; it was recognised as already sent.
    let ours = answered_503_then_200(&stack).await;
    let critical = |outcome| {
        ours.sum(
            "alertmanager_wecom_notifications_total",
            &[("route", "critical"), ("outcome", outcome)],
        )
    };
    assert_eq!(critical("sent"), 1.0);
    assert!(critical("duplicate") >= 1.0);
    holds_for("alice and bob each paged exactly once", SETTLE, || async {
        let delivered = stack.wecom.delivered();
        let to = |user: &str| delivered.iter().filter(|m| m.users == [user]).count();
        delivered.len() == 2 && to("alice") == 1 && to("bob") == 1
    })
    .await;
    let delivered = stack.wecom.delivered();
    let alice = delivered
        .iter()
        .find(|m| m.users == ["alice"])
        .map(content)
        .unwrap();
    let bob = delivered
        .iter()
        .find(|m| m.users == ["bob"])
        .map(content)
        .unwrap();
    assert!(
        alice.contains("instance=db-1") && !alice.contains("db-2"),
        "{alice}"
    );
    assert!(bob.contains("instance=db-2") && !bob.contains("db-1"), "{bob}");
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn a_permanent_wecom_refusal_is_counted_failed_by_alertmanager_and_not_retried() {
    let stack = Stack::start(Options {
        // Neither user is in the fake's directory: WeCom answers 81013, we answer 422.
        routes: "routes:\n  - {name: strangers, app: ops, msgtype: text, to: {users: [mallory, eve]}}\n"
            .into(),
        // A long group interval, so Alertmanager does not try the group again as a new
        // notification during the test: any second request would be a retry.
        group_interval: "1m",
        ..Options::default()
    })
    .await;
    stack
        .post_and_wait_for_alertmanager_failure("Alertmanager counts the notification as failed")
        .await;
    let ours = stack.service.metrics().await;
    assert_eq!(
        ours.sum("alertmanager_wecom_webhooks_received_total", &[("code", "422")]),
        1.0
    );
    assert_eq!(
        ours.sum(
            "alertmanager_wecom_wecom_api_requests_total",
            &[("endpoint", "message/send"), ("errcode", "81013")]
        ),
        1.0
    );
    assert!(stack.wecom.delivered().is_empty());

    holds_for(
        "no retry: one notification, one request, one send",
        SETTLE,
        || async {
            let theirs = stack.alertmanager.metrics().await;
            theirs.sum("alertmanager_notifications_total", &WEBHOOK) == 1.0
                && theirs.sum("alertmanager_notifications_failed_total", &WEBHOOK) == 1.0
                && theirs.sum("alertmanager_notification_requests_total", &WEBHOOK) == 1.0
                && theirs.sum("alertmanager_notification_requests_failed_total", &WEBHOOK) == 1.0
                && stack.wecom.send_calls() == 1
        },
    )
    .await;
}
