//! What `POST /alerts` accepts, and how it refuses what it cannot use.

use crate::helpers::*;

#[tokio::test]
async fn malformed_bodies_are_answered_400_saying_what_and_where() {
    let app = spawn_app().await;
    let cases = [
        ("", "empty"),
        ("{not json", "top level"),
        ("[]", "top level"),
        (r#"{"status":"firing"}"#, "missing field `alerts`"),
        (r#"{"alerts":[]}"#, "no alerts"),
        (r#"{"alerts":"many"}"#, "alerts"),
        (
            r#"{"alerts":[{"status":"firing","labels":{"severity":3}}]}"#,
            "alerts[0].labels.severity",
        ),
        (r#"{"alerts":[{"labels":{}}]}"#, "alerts[0]"),
        (
            r#"{"alerts":[{"status":"firing","labels":{},"startsAt":"yesterday"}]}"#,
            "alerts[0].startsAt",
        ),
    ];
    for (body, expected) in cases {
        let (status, report) = app.post(body).await;
        assert_eq!(status, 400, "{body:?}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "{body:?}: {error:?} should mention {expected:?}"
        );
    }
    assert_eq!(app.wecom.send_calls(), 0);
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"alertmanager_wecom_webhooks_received_total{code="400"}"#
        ),
        cases.len() as f64
    );
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_answered_415() {
    let app = spawn_app().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app.http.post(format!("{}/alerts", app.address)).body(CRASHLOOP);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
    }
    let response = app
        .http
        .post(format!("{}/alerts", app.address))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(CRASHLOOP)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_answered_413() {
    let app = spawn(TestConfig {
        top_extra: "server:\n  max_body_bytes: 2000\n".into(),
        ..TestConfig::default()
    })
    .await;
    let (status, _) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200);
    let big = payload_with_alerts(20, r#""alertname":"Big","team":"pay""#, "x");
    let (status, report) = app.post(&big).await;
    assert_eq!(status, 413, "{report}");
    assert!(report["error"].as_str().unwrap().contains("max_body_bytes"));
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_answered_413_and_one_within_is_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn(TestConfig {
        top_extra: "server:\n  max_body_bytes: 2000\n".into(),
        ..TestConfig::default()
    })
    .await;
    // No Content-Length: the limit can only be enforced while reading.
    let post_chunked = |body: String| {
        let address = app.address.trim_start_matches("http://").to_string();
        async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let head = "POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            for piece in body.as_bytes().chunks(500) {
                let chunk = format!("{:x}\r\n{}\r\n", piece.len(), String::from_utf8_lossy(piece));
                // A refused body may close the connection before it is all written.
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let answer = post_chunked(CRASHLOOP.to_string()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let big = payload_with_alerts(20, r#""alertname":"Big","team":"pay""#, "x");
    let answer = post_chunked(big).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_body_bytes"), "{answer}");
    assert_eq!(app.wecom.send_calls(), 1);
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let app = spawn_app().await;
    for path in ["/-/healthy", "/-/ready"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_nothing_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn(TestConfig {
        top_extra: "server: {request_timeout: 1s}\n".into(),
        ..TestConfig::default()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    // Headers announce 500 bytes; only 10 arrive.
    let head =
        "POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"alerts\":").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server answered instead of waiting forever");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body not received in time"), "{answer}");
    assert_eq!(app.wecom.send_calls(), 0);
}
