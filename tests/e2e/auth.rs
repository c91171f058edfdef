//! Inbound auth: only callers presenting our bearer token get anything sent.

use std::time::Duration;

use alertmanager_wecom::render::samples::CRASHLOOP;

use crate::harness::*;

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn a_webhook_without_the_right_bearer_token_is_refused_and_nothing_is_sent() {
    let stack = Stack::start(Options {
        routes: "routes:\n  - {name: ops, app: ops, msgtype: text, to: {users: [alice]}}\n".into(),
        // Alertmanager's credentials_file holds a stale token.
        alertmanager_token: "TESTSECRET-e2e-stale-token".into(),
        // No second attempt at the group during the test (401 is not retried either).
        group_interval: "1m",
        ..Options::default()
    })
    .await;
    stack
        .post_and_wait_for_alertmanager_failure("Alertmanager counts the refused notification as failed")
        .await;
    let theirs = stack.alertmanager.metrics().await;
    assert_eq!(
        theirs.sum("alertmanager_notification_requests_total", &WEBHOOK),
        1.0
    );
    assert_eq!(
        theirs.sum("alertmanager_notification_requests_failed_total", &WEBHOOK),
        1.0
    );
    assert!(
        stack.alertmanager_log().contains("401"),
        "Alertmanager logs the 401 it got"
    );

    // Straight to our service: no token, then a wrong one.
    for token in [None, Some("TESTSECRET-e2e-wrong-token"), Some("")] {
        let response = stack.service.post_alerts(CRASHLOOP, token).await;
        assert_eq!(response.status(), 401, "token {token:?}");
        let challenge = response
            .headers()
            .get("WWW-Authenticate")
            .unwrap_or_else(|| panic!("token {token:?}: 401 without WWW-Authenticate"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Bearer"), "token {token:?}: {challenge}");
    }
    let ours = stack.service.metrics().await;
    assert_eq!(
        ours.sum("alertmanager_wecom_webhooks_received_total", &[("code", "401")]),
        4.0,
        "Alertmanager's request and our three"
    );
    assert_eq!(stack.wecom.send_calls(), 0, "nothing was sent to WeCom");
    assert_eq!(stack.wecom.gettoken_calls(), 0, "not even a token was fetched");

    // The same request with the right token goes through: the 401s were about the token.
    let response = stack.service.post_alerts(CRASHLOOP, Some(WEBHOOK_TOKEN)).await;
    assert_eq!(response.status(), 200);
    eventually(
        "the authorised request is delivered",
        Duration::from_secs(5),
        || async { (stack.wecom.delivered().len() == 1).then_some(()) },
    )
    .await;
}
