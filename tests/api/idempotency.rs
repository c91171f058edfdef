//! Alertmanager delivers at least once: a group re-sent after a partial failure must not
//! reach anyone twice.

use crate::fake_wecom::Fault;
use crate::helpers::*;

const TWO_ROUTES: &str = r#"routes:
  - {name: pay, matchers: ['team="pay"'], app: ops, msgtype: markdown, to: {users: [alice]}}
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: text, to: {users: [bob]}}
"#;

fn group_for_both_routes() -> String {
    crashloop_with(r#""alertname":"DiskFull","team":"db""#)
}

#[tokio::test]
async fn a_retried_group_only_delivers_the_routes_that_failed() {
    let app = spawn(TestConfig::routes(TWO_ROUTES)).await;
    // bob's route fails for the whole deadline; alice's goes through.
    app.wecom
        .inject_send_faults_for_user("bob", vec![Fault::Errcode(-1); 4]);
    let payload = group_for_both_routes();

    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(app.wecom.delivered().len(), 1);
    assert_eq!(app.wecom.delivered()[0].users, vec!["alice"]);

    // Alertmanager retries the same notification.
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    let outcomes: Vec<&str> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["duplicate", "sent"]);
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 2, "alice is not paged twice");
    assert_eq!(delivered[1].users, vec!["bob"]);
}

#[tokio::test]
async fn a_group_sent_again_unchanged_is_not_delivered_again() {
    let app = spawn_app().await;
    assert_eq!(app.post(CRASHLOOP).await.0, 200);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "duplicate");
    assert_eq!(app.wecom.delivered().len(), 1);
    assert_eq!(app.wecom.send_calls(), 1, "not even asked of WeCom");
}

#[tokio::test]
async fn a_changed_group_is_delivered() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    let resolved = CRASHLOOP
        .replace(r#""status":"firing""#, r#""status":"resolved""#)
        .replace("0001-01-01T00:00:00Z", "2026-11-25T18:00:00Z");
    let (status, _) = app.post(&resolved).await;
    assert_eq!(status, 200);
    assert_eq!(app.wecom.delivered().len(), 2);
}

#[tokio::test]
async fn with_the_dedup_window_at_zero_every_notification_is_sent() {
    let app = spawn(TestConfig {
        wecom_extra: "  dedup_window: 0s\n".into(),
        ..TestConfig::default()
    })
    .await;
    app.post(CRASHLOOP).await;
    app.post(CRASHLOOP).await;
    assert_eq!(app.wecom.delivered().len(), 2);
}

#[tokio::test]
async fn a_template_whose_text_changes_with_time_still_does_not_page_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ticking.hbs"),
        "{{#each alerts}}{{labels.alertname}} firing for {{duration startsAt}}\n{{/each}}",
    )
    .unwrap();
    let wecom = start_fake_wecom().await;
    let routes = TWO_ROUTES.replace("msgtype: markdown,", "msgtype: text, template: ticking,");
    let yaml = config_yaml(&TestConfig::routes(&routes), &wecom.base_url()).replace(
        "templates:\n  timezone: Asia/Shanghai",
        &format!(
            "templates:\n  timezone: Asia/Shanghai\n  dir: '{}'",
            dir.path().display()
        ),
    );
    let app = spawn_with_yaml(&yaml, wecom).await;
    app.wecom
        .inject_send_faults_for_user("bob", vec![Fault::Errcode(-1); 4]);
    let payload = group_for_both_routes();
    let (status, _) = app.post(&payload).await;
    assert_eq!(status, 503);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // "firing for" moves on
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "duplicate", "{report}");
    let to_alice = app
        .wecom
        .delivered()
        .iter()
        .filter(|m| m.users == ["alice"])
        .count();
    assert_eq!(to_alice, 1);
}
