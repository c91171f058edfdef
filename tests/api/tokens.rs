//! Access tokens: cached, fetched once under concurrency, replaced when WeCom rejects them,
//! and never fetched in a loop with bad credentials.

use futures_util::future::join_all;

use crate::fake_wecom::Fault;
use crate::helpers::*;

#[tokio::test]
async fn a_hundred_concurrent_webhooks_cause_exactly_one_gettoken() {
    // A party is budgeted like a member: lift the app's limit so that it does not come
    // into play.
    let app = spawn(TestConfig {
        secret_line: format!("secret: {OPS_SECRET}\n    rate_limit: {{per_minute: 200}}"),
        ..TestConfig::routes("routes:\n  - {name: all, app: ops, msgtype: markdown, to: {parties: [2]}}\n")
    })
    .await;
    let posts = (0..100).map(|i| {
        let payload = CRASHLOOP.replace("api-7d9f", &format!("api-{i}"));
        let app = &app;
        async move { app.post_alerts(&payload).await.status().as_u16() }
    });
    let statuses = join_all(posts).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(app.wecom.gettoken_calls(), 1);
    assert_eq!(app.wecom.delivered().len(), 100);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_token_refreshes_total{app="ops",reason="initial"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_cached_token_is_reused_across_webhooks() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    app.post(RESOLVED).await;
    app.post(UNICODE_MARKUP).await;
    assert_eq!(app.wecom.gettoken_calls(), 1);
    assert_eq!(app.wecom.delivered().len(), 3);
}

#[tokio::test]
async fn a_token_invalidated_early_40014_is_replaced_and_the_send_retried_once() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    app.wecom.invalidate_tokens();
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.gettoken_calls(), 2);
    assert_eq!(app.wecom.delivered().len(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_token_refreshes_total{app="ops",reason="rejected"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_wecom_api_requests_total{endpoint="message/send",errcode="40014"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn an_expired_token_42001_is_replaced_and_the_send_retried_once() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    app.wecom.expire_tokens();
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.gettoken_calls(), 2);
    assert_eq!(app.wecom.delivered().len(), 2);
}

#[tokio::test]
async fn concurrent_senders_rejected_with_the_same_token_share_one_refresh() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    app.wecom.invalidate_tokens();
    let posts = (0..20).map(|i| {
        let payload = CRASHLOOP.replace("api-7d9f", &format!("api-{i}"));
        let app = &app;
        async move { app.post_alerts(&payload).await.status().as_u16() }
    });
    let statuses = join_all(posts).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(app.wecom.gettoken_calls(), 2);
}

#[tokio::test]
async fn a_token_rejected_twice_in_a_row_is_not_refreshed_in_a_loop() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    // Every send rejects the token: one refresh, then give up for this delivery.
    app.wecom.inject_send_faults(vec![Fault::Errcode(40014); 8]);
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(app.wecom.gettoken_calls(), 2, "one refresh, no loop");
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error_and_gettoken_is_not_hammered() {
    let wecom = start_fake_wecom().await;
    let config = TestConfig {
        secret_line: "secret: TESTSECRET-wrong-one".into(),
        ..TestConfig::default()
    };
    let app = spawn_with_yaml(&config_yaml(&config, &wecom.base_url()), wecom).await;
    let (status, report) = app.post(CRASHLOOP).await;
    // Answered as retryable: once the operator fixes the secret, Alertmanager's retry delivers.
    assert_eq!(status, 503, "{report}");
    let error = report["routes"][0]["error"].as_str().unwrap();
    assert!(error.contains("40001") && error.contains("app ops"), "{error}");
    assert!(!error.contains(SECRET_MARK), "{error}");
    for _ in 0..5 {
        let (status, _) = app.post(CRASHLOOP).await;
        assert_eq!(status, 503);
    }
    assert_eq!(
        app.wecom.gettoken_calls(),
        1,
        "backing off instead of retrying gettoken"
    );
    assert_eq!(app.wecom.send_calls(), 0);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_token_failures_total{app="ops",reason="credentials"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn an_untrusted_caller_ip_60020_is_named_clearly() {
    let app = spawn_app().await;
    app.wecom.inject_gettoken_faults(vec![Fault::Errcode(60020)]);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 503, "{report}");
    let error = report["routes"][0]["error"].as_str().unwrap();
    assert!(error.contains("trusted IP"), "{error}");
    assert!(captured_logs().contains("trusted IP"));
}

#[tokio::test]
async fn a_transient_gettoken_failure_is_retried_within_the_deadline() {
    let app = spawn_app().await;
    app.wecom
        .inject_gettoken_faults(vec![Fault::HttpStatus(502), Fault::Errcode(-1)]);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.gettoken_calls(), 3);
    assert_eq!(app.wecom.delivered().len(), 1);
}
