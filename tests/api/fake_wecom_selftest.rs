//! Self-tests of the fake WeCom server (they test the fixture, not the receiver).

use crate::fake_wecom::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CORP: &str = "wwfakecorp0001";
const SECRET: &str = "app-secret-one";
const AGENT: i64 = 1000002;

async fn setup() -> (FakeWeCom, reqwest::Client) {
    let fake = FakeWeCom::start().await;
    fake.add_app(CORP, SECRET, AGENT);
    fake.add_users(&["alice", "Bob"]);
    fake.add_parties(&["2"]);
    fake.add_tags(&["7"]);
    (fake, reqwest::Client::new())
}

/// Sends `request` and reads its JSON answer.
async fn reply(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

async fn gettoken_raw(fake: &FakeWeCom, client: &reqwest::Client, query: &str) -> Value {
    reply(client.get(format!("{}gettoken?{query}", fake.base_url()))).await
}

async fn gettoken(fake: &FakeWeCom, client: &reqwest::Client, corp: &str, secret: &str) -> Value {
    gettoken_raw(fake, client, &format!("corpid={corp}&corpsecret={secret}")).await
}

async fn token(fake: &FakeWeCom, client: &reqwest::Client) -> String {
    let v = gettoken(fake, client, CORP, SECRET).await;
    assert_eq!(v["errcode"], 0, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

async fn send_raw(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, body: &Value) -> Value {
    reply(
        client
            .post(format!("{}message/send?access_token={tok}", fake.base_url()))
            .json(body),
    )
    .await
}

fn text(to: &str, content: &str) -> Value {
    json!({"touser": to, "msgtype": "text", "agentid": AGENT, "text": {"content": content}})
}

fn code(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap()
}

#[tokio::test]
async fn same_token_while_valid_with_remaining_lifetime() {
    let (fake, client) = setup().await;
    let a = gettoken(&fake, &client, CORP, SECRET).await;
    assert_eq!(a["errmsg"], "ok");
    assert_eq!(a["expires_in"], 7200);
    let t = a["access_token"].as_str().unwrap();
    assert!(t.starts_with(TOKEN_PREFIX) && t.len() >= 64, "{t}");
    fake.advance_time(Duration::from_secs(100));
    let b = gettoken(&fake, &client, CORP, SECRET).await;
    assert_eq!(b["access_token"], a["access_token"]);
    let remaining = b["expires_in"].as_u64().unwrap();
    assert!((7099..=7100).contains(&remaining), "{remaining}");
    assert_eq!(fake.gettoken_calls(), 2);
    assert_eq!(fake.issued_tokens(), vec![t.to_string()]);
}

#[tokio::test]
async fn expire_gives_42001_then_new_token() {
    let (fake, client) = setup().await;
    let old = token(&fake, &client).await;
    assert_eq!(
        code(&send_raw(&fake, &client, &old, &text("alice", "hi")).await),
        0
    );
    fake.expire_tokens();
    assert_eq!(
        code(&send_raw(&fake, &client, &old, &text("alice", "hi")).await),
        42001
    );
    let new = token(&fake, &client).await;
    assert_ne!(new, old);
    assert_eq!(
        code(&send_raw(&fake, &client, &new, &text("alice", "hi")).await),
        0
    );
    // lifetime elapsing on the fake clock
    fake.set_token_lifetime(10);
    fake.expire_tokens();
    let short = gettoken(&fake, &client, CORP, SECRET).await;
    assert_eq!(short["expires_in"], 10);
    let short = short["access_token"].as_str().unwrap().to_string();
    fake.advance_time(Duration::from_secs(10));
    assert_eq!(
        code(&send_raw(&fake, &client, &short, &text("alice", "hi")).await),
        42001
    );
    assert_ne!(token(&fake, &client).await, short);
}

#[tokio::test]
async fn invalidate_gives_40014_and_token_errors() {
    let (fake, client) = setup().await;
    let old = token(&fake, &client).await;
    fake.invalidate_tokens();
    assert_eq!(
        code(&send_raw(&fake, &client, &old, &text("alice", "hi")).await),
        40014
    );
    let new = token(&fake, &client).await;
    assert_ne!(new, old);
    assert_eq!(
        code(&send_raw(&fake, &client, &new, &text("alice", "hi")).await),
        0
    );
    assert_eq!(
        code(&send_raw(&fake, &client, "nope", &text("alice", "hi")).await),
        40014
    );
    assert_eq!(
        code(&send_raw(&fake, &client, "", &text("alice", "hi")).await),
        41001
    );
}

#[tokio::test]
async fn gettoken_credential_errors_and_app_binding() {
    let (fake, client) = setup().await;
    fake.add_app(CORP, "app-secret-two", 1000003);
    assert_eq!(code(&gettoken(&fake, &client, CORP, "wrong").await), 40001);
    assert_eq!(code(&gettoken(&fake, &client, "wwother", SECRET).await), 40013);
    assert_eq!(code(&gettoken_raw(&fake, &client, "corpsecret=x").await), 41002);
    assert_eq!(
        code(&gettoken_raw(&fake, &client, &format!("corpid={CORP}")).await),
        41004
    );
    let t1 = token(&fake, &client).await;
    let t2 = gettoken(&fake, &client, CORP, "app-secret-two").await;
    let t2 = t2["access_token"].as_str().unwrap();
    assert_ne!(t1, t2);
    // token of app 1000003 used with agentid of app 1000002
    assert_eq!(
        code(&send_raw(&fake, &client, t2, &text("alice", "x")).await),
        301002
    );
    let mut body = text("alice", "x");
    body["agentid"] = json!(999);
    assert_eq!(code(&send_raw(&fake, &client, &t1, &body).await), 40056);
    body.as_object_mut().unwrap().remove("agentid");
    assert_eq!(code(&send_raw(&fake, &client, &t1, &body).await), 41011);
    assert_eq!(fake.gettoken_calls(), 6);
}

#[tokio::test]
async fn invalid_recipients_listed_and_81013_when_all_invalid() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let mut body = text("alice|Carol|BOB", "hi");
    body["toparty"] = json!("2|9");
    body["totag"] = json!("8");
    let v = send_raw(&fake, &client, &t, &body).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["invaliduser"], "carol");
    assert_eq!(v["invalidparty"], "9");
    assert_eq!(v["invalidtag"], "8");
    assert!(!v["msgid"].as_str().unwrap().is_empty());
    let d = fake.delivered();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].users, vec!["alice", "Bob"]);
    assert_eq!(d[0].parties, vec!["2"]);
    assert!(d[0].tags.is_empty());
    assert_eq!(d[0].body, body);

    let v = send_raw(&fake, &client, &t, &text("Zed|eve", "hi")).await;
    assert_eq!(code(&v), 81013);
    assert_eq!(v["invaliduser"], "zed|eve");
    assert_eq!(code(&send_raw(&fake, &client, &t, &text("", "hi")).await), 82001);
    let many = (0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>().join("|");
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &text(&many, "hi")).await),
        40032
    );
    let v = send_raw(&fake, &client, &t, &text("@all", "hi")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(v["invaliduser"], "");
    assert_eq!(fake.delivered()[1].users, vec!["alice", "Bob"]);
    assert_eq!(fake.delivered().len(), 2);
}

#[tokio::test]
async fn content_limits_in_utf8_bytes() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let s = |n: usize| "告".repeat(n); // 3 bytes each
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &text("alice", &s(682))).await),
        0
    );
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &text("alice", &s(683))).await),
        45002
    );
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &text("alice", "")).await),
        44004
    );
    let md = |c: String| {
        json!({"touser": "alice", "msgtype": "markdown", "agentid": AGENT,
               "markdown": {"content": c}})
    };
    assert_eq!(code(&send_raw(&fake, &client, &t, &md(s(682))).await), 0);
    assert_eq!(code(&send_raw(&fake, &client, &t, &md(s(683))).await), 40058);

    let card = |url: &str, btn: &str| {
        json!({"touser": "alice", "msgtype": "textcard", "agentid": AGENT,
               "textcard": {"title": "告警", "description": "<div class=\"gray\">x</div>",
                            "url": url, "btntxt": btn}})
    };
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &card("https://a.example/x", "查看详情")).await),
        0
    );
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &card("https://a.example/x", "查看详情了")).await),
        40058
    );
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &card("ftp://a.example/x", "详情")).await),
        45034
    );
    let long_url = format!("https://a.example/{}", "a".repeat(1024));
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &card(&long_url, "详情")).await),
        40094
    );

    let tc = json!({"touser": "alice", "msgtype": "template_card", "agentid": AGENT,
        "template_card": {"card_type": "text_notice", "main_title": {"title": "告警"},
            "horizontal_content_list": [{"keyname": "级别", "value": "critical"}],
            "card_action": {"type": 1, "url": "https://a.example/"}}});
    assert_eq!(code(&send_raw(&fake, &client, &t, &tc).await), 0);
    let mut bad = tc.clone();
    bad["template_card"]
        .as_object_mut()
        .unwrap()
        .remove("card_action");
    assert_eq!(code(&send_raw(&fake, &client, &t, &bad).await), 40058);

    let mut img = text("alice", "x");
    img["msgtype"] = json!("image");
    assert_eq!(code(&send_raw(&fake, &client, &t, &img).await), 40008);
    let mut unsafe_ = text("alice", "x");
    unsafe_["safe"] = json!(2);
    assert_eq!(code(&send_raw(&fake, &client, &t, &unsafe_).await), 40058);
    let v: Value = reply(
        client
            .post(format!("{}message/send?access_token={t}", fake.base_url()))
            .body("{not json"),
    )
    .await;
    assert_eq!(code(&v), 47001);
    assert_eq!(fake.delivered().len(), 4);
}

#[tokio::test]
async fn duplicate_check_suppresses_identical_body() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let mut body = text("alice", "same");
    body["enable_duplicate_check"] = json!(1);
    body["duplicate_check_interval"] = json!(600);
    let a = send_raw(&fake, &client, &t, &body).await;
    let b = send_raw(&fake, &client, &t, &body).await;
    assert_eq!((code(&a), code(&b)), (0, 0));
    assert_eq!(fake.delivered().len(), 1);
    assert_eq!(fake.duplicates_suppressed(), 1);
    // a different body is not a duplicate
    let mut other = body.clone();
    other["text"]["content"] = json!("different");
    assert_eq!(code(&send_raw(&fake, &client, &t, &other).await), 0);
    assert_eq!(fake.delivered().len(), 2);
    fake.advance_time(Duration::from_secs(600));
    assert_eq!(code(&send_raw(&fake, &client, &t, &body).await), 0);
    assert_eq!(fake.delivered().len(), 3);
    body["duplicate_check_interval"] = json!(14401);
    assert_eq!(code(&send_raw(&fake, &client, &t, &body).await), 40058);
    body["duplicate_check_interval"] = json!(0);
    assert_eq!(code(&send_raw(&fake, &client, &t, &body).await), 40058);
}

#[tokio::test]
async fn silent_drop_beyond_30_per_minute_per_member() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    for i in 0..30 {
        let v = send_raw(&fake, &client, &t, &text("alice", &format!("m{i}"))).await;
        assert_eq!(code(&v), 0);
    }
    assert_eq!(fake.silently_dropped(), 0);
    // 31st: answered ok, alice does not get it, Bob does
    let v = send_raw(&fake, &client, &t, &text("alice|bob", "m30")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(fake.silently_dropped(), 1);
    let d = fake.delivered();
    assert_eq!(d.len(), 31);
    assert_eq!(d[30].users, vec!["Bob"]);
    // nobody reached: not recorded at all
    let v = send_raw(&fake, &client, &t, &text("ALICE", "m31")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(fake.silently_dropped(), 2);
    assert_eq!(fake.delivered().len(), 31);
    // the window slides
    fake.advance_time(Duration::from_secs(60));
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &text("alice", "m32")).await),
        0
    );
    assert_eq!(fake.delivered().len(), 32);
    assert_eq!(fake.silently_dropped(), 2);
}

#[tokio::test]
async fn faults_are_fifo_then_normal() {
    let (fake, client) = setup().await;
    fake.inject_gettoken_faults(vec![Fault::Errcode(-1)]);
    assert_eq!(code(&gettoken(&fake, &client, CORP, SECRET).await), -1);
    let t = token(&fake, &client).await;
    assert_eq!(fake.gettoken_calls(), 2);

    fake.inject_send_faults(vec![
        Fault::Errcode(-1),
        Fault::HttpStatus(502),
        Fault::GarbageBody,
        Fault::Delay(Duration::from_millis(200)),
    ]);
    let url = format!("{}message/send?access_token={t}", fake.base_url());
    let post = || client.post(&url).json(&text("alice", "hi")).send();

    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), -1);
    let r = post().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("<html>"));
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    let garbage = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&garbage).is_err(), "{garbage}");
    assert!(fake.delivered().is_empty());
    let started = Instant::now();
    let r = post().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(code(&r.json::<Value>().await.unwrap()), 0);
    assert_eq!(fake.delivered().len(), 1);
    assert_eq!(code(&post().await.unwrap().json::<Value>().await.unwrap()), 0);
    assert_eq!(fake.send_calls(), 5);
    let codes: Vec<_> = fake.requests().iter().map(|r| (r.status, r.errcode)).collect();
    assert_eq!(
        codes[2..],
        [
            (200, Some(-1)),
            (502, None),
            (200, None),
            (200, Some(0)),
            (200, Some(0))
        ]
    );
}

#[tokio::test]
async fn handles_concurrent_requests() {
    let (fake, client) = setup().await;
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    fake.add_users(&users.iter().map(String::as_str).collect::<Vec<_>>());
    let t = token(&fake, &client).await;
    fake.inject_send_faults(vec![Fault::Delay(Duration::from_millis(100)); 40]);
    let started = Instant::now();
    let replies = futures_join_all(users.iter().map(|u| {
        let (client, url) = (
            client.clone(),
            format!("{}message/send?access_token={t}", fake.base_url()),
        );
        let body = text(u, "concurrent");
        async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    }))
    .await;
    assert!(replies.iter().all(|v| code(v) == 0));
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(fake.delivered().len(), 40);
    assert_eq!(fake.send_calls(), 40);
}

/// Minimal join_all on tokio tasks (no futures crate needed).
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---- app group chats (appchat/*) ----

async fn appchat_post(
    fake: &FakeWeCom,
    client: &reqwest::Client,
    path: &str,
    tok: &str,
    body: &Value,
) -> Value {
    reply(
        client
            .post(format!("{}appchat/{path}?access_token={tok}", fake.base_url()))
            .json(body),
    )
    .await
}

async fn appchat_get(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, chatid: &str) -> Value {
    client
        .get(format!(
            "{}appchat/get?access_token={tok}&chatid={chatid}",
            fake.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn chat_text(chatid: &str, content: &str) -> Value {
    json!({"chatid": chatid, "msgtype": "text", "text": {"content": content}})
}

async fn chat_setup() -> (FakeWeCom, reqwest::Client, String) {
    let (fake, client) = setup().await;
    fake.add_users(&["carol", "dave"]);
    let t = token(&fake, &client).await;
    (fake, client, t)
}

#[tokio::test]
async fn appchat_create_and_get() {
    let (fake, client, t) = chat_setup().await;
    let v = appchat_post(
        &fake,
        &client,
        "create",
        &t,
        &json!({"name": "告警群", "owner": "bob", "userlist": ["alice", "BOB", "carol"], "chatid": "alerts01"}),
    )
    .await;
    assert_eq!(
        (code(&v), v["errmsg"].as_str(), v["chatid"].as_str()),
        (0, Some("ok"), Some("alerts01")),
        "{v}"
    );
    let info = json!({"chatid": "alerts01", "name": "告警群", "owner": "Bob",
                      "userlist": ["alice", "Bob", "carol"], "chat_type": 0});
    assert_eq!(fake.chat_info("alerts01"), Some(info.clone()));
    let got = appchat_get(&fake, &client, &t, "alerts01").await;
    assert_eq!(code(&got), 0, "{got}");
    assert_eq!(got["chat_info"], info);

    // generated chatid (32 alnum), owner defaults to the first member, name optional
    let v = appchat_post(
        &fake,
        &client,
        "create",
        &t,
        &json!({"userlist": ["carol", "alice"]}),
    )
    .await;
    assert_eq!(code(&v), 0, "{v}");
    let id = v["chatid"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    assert_eq!(fake.chat_info(id).unwrap()["owner"], "carol");
    assert_eq!(fake.chat_info(id).unwrap()["name"], "");

    // duplicate chatid, also in another case
    for dup in ["alerts01", "ALERTS01"] {
        let v = appchat_post(
            &fake,
            &client,
            "create",
            &t,
            &json!({"userlist": ["alice", "bob"], "chatid": dup}),
        )
        .await;
        assert_eq!(code(&v), 86215, "{v}");
    }
    // get: unknown, malformed, missing
    assert_eq!(code(&appchat_get(&fake, &client, &t, "nosuchchat").await), 86003);
    assert_eq!(code(&appchat_get(&fake, &client, &t, "bad-id").await), 86001);
    assert_eq!(code(&appchat_get(&fake, &client, &t, "").await), 86201);
    assert_eq!(
        code(&appchat_get(&fake, &client, "nope", "alerts01").await),
        40014
    );
    let endpoints: Vec<_> = fake.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(
        endpoints
            .iter()
            .filter(|e| **e == Endpoint::AppchatCreate)
            .count(),
        4
    );
    assert_eq!(
        endpoints.iter().filter(|e| **e == Endpoint::AppchatGet).count(),
        5
    );
    assert_eq!(fake.appchat_calls(Endpoint::AppchatGet), 5);
}

#[tokio::test]
async fn appchat_create_validation() {
    let (fake, client, t) = chat_setup().await;
    let create = |body: Value| {
        let (fake, client, t) = (&fake, &client, &t);
        async move { code(&appchat_post(fake, client, "create", t, &body).await) }
    };
    // member counts
    assert_eq!(create(json!({"userlist": ["alice"]})).await, 86006);
    assert_eq!(create(json!({"userlist": []})).await, 86006);
    assert_eq!(create(json!({"userlist": ["alice", "ALICE"]})).await, 86006);
    let many: Vec<String> = (0..2000).map(|i| format!("u{i}")).collect();
    assert_eq!(create(json!({ "userlist": many })).await, 86006);
    assert_eq!(create(json!({"name": "x"})).await, 86204);
    assert_eq!(create(json!({"userlist": "alice|bob"})).await, 40058);
    // unknown member
    assert_eq!(create(json!({"userlist": ["alice", "zed"]})).await, 86007);
    // chatid shape
    let base = |chatid: &str| json!({"userlist": ["alice", "bob"], "chatid": chatid});
    assert_eq!(create(base("ab-c")).await, 86001);
    assert_eq!(create(base("告警")).await, 86001);
    assert_eq!(create(base("")).await, 86001);
    assert_eq!(create(base(&"a".repeat(33))).await, 86205);
    assert_eq!(create(base("123456")).await, 86206);
    assert_eq!(create(base(&"a".repeat(32))).await, 0);
    // name: 50 characters (not bytes) at most
    let named = |n: usize| json!({"userlist": ["alice", "bob"], "name": "告".repeat(n)});
    assert_eq!(create(named(51)).await, 86004);
    assert_eq!(create(named(50)).await, 0);
    // owner
    let owned = |owner: &str| json!({"userlist": ["alice", "bob"], "owner": owner});
    assert_eq!(create(owned("carol")).await, 86207);
    assert_eq!(create(owned("zed")).await, 86005);
    assert_eq!(create(owned("")).await, 86005);
    // app not allowed (visible range not the root department)
    fake.allow_appchat(AGENT, false);
    assert_eq!(create(json!({"userlist": ["alice", "bob"]})).await, 60011);
    assert_eq!(code(&appchat_get(&fake, &client, &t, "whatever").await), 60011);
    fake.allow_appchat(AGENT, true);
    assert_eq!(create(json!({"userlist": ["alice", "bob"]})).await, 0);
    // token and method
    let v = appchat_post(
        &fake,
        &client,
        "create",
        "nope",
        &json!({"userlist": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(code(&v), 40014);
    let v = appchat_post(
        &fake,
        &client,
        "create",
        "",
        &json!({"userlist": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(code(&v), 41001);
    let v: Value = reply(client.get(format!("{}appchat/create?access_token={t}", fake.base_url()))).await;
    assert_eq!(code(&v), 43002);
    let v: Value = reply(
        client
            .post(format!("{}appchat/create?access_token={t}", fake.base_url()))
            .body("{not json"),
    )
    .await;
    assert_eq!(code(&v), 47001);
}

#[tokio::test]
async fn appchat_max_members_and_daily_creation_limit_per_corp() {
    let (fake, client, t) = chat_setup().await;
    let users: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    fake.add_users(&users.iter().map(String::as_str).collect::<Vec<_>>());
    // 2,000 including the app: at most 1,999 users
    let v = appchat_post(&fake, &client, "create", &t, &json!({ "userlist": users })).await;
    assert_eq!(code(&v), 86006);
    let v = appchat_post(
        &fake,
        &client,
        "create",
        &t,
        &json!({ "userlist": users[..1999] }),
    )
    .await;
    assert_eq!(code(&v), 0);

    // 1,000 a day for the whole corp: a second app of the same corp shares the budget
    fake.add_app(CORP, "app-secret-two", 1000003);
    let t2 = gettoken(&fake, &client, CORP, "app-secret-two").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"userlist": ["alice", "bob"]});
    for _ in 1..APPCHAT_CREATIONS_PER_DAY {
        assert_eq!(code(&appchat_post(&fake, &client, "create", &t, &body).await), 0);
    }
    assert_eq!(
        code(&appchat_post(&fake, &client, "create", &t2, &body).await),
        45009
    );
    assert_eq!(
        code(&appchat_post(&fake, &client, "create", &t, &body).await),
        45009
    );
    fake.advance_time(Duration::from_secs(86_400));
    let t2 = gettoken(&fake, &client, CORP, "app-secret-two").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(code(&appchat_post(&fake, &client, "create", &t2, &body).await), 0);
}

#[tokio::test]
async fn appchat_send_content_and_ownership() {
    let (fake, client, t) = chat_setup().await;
    fake.add_chat(AGENT, "ops", "alice", &["alice", "Bob"]);
    fake.add_app(CORP, "app-secret-two", 1000003);
    fake.add_chat(1000003, "other", "carol", &["carol", "dave"]);
    let send = |body: Value| {
        let (fake, client, t) = (&fake, &client, &t);
        async move { code(&appchat_post(fake, client, "send", t, &body).await) }
    };
    let s = |n: usize| "告".repeat(n); // 3 bytes each

    let text = chat_text("ops", "磁盘满了\n<a href=\"https://a.example/\">详情</a>");
    let v = appchat_post(&fake, &client, "send", &t, &text).await;
    assert_eq!(v["errcode"], 0, "{v}");
    assert_eq!(v["errmsg"], "ok");
    let md = |c: String| json!({"chatid": "ops", "msgtype": "markdown", "markdown": {"content": c}});
    assert_eq!(send(md(s(682))).await, 0);
    let card = |title: String| {
        json!({"chatid": "ops", "msgtype": "textcard", "safe": 1,
               "textcard": {"title": title, "description": "<div class=\"gray\">x</div>",
                            "url": "https://a.example/x", "btntxt": "详情"}})
    };
    assert_eq!(send(card("告警".into())).await, 0);
    let news = json!({"chatid": "ops", "msgtype": "news",
        "news": {"articles": [{"title": "t", "url": "https://a.example/"}]}});
    assert_eq!(send(news.clone()).await, 0);
    assert_eq!(fake.chat_messages("ops").len(), 4);
    assert_eq!(fake.chat_messages("ops")[0], text);
    assert_eq!(fake.chat_deliveries("ops")[0].delivered_to, vec!["alice", "Bob"]);

    // content limits as message/send
    assert_eq!(send(chat_text("ops", &s(683))).await, 45002);
    assert_eq!(send(chat_text("ops", "")).await, 44004);
    assert_eq!(send(md(s(683))).await, 40058);
    assert_eq!(send(card(s(43))).await, 45002);
    let mut bad_url = card("t".into());
    bad_url["textcard"]["url"] = json!("ftp://a.example/");
    assert_eq!(send(bad_url).await, 45034);
    let mut long_btn = card("t".into());
    long_btn["textcard"]["btntxt"] = json!("查看详情了");
    assert_eq!(send(long_btn).await, 40058);
    // msgtypes: template_card is message/send only; media need uploads the fake lacks
    let mut tc = chat_text("ops", "x");
    tc["msgtype"] = json!("template_card");
    tc["template_card"] = json!({"card_type": "text_notice", "main_title": {"title": "t"},
                                 "card_action": {"type": 1, "url": "https://a.example/"}});
    assert_eq!(send(tc).await, 40008);
    assert_eq!(
        send(json!({"chatid": "ops", "msgtype": "image", "image": {"media_id": "MEDIA"}})).await,
        40007
    );
    assert_eq!(
        send(json!({"chatid": "ops", "msgtype": "file", "file": {}})).await,
        41006
    );
    let mut no_type = chat_text("ops", "x");
    no_type.as_object_mut().unwrap().remove("msgtype");
    assert_eq!(send(no_type).await, 40008);
    // flags
    let mut bad_safe = chat_text("ops", "x");
    bad_safe["safe"] = json!(2);
    assert_eq!(send(bad_safe).await, 40058);
    let mut safe_news = news.clone();
    safe_news["safe"] = json!(1);
    assert_eq!(send(safe_news).await, 40074);
    // chats: unknown, malformed, missing, another app's
    assert_eq!(send(chat_text("nosuchchat", "x")).await, 86001);
    assert_eq!(send(chat_text("bad id", "x")).await, 86001);
    assert_eq!(
        send(json!({"msgtype": "text", "text": {"content": "x"}})).await,
        86201
    );
    assert_eq!(send(chat_text("other", "x")).await, 86008);
    assert_eq!(code(&appchat_get(&fake, &client, &t, "other").await), 86008);
    assert!(fake.chat_messages("other").is_empty());
    // token errors
    assert_eq!(
        code(&appchat_post(&fake, &client, "send", "nope", &chat_text("ops", "x")).await),
        40014
    );
    fake.expire_tokens();
    assert_eq!(send(chat_text("ops", "x")).await, 42001);
    let t = token(&fake, &client).await;
    assert_eq!(
        code(&appchat_post(&fake, &client, "send", &t, &chat_text("ops", "x")).await),
        0
    );

    assert_eq!(fake.chat_messages("ops").len(), 5);
    assert!(fake.delivered().is_empty(), "appchat is not message/send");
    let sends = fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::AppchatSend)
        .count();
    assert_eq!(sends, fake.appchat_calls(Endpoint::AppchatSend));
}

#[tokio::test]
async fn appchat_silent_drop_beyond_200_per_minute_per_member() {
    let (fake, client, t) = chat_setup().await;
    fake.add_chat(AGENT, "ops", "alice", &["alice", "Bob"]);
    fake.add_chat(AGENT, "dbs", "carol", &["ALICE", "carol"]);
    for i in 0..APPCHAT_MEMBER_PER_MINUTE {
        let v = appchat_post(&fake, &client, "send", &t, &chat_text("ops", &format!("m{i}"))).await;
        assert_eq!(code(&v), 0);
    }
    assert_eq!(fake.appchat_silently_dropped(), 0);
    // alice's 201st message this minute, through another chat of the same app: answered
    // ok, delivered to carol only
    let v = appchat_post(&fake, &client, "send", &t, &chat_text("dbs", "disk")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(fake.appchat_silently_dropped(), 1);
    let d = fake.chat_deliveries("dbs");
    assert_eq!(
        (d[0].delivered_to.clone(), d[0].dropped_for.clone()),
        (vec!["carol".to_string()], vec!["alice".to_string()])
    );
    // both members of ops are over: accepted, recorded, reaches nobody
    let v = appchat_post(&fake, &client, "send", &t, &chat_text("ops", "over")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(fake.appchat_silently_dropped(), 3);
    let last = fake.chat_deliveries("ops").pop().unwrap();
    assert!(last.delivered_to.is_empty());
    assert_eq!(last.dropped_for, vec!["alice", "Bob"]);
    assert_eq!(fake.chat_messages("ops").len(), 201);
    // message/send keeps its own per-member counter
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &text("alice", "direct")).await),
        0
    );
    assert_eq!(fake.delivered()[0].users, vec!["alice"]);
    // the window slides on the fake clock
    fake.advance_time(Duration::from_secs(60));
    let t = token(&fake, &client).await;
    let mut dup = chat_text("ops", "again");
    dup["enable_duplicate_check"] = json!(1); // not an appchat feature: ignored
    for _ in 0..2 {
        assert_eq!(code(&appchat_post(&fake, &client, "send", &t, &dup).await), 0);
    }
    let d = fake.chat_deliveries("ops");
    assert_eq!(d[d.len() - 1].delivered_to, vec!["alice", "Bob"]);
    assert_eq!(d[d.len() - 2].delivered_to, vec!["alice", "Bob"]);
    assert_eq!(fake.appchat_silently_dropped(), 3);
}

#[tokio::test]
async fn appchat_corp_volume_limit_in_person_messages() {
    let (fake, client, t) = chat_setup().await;
    let users: Vec<String> = (0..1999).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    fake.add_users(&refs);
    fake.add_chat(AGENT, "everyone", "m0", &refs);
    // 10 x 1,999 = 19,990 person-messages; the 11th would pass 20,000 in a minute
    for i in 0..10 {
        assert_eq!(
            code(
                &appchat_post(
                    &fake,
                    &client,
                    "send",
                    &t,
                    &chat_text("everyone", &format!("{i}"))
                )
                .await
            ),
            0
        );
    }
    assert_eq!(
        code(&appchat_post(&fake, &client, "send", &t, &chat_text("everyone", "x")).await),
        45009
    );
    assert_eq!(fake.chat_messages("everyone").len(), 10);
    fake.advance_time(Duration::from_secs(60));
    assert_eq!(
        code(&appchat_post(&fake, &client, "send", &t, &chat_text("everyone", "y")).await),
        0
    );
    assert_eq!(fake.appchat_silently_dropped(), 0);
}

#[tokio::test]
async fn appchat_update() {
    let (fake, client, t) = chat_setup().await;
    fake.add_chat(AGENT, "ops", "alice", &["alice", "Bob"]);
    let update = |body: Value| {
        let (fake, client, t) = (&fake, &client, &t);
        async move { code(&appchat_post(fake, client, "update", t, &body).await) }
    };
    assert_eq!(
        update(json!({"chatid": "ops", "name": "值班", "add_user_list": ["Carol"]})).await,
        0
    );
    assert_eq!(
        fake.chat_info("ops").unwrap()["userlist"],
        json!(["alice", "Bob", "carol"])
    );
    assert_eq!(fake.chat_info("ops").unwrap()["name"], "值班");
    // removing the owner needs a new owner
    assert_eq!(
        update(json!({"chatid": "ops", "del_user_list": ["alice"]})).await,
        86203
    );
    assert_eq!(
        update(json!({"chatid": "ops", "del_user_list": ["alice"], "owner": "alice"})).await,
        86207
    );
    assert_eq!(
        update(json!({"chatid": "ops", "del_user_list": ["alice"], "owner": "bob"})).await,
        0
    );
    assert_eq!(fake.chat_info("ops").unwrap()["owner"], "Bob");
    assert_eq!(
        update(json!({"chatid": "ops", "del_user_list": ["carol"]})).await,
        86006
    );
    assert_eq!(
        update(json!({"chatid": "ops", "add_user_list": ["zed"]})).await,
        86216
    );
    assert_eq!(
        update(json!({"chatid": "ops", "del_user_list": ["dave"]})).await,
        86216
    );
    assert_eq!(
        update(json!({"chatid": "ops", "name": "告".repeat(51)})).await,
        86004
    );
    assert_eq!(update(json!({"chatid": "nosuchchat"})).await, 86003);
    assert_eq!(update(json!({"name": "x"})).await, 86201);
    fake.add_app(CORP, "app-secret-two", 1000003);
    fake.add_chat(1000003, "other", "carol", &["carol", "dave"]);
    assert_eq!(update(json!({"chatid": "other", "name": "mine"})).await, 86008);
    assert_eq!(
        fake.chat_info("ops").unwrap()["userlist"],
        json!(["Bob", "carol"])
    );
}

#[tokio::test]
async fn appchat_faults_are_fifo_per_endpoint() {
    let (fake, client, t) = chat_setup().await;
    fake.add_chat(AGENT, "ops", "alice", &["alice", "Bob"]);
    fake.inject_appchat_faults(vec![
        Fault::Errcode(-1),
        Fault::HttpStatus(502),
        Fault::GarbageBody,
        Fault::Delay(Duration::from_millis(200)),
    ]);
    fake.inject_appchat_endpoint_faults(Endpoint::AppchatCreate, vec![Fault::Errcode(45009)]);
    let url = format!("{}appchat/send?access_token={t}", fake.base_url());
    let post = || client.post(&url).json(&chat_text("ops", "hi")).send();

    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(code(&r.json::<Value>().await.unwrap()), -1);
    let r = post().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("<html>"));
    let r = post().await.unwrap();
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    assert!(fake.chat_messages("ops").is_empty());
    let started = Instant::now();
    assert_eq!(code(&post().await.unwrap().json::<Value>().await.unwrap()), 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(code(&post().await.unwrap().json::<Value>().await.unwrap()), 0);
    assert_eq!(fake.chat_messages("ops").len(), 2);
    assert_eq!(fake.appchat_calls(Endpoint::AppchatSend), 5);

    // create's own FIFO: only the first create is faulted; send's FIFO is empty now
    let body = json!({"userlist": ["alice", "bob"]});
    assert_eq!(
        code(&appchat_post(&fake, &client, "create", &t, &body).await),
        45009
    );
    assert_eq!(code(&appchat_post(&fake, &client, "create", &t, &body).await), 0);
    let codes: Vec<_> = fake
        .requests()
        .iter()
        .filter(|r| r.endpoint != Endpoint::GetToken)
        .map(|r| (r.endpoint, r.status, r.errcode))
        .collect();
    assert_eq!(
        codes,
        [
            (Endpoint::AppchatSend, 200, Some(-1)),
            (Endpoint::AppchatSend, 502, None),
            (Endpoint::AppchatSend, 200, None),
            (Endpoint::AppchatSend, 200, Some(0)),
            (Endpoint::AppchatSend, 200, Some(0)),
            (Endpoint::AppchatCreate, 200, Some(45009)),
            (Endpoint::AppchatCreate, 200, Some(0)),
        ]
    );
}

#[tokio::test]
#[should_panic(expected = "not in the directory")]
async fn add_chat_panics_on_unknown_member() {
    let (fake, _client) = setup().await;
    fake.add_chat(AGENT, "ops", "alice", &["alice", "zed"]);
}
