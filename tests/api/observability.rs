//! Metrics are there from the first scrape, and secrets never leave the process.

use std::time::Duration;

use crate::fake_wecom::{Fault, TOKEN_PREFIX};
use crate::helpers::*;

#[tokio::test]
async fn every_known_series_exists_at_zero_before_any_traffic() {
    let app = spawn_app().await;
    let metrics = app.metrics().await;
    for sample in [
        r#"alertmanager_wecom_alerts_received_total{status="firing"}"#,
        r#"alertmanager_wecom_notifications_total{outcome="sent",route="db",target="ops"}"#,
        r#"alertmanager_wecom_notifications_total{outcome="failed_permanent",route="default",target="ops"}"#,
        r#"alertmanager_wecom_wecom_api_requests_total{endpoint="message/send",errcode="0"}"#,
        r#"alertmanager_wecom_wecom_api_requests_total{endpoint="gettoken",errcode="40001"}"#,
        r#"alertmanager_wecom_token_refreshes_total{app="ops",reason="initial"}"#,
        r#"alertmanager_wecom_invalid_recipients_total{app="ops",kind="party"}"#,
        "alertmanager_wecom_alerts_unrouted_total",
    ] {
        assert_eq!(metric(&metrics, sample), 0.0, "{sample}");
    }
    assert!(metrics.contains("alertmanager_wecom_wecom_api_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn a_delivery_is_counted_by_route_outcome_and_api_call() {
    let app = spawn_app().await;
    app.post(CRASHLOOP).await;
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_alerts_received_total{status="firing"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_notifications_total{outcome="sent",route="pay",target="ops"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_wecom_api_requests_total{endpoint="message/send",errcode="0"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_wecom_api_requests_total{endpoint="gettoken",errcode="0"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_webhooks_received_total{code="200"}"#
        ),
        1.0
    );
}

/// Drives every path that handles a secret or a token — fetch, rejection and refresh,
/// timeouts, transport errors, bad credentials — then searches everything observable.
#[tokio::test]
async fn no_secret_or_token_appears_in_logs_metrics_or_answers() {
    let app = spawn_app().await;
    let mut answers = Vec::new();
    let post = |body: String| {
        let app = &app;
        async move { app.post(&body).await.1.to_string() }
    };
    answers.push(post(CRASHLOOP.into()).await);
    app.wecom.invalidate_tokens();
    answers.push(post(RESOLVED.into()).await);
    app.wecom.inject_send_faults(vec![
        Fault::Delay(Duration::from_millis(1200)),
        Fault::GarbageBody,
        Fault::HttpStatus(502),
    ]);
    answers.push(post(UNICODE_MARKUP.into()).await);
    app.wecom.inject_send_faults(vec![Fault::Errcode(40058); 2]);
    answers.push(post(CRASHLOOP.replace("api-7d9f", "api-x")).await);

    // Bad credentials and an unreachable WeCom.
    let wecom = start_fake_wecom().await;
    let wrong = TestConfig {
        secret_line: "secret: TESTSECRET-wrong-secret".into(),
        ..TestConfig::default()
    };
    let bad = spawn_with_yaml(&config_yaml(&wrong, &wecom.base_url()), wecom).await;
    answers.push(bad.post(CRASHLOOP).await.1.to_string());
    let unreachable = spawn_with_yaml(
        &config_yaml(&TestConfig::default(), "http://127.0.0.1:9/cgi-bin/"),
        start_fake_wecom().await,
    )
    .await;
    answers.push(unreachable.post(CRASHLOOP).await.1.to_string());

    let tokens = app.wecom.issued_tokens();
    assert!(tokens.len() >= 2, "the scenario fetched tokens");
    let observable = [
        captured_logs(),
        app.metrics().await,
        bad.metrics().await,
        answers.join("\n"),
    ];
    for text in &observable {
        assert!(!text.contains(SECRET_MARK), "a secret leaked:\n{text}");
        assert!(!text.contains(TOKEN_PREFIX), "a token leaked:\n{text}");
        assert!(!text.contains("access_token="), "a token URL leaked:\n{text}");
        assert!(!text.contains("corpsecret="), "a secret URL leaked:\n{text}");
        for token in &tokens {
            assert!(!text.contains(token.as_str()));
        }
    }
}
