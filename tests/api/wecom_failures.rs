//! WeCom failures become the right answer to Alertmanager: retried inside the deadline when
//! transient (503 if that was not enough), 422 when WeCom refuses the message for good.

use std::time::Duration;

use crate::fake_wecom::Fault;
use crate::helpers::*;

#[tokio::test]
async fn transient_errors_are_retried_and_the_message_delivered_once() {
    let faults = [
        Fault::Errcode(-1),
        Fault::Errcode(45009),
        Fault::Errcode(45033),
        Fault::HttpStatus(502),
        Fault::GarbageBody,
    ];
    for fault in faults {
        let app = spawn_app().await;
        app.wecom.inject_send_faults(vec![fault.clone(), fault.clone()]);
        let (status, report) = app.post(CRASHLOOP).await;
        assert_eq!(status, 200, "{fault:?}: {report}");
        assert_eq!(app.wecom.send_calls(), 3, "{fault:?}");
        assert_eq!(app.wecom.delivered().len(), 1, "{fault:?}");
    }
}

#[tokio::test]
async fn a_slow_reply_times_out_and_the_retry_is_not_delivered_twice() {
    let app = spawn_app().await;
    // Longer than wecom.timeout (1s): we give up on the call, WeCom still delivers it.
    app.wecom
        .inject_send_faults(vec![Fault::Delay(Duration::from_millis(1500))]);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.send_calls(), 2);
    // WeCom's duplicate check (enable_duplicate_check) drops the identical retry.
    assert_eq!(app.wecom.delivered().len(), 1);
}

#[tokio::test]
async fn a_transient_failure_that_outlives_the_deadline_is_answered_503() {
    let app = spawn_app().await;
    app.wecom.inject_send_faults(vec![Fault::Errcode(-1); 10]);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "failed_transient");
    assert_eq!(report["routes"][0]["errcode"], -1);
    assert_eq!(app.wecom.send_calls(), 4, "at most 3 retries");
    assert!(app.wecom.delivered().is_empty());
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_notifications_total{outcome="failed_transient",route="pay",target="ops"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn recipients_all_outside_the_app_are_a_permanent_refusal_answered_422() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: strangers, app: ops, msgtype: markdown, to: {users: [mallory, eve]}}\n",
    ))
    .await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["routes"][0]["route"], "strangers");
    assert_eq!(report["routes"][0]["errcode"], 81013);
    assert_eq!(report["routes"][0]["outcome"], "failed_permanent");
    assert_eq!(app.wecom.send_calls(), 1, "a permanent refusal is not retried");
}

#[tokio::test]
async fn an_agent_id_that_is_not_the_apps_is_answered_422() {
    let wecom = start_fake_wecom().await;
    let yaml = config_yaml(&TestConfig::default(), &wecom.base_url())
        .replace(&format!("agent_id: {OPS_AGENT}"), "agent_id: 4242");
    let app = spawn_with_yaml(&yaml, wecom).await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 422, "{report}");
    let errcode = report["routes"][0]["errcode"].as_i64().unwrap();
    assert!([40056, 301002].contains(&errcode), "{report}");
}

#[tokio::test]
async fn one_route_failing_for_good_does_not_stop_the_others() {
    let app = spawn(TestConfig::routes(
        r#"routes:
  - {name: pay, matchers: ['team="pay"'], app: ops, msgtype: markdown, to: {users: [alice]}, }
  - {name: db, matchers: ['team="db"'], app: ops, msgtype: text, to: {users: [nobody]}}
"#,
    ))
    .await;
    let payload = crashloop_with(r#""alertname":"DiskFull","team":"db""#);
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(app.wecom.delivered().len(), 1);
    assert_eq!(app.wecom.delivered()[0].users, vec!["alice"]);
}
