//! A minimal, fast fake of WeCom for load: `gettoken` hands out one fixed token per corp
//! (expires_in 7200) and `message/send` answers `{"errcode":0,…}`; both are counted. No
//! validation beyond the token: this measures the service, not the fake (the strict fake
//! used by the tests lives in `tests/api/fake_wecom.rs`).
//!
//! Storm mode ([`FakeWeCom::storm_begin`]) adds what matters for alert storms: WeCom's
//! silent per-member drop, and every delivered message's content kept per member. Off,
//! `message/send` does not even parse its body, so the load phases stay as fast as before.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Storm mode: count and keep deliveries per member (see [`StormLog`]).
    storm: AtomicBool,
    storm_log: Mutex<StormLog>,
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

    /// Storm mode on, with an empty log: from now on every `message/send` is parsed and
    /// counted per (app, member) as WeCom does (see [`StormLog`]).
    pub fn storm_begin(&self) {
        *self.counters.storm_log.lock().unwrap() = StormLog::default();
        self.counters.storm.store(true, Ordering::SeqCst);
    }

    /// Storm mode off, the log dropped.
    pub fn storm_end(&self) {
        self.counters.storm.store(false, Ordering::SeqCst);
        *self.counters.storm_log.lock().unwrap() = StormLog::default();
    }

    /// What `member` got from the app whose token ends in `app` (the corp id the token was
    /// issued for; `forwarder` for the baseline's fixed token), in order of receipt.
    pub fn storm_member(&self, app: &str, member: &str) -> MemberLog {
        let log = self.counters.storm_log.lock().unwrap();
        log.members
            .get(&(app.to_string(), member.to_string()))
            .cloned()
            .unwrap_or_default()
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
    if counters.storm.load(Ordering::Relaxed) {
        let app = &query.access_token[TOKEN_PREFIX.len()..];
        // WeCom counts a message when it receives it: here, once the body is in (the time
        // is taken under the lock, so the log is in order of receipt).
        let mut log = counters.storm_log.lock().unwrap();
        log.receive(app, &body, Instant::now());
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"errcode":0,"errmsg":"ok","msgid":"x"}"#)
}

/// One app may send one member 30 messages in any 60 s and 1,000 in any 3,600 s
/// (docs/wecom-api.md#rate-limits). Sliding windows: stricter than calendar ones, which
/// they imply.
const PER_MINUTE: usize = 30;
const PER_HOUR: usize = 1000;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Storm mode's record, per (app, member): a message beyond a member's limits is silently
/// dropped for that member — answered errcode 0 like any other — and, not delivered, does
/// not count against the limits. Only `touser` is read (the storm routes name users).
#[derive(Default)]
struct StormLog {
    members: HashMap<(String, String), MemberLog>,
}

#[derive(Default, Clone)]
pub struct MemberLog {
    /// Every delivered message: when it was received and its text (markdown or text
    /// content, a card's title and description).
    pub messages: Vec<(Instant, String)>,
    /// Messages silently dropped for this member.
    pub dropped: u64,
    /// Delivery times within the last hour, oldest first (for the windows).
    recent: VecDeque<Instant>,
}

impl StormLog {
    fn receive(&mut self, app: &str, body: &[u8], at: Instant) {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let msgtype = message["msgtype"].as_str().unwrap_or_default();
        let part = &message[msgtype];
        let text = match part["content"].as_str() {
            Some(content) => content.to_string(),
            None => format!(
                "{}\n{}",
                part["title"].as_str().unwrap_or_default(),
                part["description"].as_str().unwrap_or_default()
            ),
        };
        let users = message["touser"].as_str().unwrap_or_default();
        for user in users.split('|').filter(|u| !u.is_empty()) {
            let log = self
                .members
                .entry((app.to_string(), user.to_string()))
                .or_default();
            while log.recent.front().is_some_and(|t| at.duration_since(*t) >= HOUR) {
                log.recent.pop_front();
            }
            let last_minute = log
                .recent
                .iter()
                .rev()
                .take_while(|t| at.duration_since(**t) < MINUTE)
                .count();
            if last_minute >= PER_MINUTE || log.recent.len() >= PER_HOUR {
                log.dropped += 1;
                continue;
            }
            log.recent.push_back(at);
            log.messages.push((at, text.clone()));
        }
    }
}
