//! The baseline: a minimal forwarder on the same stack as the service (actix-web, two
//! workers, a reqwest client). It reads the webhook body and makes one upstream POST to the
//! fake's `message/send` with the first 2,000 bytes of the body as a text message: no
//! parsing, routing or templating. It runs as a child process of the load test (the same
//! executable, started with `__forwarder UPSTREAM [TOUSER]`), like the service, so both are
//! measured alike. It sends to `@all` unless given a recipient (the storms name one).

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

struct Upstream {
    http: reqwest::Client,
    url: String,
    touser: String,
}

/// Serves until killed. Prints `PORT <n>` on stdout once listening.
pub fn run(upstream_base: &str, touser: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(std::io::Error::other)?;
    let upstream = web::Data::new(Upstream {
        http,
        url: format!("{upstream_base}message/send?access_token=loadtest-token-forwarder"),
        touser: touser.to_string(),
    });
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(upstream.clone())
                .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                .route("/alerts", web::post().to(forward))
        })
        .workers(2)
        .listen(listener)?
        .run();
        println!("PORT {port}");
        std::io::stdout().flush()?;
        server.await
    })
}

async fn forward(body: web::Bytes, upstream: web::Data<Upstream>) -> HttpResponse {
    let head = String::from_utf8_lossy(&body[..body.len().min(2000)]);
    let message =
        json!({"touser": upstream.touser, "msgtype": "text", "agentid": 1, "text": {"content": head}});
    let reply = upstream
        .http
        .post(&upstream.url)
        .json(&message)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match reply {
        Ok(reply) if reply.status().is_success() => match reply.bytes().await {
            Ok(_) => HttpResponse::Ok().json(json!({"status": "ok"})),
            Err(_) => HttpResponse::ServiceUnavailable().finish(),
        },
        _ => HttpResponse::ServiceUnavailable().finish(),
    }
}
