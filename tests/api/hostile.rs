//! The HTTP edge under hostile load and slow clients: bodies that trickle in, callers that
//! give up while their webhook waits, compressed bodies (zip bombs included) and methods an
//! endpoint does not take. Figures worth reporting are printed with `eprintln!`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake_wecom::Fault;
use crate::helpers::*;

const TOKEN: &str = "TESTSECRET-edge-token";

/// One route to party 2, so each webhook is one message/send.
const ONE_ROUTE: &str = "routes:\n  - {name: all, app: ops, msgtype: text, to: {parties: [2]}}\n";

/// The crashloop fixture as alert number `i` (below 1000): a notification of its own.
fn webhook(i: usize) -> String {
    CRASHLOOP.replace("api-7d9f", &format!("api-{i:03}"))
}

/// Whether WeCom got the message of [`webhook`] `i`.
fn was_delivered(app: &TestApp, i: usize) -> bool {
    let pod = format!("api-{i:03}");
    app.wecom
        .delivered()
        .iter()
        .any(|message| message.body.to_string().contains(&pod))
}

/// An app whose WeCom calls may take up to 5 s (the usual test setup gives them 1 s), so a
/// [`Fault::Delay`] can hold a delivery slot that long without a retry.
async fn spawn_patient(top_extra: &str) -> TestApp {
    let wecom = start_fake_wecom().await;
    let config = TestConfig {
        routes: ONE_ROUTE.into(),
        top_extra: top_extra.into(),
        ..TestConfig::default()
    };
    let yaml = config_yaml(&config, &wecom.base_url())
        .replace("  timeout: 1s\n", "  timeout: 5s\n")
        .replace("delivery_deadline: 3s", "delivery_deadline: 6s");
    spawn_with_yaml(&yaml, wecom).await
}

/// A connection that has sent the head of `POST /alerts` announcing `length` bytes.
async fn open(app: &TestApp, length: usize, extra_headers: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n{extra_headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Sends one byte a second (12 at most) until the server answers; the answer and when it came.
async fn trickle(stream: TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let mut answer = Vec::new();
    let read = reader.read_to_end(&mut answer);
    tokio::pin!(read);
    for _ in 0..12 {
        // A write that fails means the server closed the connection: its answer is there.
        let _ = writer.write_all(b" ").await;
        tokio::select! {
            _ = &mut read => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), &mut read).await;
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

/// The head of what the server answered within `within` on a connection that sends
/// nothing more.
async fn answer_within(mut stream: TcpStream, within: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 1024];
        while !answer.windows(4).any(|end| end == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn post_timed(app: &TestApp, body: String, token: Option<&str>) -> (u16, Duration) {
    let started = Instant::now();
    let mut request = app
        .http
        .post(format!("{}/alerts", app.address))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), started.elapsed())
}

#[tokio::test]
async fn a_webhook_is_answered_promptly_while_ten_bodies_trickle_in() {
    let app = spawn(TestConfig {
        top_extra: "server: {body_timeout: 5s}\n".into(),
        ..TestConfig::default()
    })
    .await;
    let mut tricklers = Vec::new();
    for _ in 0..10 {
        tricklers.push(tokio::spawn(trickle(open(&app, 1000, "").await)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, latency) = post_timed(&app, CRASHLOOP.to_string(), None).await;
    eprintln!("a webhook behind 10 trickling bodies was answered {status} in {latency:?}");
    assert_eq!(status, 200);
    assert!(
        latency < Duration::from_millis(2500),
        "{latency:?}: well under the 5 s a trickle may take"
    );
    for trickler in tricklers {
        let (answer, after) = trickler.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
        assert!(after < Duration::from_secs(9), "{after:?}");
    }
    assert_eq!(app.wecom.send_calls(), 1);
}

#[tokio::test]
async fn with_auth_slow_bodies_are_refused_unread_or_read_without_blocking_others() {
    let app = spawn(TestConfig {
        top_extra: format!("server:\n  body_timeout: 5s\n  auth: {{bearer_token: {TOKEN}}}\n"),
        ..TestConfig::default()
    })
    .await;
    // Without credentials: refused on the headers alone, no byte of the body sent.
    let unauthenticated: Vec<_> = join_all((0..5).map(|_| open(&app, 1000, ""))).await;
    let started = Instant::now();
    for answer in join_all(
        unauthenticated
            .into_iter()
            .map(|stream| answer_within(stream, Duration::from_secs(3))),
    )
    .await
    {
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    eprintln!(
        "5 unauthenticated slow bodies were refused 401 unread within {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let authorization = format!("Authorization: Bearer {TOKEN}\r\n");
    let mut tricklers = Vec::new();
    for _ in 0..10 {
        tricklers.push(tokio::spawn(trickle(open(&app, 1000, &authorization).await)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, latency) = post_timed(&app, CRASHLOOP.to_string(), Some(TOKEN)).await;
    eprintln!("with auth, a webhook behind 10 authenticated trickling bodies: {status} in {latency:?}");
    assert_eq!(status, 200);
    assert!(latency < Duration::from_millis(2500), "{latency:?}");
    for trickler in tricklers {
        let (answer, _) = trickler.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    assert_eq!(app.wecom.send_calls(), 1);
}

#[tokio::test]
async fn bodies_beyond_the_buffered_bytes_budget_are_answered_503_with_retry_after() {
    // Room for one body at a time: a webhook whose body is read and waits for the one
    // delivery slot holds it, so the next cannot even be read.
    let size = webhook(1).len();
    let app = spawn_patient(&format!(
        "server: {{max_concurrent_requests: 1, max_body_bytes: {size}, \
         max_buffered_body_bytes: {size}, body_timeout: 1s, queue_timeout: 10s}}\n"
    ))
    .await;
    app.wecom
        .inject_send_faults(vec![Fault::Delay(Duration::from_secs(3))]);
    let slow = tokio::spawn({
        let (http, address) = (app.http.clone(), app.address.clone());
        async move {
            let response = http
                .post(format!("{address}/alerts"))
                .header("Content-Type", "application/json")
                .body(webhook(0))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = tokio::spawn({
        let (http, address) = (app.http.clone(), app.address.clone());
        async move {
            let response = http
                .post(format!("{address}/alerts"))
                .header("Content-Type", "application/json")
                .body(webhook(1))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let response = app.post_alerts(&webhook(2)).await;
    let waited = started.elapsed();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let report: serde_json::Value = response.json().await.unwrap();
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("max_buffered_body_bytes"), "{error}");
    eprintln!("a body that found no budget was answered 503 after {waited:?}: {error}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    assert!(!was_delivered(&app, 2));
}

#[tokio::test]
async fn callers_that_give_up_while_queued_are_never_delivered() {
    let app =
        spawn_patient("server: {max_concurrent_requests: 1, max_queued_requests: 5, queue_timeout: 10s}\n")
            .await;
    // The one slot is busy for 3 s.
    app.wecom
        .inject_send_faults(vec![Fault::Delay(Duration::from_secs(3))]);
    let busy = tokio::spawn({
        let (http, address) = (app.http.clone(), app.address.clone());
        async move {
            http.post(format!("{address}/alerts"))
                .header("Content-Type", "application/json")
                .body(webhook(0))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Five callers fill the queue and give up after 1 s, as Alertmanager does when its
    // notification times out.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let gave_up = join_all((1..=5).map(|i| {
        let impatient = impatient.clone();
        let address = app.address.clone();
        async move {
            impatient
                .post(format!("{address}/alerts"))
                .header("Content-Type", "application/json")
                .body(webhook(i))
                .send()
                .await
        }
    }))
    .await;
    assert!(gave_up
        .iter()
        .all(|answer| answer.as_ref().is_err_and(reqwest::Error::is_timeout)));
    // Their places are free again as soon as the server sees the connections close: five
    // more fit in the queue.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (late, _) = tokio::join!(
        join_all((6..=10).map(|i| post_timed(&app, webhook(i), None))),
        async {
            assert_eq!(busy.await.unwrap(), 200);
        }
    );
    assert!(late.iter().all(|(status, _)| *status == 200), "{late:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let abandoned: Vec<usize> = (1..=5).filter(|&i| was_delivered(&app, i)).collect();
    eprintln!(
        "abandoned webhooks delivered anyway: {} of 5 {abandoned:?}",
        abandoned.len()
    );
    assert!(abandoned.is_empty(), "{abandoned:?}");
    assert!((6..=10).all(|i| was_delivered(&app, i)));
    assert_eq!(app.wecom.send_calls(), 6);
}

#[tokio::test]
async fn a_webhook_that_waits_past_queue_timeout_is_answered_503_and_never_delivered() {
    let app =
        spawn_patient("server: {max_concurrent_requests: 1, max_queued_requests: 5, queue_timeout: 1s}\n")
            .await;
    app.wecom
        .inject_send_faults(vec![Fault::Delay(Duration::from_secs(3))]);
    let busy = tokio::spawn({
        let (http, address) = (app.http.clone(), app.address.clone());
        async move {
            http.post(format!("{address}/alerts"))
                .header("Content-Type", "application/json")
                .body(webhook(0))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = join_all((1..=3).map(|i| {
        let app = &app;
        async move {
            let started = Instant::now();
            let response = app.post_alerts(&webhook(i)).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let report: serde_json::Value = response.json().await.unwrap();
            (status, retry_after, report, started.elapsed())
        }
    }))
    .await;
    for (status, retry_after, report, waited) in &waiting {
        assert_eq!(*status, 503, "{report}");
        assert!(retry_after);
        assert!(
            report["error"].as_str().unwrap().contains("queue_timeout"),
            "{report}"
        );
        assert!(*waited < Duration::from_millis(2500), "{waited:?}");
    }
    eprintln!("queued webhooks answered 503 after {:?}", waiting[0].3);
    assert_eq!(busy.await.unwrap(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!((1..=3).all(|i| !was_delivered(&app, i)));
    assert_eq!(app.wecom.send_calls(), 1);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn post_encoded(app: &TestApp, encoding: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = app
        .http
        .post(format!("{}/alerts", app.address))
        .header("Content-Type", "application/json")
        .header("Content-Encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_decoded() {
    let app = spawn(TestConfig::routes(ONE_ROUTE)).await;
    let cases = [
        ("gzip", gzip(webhook(1).as_bytes())),
        ("x-gzip", gzip(webhook(2).as_bytes())),
        ("GZIP", gzip(webhook(3).as_bytes())),
        ("deflate", zlib(webhook(4).as_bytes())),
        ("identity", webhook(5).into_bytes()),
    ];
    for (encoding, body) in cases {
        let (status, report) = post_encoded(&app, encoding, body).await;
        assert_eq!(status, 200, "{encoding}: {report}");
    }
    assert!((1..=5).all(|i| was_delivered(&app, i)));
    // Two members (as `cat a.gz b.gz` makes): one body.
    let whole = webhook(6);
    let (head, tail) = whole.split_at(whole.len() / 2);
    let two_members = [gzip(head.as_bytes()), gzip(tail.as_bytes())].concat();
    let (status, report) = post_encoded(&app, "gzip", two_members).await;
    assert_eq!(status, 200, "{report}");
}

#[tokio::test]
async fn unknown_encodings_are_answered_415_naming_the_supported_ones() {
    let app = spawn(TestConfig::routes(ONE_ROUTE)).await;
    for encoding in ["br", "zstd", "x-foo", "gzip, br", "compress"] {
        let (status, report) = post_encoded(&app, encoding, webhook(1).into_bytes()).await;
        assert_eq!(status, 415, "{encoding}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains("gzip") && error.contains("deflate") && error.contains(encoding),
            "{encoding}: {error}"
        );
    }
    assert_eq!(app.wecom.send_calls(), 0);
}

#[tokio::test]
async fn a_zip_bomb_is_refused_413_without_inflating_past_the_limit() {
    // The budget for buffered bodies is the limit itself: inflating one byte more than the
    // limit would wait for budget and end in a 503, not a 413.
    let limit = 1024 * 1024;
    let app = spawn(TestConfig {
        routes: ONE_ROUTE.into(),
        top_extra: format!(
            "server: {{max_body_bytes: {limit}, max_buffered_body_bytes: {limit}, body_timeout: 3s}}\n"
        ),
        ..TestConfig::default()
    })
    .await;
    let zeros = vec![b' '; 10 * 1000 * 1000];
    for (encoding, bomb) in [("gzip", gzip(&zeros)), ("deflate", zlib(&zeros))] {
        let compressed = bomb.len();
        let started = Instant::now();
        let (status, report) = post_encoded(&app, encoding, bomb).await;
        eprintln!(
            "{encoding} bomb: 10,000,000 bytes in {compressed} compressed, answered {status} \
             in {:?} (limit {limit} decoded bytes)",
            started.elapsed()
        );
        assert_eq!(status, 413, "{report}");
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains("max_body_bytes") && error.contains("decoded"),
            "{error}"
        );
    }
    // The budget was given back: a normal webhook still fits.
    let (status, report) = post_encoded(&app, "gzip", gzip(webhook(1).as_bytes())).await;
    assert_eq!(status, 200, "{report}");
}

#[tokio::test]
async fn truncated_or_corrupt_compressed_bodies_are_answered_400_saying_so() {
    let app = spawn(TestConfig::routes(ONE_ROUTE)).await;
    let whole = gzip(webhook(1).as_bytes());
    let cases = [
        ("gzip", whole[..whole.len() / 2].to_vec(), "truncated"),
        ("gzip", whole[..whole.len() - 4].to_vec(), "truncated"),
        ("gzip", Vec::new(), "truncated"),
        ("gzip", webhook(1).into_bytes(), "not gzip"),
        ("deflate", zlib(webhook(1).as_bytes())[..40].to_vec(), "truncated"),
        ("deflate", webhook(1).into_bytes(), "deflate"),
    ];
    for (encoding, body, expected) in cases {
        let (status, report) = post_encoded(&app, encoding, body).await;
        assert_eq!(status, 400, "{encoding}: {report}");
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "{encoding}: {error:?} should say {expected:?}"
        );
    }
    // A wrong checksum: the last byte of the CRC32.
    let mut corrupt = whole.clone();
    let at = corrupt.len() - 5;
    corrupt[at] ^= 0xff;
    let (status, report) = post_encoded(&app, "gzip", corrupt).await;
    assert_eq!(status, 400, "{report}");
    assert!(report["error"].as_str().unwrap().contains("checksum"), "{report}");
    // Bytes after the end of the stream.
    let trailing = [whole.clone(), b"junk".to_vec()].concat();
    let (status, report) = post_encoded(&app, "gzip", trailing).await;
    assert_eq!(status, 400, "{report}");
    assert_eq!(app.wecom.send_calls(), 0);
}

#[tokio::test]
async fn a_method_an_endpoint_does_not_take_is_answered_405_with_allow() {
    let app = spawn_app().await;
    let cases = [
        (reqwest::Method::GET, "/alerts", "POST"),
        (reqwest::Method::PUT, "/alerts", "POST"),
        (reqwest::Method::POST, "/metrics", "GET"),
        (reqwest::Method::POST, "/-/healthy", "GET"),
        (reqwest::Method::DELETE, "/-/ready", "GET"),
        (reqwest::Method::GET, "/-/reload", "POST"),
        (reqwest::Method::GET, "/-/render", "POST"),
        (reqwest::Method::PUT, "/wecom/callback/ops", "GET, POST"),
    ];
    for (method, path, allowed) in cases {
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(allow.as_deref(), Some(allowed), "{method} {path}");
    }
    let response = app
        .http
        .get(format!("{}/alerts", app.address))
        .send()
        .await
        .unwrap();
    let report: serde_json::Value = response.json().await.unwrap();
    assert!(report["error"].as_str().unwrap().contains("POST"), "{report}");
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"alertmanager_wecom_webhooks_received_total{code="405"}"#
        ),
        3.0
    );
    assert_eq!(app.wecom.send_calls(), 0);
}

#[tokio::test]
async fn the_render_preview_and_wecom_callbacks_refuse_compressed_bodies_unread() {
    let app = spawn_app().await;
    for path in [
        "/-/render",
        "/wecom/callback/ops?msg_signature=x&timestamp=1&nonce=n",
    ] {
        let response = app
            .http
            .post(format!("{}{path}", app.address))
            .header("Content-Encoding", "gzip")
            .body(gzip(&vec![b' '; 1000 * 1000]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{path}");
        let report: serde_json::Value = response.json().await.unwrap();
        assert!(
            report["error"].as_str().unwrap().contains("uncompressed"),
            "{path}: {report}"
        );
    }
}
