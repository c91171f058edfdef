//! Inbound authentication, as Alertmanager's `http_config` sends it.

use crate::helpers::*;

const BEARER: &str = "TESTSECRET-webhook-token-77";

async fn app_with_auth(auth: &str) -> TestApp {
    spawn(TestConfig {
        top_extra: format!("server:\n  auth:\n{auth}"),
        ..TestConfig::default()
    })
    .await
}

async fn post_with(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/alerts", app.address))
        .header("Content-Type", "application/json")
        .body(CRASHLOOP);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_webhook_without_the_right_bearer_token_is_refused_and_nothing_is_sent() {
    let app = app_with_auth(&format!("    bearer_token: {BEARER}\n")).await;
    for authorization in [None, Some("Bearer wrong"), Some("Basic YW06cHc=")] {
        let response = post_with(&app, authorization).await;
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(SECRET_MARK));
    }
    assert_eq!(app.wecom.send_calls() + app.wecom.gettoken_calls(), 0);
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"alertmanager_wecom_webhooks_received_total{code="401"}"#
        ),
        3.0
    );

    let response = post_with(&app, Some(&format!("Bearer {BEARER}"))).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.wecom.delivered().len(), 1);
}

#[tokio::test]
async fn the_bearer_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{BEARER}\n")).unwrap();
    let app = app_with_auth(&format!("    bearer_token_file: {}\n", file.display())).await;
    assert_eq!(
        post_with(&app, Some(&format!("Bearer {BEARER}")))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(post_with(&app, None).await.status().as_u16(), 401);
}

#[tokio::test]
async fn basic_auth_credentials_are_accepted() {
    let app = app_with_auth("    basic_auth: {username: alertmanager, password: TESTSECRET-pw}\n").await;
    // alertmanager:TESTSECRET-pw
    let good = "Basic YWxlcnRtYW5hZ2VyOlRFU1RTRUNSRVQtcHc=";
    assert_eq!(post_with(&app, Some(good)).await.status().as_u16(), 200);
    let response = post_with(&app, Some("Basic YWxlcnRtYW5hZ2VyOndyb25n")).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
}

#[tokio::test]
async fn metrics_and_health_stay_open_unless_protected() {
    let open = app_with_auth(&format!("    bearer_token: {BEARER}\n")).await;
    for path in ["/metrics", "/-/healthy", "/-/ready"] {
        let status = open
            .http
            .get(format!("{}{path}", open.address))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let closed = app_with_auth(&format!(
        "    bearer_token: {BEARER}\n    protect_metrics: true\n    protect_health: true\n"
    ))
    .await;
    for path in ["/metrics", "/-/healthy", "/-/ready"] {
        let url = format!("{}{path}", closed.address);
        assert_eq!(
            closed.http.get(&url).send().await.unwrap().status().as_u16(),
            401,
            "{path}"
        );
        let authorized = closed.http.get(&url).bearer_auth(BEARER).send().await.unwrap();
        assert_eq!(authorized.status().as_u16(), 200, "{path}");
    }
}
