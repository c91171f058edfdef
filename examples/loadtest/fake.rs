//! A minimal, fast fake of WeCom for load: `gettoken` hands out one fixed token per corp
//! (expires_in 7200) and `message/send` answers `{"errcode":0,…}`; both are counted. No
//! validation beyond the token: this measures the service, not the fake (the strict fake
//! used by the tests lives in `tests/api/fake_wecom.rs`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;

#[derive(Default)]
pub struct Counters {
    /// gettoken calls per corp id.
    pub gettoken: Mutex<BTreeMap<String, u64>>,
    pub sends: AtomicU64,
    /// Sends whose access_token was not one this fake issued.
    pub bad_token: AtomicU64,
    pub send_bytes: AtomicU64,
}

impl Counters {
    pub fn sends(&self) -> u64 {
        self.sends.load(Ordering::Relaxed)
    }

    pub fn gettoken_calls(&self) -> BTreeMap<String, u64> {
        self.gettoken.lock().unwrap().clone()
    }
}

pub struct FakeWeCom {
    pub base_url: String,
    pub counters: Arc<Counters>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Deserialize)]
struct TokenQuery {
    corpid: String,
}

#[derive(Deserialize)]
struct SendQuery {
    access_token: String,
}

const TOKEN_PREFIX: &str = "loadtest-token-";

impl FakeWeCom {
    /// Serves on 127.0.0.1 (a free port) from its own thread, with `workers` workers.
    pub fn start(workers: usize) -> std::io::Result<FakeWeCom> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let shared = web::Data::from(counters.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(shared.clone())
                        .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                        .route("/cgi-bin/gettoken", web::get().to(gettoken))
                        .route("/cgi-bin/message/send", web::post().to(send))
                })
                .workers(workers)
                .disable_signals()
                .listen(listener);
                match server {
                    Ok(server) => {
                        let server = server.run();
                        let _ = tx.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(error) => {
                        let _ = tx.send(Err(error));
                    }
                }
            });
        });
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("fake WeCom thread died"))??;
        Ok(FakeWeCom {
            base_url: format!("http://127.0.0.1:{port}/cgi-bin/"),
            counters,
            handle,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        let handle = self.handle.clone();
        actix_web::rt::System::new().block_on(handle.stop(true));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn gettoken(query: web::Query<TokenQuery>, counters: web::Data<Counters>) -> HttpResponse {
    *counters
        .gettoken
        .lock()
        .unwrap()
        .entry(query.corpid.clone())
        .or_default() += 1;
    let token = format!("{TOKEN_PREFIX}{}", query.corpid);
    HttpResponse::Ok().content_type("application/json").body(format!(
        r#"{{"errcode":0,"errmsg":"ok","access_token":"{token}","expires_in":7200}}"#
    ))
}

async fn send(
    _request: HttpRequest,
    query: web::Query<SendQuery>,
    body: web::Bytes,
    counters: web::Data<Counters>,
) -> HttpResponse {
    if !query.access_token.starts_with(TOKEN_PREFIX) {
        counters.bad_token.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"errcode":40014,"errmsg":"invalid access_token"}"#);
    }
    counters.sends.fetch_add(1, Ordering::Relaxed);
    counters
        .send_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"errcode":0,"errmsg":"ok","msgid":"x"}"#)
}
