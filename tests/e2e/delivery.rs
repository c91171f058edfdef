//! The happy path: Alertmanager's groups reach the routed recipients, then resolve.

use crate::harness::*;

/// Two routes by team, to different users and in different msgtypes.
const ROUTES_BY_TEAM: &str = r#"routes:
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: markdown, to: {users: [alice]}}
  - {name: pay, matchers: ['team="pay"'], app: ops, msgtype: text, to: {users: [bob]}}
"#;

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn firing_groups_reach_their_routed_recipients_as_one_message_each_and_then_resolve() {
    let stack = Stack::start(Options {
        routes: ROUTES_BY_TEAM.into(),
        ..Options::default()
    })
    .await;
    let disk_1 = alert(
        &[("alertname", "DiskFull"), ("team", "db"), ("instance", "db-1")],
        "disk 97% full on db-1",
    );
    let disk_2 = alert(
        &[("alertname", "DiskFull"), ("team", "db"), ("instance", "db-2")],
        "disk 95% full on db-2",
    );
    let latency = alert(
        &[
            ("alertname", "HighLatency"),
            ("team", "pay"),
            ("instance", "pay-1"),
        ],
        "p99 latency 2.3s on pay-1",
    );
    stack
        .alertmanager
        .post_alerts(&[disk_1.clone(), disk_2.clone(), latency.clone()])
        .await;

    // Alertmanager groups by alertname+team: {DiskFull, db} holds two alerts,
    // {HighLatency, pay} one. Each group is one webhook, each becomes one WeCom message.
    let delivered = stack.delivered_at_least(2).await;
    assert_eq!(delivered.len(), 2, "one message per group: {delivered:#?}");
    let to_alice: Vec<_> = delivered.iter().filter(|m| m.users == ["alice"]).collect();
    let to_bob: Vec<_> = delivered.iter().filter(|m| m.users == ["bob"]).collect();
    assert_eq!((to_alice.len(), to_bob.len()), (1, 1), "{delivered:#?}");

    let db = content(to_alice[0]);
    assert_eq!(to_alice[0].msgtype, "markdown");
    assert_eq!(
        db.matches("[FIRING]").count(),
        2,
        "both DiskFull alerts in one message:\n{db}"
    );
    for text in [
        "DiskFull",
        "instance=db-1",
        "instance=db-2",
        "disk 97% full on db-1",
    ] {
        assert!(db.contains(text), "{text:?} missing from:\n{db}");
    }
    assert!(!db.contains("HighLatency"), "the pay group went to alice:\n{db}");

    let pay = content(to_bob[0]);
    assert_eq!(to_bob[0].msgtype, "text");
    assert_eq!(pay.matches("[FIRING]").count(), 1, "{pay}");
    for text in ["HighLatency", "instance=pay-1", "p99 latency 2.3s on pay-1"] {
        assert!(pay.contains(text), "{text:?} missing from:\n{pay}");
    }

    // Prometheus stops firing them: the same alerts with endsAt in the past.
    stack
        .alertmanager
        .post_alerts(&[resolved(&disk_1), resolved(&disk_2), resolved(&latency)])
        .await;
    let delivered = stack.delivered_at_least(4).await;
    assert_eq!(
        delivered.len(),
        4,
        "one resolved message per group: {delivered:#?}"
    );
    let resolutions = &delivered[2..];
    let db = resolutions
        .iter()
        .find(|m| m.users == ["alice"])
        .map(content)
        .expect("alice is told DiskFull resolved");
    assert_eq!(
        db.matches("[RESOLVED]").count(),
        2,
        "both DiskFull alerts resolved:\n{db}"
    );
    assert!(db.contains("DiskFull"), "{db}");
    assert!(!db.contains("[FIRING]"), "{db}");
    let pay = resolutions
        .iter()
        .find(|m| m.users == ["bob"])
        .map(content)
        .expect("bob is told HighLatency resolved");
    assert!(pay.contains("[RESOLVED] HighLatency"), "{pay}");
    assert!(!pay.contains("[FIRING]"), "{pay}");

    // Four webhooks, all answered 200.
    stack
        .service
        .wait_for_counter("alertmanager_wecom_webhooks_received_total", &[], 4.0)
        .await;
    let ours = stack.service.metrics().await;
    assert_eq!(
        ours.sum("alertmanager_wecom_webhooks_received_total", &[("code", "200")]),
        4.0
    );
    let theirs = stack.alertmanager.metrics().await;
    assert_eq!(
        theirs.sum(
            "alertmanager_notifications_failed_total",
            &[("integration", "webhook")]
        ),
        0.0
    );
}
