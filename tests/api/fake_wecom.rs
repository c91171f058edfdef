//! A strict in-process fake of the WeCom (企业微信) server API, for tests.
//!
//! Serves `GET {base}gettoken` and `POST {base}message/send` on 127.0.0.1 with the
//! behaviour described in `/work/shared/wecom-api.md`: errcodes in HTTP 200 JSON bodies,
//! one token per (corp, app), early invalidation, recipient validation, byte limits,
//! duplicate check and the silent 30/minute per-member drop. Where the real service is
//! ambiguous the fake is the stricter one. Faults can be injected per endpoint (FIFO), and
//! the fake's clock can be moved forward with [`FakeWeCom::advance_time`] so tests never
//! wait for real token expiry or rate windows.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use actix_web::dev::ServerHandle;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Map, Value};

/// Default token lifetime (seconds), as reported by real WeCom.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 7200;
/// Every token the fake issues starts with this, so tests can grep logs for leaks.
pub const TOKEN_PREFIX: &str = "FakeWeComAccessToken";
/// Per (app, member) delivery limits; deliveries beyond them are silently dropped.
pub const MEMBER_LIMIT_PER_MINUTE: usize = 30;
pub const MEMBER_LIMIT_PER_HOUR: usize = 1000;
/// Byte limits (UTF-8 bytes).
pub const TEXT_MAX_BYTES: usize = 2048;
pub const MARKDOWN_MAX_BYTES: usize = 2048;
pub const TEXTCARD_TITLE_MAX_BYTES: usize = 128;
pub const TEXTCARD_DESCRIPTION_MAX_BYTES: usize = 512;
pub const URL_MAX_BYTES: usize = 2048;
/// Character limits.
pub const TEXTCARD_BTNTXT_MAX_CHARS: usize = 4;
pub const CARD_KEYNAME_MAX_CHARS: usize = 5;
pub const CARD_VALUE_MAX_CHARS: usize = 30;
pub const CARD_HORIZONTAL_MAX: usize = 6;
pub const CARD_JUMP_MAX: usize = 3;
pub const CARD_TASK_ID_MAX_BYTES: usize = 128;
pub const NEWS_MAX_ARTICLES: usize = 8;
/// Recipient limits.
pub const MAX_USERS: usize = 1000;
pub const MAX_PARTIES: usize = 100;
pub const MAX_TAGS: usize = 100;
/// Duplicate check interval: default and maximum (seconds).
pub const DUPLICATE_INTERVAL_DEFAULT_SECS: i64 = 1800;
pub const DUPLICATE_INTERVAL_MAX_SECS: i64 = 14400;

const VALID_MSGTYPES: [&str; 5] = ["text", "markdown", "textcard", "template_card", "news"];
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A fault applied to one call of an endpoint before normal processing.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 200 `{"errcode":c,"errmsg":"..."}`.
    Errcode(i64),
    /// That HTTP status with an HTML body.
    HttpStatus(u16),
    /// Sleep, then process the request normally.
    Delay(Duration),
    /// HTTP 200, `Content-Type: application/json`, body that is not JSON (truncated).
    GarbageBody,
}

/// A message WeCom accepted and actually delivered to at least one recipient.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveredMessage {
    pub agent_id: i64,
    pub msgtype: String,
    /// Valid users reached (directory spelling), minus those silently dropped.
    pub users: Vec<String>,
    /// Valid parties reached.
    pub parties: Vec<String>,
    /// Valid tags reached.
    pub tags: Vec<String>,
    /// The full request JSON.
    pub body: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    GetToken,
    Send,
    Robot,
}

/// One request as the fake saw it, with what it answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub endpoint: Endpoint,
    pub method: String,
    /// Raw query string (holds the token or the secret: test data only).
    pub query: String,
    /// Raw body (lossy UTF-8).
    pub body: String,
    /// HTTP status answered.
    pub status: u16,
    /// `errcode` answered, when the reply was JSON.
    pub errcode: Option<i64>,
}

/// The fake server. Dropping it stops the server.
pub struct FakeWeCom {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: ServerHandle,
}

impl FakeWeCom {
    /// Starts on 127.0.0.1:0 (the actix server is `tokio::spawn`ed).
    pub async fn start() -> FakeWeCom {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(8 << 20))
                .route("/cgi-bin/gettoken", web::route().to(gettoken_handler))
                .route("/cgi-bin/message/send", web::route().to(send_handler))
                .route("/cgi-bin/webhook/send", web::route().to(robot_handler))
                .default_service(web::to(not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .expect("fake WeCom: bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        tokio::task::yield_now().await;
        FakeWeCom { shared, addr, handle }
    }

    /// e.g. `http://127.0.0.1:PORT/cgi-bin/` (with the trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}/cgi-bin/", self.addr)
    }

    /// Register an app (corp id, secret, agent id). Re-adding the same (corp, agent id)
    /// replaces its secret.
    pub fn add_app(&self, corp_id: &str, secret: &str, agent_id: i64) {
        let mut st = self.shared.lock();
        if let Some(app) = st
            .apps
            .iter_mut()
            .find(|a| a.corp_id == corp_id && a.agent_id == agent_id)
        {
            app.secret = secret.to_string();
            return;
        }
        st.apps.push(AppReg {
            corp_id: corp_id.to_string(),
            secret: secret.to_string(),
            agent_id,
            current_token: None,
        });
    }

    /// Valid user ids for all apps (matched case-insensitively).
    pub fn add_users(&self, ids: &[&str]) {
        let mut st = self.shared.lock();
        for id in ids {
            let lc = id.to_lowercase();
            if !st.users.iter().any(|(l, _)| *l == lc) {
                st.users.push((lc, id.to_string()));
            }
        }
    }

    /// Valid party (department) ids for all apps (exact match).
    pub fn add_parties(&self, ids: &[&str]) {
        let mut st = self.shared.lock();
        st.parties.extend(ids.iter().map(|s| s.to_string()));
    }

    /// Valid tag ids for all apps (exact match).
    pub fn add_tags(&self, ids: &[&str]) {
        let mut st = self.shared.lock();
        st.tags.extend(ids.iter().map(|s| s.to_string()));
    }

    /// Lifetime reported and enforced for tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.lock().token_lifetime = secs;
    }

    /// Every currently valid token becomes expired (sends get 42001); the next gettoken
    /// issues a new token.
    pub fn expire_tokens(&self) {
        self.shared.lock().kill_valid_tokens(Kill::Expired);
    }

    /// Every currently valid token is invalidated early (sends get 40014); the next
    /// gettoken issues a new token.
    pub fn invalidate_tokens(&self) {
        self.shared.lock().kill_valid_tokens(Kill::Invalidated);
    }

    /// Faults for the next calls of message/send, FIFO.
    /// A group robot reachable with this webhook key.
    pub fn add_robot(&self, key: &str) {
        self.shared.lock().robots.insert(
            key.to_string(),
            RobotState {
                enabled: true,
                messages: Vec::new(),
                sent_at: VecDeque::new(),
            },
        );
    }

    /// Disables a robot: posts get 93004.
    pub fn disable_robot(&self, key: &str) {
        if let Some(robot) = self.shared.lock().robots.get_mut(key) {
            robot.enabled = false;
        }
    }

    /// Bodies the robot accepted, in order.
    pub fn robot_messages(&self, key: &str) -> Vec<Value> {
        self.shared
            .lock()
            .robots
            .get(key)
            .map(|r| r.messages.clone())
            .unwrap_or_default()
    }

    pub fn inject_robot_faults(&self, faults: Vec<Fault>) {
        self.shared.lock().robot_faults.extend(faults);
    }

    /// Faults for the next sends whose `touser` names `user` (checked before the FIFO), so
    /// a test can fail one route deterministically while others succeed.
    pub fn inject_send_faults_for_user(&self, user: &str, faults: Vec<Fault>) {
        self.shared
            .lock()
            .targeted_send_faults
            .push((user.to_string(), faults.into()));
    }

    pub fn inject_send_faults(&self, faults: Vec<Fault>) {
        self.shared.lock().send_faults.extend(faults);
    }

    /// Faults for the next calls of gettoken, FIFO.
    pub fn inject_gettoken_faults(&self, faults: Vec<Fault>) {
        self.shared.lock().gettoken_faults.extend(faults);
    }

    /// All gettoken requests received (including failed and faulted ones).
    pub fn gettoken_calls(&self) -> usize {
        self.shared.lock().gettoken_calls
    }

    /// All message/send requests received (including failed and faulted ones).
    pub fn send_calls(&self) -> usize {
        self.shared.lock().send_calls
    }

    /// Messages accepted and actually delivered, in arrival order.
    pub fn delivered(&self) -> Vec<DeliveredMessage> {
        self.shared.lock().delivered.clone()
    }

    /// Per-recipient deliveries silently dropped by the per-member rate limit.
    pub fn silently_dropped(&self) -> usize {
        self.shared.lock().silently_dropped
    }

    // ---- extras beyond the agreed API ----

    /// Move the fake's clock forward (token expiry, rate windows, duplicate check).
    pub fn advance_time(&self, by: Duration) {
        self.shared.lock().clock_offset += by;
    }

    /// Every token issued so far, oldest first (to check logs never contain one).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.clone()
    }

    /// Every request received, in arrival order, with the reply's status and errcode.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Messages answered errcode 0 but suppressed by the duplicate check.
    pub fn duplicates_suppressed(&self) -> usize {
        self.shared.lock().duplicates_suppressed
    }
}

impl Drop for FakeWeCom {
    fn drop(&mut self) {
        // The stop command is sent eagerly; no need to await completion.
        drop(self.handle.stop(false));
    }
}

// ---------------------------------------------------------------------------------------
// State

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the fake for the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct AppReg {
    corp_id: String,
    secret: String,
    agent_id: i64,
    current_token: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    Expired,
    Invalidated,
}

struct TokenInfo {
    app: usize,
    expires_at: Instant,
    killed: Option<Kill>,
}

struct State {
    clock_offset: Duration,
    apps: Vec<AppReg>,
    /// (lower-cased, as registered)
    users: Vec<(String, String)>,
    parties: HashSet<String>,
    tags: HashSet<String>,
    token_lifetime: u64,
    tokens: HashMap<String, TokenInfo>,
    issued: Vec<String>,
    send_faults: VecDeque<Fault>,
    /// Group robots by key: (enabled, accepted message bodies, send instants).
    robots: HashMap<String, RobotState>,
    robot_faults: VecDeque<Fault>,
    /// (user id, faults): faults for sends whose `touser` names that user, before the FIFO.
    targeted_send_faults: Vec<(String, VecDeque<Fault>)>,
    gettoken_faults: VecDeque<Fault>,
    gettoken_calls: usize,
    send_calls: usize,
    delivered: Vec<DeliveredMessage>,
    silently_dropped: usize,
    duplicates_suppressed: usize,
    /// (agent id, lower-cased user) -> delivery instants within the last hour
    member_log: HashMap<(i64, String), VecDeque<Instant>>,
    /// (accepted body, accepted at) of messages sent with enable_duplicate_check=1
    dup_log: Vec<(Value, Instant)>,
    task_ids: HashSet<(i64, String)>,
    requests: Vec<RecordedRequest>,
    rng: Rng,
    msg_counter: u64,
}

struct RobotState {
    enabled: bool,
    messages: Vec<Value>,
    sent_at: VecDeque<Instant>,
}

/// Group robot limits (shared/wecom-api.md §5).
pub const ROBOT_PER_MINUTE: usize = 20;
pub const ROBOT_TEXT_MAX_BYTES: usize = 2048;
pub const ROBOT_MARKDOWN_MAX_BYTES: usize = 4096;

type Fail = (i64, &'static str);

enum Reply {
    Json(Value),
    Status(u16),
    Garbage,
}

impl State {
    fn new() -> State {
        State {
            clock_offset: Duration::ZERO,
            apps: Vec::new(),
            users: Vec::new(),
            parties: HashSet::new(),
            tags: HashSet::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME_SECS,
            tokens: HashMap::new(),
            issued: Vec::new(),
            send_faults: VecDeque::new(),
            targeted_send_faults: Vec::new(),
            robots: HashMap::new(),
            robot_faults: VecDeque::new(),
            gettoken_faults: VecDeque::new(),
            gettoken_calls: 0,
            send_calls: 0,
            delivered: Vec::new(),
            silently_dropped: 0,
            duplicates_suppressed: 0,
            member_log: HashMap::new(),
            dup_log: Vec::new(),
            task_ids: HashSet::new(),
            requests: Vec::new(),
            rng: Rng::seeded(),
            msg_counter: 0,
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn token_alive(&self, info: &TokenInfo, now: Instant) -> bool {
        info.killed.is_none() && info.expires_at > now
    }

    fn kill_valid_tokens(&mut self, kill: Kill) {
        let now = self.now();
        for info in self.tokens.values_mut() {
            if info.killed.is_none() && info.expires_at > now {
                info.killed = Some(kill);
            }
        }
    }

    fn error(&mut self, code: i64, msg: &str) -> Value {
        let hint = self.rng.string(24);
        json!({
            "errcode": code,
            "errmsg": format!(
                "{msg}, hint: [{hint}], from ip: 127.0.0.1, more info at \
                 https://open.work.weixin.qq.com/devtool/query?e={code}"
            ),
        })
    }

    // ---- gettoken ----

    fn gettoken(&mut self, req: &HttpRequest) -> Value {
        match self.gettoken_inner(req) {
            Ok(v) => v,
            Err((code, msg)) => self.error(code, msg),
        }
    }

    fn gettoken_inner(&mut self, req: &HttpRequest) -> Result<Value, Fail> {
        if req.method() != Method::GET {
            return Err((43001, "require GET method"));
        }
        let q = parse_query(req.query_string());
        let corp_id = q
            .get("corpid")
            .filter(|s| !s.is_empty())
            .ok_or((41002, "corpid missing"))?;
        let secret = q
            .get("corpsecret")
            .filter(|s| !s.is_empty())
            .ok_or((41004, "corpsecret missing"))?;
        if !self.apps.iter().any(|a| &a.corp_id == corp_id) {
            return Err((40013, "invalid corpid"));
        }
        let app = self
            .apps
            .iter()
            .position(|a| &a.corp_id == corp_id && &a.secret == secret)
            .ok_or((40001, "invalid credential"))?;
        let now = self.now();
        if let Some(tok) = &self.apps[app].current_token {
            if let Some(info) = self.tokens.get(tok) {
                if self.token_alive(info, now) {
                    let remaining = (info.expires_at - now).as_secs();
                    if remaining > 0 {
                        return Ok(token_reply(tok, remaining));
                    }
                }
            }
        }
        let token = format!("{TOKEN_PREFIX}{}", self.rng.string(140));
        let lifetime = self.token_lifetime;
        self.tokens.insert(
            token.clone(),
            TokenInfo {
                app,
                expires_at: now + Duration::from_secs(lifetime),
                killed: None,
            },
        );
        self.apps[app].current_token = Some(token.clone());
        self.issued.push(token.clone());
        Ok(token_reply(&token, lifetime))
    }

    // ---- webhook/send (group robot) ----

    fn robot(&mut self, req: &HttpRequest, body: &[u8]) -> Value {
        match self.robot_inner(req, body) {
            Ok(()) => json!({"errcode": 0, "errmsg": "ok"}),
            Err((code, msg)) => self.error(code, msg),
        }
    }

    fn robot_inner(&mut self, req: &HttpRequest, body: &[u8]) -> Result<(), Fail> {
        if req.method() != Method::POST {
            return Err((43002, "require POST method"));
        }
        let key = parse_query(req.query_string())
            .get("key")
            .cloned()
            .unwrap_or_default();
        let now = self.now();
        let robot = self.robots.get_mut(&key).ok_or((93000, "invalid webhook url"))?;
        if !robot.enabled {
            return Err((93004, "webhook robot disabled"));
        }
        let body: Value = serde_json::from_slice(body).map_err(|_| (40058, "invalid json"))?;
        let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("");
        let content = |field: &str| {
            body.get(field)
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match msgtype {
            "text" => {
                let text = content("text")
                    .filter(|c| !c.is_empty())
                    .ok_or((44004, "empty content"))?;
                if text.len() > ROBOT_TEXT_MAX_BYTES {
                    return Err((45002, "content size out of limit"));
                }
                for list in ["mentioned_list", "mentioned_mobile_list"] {
                    if let Some(v) = body["text"].get(list) {
                        if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                            return Err((40058, "mentioned list must be an array of strings"));
                        }
                    }
                }
            }
            "markdown" | "markdown_v2" => {
                let text = content(msgtype)
                    .filter(|c| !c.is_empty())
                    .ok_or((44004, "empty content"))?;
                if text.len() > ROBOT_MARKDOWN_MAX_BYTES {
                    return Err((40058, "markdown content size out of limit"));
                }
            }
            "news" | "image" | "file" | "template_card" | "voice" => {}
            _ => return Err((40008, "invalid message type")),
        }
        while robot
            .sent_at
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            robot.sent_at.pop_front();
        }
        if robot.sent_at.len() >= ROBOT_PER_MINUTE {
            return Err((45009, "api freq out of limit"));
        }
        robot.sent_at.push_back(now);
        robot.messages.push(body);
        Ok(())
    }

    // ---- message/send ----

    fn send(&mut self, req: &HttpRequest, body: &[u8]) -> Value {
        match self.send_inner(req, body) {
            Ok(v) => v,
            Err(Rejection::Plain((code, msg))) => self.error(code, msg),
            Err(Rejection::AllInvalid(lists)) => {
                let mut v = self.error(81013, "user & party & tag all invalid");
                lists.write_into(&mut v);
                v
            }
        }
    }

    fn send_inner(&mut self, req: &HttpRequest, raw: &[u8]) -> Result<Value, Rejection> {
        if req.method() != Method::POST {
            return Err((43002, "require POST method").into());
        }
        // 1. token
        let q = parse_query(req.query_string());
        let token = q
            .get("access_token")
            .filter(|s| !s.is_empty())
            .ok_or((41001, "access_token missing"))?;
        let now = self.now();
        let info = self.tokens.get(token).ok_or((40014, "invalid access_token"))?;
        match info.killed {
            Some(Kill::Invalidated) => return Err((40014, "invalid access_token").into()),
            Some(Kill::Expired) => return Err((42001, "access_token expired").into()),
            None if info.expires_at <= now => {
                return Err((42001, "access_token expired").into());
            }
            None => {}
        }
        let token_app = info.app;

        // 2. body
        let body: Value = serde_json::from_slice(raw).map_err(|_| (47001, "data format error"))?;
        let obj = body.as_object().ok_or((47001, "data format error"))?;

        // 3. agent
        let agent_id = match obj.get("agentid") {
            None | Some(Value::Null) => return Err((41011, "agentid missing").into()),
            Some(v) => v.as_i64().ok_or((40056, "invalid agentid"))?,
        };
        let corp = &self.apps[token_app].corp_id;
        let agent_app = self
            .apps
            .iter()
            .position(|a| &a.corp_id == corp && a.agent_id == agent_id)
            .ok_or((40056, "invalid agentid"))?;
        if agent_app != token_app {
            return Err((301002, "access_token and agentid mismatch").into());
        }

        // 4. msgtype
        let msgtype = match obj.get("msgtype") {
            Some(Value::String(s)) if VALID_MSGTYPES.contains(&s.as_str()) => s.clone(),
            _ => return Err((40008, "invalid message type").into()),
        };

        // 5. recipients (shape and counts)
        let touser = get_str(obj, "touser")?.unwrap_or("");
        let to_all = touser == "@all";
        let users = split_ids(touser);
        let parties = split_ids(get_str(obj, "toparty")?.unwrap_or(""));
        let tags = split_ids(get_str(obj, "totag")?.unwrap_or(""));
        if users.is_empty() && parties.is_empty() && tags.is_empty() {
            return Err((82001, "all touser & toparty & totag invalid").into());
        }
        if users.len() > MAX_USERS {
            return Err((40032, "invalid size of userid list").into());
        }
        if parties.len() > MAX_PARTIES {
            return Err((82002, "invalid size of partyid list").into());
        }
        if tags.len() > MAX_TAGS {
            return Err((82003, "invalid size of tagid list").into());
        }

        // 6. flags
        flag(obj, "safe")?;
        flag(obj, "enable_id_trans")?;
        let dup_check = flag(obj, "enable_duplicate_check")? == 1;
        let dup_interval = match obj.get("duplicate_check_interval") {
            None | Some(Value::Null) => DUPLICATE_INTERVAL_DEFAULT_SECS,
            Some(v) => match v.as_i64() {
                Some(n) if (1..=DUPLICATE_INTERVAL_MAX_SECS).contains(&n) => n,
                _ => return Err((40058, "invalid duplicate_check_interval").into()),
            },
        };

        // 7. content
        match msgtype.as_str() {
            "text" => check_text(obj)?,
            "markdown" => check_markdown(obj)?,
            "textcard" => check_textcard(obj)?,
            "template_card" => check_template_card(obj)?,
            "news" => check_news(obj)?,
            _ => unreachable!("msgtype validated above"),
        }
        let task_id = if msgtype == "template_card" {
            obj.get("template_card")
                .and_then(|c| c.get("task_id"))
                .and_then(Value::as_str)
                .map(str::to_string)
        } else {
            None
        };

        // 8. recipients (validity)
        let mut lists = InvalidLists::default();
        let mut valid_users: Vec<String> = Vec::new();
        let mut valid_parties: Vec<String> = Vec::new();
        let mut valid_tags: Vec<String> = Vec::new();
        if to_all {
            valid_users = self.users.iter().map(|(_, u)| u.clone()).collect();
        } else {
            for u in &users {
                let lc = u.to_lowercase();
                match self.users.iter().find(|(l, _)| *l == lc) {
                    Some((_, canonical)) => push_unique(&mut valid_users, canonical.clone()),
                    None => push_unique(&mut lists.users, lc),
                }
            }
            for p in &parties {
                if self.parties.contains(p) {
                    push_unique(&mut valid_parties, p.clone());
                } else {
                    push_unique(&mut lists.parties, p.clone());
                }
            }
            for t in &tags {
                if self.tags.contains(t) {
                    push_unique(&mut valid_tags, t.clone());
                } else {
                    push_unique(&mut lists.tags, t.clone());
                }
            }
        }
        if valid_users.is_empty() && valid_parties.is_empty() && valid_tags.is_empty() {
            return Err(Rejection::AllInvalid(lists));
        }

        // 9. duplicate check (identical request JSON within the interval)
        self.msg_counter += 1;
        let msgid = format!("{}{:010}", self.rng.string(54), self.msg_counter);
        let mut ok = json!({"errcode": 0, "errmsg": "ok", "msgid": msgid});
        lists.write_into(&mut ok);
        if dup_check {
            self.dup_log.retain(|(_, at)| now.duration_since(*at) < HOUR * 4);
            let window = Duration::from_secs(dup_interval as u64);
            if self
                .dup_log
                .iter()
                .any(|(b, at)| *b == body && now.duration_since(*at) < window)
            {
                self.duplicates_suppressed += 1;
                return Ok(ok);
            }
        }

        // 10. template_card task_id must be unique per app
        if let Some(task_id) = task_id {
            if !self.task_ids.insert((agent_id, task_id)) {
                return Err((40058, "template_card task_id already used").into());
            }
        }
        if dup_check {
            self.dup_log.push((body.clone(), now));
        }

        // 11. per-member rate limit: silently drop beyond 30/minute, 1000/hour
        let mut reached = Vec::new();
        for u in valid_users {
            let log = self.member_log.entry((agent_id, u.to_lowercase())).or_default();
            while log.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
                log.pop_front();
            }
            let last_minute = log.iter().filter(|t| now.duration_since(**t) < MINUTE).count();
            if last_minute >= MEMBER_LIMIT_PER_MINUTE || log.len() >= MEMBER_LIMIT_PER_HOUR {
                self.silently_dropped += 1;
            } else {
                log.push_back(now);
                reached.push(u);
            }
        }
        if !reached.is_empty() || !valid_parties.is_empty() || !valid_tags.is_empty() {
            self.delivered.push(DeliveredMessage {
                agent_id,
                msgtype,
                users: reached,
                parties: valid_parties,
                tags: valid_tags,
                body,
            });
        }
        Ok(ok)
    }
}

enum Rejection {
    Plain(Fail),
    AllInvalid(InvalidLists),
}

impl From<Fail> for Rejection {
    fn from(f: Fail) -> Self {
        Rejection::Plain(f)
    }
}

#[derive(Default)]
struct InvalidLists {
    users: Vec<String>,
    parties: Vec<String>,
    tags: Vec<String>,
}

impl InvalidLists {
    fn write_into(&self, v: &mut Value) {
        v["invaliduser"] = Value::String(self.users.join("|"));
        v["invalidparty"] = Value::String(self.parties.join("|"));
        v["invalidtag"] = Value::String(self.tags.join("|"));
        v["unlicenseduser"] = Value::String(String::new());
    }
}

fn token_reply(token: &str, expires_in: u64) -> Value {
    json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in})
}

fn parse_query(qs: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(qs)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// `a|b||c` -> [a, b, c]; no trimming (" a" is not "a").
fn split_ids(s: &str) -> Vec<String> {
    s.split('|')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Validation helpers

/// A string field: absent/null -> None; any other non-string -> 40058.
fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err((40058, "invalid parameter type")),
    }
}

/// A required non-empty string field.
fn required_str<'a>(obj: &'a Map<String, Value>, key: &str, missing: Fail) -> Result<&'a str, Fail> {
    match get_str(obj, key)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(missing),
    }
}

/// A 0/1 integer flag; absent means 0.
fn flag(obj: &Map<String, Value>, key: &str) -> Result<i64, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n @ (0 | 1)) => Ok(n),
            _ => Err((40058, "invalid flag value, must be 0 or 1")),
        },
    }
}

/// The per-msgtype object (`"text": {...}` etc).
fn section<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    missing: Fail,
) -> Result<&'a Map<String, Value>, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err((40058, "invalid parameter type")),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => Some(&s[prefix.len()..]),
        _ => None,
    }
}

/// http(s) only (45034), at most 2048 bytes, a host, no whitespace/control chars (40094).
fn check_url(url: &str) -> Result<(), Fail> {
    let rest = strip_prefix_ci(url, "https://")
        .or_else(|| strip_prefix_ci(url, "http://"))
        .ok_or((45034, "url must use http or https"))?;
    if url.len() > URL_MAX_BYTES {
        return Err((40094, "invalid url size"));
    }
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((40094, "invalid url"));
    }
    Ok(())
}

fn check_text(obj: &Map<String, Value>) -> Result<(), Fail> {
    let text = section(obj, "text", (44004, "empty content"))?;
    let content = required_str(text, "content", (44004, "empty content"))?;
    if content.len() > TEXT_MAX_BYTES {
        return Err((45002, "content size out of limit"));
    }
    Ok(())
}

fn check_markdown(obj: &Map<String, Value>) -> Result<(), Fail> {
    let md = section(obj, "markdown", (44004, "empty content"))?;
    let content = required_str(md, "content", (44004, "empty content"))?;
    if content.len() > MARKDOWN_MAX_BYTES {
        return Err((40058, "markdown.content exceed max length 2048"));
    }
    Ok(())
}

fn check_textcard(obj: &Map<String, Value>) -> Result<(), Fail> {
    let card = section(obj, "textcard", (40058, "textcard missing"))?;
    let title = required_str(card, "title", (41016, "title missing"))?;
    let description = required_str(card, "description", (41033, "description missing"))?;
    let url = required_str(card, "url", (41010, "url missing"))?;
    if title.len() > TEXTCARD_TITLE_MAX_BYTES {
        return Err((45002, "title size out of limit"));
    }
    if description.len() > TEXTCARD_DESCRIPTION_MAX_BYTES {
        return Err((45002, "description size out of limit"));
    }
    check_url(url)?;
    if let Some(btn) = get_str(card, "btntxt")? {
        if btn.chars().count() > TEXTCARD_BTNTXT_MAX_CHARS {
            return Err((40058, "btntxt exceed max length 4"));
        }
    }
    Ok(())
}

fn check_template_card(obj: &Map<String, Value>) -> Result<(), Fail> {
    const BAD: Fail = (40058, "invalid template_card");
    let card = section(obj, "template_card", BAD)?;
    if get_str(card, "card_type")? != Some("text_notice") {
        return Err(BAD);
    }
    let main_title = match card.get("main_title") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(BAD),
    };
    let title = match main_title {
        Some(m) => {
            get_str(m, "desc")?;
            get_str(m, "title")?.unwrap_or("")
        }
        None => "",
    };
    let sub_title = get_str(card, "sub_title_text")?.unwrap_or("");
    if title.is_empty() && sub_title.is_empty() {
        return Err((40058, "template_card needs main_title.title or sub_title_text"));
    }
    for key in ["source", "emphasis_content", "quote_area", "action_menu"] {
        if !matches!(card.get(key), None | Some(Value::Null) | Some(Value::Object(_))) {
            return Err(BAD);
        }
    }

    let action = section(card, "card_action", (40058, "template_card.card_action missing"))?;
    if action.get("type").and_then(Value::as_i64) != Some(1) {
        return Err((40058, "template_card.card_action.type must be 1"));
    }
    check_url(required_str(action, "url", BAD)?).map_err(|_| BAD)?;

    let rows = array(card, "horizontal_content_list")?;
    if rows.len() > CARD_HORIZONTAL_MAX {
        return Err((40058, "horizontal_content_list exceeds 6"));
    }
    for row in rows {
        let row = row.as_object().ok_or(BAD)?;
        let keyname = required_str(row, "keyname", BAD)?;
        let value = get_str(row, "value")?.unwrap_or("");
        if keyname.chars().count() > CARD_KEYNAME_MAX_CHARS || value.chars().count() > CARD_VALUE_MAX_CHARS {
            return Err((40058, "horizontal_content_list keyname/value too long"));
        }
        match row.get("type") {
            None | Some(Value::Null) => {}
            Some(t) => match t.as_i64() {
                Some(0) => {}
                Some(1) => check_url(required_str(row, "url", BAD)?).map_err(|_| BAD)?,
                Some(3) => {
                    required_str(row, "userid", BAD)?;
                }
                _ => return Err(BAD),
            },
        }
    }

    let jumps = array(card, "jump_list")?;
    if jumps.len() > CARD_JUMP_MAX {
        return Err((40058, "jump_list exceeds 3"));
    }
    for jump in jumps {
        let jump = jump.as_object().ok_or(BAD)?;
        required_str(jump, "title", BAD)?;
        match jump.get("type") {
            None | Some(Value::Null) => {}
            Some(t) => match t.as_i64() {
                Some(0) => {}
                Some(1) => check_url(required_str(jump, "url", BAD)?).map_err(|_| BAD)?,
                _ => return Err(BAD),
            },
        }
    }

    if let Some(task_id) = get_str(card, "task_id")? {
        let ok_chars = task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@'));
        if task_id.is_empty() || task_id.len() > CARD_TASK_ID_MAX_BYTES || !ok_chars {
            return Err((40058, "invalid task_id"));
        }
    }
    Ok(())
}

fn check_news(obj: &Map<String, Value>) -> Result<(), Fail> {
    let news = section(obj, "news", (44003, "empty news"))?;
    let articles = array(news, "articles")?;
    if articles.is_empty() {
        return Err((44003, "empty news"));
    }
    if articles.len() > NEWS_MAX_ARTICLES {
        return Err((45008, "article size out of limit"));
    }
    for article in articles {
        let a = article.as_object().ok_or((40058, "invalid article"))?;
        let title = required_str(a, "title", (41016, "title missing"))?;
        if title.len() > TEXTCARD_TITLE_MAX_BYTES {
            return Err((45002, "title size out of limit"));
        }
        if get_str(a, "description")?.unwrap_or("").len() > TEXTCARD_DESCRIPTION_MAX_BYTES {
            return Err((45002, "description size out of limit"));
        }
        match get_str(a, "url")? {
            Some(url) if !url.is_empty() => check_url(url)?,
            _ => {
                if get_str(a, "appid")?.unwrap_or("").is_empty() {
                    return Err((41010, "url missing"));
                }
            }
        }
        if let Some(pic) = get_str(a, "picurl")? {
            if !pic.is_empty() {
                check_url(pic)?;
            }
        }
    }
    Ok(())
}

/// An optional array field (absent/null -> empty).
fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err((40058, "invalid parameter type")),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP plumbing

async fn gettoken_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let fault = {
        let mut st = shared.lock();
        st.gettoken_calls += 1;
        st.gettoken_faults.pop_front()
    };
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().gettoken(&req)),
    };
    finish(&shared, Endpoint::GetToken, &req, &body, reply)
}

async fn send_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let fault = {
        let mut st = shared.lock();
        st.send_calls += 1;
        let touser = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|b| b.get("touser").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let targeted = st
            .targeted_send_faults
            .iter_mut()
            .find(|(user, faults)| !faults.is_empty() && touser.split('|').any(|u| u == user))
            .and_then(|(_, faults)| faults.pop_front());
        targeted.or_else(|| st.send_faults.pop_front())
    };
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().send(&req, &body)),
    };
    finish(&shared, Endpoint::Send, &req, &body, reply)
}

async fn robot_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let fault = shared.lock().robot_faults.pop_front();
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().robot(&req, &body)),
    };
    finish(&shared, Endpoint::Robot, &req, &body, reply)
}

async fn not_found() -> HttpResponse {
    html(StatusCode::NOT_FOUND)
}

/// `Some(reply)` replaces normal processing; `None` means process normally.
async fn apply_fault(fault: Option<Fault>) -> Option<Reply> {
    match fault? {
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::Errcode(code) => Some(Reply::Json(json!({
            "errcode": code,
            "errmsg": format!(
                "injected fault, hint: [fault], from ip: 127.0.0.1, more info at \
                 https://open.work.weixin.qq.com/devtool/query?e={code}"
            ),
        }))),
        Fault::HttpStatus(s) => Some(Reply::Status(s)),
        Fault::GarbageBody => Some(Reply::Garbage),
    }
}

fn finish(shared: &Shared, endpoint: Endpoint, req: &HttpRequest, body: &[u8], reply: Reply) -> HttpResponse {
    let (resp, errcode) = match reply {
        Reply::Json(v) => {
            let code = v.get("errcode").and_then(Value::as_i64);
            let resp = HttpResponse::Ok()
                .content_type("application/json; charset=UTF-8")
                .body(v.to_string());
            (resp, code)
        }
        Reply::Status(s) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (html(status), None)
        }
        Reply::Garbage => {
            let resp = HttpResponse::Ok()
                .content_type("application/json; charset=UTF-8")
                .body("{\"errcode\":0,\"errmsg\":\"ok\",\"<html>upstream reset</html>");
            (resp, None)
        }
    };
    shared.lock().requests.push(RecordedRequest {
        endpoint,
        method: req.method().to_string(),
        query: req.query_string().to_string(),
        body: String::from_utf8_lossy(body).into_owned(),
        status: resp.status().as_u16(),
        errcode,
    });
    resp
}

fn html(status: StatusCode) -> HttpResponse {
    let reason = status.canonical_reason().unwrap_or("Error");
    HttpResponse::build(status)
        .content_type("text/html")
        .body(format!(
            "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
             <center><h1>{code} {reason}</h1></center>\r\n<hr><center>stgw</center>\r\n\
             </body>\r\n</html>\r\n",
            code = status.as_u16()
        ))
}

// ---------------------------------------------------------------------------------------
// Randomness (no extra dependency): splitmix64 seeded from std's random hasher keys.

struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(nanos);
        Rng(h.finish())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` characters of `[A-Za-z0-9_-]` (URL-safe, like real tokens).
    fn string(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| ALPHABET[(self.next_u64() % 64) as usize] as char)
            .collect()
    }
}
