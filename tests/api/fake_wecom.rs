//! A strict in-process fake of the WeCom (企业微信) server API, for tests.
//!
//! Serves `GET {base}gettoken` and `POST {base}message/send` on 127.0.0.1 with the
//! behaviour described in `docs/wecom-api.md`: errcodes in HTTP 200 JSON bodies,
//! one token per (corp, app), early invalidation, recipient validation, byte limits,
//! duplicate check and the silent per-member drop. Where the real service is ambiguous the
//! fake is the stricter one. Faults can be injected per endpoint (FIFO), and the fake's
//! clock can be moved forward with [`FakeWeCom::advance_time`] so tests never wait for real
//! token expiry or rate windows.
//!
//! Per-member limits of message/send ("发送应用消息": 每应用对同一个成员不可超过30次/分钟,
//! 1000次/小时,超过部分会被丢弃不下发). The page gives the numbers, not how WeCom counts, so the
//! fake assumes the worst:
//! - A message counts for a member when the fake receives and processes it, by WeCom's own
//!   clock, never when the sender sees the answer. [`FakeWeCom::set_answer_latency`] makes
//!   the answer leave later than that moment (a sender that counts at answer time then gets
//!   the window's start wrong); [`Fault::Delay`] instead delays the processing itself.
//! - A member is over a limit when EITHER the sliding window (the last 60 s / 3600 s on the
//!   fake's monotonic clock) OR the calendar minute / hour of WeCom's wall clock (this
//!   machine's clock + `advance_time` + [`FakeWeCom::set_clock_skew`]; UTC and China time
//!   share minute and hour boundaries) already holds 30 / 1,000 of this app's messages for
//!   that member. Messages over a limit are answered errcode 0 and silently not delivered to
//!   that member (others still get it); dropped messages do not count.
//! - A message to users, parties, tags or `@all` counts once per distinct member it reaches:
//!   a party reaches its members and its sub-parties' members ([`FakeWeCom::add_party`],
//!   [`FakeWeCom::add_child_party`]); a tag its users and its parties' members
//!   ([`FakeWeCom::add_tag`]); `@all` every user of the directory (the app's visible range
//!   is the whole directory). Parties and tags from `add_parties` / `add_tags` are valid but
//!   reach no member the fake knows of.
//!
//! Duplicate check ("发送应用消息": enable_duplicate_check=1 表示在一定时间间隔内,同样内容
//! (请求json)的消息,不会重复收到; duplicate_check_interval 默认1800s,最大不超过4小时). The fake
//! compares the raw request body byte for byte with those accepted from the same corp with
//! the flag set, within the interval (from the first acceptance; a suppressed repeat does not
//! extend it). Parsed-JSON equality or a looser key would suppress more than "the same
//! request JSON" promises; bytes suppress least, so a service cannot lean on WeCom to dedup
//! anything but its own exact retries. The body includes agentid, the recipients and the
//! interval itself. A suppressed duplicate is answered errcode 0 with a fresh msgid, is not
//! delivered, and still counts against each member's limits (the pages do not say; counting
//! is stricter). 0 or more than 14,400 s answers 40058. A request is remembered even when
//! the per-member limit dropped it for everyone, so a dedup-enabled retry of it within the
//! interval is suppressed too and cannot get it through.
//!
//! It also serves WeCom's app group chats (应用群聊): `appchat/create`, `appchat/get`,
//! `appchat/update` and `appchat/send`, following WeCom's pages "创建群聊会话", "获取群聊会话",
//! "修改群聊会话", "应用推送消息" and the "全局错误码" list (the "appchat" section below lists
//! every errcode and where the fake chose the stricter reading), and reads of the directory:
//! `user/simplelist`, `department/simplelist` and `tag/get` (the "Directory reads" section).
//!
//! Interactive template cards and callbacks live in `fake_wecom_cards.rs` (module `cards`,
//! re-exported here): an app's callback URL ([`FakeWeCom::set_callback`]), `template_card`
//! messages of card_type `button_interaction` with their `response_code`,
//! `message/update_template_card`, clicks delivered to the callback URL encrypted and signed
//! as WeCom does ([`FakeWeCom::click`]), and the admin console's URL verification. That
//! file's header lists what is modelled, every errcode and every stricter choice.
#![allow(dead_code)]

#[path = "fake_wecom_cards.rs"]
mod cards;
// the e2e suite includes this file too and uses none of the card API
#[allow(unused_imports)]
pub use cards::*;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::dev::{ServerHandle, Service as _};
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
/// 40039 (全局错误码) says 1024, the send page 2048: the fake takes the stricter one.
pub const URL_MAX_BYTES: usize = 1024;
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

/// A message WeCom accepted and actually delivered to at least one member, or sent to a
/// party or tag whose membership the test never gave (see [`FakeWeCom::add_parties`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveredMessage {
    pub agent_id: i64,
    pub msgtype: String,
    /// Users named in `touser` (every user for `@all`) who received it: directory spelling,
    /// in request order, minus those silently dropped.
    pub users: Vec<String>,
    /// Valid parties named in `toparty`.
    pub parties: Vec<String>,
    /// Valid tags named in `totag`.
    pub tags: Vec<String>,
    /// Every member who actually received it: the distinct members its users, parties (with
    /// their sub-parties) and tags reach, minus those silently dropped. Directory spelling,
    /// sorted.
    pub members: Vec<String>,
    /// The full request JSON.
    pub body: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    GetToken,
    Send,
    Robot,
    /// `POST appchat/create`
    AppchatCreate,
    /// `GET appchat/get`
    AppchatGet,
    /// `POST appchat/update`
    AppchatUpdate,
    /// `POST appchat/send`
    AppchatSend,
    /// `GET user/simplelist` (获取部门成员)
    UserSimpleList,
    /// `GET department/simplelist` (获取子部门ID列表)
    DepartmentSimpleList,
    /// `GET tag/get` (获取标签成员)
    TagGet,
    /// `POST message/update_template_card` (更新模版卡片消息)
    UpdateTemplateCard,
}

impl Endpoint {
    fn is_appchat(self) -> bool {
        matches!(
            self,
            Endpoint::AppchatCreate | Endpoint::AppchatGet | Endpoint::AppchatUpdate | Endpoint::AppchatSend
        )
    }

    fn is_directory(self) -> bool {
        matches!(
            self,
            Endpoint::UserSimpleList | Endpoint::DepartmentSimpleList | Endpoint::TagGet
        )
    }
}

/// One accepted appchat/send message and what became of it per chat member.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatDelivery {
    /// The full request JSON.
    pub body: Value,
    /// Members (directory spelling) who received it.
    pub delivered_to: Vec<String>,
    /// Members over the per-member limit: answered errcode 0, silently not delivered.
    pub dropped_for: Vec<String>,
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

/// The fake server. Clones are handles to the same server (several service instances
/// can share one WeCom); dropping the last one stops it.
#[derive(Clone)]
pub struct FakeWeCom {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Arc<StopOnDrop>,
}

struct StopOnDrop(ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // The stop command is sent eagerly; no need to await completion.
        drop(self.0.stop(false));
    }
}

impl FakeWeCom {
    /// Starts on 127.0.0.1:0 (the actix server is `tokio::spawn`ed).
    pub async fn start() -> FakeWeCom {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(8 << 20))
                .wrap_fn(|request, service| {
                    let counted = request
                        .app_data::<web::Data<Shared>>()
                        .cloned()
                        .map(InFlight::enter);
                    let answer = service.call(request);
                    async move {
                        let answer = answer.await;
                        drop(counted);
                        answer
                    }
                })
                .route("/cgi-bin/gettoken", web::route().to(gettoken_handler))
                .route("/cgi-bin/message/send", web::route().to(send_handler))
                .route("/cgi-bin/webhook/send", web::route().to(robot_handler))
                .route("/cgi-bin/appchat/create", web::route().to(appchat_create_handler))
                .route("/cgi-bin/appchat/get", web::route().to(appchat_get_handler))
                .route("/cgi-bin/appchat/update", web::route().to(appchat_update_handler))
                .route("/cgi-bin/appchat/send", web::route().to(appchat_send_handler))
                .route(
                    "/cgi-bin/user/simplelist",
                    web::route().to(user_simplelist_handler),
                )
                .route(
                    "/cgi-bin/department/simplelist",
                    web::route().to(department_simplelist_handler),
                )
                .route("/cgi-bin/tag/get", web::route().to(tag_get_handler))
                .route(
                    "/cgi-bin/message/update_template_card",
                    web::route().to(cards::update_template_card_handler),
                )
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
        FakeWeCom {
            shared,
            addr,
            server: Arc::new(StopOnDrop(handle)),
        }
    }

    /// The most requests the fake was serving at once: what a client's connections to
    /// WeCom were at their peak.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
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
            appchat_allowed: true,
            directory_allowed: true,
            callback: None,
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

    /// Valid party (department) ids for all apps (exact match), whose membership the fake
    /// does not know: a message to one is accepted and recorded in
    /// [`FakeWeCom::delivered`], but reaches no member the fake can count. Use
    /// [`FakeWeCom::add_party`] for a party with members. An id that exists already is left
    /// as it is.
    pub fn add_parties(&self, ids: &[&str]) {
        let mut st = self.shared.lock();
        for id in ids {
            st.parties
                .entry(id.to_string())
                .or_insert_with(PartyState::opaque);
        }
    }

    /// Valid tag ids for all apps (exact match), whose membership the fake does not know
    /// (like [`FakeWeCom::add_parties`]). Use [`FakeWeCom::add_tag`] for a tag with members.
    pub fn add_tags(&self, ids: &[&str]) {
        let mut st = self.shared.lock();
        for id in ids {
            st.tags
                .entry(id.to_string())
                .or_insert_with(|| TagState::new(id, false));
        }
    }

    /// A party (department) with these members, for all apps. `id` is a department id as
    /// WeCom has them: a decimal `u32` from 1 up, without leading zeros. Members must be in
    /// the directory already ([`FakeWeCom::add_users`]; matched case-insensitively, stored
    /// in directory spelling). Adding a party that exists adds the members to it (and gives
    /// a party from [`FakeWeCom::add_parties`] a known membership). Panics otherwise.
    pub fn add_party(&self, id: &str, members: &[&str]) {
        assert!(
            decimal_id(id).is_some_and(|n| n >= 1),
            "fake WeCom add_party: party id {id:?} is not a decimal department id (1, 2, ...)"
        );
        let mut st = self.shared.lock();
        let members: Vec<String> = members
            .iter()
            .map(|m| {
                st.lookup_user(m).unwrap_or_else(|| {
                    panic!(
                        "fake WeCom add_party: member {m:?} is not in the directory (call add_users first)"
                    )
                })
            })
            .collect();
        let party = st
            .parties
            .entry(id.to_string())
            .or_insert_with(PartyState::opaque);
        party.known = true;
        for m in members {
            push_unique(&mut party.members, m);
        }
    }

    /// Makes `child` a sub-party of `parent`: a message to `parent` (directly or through a
    /// tag) also reaches `child`'s members and those of its own sub-parties. Both must exist
    /// with decimal ids; a party has one parent; no cycles. Panics otherwise.
    pub fn add_child_party(&self, parent: &str, child: &str) {
        let mut st = self.shared.lock();
        for id in [parent, child] {
            assert!(
                st.parties.contains_key(id) && decimal_id(id).is_some(),
                "fake WeCom add_child_party: no party {id:?} with a decimal id (call add_party first)"
            );
        }
        // parent must not be child itself or below it
        let mut up = Some(parent.to_string());
        while let Some(id) = up {
            assert!(
                id != child,
                "fake WeCom add_child_party: {child:?} is {parent:?} or above it (a cycle)"
            );
            up = st.parties[&id].parent.clone();
        }
        let party = st.parties.get_mut(child).expect("checked above");
        match &party.parent {
            Some(p) if p != parent => {
                panic!("fake WeCom add_child_party: party {child:?} already has parent {p:?}")
            }
            _ => party.parent = Some(parent.to_string()),
        }
    }

    /// A tag with these users and parties, for all apps. `id` is a decimal `u32` (tag ids
    /// are non-negative integers); users must be in the directory, parties must exist
    /// ([`FakeWeCom::add_party`] or [`FakeWeCom::add_parties`]). A message to the tag
    /// reaches its users and its parties' members (with sub-parties). Adding a tag that
    /// exists adds to it. Its name is `tag<id>` until [`FakeWeCom::set_tag_name`]. Panics
    /// otherwise.
    pub fn add_tag(&self, id: &str, users: &[&str], parties: &[&str]) {
        assert!(
            decimal_id(id).is_some(),
            "fake WeCom add_tag: tag id {id:?} is not a decimal tag id (0, 1, ...)"
        );
        let mut st = self.shared.lock();
        let users: Vec<String> = users
            .iter()
            .map(|u| {
                st.lookup_user(u).unwrap_or_else(|| {
                    panic!("fake WeCom add_tag: user {u:?} is not in the directory (call add_users first)")
                })
            })
            .collect();
        for p in parties {
            assert!(
                st.parties.contains_key(*p),
                "fake WeCom add_tag: party {p:?} does not exist (call add_party first)"
            );
        }
        let tag = st
            .tags
            .entry(id.to_string())
            .or_insert_with(|| TagState::new(id, true));
        tag.known = true;
        for u in users {
            push_unique(&mut tag.users, u);
        }
        for p in parties {
            push_unique(&mut tag.parties, p.to_string());
        }
    }

    /// The `name` user/simplelist and tag/get answer for a user (default: the userid in
    /// directory spelling). Panics for a user not in the directory.
    pub fn set_user_name(&self, id: &str, name: &str) {
        let mut st = self.shared.lock();
        assert!(
            st.lookup_user(id).is_some(),
            "fake WeCom set_user_name: {id:?} is not in the directory (call add_users first)"
        );
        st.user_names.insert(id.to_lowercase(), name.to_string());
    }

    /// The `tagname` tag/get answers. Panics for an unknown tag.
    pub fn set_tag_name(&self, id: &str, name: &str) {
        let mut st = self.shared.lock();
        let tag = st
            .tags
            .get_mut(id)
            .unwrap_or_else(|| panic!("fake WeCom set_tag_name: no tag {id:?} (call add_tag first)"));
        tag.name = name.to_string();
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

    /// Faults for the next calls of message/send, FIFO.
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

    /// (message, member) pairs silently dropped by the per-member rate limits of
    /// message/send (the message was answered errcode 0; that member did not get it).
    pub fn silently_dropped(&self) -> usize {
        self.shared.lock().silently_dropped
    }

    /// Bodies of the message/send messages this member actually received, in order (matched
    /// case-insensitively; messages to parties and tags included, silently dropped ones
    /// not).
    pub fn member_messages(&self, user: &str) -> Vec<Value> {
        let st = self.shared.lock();
        let Some(canonical) = st.lookup_user(user) else {
            return Vec::new();
        };
        st.delivered
            .iter()
            .filter(|m| m.members.contains(&canonical))
            .map(|m| m.body.clone())
            .collect()
    }

    /// message/send (and appchat/send) answer this long after the fake has processed the
    /// request: the message is checked, counted against the per-member limits and delivered
    /// when it arrives, and the reply leaves `latency` later. Faulted replies wait too.
    /// [`Fault::Delay`] is the other way round: it waits before processing.
    pub fn set_answer_latency(&self, latency: Duration) {
        self.shared.lock().answer_latency = latency;
    }

    /// Puts WeCom's wall clock `secs` ahead of (positive) or behind (negative) this
    /// machine's, on top of [`FakeWeCom::advance_time`]. The wall clock decides the calendar
    /// minute and hour of the per-member limits; the sliding windows, token lifetimes and the
    /// duplicate check run on the fake's monotonic clock, which skew does not move. Setting
    /// it again replaces the previous skew (the clock may jump back).
    pub fn set_clock_skew(&self, secs: i64) {
        self.shared.lock().clock_skew = secs;
    }

    /// WeCom's wall clock now: this machine's clock plus [`FakeWeCom::advance_time`] and
    /// [`FakeWeCom::set_clock_skew`].
    pub fn wecom_now(&self) -> SystemTime {
        let nanos = self.shared.lock().wall_nanos();
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
    }

    // ---- directory reads (user/simplelist, department/simplelist, tag/get) ----

    /// The app(s) with this agent id may no longer read the directory: user/simplelist,
    /// department/simplelist and tag/get answer 60011. Panics if no app has that agent id.
    pub fn deny_directory(&self, agent_id: i64) {
        self.set_directory_allowed(agent_id, false);
    }

    /// Undoes [`FakeWeCom::deny_directory`] (the default for every app).
    pub fn allow_directory(&self, agent_id: i64) {
        self.set_directory_allowed(agent_id, true);
    }

    fn set_directory_allowed(&self, agent_id: i64, allowed: bool) {
        let mut st = self.shared.lock();
        let mut found = false;
        for app in st.apps.iter_mut().filter(|a| a.agent_id == agent_id) {
            app.directory_allowed = allowed;
            found = true;
        }
        assert!(
            found,
            "fake WeCom: no app with agent id {agent_id} (call add_app first)"
        );
    }

    /// Faults for the next calls of one directory endpoint (user/simplelist,
    /// department/simplelist or tag/get), FIFO per endpoint. Panics for another endpoint.
    pub fn inject_directory_faults(&self, endpoint: Endpoint, faults: Vec<Fault>) {
        assert!(
            endpoint.is_directory(),
            "fake WeCom: {endpoint:?} is not a directory endpoint"
        );
        self.shared
            .lock()
            .directory_faults
            .entry(endpoint)
            .or_default()
            .extend(faults);
    }

    /// Requests received by one directory endpoint (including failed and faulted ones).
    pub fn directory_calls(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .directory_calls
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    // ---- extras beyond the agreed API ----

    /// Move the fake's clock forward (token expiry, rate windows, duplicate check, and the
    /// wall clock of the calendar windows).
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

    // ---- app group chats (appchat/*) ----

    /// A chat that already exists, created by the app with this agent id (the first app
    /// registered with it, if several corps use the same agent id). `owner` must be one of
    /// `members`; members must be in the directory (matched case-insensitively, stored in
    /// directory spelling); 2..=[`APPCHAT_MAX_MEMBERS`] distinct members; `chatid` must be
    /// valid (`[0-9a-zA-Z]{1,32}`, not all digits) and not exist yet. Panics otherwise.
    /// Does not count against the daily creation limit.
    pub fn add_chat(&self, agent_id: i64, chatid: &str, owner: &str, members: &[&str]) {
        let mut st = self.shared.lock();
        let app = st
            .apps
            .iter()
            .position(|a| a.agent_id == agent_id)
            .unwrap_or_else(|| {
                panic!("fake WeCom add_chat: no app with agent id {agent_id} (call add_app first)")
            });
        if let Err((code, msg)) = check_new_chatid(chatid) {
            panic!("fake WeCom add_chat: chatid {chatid:?} is invalid ({code}: {msg})");
        }
        if st.chat_exists_ci(chatid) {
            panic!("fake WeCom add_chat: chatid {chatid:?} already exists");
        }
        let mut userlist = Vec::new();
        for m in members {
            let canonical = st.lookup_user(m).unwrap_or_else(|| {
                panic!("fake WeCom add_chat: member {m:?} is not in the directory (call add_users first)")
            });
            push_unique(&mut userlist, canonical);
        }
        if !(APPCHAT_MIN_MEMBERS..=APPCHAT_MAX_MEMBERS).contains(&userlist.len()) {
            panic!(
                "fake WeCom add_chat: a chat needs {APPCHAT_MIN_MEMBERS}..={APPCHAT_MAX_MEMBERS} distinct members, got {}",
                userlist.len()
            );
        }
        let owner = st
            .lookup_user(owner)
            .filter(|o| userlist.contains(o))
            .unwrap_or_else(|| panic!("fake WeCom add_chat: owner {owner:?} is not one of the members"));
        st.chats.insert(
            chatid.to_string(),
            ChatState {
                chatid: chatid.to_string(),
                app,
                name: String::new(),
                owner,
                members: userlist,
                deliveries: Vec::new(),
            },
        );
    }

    /// Whether the app(s) with this agent id may use appchat/* (in WeCom: whether the app's
    /// visible range is the root department). Default for every app added with
    /// [`FakeWeCom::add_app`]: `true`. When `false`, every appchat call with that app's
    /// token answers 60011. Panics if no app has that agent id.
    pub fn allow_appchat(&self, agent_id: i64, allowed: bool) {
        let mut st = self.shared.lock();
        let mut found = false;
        for app in st.apps.iter_mut().filter(|a| a.agent_id == agent_id) {
            app.appchat_allowed = allowed;
            found = true;
        }
        assert!(
            found,
            "fake WeCom allow_appchat: no app with agent id {agent_id} (call add_app first)"
        );
    }

    /// Full request bodies of every appchat/send accepted (errcode 0) for this chat, in
    /// order, including messages silently dropped for some or all members (see
    /// [`FakeWeCom::chat_deliveries`] and [`FakeWeCom::appchat_silently_dropped`]).
    pub fn chat_messages(&self, chatid: &str) -> Vec<Value> {
        self.chat_deliveries(chatid).into_iter().map(|d| d.body).collect()
    }

    /// Every accepted appchat/send for this chat, in order, with the members it reached
    /// and those it was silently dropped for.
    pub fn chat_deliveries(&self, chatid: &str) -> Vec<ChatDelivery> {
        self.shared
            .lock()
            .chats
            .get(chatid)
            .map(|c| c.deliveries.clone())
            .unwrap_or_default()
    }

    /// The chat as stored, in the shape appchat/get answers in `chat_info`:
    /// `{chatid, name, owner, userlist, chat_type: 0}`. `None` if no such chat.
    pub fn chat_info(&self, chatid: &str) -> Option<Value> {
        self.shared.lock().chats.get(chatid).map(ChatState::info)
    }

    /// (message, member) pairs silently dropped by the appchat per-member limits
    /// (200 a minute, 10,000 a day per app and member, across all the app's chats).
    pub fn appchat_silently_dropped(&self) -> usize {
        self.shared.lock().appchat_silently_dropped
    }

    /// Faults for the next calls of appchat/send, FIFO.
    pub fn inject_appchat_faults(&self, faults: Vec<Fault>) {
        self.inject_appchat_endpoint_faults(Endpoint::AppchatSend, faults);
    }

    /// Faults for the next calls of one appchat endpoint (create, get, update or send),
    /// FIFO per endpoint. Panics for a non-appchat endpoint.
    pub fn inject_appchat_endpoint_faults(&self, endpoint: Endpoint, faults: Vec<Fault>) {
        assert!(
            endpoint.is_appchat(),
            "fake WeCom: {endpoint:?} is not an appchat endpoint"
        );
        self.shared
            .lock()
            .appchat_faults
            .entry(endpoint)
            .or_default()
            .extend(faults);
    }

    /// Requests received by one appchat endpoint (including failed and faulted ones).
    pub fn appchat_calls(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .appchat_calls
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------
// State

struct Shared {
    state: Mutex<State>,
    /// Requests being served now, and the most ever served at once (each needs a
    /// connection of its own: the sockets a client holds open to WeCom).
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts one request as in flight while it lives.
struct InFlight(web::Data<Shared>);

impl InFlight {
    fn enter(shared: web::Data<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
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
    /// Whether the app's visible range is the root department (required by appchat/*).
    appchat_allowed: bool,
    /// Whether the app may read the directory (user/simplelist, department/simplelist,
    /// tag/get); 60011 otherwise.
    directory_allowed: bool,
    /// What the admin console's "API接收" saved ([`FakeWeCom::set_callback`]).
    callback: Option<cards::CallbackConfig>,
}

/// A party (department) of the directory.
struct PartyState {
    /// False for a party from `add_parties`: valid, but who it reaches is unknown.
    known: bool,
    /// Directory spelling, in the order added.
    members: Vec<String>,
    parent: Option<String>,
}

impl PartyState {
    fn opaque() -> PartyState {
        PartyState {
            known: false,
            members: Vec::new(),
            parent: None,
        }
    }
}

/// A tag of the directory.
struct TagState {
    /// False for a tag from `add_tags`: valid, but who it reaches is unknown.
    known: bool,
    name: String,
    /// Directory spelling, in the order added.
    users: Vec<String>,
    parties: Vec<String>,
}

impl TagState {
    fn new(id: &str, known: bool) -> TagState {
        TagState {
            known,
            name: format!("tag{id}"),
            users: Vec::new(),
            parties: Vec::new(),
        }
    }
}

/// When a message was counted for a member: on the fake's monotonic clock (sliding windows)
/// and as WeCom's wall-clock minute and hour (calendar windows).
#[derive(Clone, Copy)]
struct Stamp {
    at: Instant,
    minute: i64,
    hour: i64,
}

/// The distinct members a message reaches, and whether it names a party or tag whose
/// membership the fake does not know.
#[derive(Default)]
struct Reach {
    members: BTreeSet<String>,
    unknown: bool,
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
    /// Seconds WeCom's wall clock is ahead of this machine's (negative: behind).
    clock_skew: i64,
    /// How long message/send and appchat/send wait between processing and answering.
    answer_latency: Duration,
    apps: Vec<AppReg>,
    /// (lower-cased, as registered)
    users: Vec<(String, String)>,
    /// lower-cased user id -> name (default: the user id)
    user_names: HashMap<String, String>,
    parties: HashMap<String, PartyState>,
    tags: HashMap<String, TagState>,
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
    /// (app index, lower-cased user) -> messages counted for that member, oldest first:
    /// those of the last hour and those of the current (or a later) calendar hour
    member_log: HashMap<(usize, String), VecDeque<Stamp>>,
    /// (corp id, raw request body, accepted at) of messages sent with enable_duplicate_check=1
    dup_log: Vec<(String, Vec<u8>, Instant)>,
    task_ids: HashSet<(i64, String)>,
    requests: Vec<RecordedRequest>,
    rng: Rng,
    msg_counter: u64,
    // ---- appchat ----
    chats: HashMap<String, ChatState>,
    /// corp id -> instants of successful appchat/create (rolling day)
    appchat_creations: HashMap<String, VecDeque<Instant>>,
    /// corp id -> instants of successful appchat/update (rolling hour)
    appchat_updates: HashMap<String, VecDeque<Instant>>,
    /// (app index, lower-cased user) -> appchat deliveries within the last day
    appchat_member_log: HashMap<(usize, String), VecDeque<Instant>>,
    /// corp id -> (instant, person-messages) of accepted appchat/send within the last hour
    appchat_corp_log: HashMap<String, VecDeque<(Instant, usize)>>,
    appchat_silently_dropped: usize,
    appchat_faults: HashMap<Endpoint, VecDeque<Fault>>,
    appchat_calls: HashMap<Endpoint, usize>,
    // ---- directory reads ----
    directory_faults: HashMap<Endpoint, VecDeque<Fault>>,
    directory_calls: HashMap<Endpoint, usize>,
    // ---- template cards and callbacks (fake_wecom_cards.rs) ----
    cards: cards::CardsState,
}

struct ChatState {
    chatid: String,
    /// Index into `State::apps` of the app that created it.
    app: usize,
    name: String,
    /// Directory spelling.
    owner: String,
    /// Directory spelling, in the order given.
    members: Vec<String>,
    deliveries: Vec<ChatDelivery>,
}

impl ChatState {
    fn info(&self) -> Value {
        json!({
            "chatid": self.chatid,
            "name": self.name,
            "owner": self.owner,
            "userlist": self.members,
            "chat_type": 0,
        })
    }
}

struct RobotState {
    enabled: bool,
    messages: Vec<Value>,
    sent_at: VecDeque<Instant>,
}

/// Group robot limits (docs/wecom-api.md#group-robots).
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
            clock_skew: 0,
            answer_latency: Duration::ZERO,
            apps: Vec::new(),
            users: Vec::new(),
            user_names: HashMap::new(),
            parties: HashMap::new(),
            tags: HashMap::new(),
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
            chats: HashMap::new(),
            appchat_creations: HashMap::new(),
            appchat_updates: HashMap::new(),
            appchat_member_log: HashMap::new(),
            appchat_corp_log: HashMap::new(),
            appchat_silently_dropped: 0,
            appchat_faults: HashMap::new(),
            appchat_calls: HashMap::new(),
            directory_faults: HashMap::new(),
            directory_calls: HashMap::new(),
            cards: cards::CardsState::default(),
        }
    }

    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    /// WeCom's wall clock in nanoseconds since the Unix epoch.
    fn wall_nanos(&self) -> i128 {
        let system = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        system + self.clock_offset.as_nanos() as i128 + i128::from(self.clock_skew) * 1_000_000_000
    }

    /// Now, as a per-member count records it.
    fn stamp(&self) -> Stamp {
        let wall = self.wall_nanos();
        Stamp {
            at: self.now(),
            minute: wall.div_euclid(60_000_000_000) as i64,
            hour: wall.div_euclid(3_600_000_000_000) as i64,
        }
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

    /// The `access_token` query parameter: 41001 missing, 40014 unknown or invalidated,
    /// 42001 expired. Answers the index of the app the token belongs to.
    fn check_token(&self, req: &HttpRequest) -> Result<usize, Fail> {
        let q = parse_query(req.query_string());
        let token = q
            .get("access_token")
            .filter(|s| !s.is_empty())
            .ok_or((41001, "access_token missing"))?;
        let now = self.now();
        let info = self.tokens.get(token).ok_or((40014, "invalid access_token"))?;
        match info.killed {
            Some(Kill::Invalidated) => Err((40014, "invalid access_token")),
            Some(Kill::Expired) => Err((42001, "access_token expired")),
            None if info.expires_at <= now => Err((42001, "access_token expired")),
            None => Ok(info.app),
        }
    }

    /// Directory spelling of a user id (matched case-insensitively).
    fn lookup_user(&self, id: &str) -> Option<String> {
        let lc = id.to_lowercase();
        self.users
            .iter()
            .find(|(l, _)| *l == lc)
            .map(|(_, canonical)| canonical.clone())
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
        // 1. token; the message counts from now, as it arrives
        let token_app = self.check_token(req)?;
        let stamp = self.stamp();
        let now = stamp.at;

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

        // 7. content (button_interaction cards: fake_wecom_cards.rs)
        let interactive = msgtype == "template_card" && cards::is_button_interaction(obj);
        match msgtype.as_str() {
            "text" => check_text(obj)?,
            "markdown" => check_markdown(obj)?,
            "textcard" => check_textcard(obj)?,
            "template_card" if interactive => self.check_send_button_interaction(token_app, obj)?,
            "template_card" => {
                check_template_card(obj)?;
                self.check_text_notice_action_menu(token_app, obj)?;
            }
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

        // 8. recipients (validity), and the distinct members they reach
        let mut lists = InvalidLists::default();
        let mut valid_users: Vec<String> = Vec::new();
        let mut valid_parties: Vec<String> = Vec::new();
        let mut valid_tags: Vec<String> = Vec::new();
        if to_all {
            // toparty and totag are ignored with @all
            valid_users = self.users.iter().map(|(_, u)| u.clone()).collect();
        } else {
            for u in &users {
                match self.lookup_user(u) {
                    Some(canonical) => push_unique(&mut valid_users, canonical),
                    None => push_unique(&mut lists.users, u.to_lowercase()),
                }
            }
            for p in &parties {
                if self.parties.contains_key(p) {
                    push_unique(&mut valid_parties, p.clone());
                } else {
                    push_unique(&mut lists.parties, p.clone());
                }
            }
            for t in &tags {
                if self.tags.contains_key(t) {
                    push_unique(&mut valid_tags, t.clone());
                } else {
                    push_unique(&mut lists.tags, t.clone());
                }
            }
        }
        if valid_users.is_empty() && valid_parties.is_empty() && valid_tags.is_empty() {
            return Err(Rejection::AllInvalid(lists));
        }
        let reach = self.reach(&valid_users, &valid_parties, &valid_tags);

        // 9. duplicate check: the same raw request body from the same corp within the
        //    interval (see "duplicate check" in the header)
        self.msg_counter += 1;
        let msgid = format!("{}{:010}", self.rng.string(54), self.msg_counter);
        let mut ok = json!({"errcode": 0, "errmsg": "ok", "msgid": msgid});
        lists.write_into(&mut ok);
        let corp = self.apps[token_app].corp_id.clone();
        if dup_check {
            self.dup_log.retain(|(_, _, at)| {
                now.duration_since(*at) < Duration::from_secs(DUPLICATE_INTERVAL_MAX_SECS as u64)
            });
            let window = Duration::from_secs(dup_interval as u64);
            if self
                .dup_log
                .iter()
                .any(|(c, b, at)| *c == corp && b == raw && now.duration_since(*at) < window)
            {
                self.duplicates_suppressed += 1;
                // not delivered again, but it still uses up each member's budget
                for m in &reach.members {
                    self.admit_member(token_app, m, stamp);
                }
                return Ok(ok);
            }
        }

        // 10. template_card task_id must be unique per app (for ever; see fake_wecom_cards.rs
        //     for why a button_interaction card answers 42014)
        if let Some(task_id) = task_id {
            if !self.task_ids.insert((agent_id, task_id)) {
                if interactive {
                    return Err((42014, "template_card task_id already used by this app").into());
                }
                return Err((40058, "template_card task_id already used").into());
            }
        }
        if dup_check {
            self.dup_log.push((corp, raw.to_vec(), now));
        }

        // 11. per-member limits, counted now (at receipt): beyond 30 a minute or 1,000 an
        //     hour the member silently does not get it
        let card_task = interactive.then(|| cards::NewTask {
            card: body["template_card"].clone(),
            parties: valid_parties.clone(),
            tags: valid_tags.clone(),
            recipients: reach.members.clone(),
        });
        let mut members = Vec::new();
        for m in reach.members {
            if self.admit_member(token_app, &m, stamp) {
                members.push(m);
            } else {
                self.silently_dropped += 1;
            }
        }
        if !members.is_empty() || reach.unknown {
            let users = valid_users
                .into_iter()
                .filter(|u| members.binary_search(u).is_ok())
                .collect();
            self.delivered.push(DeliveredMessage {
                agent_id,
                msgtype,
                users,
                parties: valid_parties,
                tags: valid_tags,
                members: members.clone(),
                body,
            });
        }
        // 12. a button_interaction card becomes a task its members can click, and the reply
        //     carries the response_code of the send (fake_wecom_cards.rs)
        if let Some(task) = card_task {
            let code = self.register_card_task(token_app, agent_id, task, &members);
            ok["response_code"] = Value::String(code);
        }
        Ok(ok)
    }

    /// Counts one message for a member of this app if the member is within every limit:
    /// fewer than [`MEMBER_LIMIT_PER_MINUTE`] in both the sliding 60 s and the calendar
    /// minute, and fewer than [`MEMBER_LIMIT_PER_HOUR`] in both the sliding 3600 s and the
    /// calendar hour. False: over a limit, not counted (the caller drops it).
    fn admit_member(&mut self, app: usize, member: &str, now: Stamp) -> bool {
        let log = self.member_log.entry((app, member.to_lowercase())).or_default();
        // keep what a window could still see: the last hour, and the current calendar hour
        // (or a later one, should WeCom's clock have been set back)
        log.retain(|e| now.at.duration_since(e.at) < HOUR || e.hour >= now.hour);
        let (mut sliding_minute, mut calendar_minute, mut sliding_hour, mut calendar_hour) = (0, 0, 0, 0);
        for e in log.iter() {
            let age = now.at.duration_since(e.at);
            sliding_minute += usize::from(age < MINUTE);
            sliding_hour += usize::from(age < HOUR);
            calendar_minute += usize::from(e.minute == now.minute);
            calendar_hour += usize::from(e.hour == now.hour);
        }
        let over = sliding_minute >= MEMBER_LIMIT_PER_MINUTE
            || calendar_minute >= MEMBER_LIMIT_PER_MINUTE
            || sliding_hour >= MEMBER_LIMIT_PER_HOUR
            || calendar_hour >= MEMBER_LIMIT_PER_HOUR;
        if !over {
            log.push_back(now);
        }
        !over
    }

    /// The distinct members that valid users, parties and tags reach: a party reaches its
    /// members and those of its sub-parties, recursively; a tag its users and its parties'.
    fn reach(&self, users: &[String], parties: &[String], tags: &[String]) -> Reach {
        let mut reach = Reach::default();
        reach.members.extend(users.iter().cloned());
        for p in parties {
            self.party_reach(p, &mut reach);
        }
        for t in tags {
            let Some(tag) = self.tags.get(t) else { continue };
            reach.unknown |= !tag.known;
            reach.members.extend(tag.users.iter().cloned());
            for p in &tag.parties {
                self.party_reach(p, &mut reach);
            }
        }
        reach
    }

    fn party_reach(&self, root: &str, reach: &mut Reach) {
        let mut todo = vec![root.to_string()];
        let mut seen = HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(party) = self.parties.get(&id) else {
                continue;
            };
            reach.unknown |= !party.known;
            reach.members.extend(party.members.iter().cloned());
            todo.extend(self.child_parties(&id));
        }
    }

    /// Direct sub-parties of a party, in id order.
    fn child_parties(&self, id: &str) -> Vec<String> {
        let mut children: Vec<String> = self
            .parties
            .iter()
            .filter(|(_, p)| p.parent.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        children.sort_by_key(|k| decimal_id(k));
        children
    }
}

// ---------------------------------------------------------------------------------------
// appchat: app group chats (应用群聊)
//
// Sources: WeCom's pages "创建群聊会话" (appchat/create), "获取群聊会话" (appchat/get),
// "修改群聊会话" (appchat/update), "应用推送消息" (appchat/send), the "全局错误码" list and
// "主动调用频率限制". Errcodes the fake answers, beyond the token/JSON ones message/send uses:
//
//   60011   the app's visible range is not the root department. The pages only say "只允许
//           企业自建应用调用,且应用的可见范围必须是根部门"; 60011 ("no privilege to
//           access/modify contact/party/agent") is what developers report WeCom answering.
//   86001   参数 chatid 不合法: malformed chatid; on appchat/send also an unknown chatid
//           (developers report WeCom answering 86001 "chatid invalid" there, not 86003).
//   86003   参数 chatid 不存在: unknown chatid (appchat/get, appchat/update).
//   86004   参数 群名不合法: name longer than 50 characters. The pages say a longer name is
//           truncated ("超过将截断"); the fake refuses it instead (stricter).
//   86005   参数 群主不合法: owner not in the directory, or present but empty.
//   86006   群成员数过多或过少: fewer than 2 or more than APPCHAT_MAX_MEMBERS members.
//   86007   不合法的群成员: a userlist member (create) not in the directory.
//   86008   非法操作非自己创建的群: a chat created by another app ("chatid所代表的群必须是
//           该应用所创建").
//   86201   参数 需要chatid: chatid missing (get, update, send).
//   86203   参数 需要群主: update removes the owner without naming a new one ("del_user_list
//           包含群主时本字段必填").
//   86204   参数 需要群成员: userlist missing (create).
//   86205   参数 字符串chatid过长: chatid longer than 32 characters.
//   86206   参数 数字chatid过大: an all-digit chatid. WeCom treats those as numeric ids and
//           does not say how large is too large; the fake refuses every all-digit chatid.
//   86207   群主不在群成员列表: owner not among the members.
//   86215   会话ID已经存在: chatid already used (compared case-insensitively: stricter).
//   86216   存在非法会话成员ID: update's add_user_list names a user not in the directory, or
//           del_user_list a user not in the chat (the list's own explanation of 86216).
//   40008   msgtype not one the "应用推送消息" page lists (template_card and
//           miniprogram_notice are message/send only).
//   40007 / 41006  media_id invalid / missing: the fake stores no media, so every image,
//           voice, video, file and mpnews message is refused with 40007.
//   40074   news with safe=1 ("news消息不支持保密消息类型").
//   45009   1,000 chats created a day per corp; 100 updates an hour per corp; 20,000
//           person-messages a minute or 150,000 an hour per corp. The pages do not say which
//           errcode these limits answer; 45009 is the global "接口调用超过限制".
//   Content errcodes (44004, 45002, 40058, 41016, 41033, 41010, 45034, 40094, 44003,
//   45008) exactly as message/send: the same validators.
//
// Stricter choices where the pages are vague or disagree:
// - Members: "至多2000人" in the parameter table, but the limits say "最大不可超过2000人
//   (含应用)", the app included: the fake allows at most 1,999 users.
// - Creations: "每企业创建群数不可超过1000/天" counts per corp (all apps together), over a
//   rolling day (a calendar day would allow 2,000 around midnight).
// - Updates: an older copy says 100 an hour per corp, the current one 1,000: the fake uses 100.
// - Per member: "每个成员在群中收到的同一个应用的消息不可超过200条/分,1万条/天,超过会被丢弃,
//   而接口不会报错", counted per (app, member) across all the app's chats, rolling windows.
//   Separate from message/send's 30/minute counter.
// - Corp volume: "未认证或小型企业不可超过 15w 人次/小时" — the fake applies the smallest
//   tier. A message counts once per chat member, delivered or not.
// - enable_duplicate_check / duplicate_check_interval are not documented for appchat/send:
//   ignored, so identical messages are all delivered.
// - Empty strings for optional fields (name on update, owner, chatid) are refused rather than
//   treated as absent.

/// Group chat limits.
pub const APPCHAT_NAME_MAX_CHARS: usize = 50;
pub const APPCHAT_CHATID_MAX_CHARS: usize = 32;
pub const APPCHAT_MIN_MEMBERS: usize = 2;
/// "最大不可超过2000人(含应用)": 2,000 including the app.
pub const APPCHAT_MAX_MEMBERS: usize = 1999;
pub const APPCHAT_CREATIONS_PER_DAY: usize = 1000;
pub const APPCHAT_UPDATES_PER_HOUR: usize = 100;
pub const APPCHAT_MEMBER_PER_MINUTE: usize = 200;
pub const APPCHAT_MEMBER_PER_DAY: usize = 10_000;
pub const APPCHAT_CORP_PERSONS_PER_MINUTE: usize = 20_000;
pub const APPCHAT_CORP_PERSONS_PER_HOUR: usize = 150_000;

/// msgtypes the "应用推送消息" page lists.
const APPCHAT_MSGTYPES: [&str; 9] = [
    "text", "image", "voice", "video", "file", "textcard", "news", "mpnews", "markdown",
];
const DAY: Duration = Duration::from_secs(86_400);

/// `[0-9a-zA-Z]{1,32}`: the only shape a stored chatid can have.
fn chatid_shape_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= APPCHAT_CHATID_MAX_CHARS && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A chatid chosen by the caller of appchat/create.
fn check_new_chatid(id: &str) -> Result<(), Fail> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err((86001, "invalid chatid"));
    }
    if id.chars().count() > APPCHAT_CHATID_MAX_CHARS {
        return Err((86205, "chatid too long"));
    }
    if id.bytes().all(|b| b.is_ascii_digit()) {
        return Err((86206, "numeric chatid too large"));
    }
    Ok(())
}

/// A group name: at most 50 characters (not bytes).
fn check_chat_name(name: &str) -> Result<(), Fail> {
    if name.chars().count() > APPCHAT_NAME_MAX_CHARS {
        return Err((86004, "invalid chat name"));
    }
    Ok(())
}

/// A list of user ids: absent/null -> None; anything but an array of strings -> 40058.
fn id_list<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<Vec<&'a str>>, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or((40058, "invalid parameter type")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err((40058, "invalid parameter type")),
    }
}

/// image / voice / video / file: `{"media_id": ...}`. The fake stores no media, so every
/// media_id is invalid.
fn check_media(obj: &Map<String, Value>, msgtype: &str) -> Result<(), Fail> {
    let media = section(obj, msgtype, (41006, "media_id missing"))?;
    required_str(media, "media_id", (41006, "media_id missing"))?;
    Err((40007, "invalid media_id"))
}

/// The 1..=8 article objects of a `news` or `mpnews` body.
fn articles<'a>(obj: &'a Map<String, Value>, msgtype: &str) -> Result<Vec<&'a Map<String, Value>>, Fail> {
    let news = section(obj, msgtype, (44003, "empty news"))?;
    let articles = array(news, "articles")?;
    if articles.is_empty() {
        return Err((44003, "empty news"));
    }
    if articles.len() > NEWS_MAX_ARTICLES {
        return Err((45008, "article size out of limit"));
    }
    articles
        .iter()
        .map(|article| article.as_object().ok_or((40058, "invalid article")))
        .collect()
}

/// mpnews: 1..=8 articles with title and thumb_media_id (always invalid here: no media).
fn check_mpnews(obj: &Map<String, Value>) -> Result<(), Fail> {
    for a in articles(obj, "mpnews")? {
        required_str(a, "title", (41016, "title missing"))?;
        required_str(a, "thumb_media_id", (41006, "thumb_media_id missing"))?;
    }
    Err((40007, "invalid media_id"))
}

/// Drops instants older than `window` from the front.
fn prune(log: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while log.front().is_some_and(|t| now.duration_since(*t) >= window) {
        log.pop_front();
    }
}

impl State {
    fn appchat(&mut self, endpoint: Endpoint, req: &HttpRequest, body: &[u8]) -> Value {
        let result = match endpoint {
            Endpoint::AppchatCreate => self.appchat_create(req, body),
            Endpoint::AppchatGet => self.appchat_get(req),
            Endpoint::AppchatUpdate => self.appchat_update(req, body),
            Endpoint::AppchatSend => self.appchat_send(req, body),
            _ => unreachable!("not an appchat endpoint"),
        };
        match result {
            Ok(v) => v,
            Err((code, msg)) => self.error(code, msg),
        }
    }

    fn chat_exists_ci(&self, chatid: &str) -> bool {
        self.chats.keys().any(|k| k.eq_ignore_ascii_case(chatid))
    }

    /// Method, token and the app's right to use appchat; answers the app index.
    fn appchat_caller(&self, req: &HttpRequest, method: Method) -> Result<usize, Fail> {
        if req.method() != method {
            return Err(if method == Method::GET {
                (43001, "require GET method")
            } else {
                (43002, "require POST method")
            });
        }
        let app = self.check_token(req)?;
        if !self.apps[app].appchat_allowed {
            return Err((60011, "no privilege to access/modify contact/party/agent"));
        }
        Ok(app)
    }

    /// A chat this app created, by a chatid from a request.
    fn own_chat(&self, app: usize, chatid: Option<&str>, unknown: Fail) -> Result<String, Fail> {
        let chatid = chatid
            .filter(|s| !s.is_empty())
            .ok_or((86201, "chatid missing"))?;
        if !chatid_shape_ok(chatid) {
            return Err((86001, "invalid chatid"));
        }
        let chat = self.chats.get(chatid).ok_or(unknown)?;
        if chat.app != app {
            return Err((86008, "chat not created by this app"));
        }
        Ok(chatid.to_string())
    }

    fn json_body(raw: &[u8]) -> Result<Map<String, Value>, Fail> {
        match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err((47001, "data format error")),
        }
    }

    // ---- appchat/create ----

    fn appchat_create(&mut self, req: &HttpRequest, raw: &[u8]) -> Result<Value, Fail> {
        let app = self.appchat_caller(req, Method::POST)?;
        let obj = Self::json_body(raw)?;

        let list = id_list(&obj, "userlist")?.ok_or((86204, "chat member list missing"))?;
        let size_ok = |n: usize| (APPCHAT_MIN_MEMBERS..=APPCHAT_MAX_MEMBERS).contains(&n);
        if !size_ok(list.len()) {
            return Err((86006, "invalid chat member list size"));
        }
        let mut members = Vec::new();
        for id in list {
            let canonical = self.lookup_user(id).ok_or((86007, "invalid chat member"))?;
            push_unique(&mut members, canonical);
        }
        // ["alice", "ALICE"] is one member
        if !size_ok(members.len()) {
            return Err((86006, "invalid chat member list size"));
        }

        let owner = match get_str(&obj, "owner")? {
            // WeCom picks a random member; the fake picks the first
            None => members[0].clone(),
            Some(o) => {
                let canonical = self.lookup_user(o).ok_or((86005, "invalid chat owner"))?;
                if !members.contains(&canonical) {
                    return Err((86207, "chat owner not in member list"));
                }
                canonical
            }
        };

        let name = get_str(&obj, "name")?.unwrap_or("").to_string();
        check_chat_name(&name)?;

        let chatid = match get_str(&obj, "chatid")? {
            Some(id) => {
                check_new_chatid(id)?;
                if self.chat_exists_ci(id) {
                    return Err((86215, "chatid already exists"));
                }
                id.to_string()
            }
            None => loop {
                let id = self.rng.alnum(APPCHAT_CHATID_MAX_CHARS);
                if check_new_chatid(&id).is_ok() && !self.chat_exists_ci(&id) {
                    break id;
                }
            },
        };

        let now = self.now();
        let corp = self.apps[app].corp_id.clone();
        let log = self.appchat_creations.entry(corp).or_default();
        prune(log, now, DAY);
        if log.len() >= APPCHAT_CREATIONS_PER_DAY {
            return Err((45009, "api freq out of limit"));
        }
        log.push_back(now);

        self.chats.insert(
            chatid.clone(),
            ChatState {
                chatid: chatid.clone(),
                app,
                name,
                owner,
                members,
                deliveries: Vec::new(),
            },
        );
        Ok(json!({"errcode": 0, "errmsg": "ok", "chatid": chatid}))
    }

    // ---- appchat/get ----

    fn appchat_get(&mut self, req: &HttpRequest) -> Result<Value, Fail> {
        let app = self.appchat_caller(req, Method::GET)?;
        let q = parse_query(req.query_string());
        let chatid = self.own_chat(
            app,
            q.get("chatid").map(String::as_str),
            (86003, "chatid not exist"),
        )?;
        Ok(json!({"errcode": 0, "errmsg": "ok", "chat_info": self.chats[&chatid].info()}))
    }

    // ---- appchat/update ----

    fn appchat_update(&mut self, req: &HttpRequest, raw: &[u8]) -> Result<Value, Fail> {
        let app = self.appchat_caller(req, Method::POST)?;
        let obj = Self::json_body(raw)?;
        let chatid = self.own_chat(app, get_str(&obj, "chatid")?, (86003, "chatid not exist"))?;

        let name = get_str(&obj, "name")?;
        if let Some(name) = name {
            if name.is_empty() {
                return Err((86004, "invalid chat name"));
            }
            check_chat_name(name)?;
        }
        let mut add = Vec::new();
        for id in id_list(&obj, "add_user_list")?.unwrap_or_default() {
            let canonical = self.lookup_user(id).ok_or((86216, "invalid chat member id"))?;
            push_unique(&mut add, canonical);
        }
        let chat = &self.chats[&chatid];
        let mut del = Vec::new();
        for id in id_list(&obj, "del_user_list")?.unwrap_or_default() {
            let canonical = self
                .lookup_user(id)
                .filter(|c| chat.members.contains(c))
                .ok_or((86216, "invalid chat member id"))?;
            push_unique(&mut del, canonical);
        }
        if add.iter().any(|u| del.contains(u)) {
            return Err((40058, "user in both add_user_list and del_user_list"));
        }
        let mut members: Vec<String> = chat
            .members
            .iter()
            .filter(|m| !del.contains(m))
            .cloned()
            .collect();
        for u in add {
            push_unique(&mut members, u);
        }
        let owner = match get_str(&obj, "owner")? {
            None if del.contains(&chat.owner) => return Err((86203, "chat owner required")),
            None => chat.owner.clone(),
            Some(o) => {
                let canonical = self.lookup_user(o).ok_or((86005, "invalid chat owner"))?;
                if !members.contains(&canonical) {
                    return Err((86207, "chat owner not in member list"));
                }
                canonical
            }
        };
        if !(APPCHAT_MIN_MEMBERS..=APPCHAT_MAX_MEMBERS).contains(&members.len()) {
            return Err((86006, "invalid chat member list size"));
        }

        let now = self.now();
        let corp = self.apps[app].corp_id.clone();
        let log = self.appchat_updates.entry(corp).or_default();
        prune(log, now, HOUR);
        if log.len() >= APPCHAT_UPDATES_PER_HOUR {
            return Err((45009, "api freq out of limit"));
        }
        log.push_back(now);

        let chat = self.chats.get_mut(&chatid).expect("checked above");
        if let Some(name) = name {
            chat.name = name.to_string();
        }
        chat.owner = owner;
        chat.members = members;
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    // ---- appchat/send ----

    fn appchat_send(&mut self, req: &HttpRequest, raw: &[u8]) -> Result<Value, Fail> {
        let app = self.appchat_caller(req, Method::POST)?;
        let obj = Self::json_body(raw)?;
        let chatid = self.own_chat(app, get_str(&obj, "chatid")?, (86001, "invalid chatid"))?;

        let msgtype = match obj.get("msgtype") {
            Some(Value::String(s)) if APPCHAT_MSGTYPES.contains(&s.as_str()) => s.clone(),
            _ => return Err((40008, "invalid message type")),
        };
        // enable_duplicate_check / duplicate_check_interval / enable_id_trans are not
        // documented for appchat/send: ignored (every accepted message is delivered).
        if flag(&obj, "safe")? == 1 && msgtype == "news" {
            return Err((40074, "news msg not support safe"));
        }
        match msgtype.as_str() {
            "text" => check_text(&obj)?,
            "markdown" => check_markdown(&obj)?,
            "textcard" => check_textcard(&obj)?,
            "news" => check_news(&obj)?,
            "mpnews" => check_mpnews(&obj)?,
            "image" | "voice" | "video" | "file" => check_media(&obj, &msgtype)?,
            _ => unreachable!("msgtype validated above"),
        }

        // corp-wide volume, in person-messages (every member counts, delivered or not)
        let now = self.now();
        let members = self.chats[&chatid].members.clone();
        let persons = members.len();
        let corp = self.apps[app].corp_id.clone();
        let corp_log = self.appchat_corp_log.entry(corp).or_default();
        while corp_log
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= HOUR)
        {
            corp_log.pop_front();
        }
        let last_minute: usize = corp_log
            .iter()
            .filter(|(t, _)| now.duration_since(*t) < MINUTE)
            .map(|(_, n)| n)
            .sum();
        let last_hour: usize = corp_log.iter().map(|(_, n)| n).sum();
        if last_minute + persons > APPCHAT_CORP_PERSONS_PER_MINUTE
            || last_hour + persons > APPCHAT_CORP_PERSONS_PER_HOUR
        {
            return Err((45009, "api freq out of limit"));
        }
        corp_log.push_back((now, persons));

        // per (app, member): beyond 200 a minute or 10,000 a day, silently dropped
        let mut delivered_to = Vec::new();
        let mut dropped_for = Vec::new();
        for m in members {
            let log = self
                .appchat_member_log
                .entry((app, m.to_lowercase()))
                .or_default();
            prune(log, now, DAY);
            let last_minute = log
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < MINUTE)
                .count();
            if last_minute >= APPCHAT_MEMBER_PER_MINUTE || log.len() >= APPCHAT_MEMBER_PER_DAY {
                dropped_for.push(m);
            } else {
                log.push_back(now);
                delivered_to.push(m);
            }
        }
        self.appchat_silently_dropped += dropped_for.len();
        self.chats
            .get_mut(&chatid)
            .expect("checked above")
            .deliveries
            .push(ChatDelivery {
                body: Value::Object(obj),
                delivered_to,
                dropped_for,
            });
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }
}

// ---------------------------------------------------------------------------------------
// Directory reads (通讯录): user/simplelist, department/simplelist, tag/get
//
// Sources: WeCom's pages "获取部门成员" (user/simplelist), "获取子部门ID列表"
// (department/simplelist), "获取标签成员" (tag/get), "获取部门成员详情" and the "全局错误码" list.
// Only the fields those pages document are answered:
//
//   user/simplelist?department_id=ID   {errcode, errmsg, userlist: [{userid, name,
//                                       department: [ids]}]} (open_userid is for third-party
//                                       apps only, so a self-built app's fake leaves it out)
//   department/simplelist?id=ID        {errcode, errmsg, department_id: [{id, parentid,
//                                       order}]}: the department and all below it; without
//                                       id, every department
//   tag/get?tagid=ID                   {errcode, errmsg, tagname, userlist: [{userid, name}],
//                                       partylist: [ids]}
//
// Department and tag ids are integers in these replies (strings in message/send's toparty
// and totag). The app's visible range is the whole directory. Errcodes:
//
//   41001 / 40014 / 42001  token missing / invalid / expired, as message/send.
//   43001   not a GET.
//   60011   指定的成员/部门/标签参数无权限: the app may not read the directory
//           (FakeWeCom::deny_directory). "获取部门成员" requires 应用须拥有指定部门的查看权限;
//           "获取标签成员" says 无限制 (its lists only hold members in the app's visible range).
//           The fake answers 60011 on all three endpoints for a denied app (stricter: a
//           service must cope with it on tag/get too).
//   60003   部门ID不存在 ("需要确认部门ID是否有带，并且存在通讯录中"): department_id missing, or
//           no such department.
//   60123   无效的部门id: a department id that is not a decimal integer. The list has both codes
//           for an unknown department; a service should treat them alike.
//   41017   缺少tagid参数: tagid missing.
//   40068   不合法的标签ID ("标签ID未指定，或者指定的标签ID不存在"): no such tag.
//
// Stricter choices:
// - fetch_child: older copies of "获取部门成员" had fetch_child=1 to include sub-departments;
//   the current page (last updated 2022-08-22) dropped the parameter and says to walk the
//   sub-departments one level at a time (get them first, then each one's members). The fake
//   ignores fetch_child and answers the department's own members only, so a service that
//   relies on it under-counts and is caught; department/simplelist is there to walk the tree.
// - Restrictions: "获取部门成员详情" (user/list) says that from 2022-08-15 10:00 IPs newly
//   added to the contact-sync secret (通讯录同步) can no longer call it, pointing to user/list_id
//   and department/simplelist instead, and that apps created after 2022-06-20 no longer get
//   sensitive fields. "获取部门成员" carries the same "关键的变更点" heading. The fake has no IPs
//   and answers only the basic fields, so neither changes its replies; the stricter reading
//   for a service is that user/simplelist may be refused (60011 via deny_directory) and is
//   best used sparingly, with message/send's own invaliduser lists as the ground truth.
// - message/send reaches sub-parties of a party (the page does not say it does not): a
//   sender that budgets per member must count them.
// - A party without a parent answers parentid 0 (WeCom's root department 1 has parentid 0);
//   order is not modelled and answers 0.

impl State {
    fn directory(&mut self, endpoint: Endpoint, req: &HttpRequest) -> Value {
        match self.directory_inner(endpoint, req) {
            Ok(v) => v,
            Err((code, msg)) => self.error(code, msg),
        }
    }

    fn directory_inner(&self, endpoint: Endpoint, req: &HttpRequest) -> Result<Value, Fail> {
        if req.method() != Method::GET {
            return Err((43001, "require GET method"));
        }
        let app = self.check_token(req)?;
        if !self.apps[app].directory_allowed {
            return Err((60011, "no privilege to access/modify contact/party/agent"));
        }
        let q = parse_query(req.query_string());
        let param = |key: &str| q.get(key).map(String::as_str).filter(|s| !s.is_empty());
        match endpoint {
            Endpoint::UserSimpleList => {
                let id = param("department_id").ok_or((60003, "department not found"))?;
                let party = self.known_party(id)?;
                // fetch_child is no longer documented: ignored (own members only)
                let userlist: Vec<Value> = party
                    .members
                    .iter()
                    .map(|u| {
                        json!({
                            "userid": u,
                            "name": self.user_name(u),
                            "department": self.user_departments(u),
                        })
                    })
                    .collect();
                Ok(json!({"errcode": 0, "errmsg": "ok", "userlist": userlist}))
            }
            Endpoint::DepartmentSimpleList => {
                let mut ids: Vec<String> = match param("id") {
                    None => self.parties.keys().cloned().collect(),
                    Some(id) => {
                        self.known_party(id)?;
                        let mut reach = vec![id.to_string()];
                        let mut i = 0;
                        while i < reach.len() {
                            let children = self.child_parties(&reach[i]);
                            reach.extend(children);
                            i += 1;
                        }
                        reach
                    }
                };
                ids.retain(|id| decimal_id(id).is_some());
                ids.sort_by_key(|id| decimal_id(id));
                let list: Vec<Value> = ids
                    .iter()
                    .map(|id| {
                        let parent = self.parties[id].parent.as_deref().and_then(decimal_id);
                        json!({"id": decimal_id(id), "parentid": parent.unwrap_or(0), "order": 0})
                    })
                    .collect();
                Ok(json!({"errcode": 0, "errmsg": "ok", "department_id": list}))
            }
            Endpoint::TagGet => {
                let id = param("tagid").ok_or((41017, "tagid missing"))?;
                let tag = self.tags.get(id).ok_or((40068, "invalid tagid"))?;
                let userlist: Vec<Value> = tag
                    .users
                    .iter()
                    .map(|u| json!({"userid": u, "name": self.user_name(u)}))
                    .collect();
                let partylist: Vec<u64> = tag.parties.iter().filter_map(|p| decimal_id(p)).collect();
                Ok(json!({
                    "errcode": 0,
                    "errmsg": "ok",
                    "tagname": tag.name,
                    "userlist": userlist,
                    "partylist": partylist,
                }))
            }
            _ => unreachable!("not a directory endpoint"),
        }
    }

    /// A department by an id from a request: 60123 malformed, 60003 unknown.
    fn known_party(&self, id: &str) -> Result<&PartyState, Fail> {
        if decimal_id(id).is_none() {
            return Err((60123, "invalid party id"));
        }
        self.parties.get(id).ok_or((60003, "department not found"))
    }

    fn user_name(&self, canonical: &str) -> String {
        self.user_names
            .get(&canonical.to_lowercase())
            .cloned()
            .unwrap_or_else(|| canonical.to_string())
    }

    /// The decimal ids of the parties a user is a direct member of, ascending.
    fn user_departments(&self, canonical: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .parties
            .iter()
            .filter(|(_, p)| p.members.iter().any(|m| m == canonical))
            .filter_map(|(id, _)| decimal_id(id))
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// A department or tag id as WeCom writes it: a decimal `u32` without sign or leading zeros.
fn decimal_id(id: &str) -> Option<u64> {
    let n: u32 = id.parse().ok()?;
    (n.to_string() == id).then_some(u64::from(n))
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

/// http(s) only (45034), at most [`URL_MAX_BYTES`], a host, no whitespace/control chars (40094).
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
    for a in articles(obj, "news")? {
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
    let resp = finish(&shared, Endpoint::Send, &req, &body, reply);
    answer_later(&shared).await;
    resp
}

/// Waits out the answer latency (the request has been processed and recorded).
async fn answer_later(shared: &Shared) {
    let latency = shared.lock().answer_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

async fn directory_handler(
    endpoint: Endpoint,
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let fault = {
        let mut st = shared.lock();
        *st.directory_calls.entry(endpoint).or_default() += 1;
        st.directory_faults
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
    };
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().directory(endpoint, &req)),
    };
    finish(&shared, endpoint, &req, &body, reply)
}

async fn user_simplelist_handler(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    directory_handler(Endpoint::UserSimpleList, req, body, shared).await
}

async fn department_simplelist_handler(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    directory_handler(Endpoint::DepartmentSimpleList, req, body, shared).await
}

async fn tag_get_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    directory_handler(Endpoint::TagGet, req, body, shared).await
}

async fn robot_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let fault = shared.lock().robot_faults.pop_front();
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().robot(&req, &body)),
    };
    finish(&shared, Endpoint::Robot, &req, &body, reply)
}

async fn appchat_handler(
    endpoint: Endpoint,
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let fault = {
        let mut st = shared.lock();
        *st.appchat_calls.entry(endpoint).or_default() += 1;
        st.appchat_faults.get_mut(&endpoint).and_then(VecDeque::pop_front)
    };
    let reply = match apply_fault(fault).await {
        Some(r) => r,
        None => Reply::Json(shared.lock().appchat(endpoint, &req, &body)),
    };
    let resp = finish(&shared, endpoint, &req, &body, reply);
    if endpoint == Endpoint::AppchatSend {
        answer_later(&shared).await;
    }
    resp
}

async fn appchat_create_handler(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    appchat_handler(Endpoint::AppchatCreate, req, body, shared).await
}

async fn appchat_get_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    appchat_handler(Endpoint::AppchatGet, req, body, shared).await
}

async fn appchat_update_handler(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    appchat_handler(Endpoint::AppchatUpdate, req, body, shared).await
}

async fn appchat_send_handler(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    appchat_handler(Endpoint::AppchatSend, req, body, shared).await
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

    /// `len` characters of `[A-Za-z0-9]` (generated chatids).
    fn alnum(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[(self.next_u64() % 62) as usize] as char)
            .collect()
    }

    /// `len` characters of `[A-Za-z0-9_-]` (URL-safe, like real tokens).
    fn string(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..len)
            .map(|_| ALPHABET[(self.next_u64() % 64) as usize] as char)
            .collect()
    }
}
