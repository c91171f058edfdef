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

// ---- per-member limits: WeCom's clock, at receipt ----

/// Sends `text(to, content)` and asserts WeCom answered errcode 0 (drops are silent).
async fn send_ok(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, to: &str, content: &str) {
    let v = send_raw(fake, client, tok, &text(to, content)).await;
    assert_eq!(code(&v), 0, "{v}");
}

/// Moves the fake's clock forward until WeCom's wall clock reads `at` seconds into the
/// current `period` (60: a minute, 3600: an hour).
fn align_wall_clock(fake: &FakeWeCom, period: u64, at: f64) {
    let now = fake
        .wecom_now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let into = now % period as f64;
    let delta = (at - into).rem_euclid(period as f64);
    fake.advance_time(Duration::from_secs_f64(delta));
}

/// Seconds into the current minute (or hour) on WeCom's wall clock.
fn wall_into(fake: &FakeWeCom, period: u64) -> f64 {
    fake.wecom_now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % period as f64
}

/// How many messages alice actually received.
fn alice_got(fake: &FakeWeCom) -> usize {
    fake.member_messages("alice").len()
}

#[tokio::test]
async fn the_31st_in_a_sliding_minute_is_dropped_though_the_calendar_minute_is_new() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    align_wall_clock(&fake, 60, 10.0);
    for i in 0..15 {
        send_ok(&fake, &client, &t, "alice", &format!("a{i}")).await;
    }
    fake.advance_time(Duration::from_secs(40)); // :50
    for i in 0..15 {
        send_ok(&fake, &client, &t, "alice", &format!("b{i}")).await;
    }
    fake.advance_time(Duration::from_secs(15)); // :05 of the next minute, 55 s after the first
    assert!(wall_into(&fake, 60) < 30.0, "a new calendar minute");
    send_ok(&fake, &client, &t, "alice", "31st").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (30, 1));
    // only alice's budget is spent
    send_ok(&fake, &client, &t, "alice|bob", "both").await;
    assert_eq!(fake.member_messages("bob").len(), 1);
    assert_eq!(fake.silently_dropped(), 2);
    // 60 s after the first 15 they leave the sliding window: 15 more fit
    fake.advance_time(Duration::from_secs(6));
    for i in 0..16 {
        send_ok(&fake, &client, &t, "alice", &format!("c{i}")).await;
    }
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (45, 3));
}

#[tokio::test]
async fn one_at_second_59_and_thirty_at_second_61_drop_the_last() {
    // A sender that budgets per calendar minute sends all 30 at :01; the sliding window
    // still holds the one from :59, so WeCom drops the 30th.
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    align_wall_clock(&fake, 60, 59.3);
    send_ok(&fake, &client, &t, "alice", "at :59").await;
    fake.advance_time(Duration::from_secs(2));
    assert!(wall_into(&fake, 60) < 2.0, "second 61 is :01 of the next minute");
    for i in 0..30 {
        send_ok(&fake, &client, &t, "alice", &format!("at :61 #{i}")).await;
    }
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (30, 1));
    let got = fake.member_messages("alice");
    assert_eq!(got[29]["text"]["content"], "at :61 #28");
    // 60.1 s after :59 it leaves the window: one more fits, then both windows are full
    fake.advance_time(Duration::from_millis(58_100));
    send_ok(&fake, &client, &t, "alice", "next").await;
    send_ok(&fake, &client, &t, "alice", "over").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (31, 2));
}

#[tokio::test]
async fn the_calendar_minute_drops_when_wecoms_clock_is_set_back() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    align_wall_clock(&fake, 60, 10.0);
    let before = fake.wecom_now();
    for i in 0..30 {
        send_ok(&fake, &client, &t, "alice", &format!("m{i}")).await;
    }
    // 61 s later the sliding window is empty, but WeCom's clock went back 61 s: the same
    // calendar minute, which holds 30 already
    fake.advance_time(Duration::from_secs(61));
    fake.set_clock_skew(-61);
    let now = fake.wecom_now().duration_since(before).unwrap();
    assert!(now < Duration::from_secs(10), "{now:?}");
    send_ok(&fake, &client, &t, "alice", "same minute").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (30, 1));
    // WeCom's clock ahead again: a new minute, and the sliding window is empty
    fake.set_clock_skew(0);
    send_ok(&fake, &client, &t, "alice", "next minute").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (31, 1));
}

/// Sends `n` messages to alice in batches of 30, 61 s apart (so no minute limit is hit).
async fn spread_over_minutes(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, n: usize) {
    for i in 0..n {
        if i > 0 && i % MEMBER_LIMIT_PER_MINUTE == 0 {
            fake.advance_time(Duration::from_secs(61));
        }
        send_ok(fake, client, tok, "alice", &format!("h{i}")).await;
    }
}

#[tokio::test]
async fn the_1001st_in_a_sliding_hour_is_dropped_across_the_calendar_hour() {
    let (fake, client) = setup().await;
    fake.set_token_lifetime(30 * 86_400);
    let t = token(&fake, &client).await;
    align_wall_clock(&fake, 3600, 45.0 * 60.0 + 10.0); // hh:45:10
    spread_over_minutes(&fake, &client, &t, MEMBER_LIMIT_PER_HOUR).await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (1000, 0));
    // 34 minutes in: a new calendar hour holding 550 of them, a sliding hour holding 1,000
    fake.advance_time(Duration::from_secs(61));
    assert!(wall_into(&fake, 3600) < 30.0 * 60.0, "the next calendar hour");
    send_ok(&fake, &client, &t, "alice", "1001st").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (1000, 1));
    assert_eq!(fake.member_messages("bob").len(), 0);
}

#[tokio::test]
async fn the_calendar_hour_drops_when_the_sliding_hour_is_empty() {
    let (fake, client) = setup().await;
    fake.set_token_lifetime(30 * 86_400);
    let t = token(&fake, &client).await;
    align_wall_clock(&fake, 3600, 10.0); // hh:00:10
    spread_over_minutes(&fake, &client, &t, MEMBER_LIMIT_PER_HOUR).await;
    // an hour later the sliding hour is empty; WeCom's clock went back to hh:36, a minute
    // none of them was sent in, of the same calendar hour
    fake.advance_time(Duration::from_secs(3600));
    fake.set_clock_skew(-3600 + 120);
    let into = wall_into(&fake, 3600);
    assert!((35.0 * 60.0..37.0 * 60.0).contains(&into), "{into}");
    send_ok(&fake, &client, &t, "alice", "same hour").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (1000, 1));
    fake.set_clock_skew(0);
    send_ok(&fake, &client, &t, "alice", "next hour").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (1001, 1));
}

#[tokio::test]
async fn with_answer_latency_messages_count_at_receipt_not_at_answer() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let latency = Duration::from_millis(500);
    fake.set_answer_latency(latency);
    let url = format!("{}message/send?access_token={t}", fake.base_url());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sends: Vec<_> = (0..30)
        .map(|i| {
            let (client, url, answered) = (client.clone(), url.clone(), answered.clone());
            let body = text("alice", &format!("m{i}"));
            tokio::spawn(async move {
                let started = Instant::now();
                let v: Value = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (code(&v), started.elapsed(), Instant::now())
            })
        })
        .collect();
    // processed and counted on arrival, while every answer is still on its way
    let deadline = Instant::now() + Duration::from_secs(5);
    while alice_got(&fake) < 30 {
        assert!(Instant::now() < deadline, "not processed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 0);
    let mut replies = Vec::new();
    for send in sends {
        replies.push(send.await.unwrap());
    }
    let all_answered = Instant::now();
    assert!(replies.iter().all(|(c, took, _)| *c == 0 && *took >= latency));
    let last_answer = replies.iter().map(|(_, _, at)| *at).max().unwrap();
    // every message arrived at least `latency` before all_answered
    fake.set_answer_latency(Duration::ZERO);
    send_ok(&fake, &client, &t, "alice", "31st, in the window").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (30, 1));
    // put the fake's clock 59.6 s after all_answered: over 60 s after every arrival, but
    // under 60 s after the last answer
    let advance = Duration::from_millis(59_600).saturating_sub(all_answered.elapsed());
    fake.advance_time(advance);
    send_ok(&fake, &client, &t, "alice", "after the window").await;
    let since_last_answer = last_answer.elapsed() + advance;
    assert!(
        since_last_answer < Duration::from_secs(60),
        "a sender counting at answer time thinks the window is still full: {since_last_answer:?}"
    );
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (31, 1));
}

#[tokio::test]
async fn fault_delay_postpones_the_count_answer_latency_does_not() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    fake.inject_send_faults(vec![Fault::Delay(Duration::from_millis(300))]);
    let fake2 = fake.clone();
    let (client2, t2) = (client.clone(), t.clone());
    let delayed = tokio::spawn(async move { send_ok(&fake2, &client2, &t2, "alice", "delayed").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(alice_got(&fake), 0, "Fault::Delay waits before processing");
    delayed.await.unwrap();
    assert_eq!(alice_got(&fake), 1);
    assert_eq!(fake.send_calls(), 1);
}

// ---- parties, tags and @all ----

/// alice, Bob, carol, dave, erin; party 10 {alice, Bob} with sub-party 11 {carol};
/// party 12 {dave}; tag 20 {alice, erin; party 12}.
async fn directory_setup() -> (FakeWeCom, reqwest::Client, String) {
    let (fake, client) = setup().await;
    fake.add_users(&["carol", "dave", "erin"]);
    fake.add_party("10", &["alice", "BOB"]);
    fake.add_party("11", &["carol"]);
    fake.add_child_party("10", "11");
    fake.add_party("12", &["dave"]);
    fake.add_tag("20", &["alice", "erin"], &["12"]);
    let t = token(&fake, &client).await;
    (fake, client, t)
}

fn to(users: &str, parties: &str, tags: &str, content: &str) -> Value {
    json!({"touser": users, "toparty": parties, "totag": tags, "msgtype": "text",
           "agentid": AGENT, "text": {"content": content}})
}

#[tokio::test]
async fn users_parties_and_tags_reach_each_member_once_per_message() {
    let (fake, client, t) = directory_setup().await;
    // alice is named, in party 10 and in tag 20: still one message for her
    for i in 0..30 {
        let v = send_raw(&fake, &client, &t, &to("alice", "10", "20", &format!("m{i}"))).await;
        assert_eq!(code(&v), 0, "{v}");
    }
    let d = fake.delivered();
    assert_eq!(d.len(), 30);
    assert_eq!(d[0].members, vec!["Bob", "alice", "carol", "dave", "erin"]);
    assert_eq!(d[0].users, vec!["alice"]);
    assert_eq!(d[0].parties, vec!["10"]);
    assert_eq!(d[0].tags, vec!["20"]);
    assert_eq!(d[29].members.len(), 5, "nobody counted twice");
    assert_eq!(fake.silently_dropped(), 0);
    for user in ["ALICE", "bob", "carol", "dave", "erin"] {
        let got = fake.member_messages(user);
        assert_eq!(got.len(), 30, "{user}");
        assert_eq!(got[29]["text"]["content"], "m29");
    }
    // the 31st reaches nobody: five silent drops, answered ok, not recorded
    let v = send_raw(&fake, &client, &t, &to("", "10", "20", "m30")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(fake.silently_dropped(), 5);
    assert_eq!(fake.delivered().len(), 30);
    assert!(fake.member_messages("nobody").is_empty());
}

#[tokio::test]
async fn drops_are_per_member_whether_reached_as_user_party_tag_or_all() {
    let (fake, client, t) = directory_setup().await;
    for i in 0..30 {
        send_ok(&fake, &client, &t, "alice", &format!("m{i}")).await;
    }
    // a party: alice dropped, Bob and carol (sub-party) get it
    let v = send_raw(&fake, &client, &t, &to("", "10", "", "party")).await;
    assert_eq!(code(&v), 0, "{v}");
    let last = fake.delivered().pop().unwrap();
    assert_eq!(last.members, vec!["Bob", "carol"]);
    assert!(last.users.is_empty());
    assert_eq!(fake.silently_dropped(), 1);
    // a tag: alice dropped, erin and dave (through party 12) get it
    send_raw(&fake, &client, &t, &to("", "", "20", "tag")).await;
    assert_eq!(fake.delivered().pop().unwrap().members, vec!["dave", "erin"]);
    assert_eq!(fake.silently_dropped(), 2);
    // @all: every user but alice; toparty and totag are ignored
    let v = send_raw(&fake, &client, &t, &to("@all", "10", "20", "all")).await;
    assert_eq!((code(&v), v["invalidparty"].as_str()), (0, Some("")), "{v}");
    let last = fake.delivered().pop().unwrap();
    assert_eq!(last.members, vec!["Bob", "carol", "dave", "erin"]);
    assert_eq!(last.users, vec!["Bob", "carol", "dave", "erin"]);
    assert_eq!(fake.silently_dropped(), 3);
    assert_eq!(alice_got(&fake), 30);
    assert_eq!(fake.member_messages("erin").len(), 2);
    // a party added without members is valid, recorded, and reaches no one the fake counts
    send_raw(&fake, &client, &t, &to("", "2", "", "opaque")).await;
    let last = fake.delivered().pop().unwrap();
    assert_eq!((last.parties, last.members.len()), (vec!["2".to_string()], 0));
    // a known party without members reaches nobody and is not recorded
    fake.add_party("13", &[]);
    let before = fake.delivered().len();
    let v = send_raw(&fake, &client, &t, &to("", "13", "", "empty")).await;
    assert_eq!(code(&v), 0);
    assert_eq!(fake.delivered().len(), before);
}

#[tokio::test]
async fn at_all_reaches_everyone_in_the_directory() {
    let (fake, client, t) = directory_setup().await;
    fake.add_users(&["frank"]);
    send_ok(&fake, &client, &t, "@all", "hello").await;
    let d = fake.delivered();
    assert_eq!(
        d[0].members,
        vec!["Bob", "alice", "carol", "dave", "erin", "frank"]
    );
    for _ in 1..30 {
        send_ok(&fake, &client, &t, "@all", "again").await;
    }
    send_ok(&fake, &client, &t, "@all", "31st").await;
    assert_eq!(fake.silently_dropped(), 6);
    assert_eq!(fake.delivered().len(), 30);
}

#[test]
#[should_panic(expected = "not in the directory")]
fn add_party_panics_on_unknown_member() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (fake, _client) = setup().await;
        fake.add_party("10", &["zed"]);
    });
}

#[tokio::test]
#[should_panic(expected = "not a decimal department id")]
async fn add_party_panics_on_a_non_decimal_id() {
    let (fake, _client) = setup().await;
    fake.add_party("ops", &["alice"]);
}

#[tokio::test]
#[should_panic(expected = "a cycle")]
async fn add_child_party_panics_on_a_cycle() {
    let (fake, _client, _t) = directory_setup().await;
    fake.add_child_party("11", "10");
}

// ---- directory reads ----

async fn dir_get(fake: &FakeWeCom, client: &reqwest::Client, path_and_query: &str) -> Value {
    reply(client.get(format!("{}{path_and_query}", fake.base_url()))).await
}

#[tokio::test]
async fn directory_reads_answer_what_wecom_documents() {
    let (fake, client, t) = directory_setup().await;
    fake.add_party("12", &["alice"]);
    fake.set_user_name("bob", "鲍勃");
    fake.set_tag_name("20", "值班");

    let v = dir_get(
        &fake,
        &client,
        &format!("user/simplelist?access_token={t}&department_id=10"),
    )
    .await;
    assert_eq!(
        v,
        json!({"errcode": 0, "errmsg": "ok", "userlist": [
            {"userid": "alice", "name": "alice", "department": [10, 12]},
            {"userid": "Bob", "name": "鲍勃", "department": [10]},
        ]})
    );
    // fetch_child is no longer documented: sub-department members are not included
    let v = dir_get(
        &fake,
        &client,
        &format!("user/simplelist?access_token={t}&department_id=10&fetch_child=1"),
    )
    .await;
    let ids: Vec<_> = v["userlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userid"].clone())
        .collect();
    assert_eq!(ids, vec![json!("alice"), json!("Bob")]);
    let v = dir_get(
        &fake,
        &client,
        &format!("user/simplelist?access_token={t}&department_id=11"),
    )
    .await;
    assert_eq!(
        v["userlist"],
        json!([{"userid": "carol", "name": "carol", "department": [11]}])
    );

    // the department and everything below it, ids as integers; without id, all of them
    let v = dir_get(
        &fake,
        &client,
        &format!("department/simplelist?access_token={t}&id=10"),
    )
    .await;
    assert_eq!(
        v,
        json!({"errcode": 0, "errmsg": "ok", "department_id": [
            {"id": 10, "parentid": 0, "order": 0},
            {"id": 11, "parentid": 10, "order": 0},
        ]})
    );
    let v = dir_get(&fake, &client, &format!("department/simplelist?access_token={t}")).await;
    let ids: Vec<_> = v["department_id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(2), json!(10), json!(11), json!(12)]);

    let v = dir_get(&fake, &client, &format!("tag/get?access_token={t}&tagid=20")).await;
    assert_eq!(
        v,
        json!({"errcode": 0, "errmsg": "ok", "tagname": "值班",
               "userlist": [{"userid": "alice", "name": "alice"}, {"userid": "erin", "name": "erin"}],
               "partylist": [12]})
    );
    // a tag added without members: valid, empty
    let v = dir_get(&fake, &client, &format!("tag/get?access_token={t}&tagid=7")).await;
    assert_eq!(
        (code(&v), v["userlist"].clone(), v["partylist"].clone()),
        (0, json!([]), json!([]))
    );

    assert_eq!(fake.directory_calls(Endpoint::UserSimpleList), 3);
    assert_eq!(fake.directory_calls(Endpoint::DepartmentSimpleList), 2);
    assert_eq!(fake.directory_calls(Endpoint::TagGet), 2);
    assert!(fake.delivered().is_empty());
}

#[tokio::test]
async fn directory_read_errors() {
    let (fake, client, t) = directory_setup().await;
    let get = |pq: String| {
        let (fake, client) = (&fake, &client);
        async move { code(&dir_get(fake, client, &pq).await) }
    };
    // departments: unknown or missing 60003, malformed 60123
    assert_eq!(
        get(format!("user/simplelist?access_token={t}&department_id=999")).await,
        60003
    );
    assert_eq!(get(format!("user/simplelist?access_token={t}")).await, 60003);
    assert_eq!(
        get(format!("user/simplelist?access_token={t}&department_id=")).await,
        60003
    );
    assert_eq!(
        get(format!("user/simplelist?access_token={t}&department_id=abc")).await,
        60123
    );
    assert_eq!(
        get(format!("user/simplelist?access_token={t}&department_id=010")).await,
        60123
    );
    assert_eq!(
        get(format!("department/simplelist?access_token={t}&id=999")).await,
        60003
    );
    assert_eq!(
        get(format!("department/simplelist?access_token={t}&id=-1")).await,
        60123
    );
    // tags: missing 41017, unknown 40068
    assert_eq!(get(format!("tag/get?access_token={t}")).await, 41017);
    assert_eq!(get(format!("tag/get?access_token={t}&tagid=99")).await, 40068);
    assert_eq!(get(format!("tag/get?access_token={t}&tagid=x")).await, 40068);
    // tokens as message/send; GET only
    assert_eq!(get("tag/get?tagid=20".to_string()).await, 41001);
    assert_eq!(get("tag/get?access_token=nope&tagid=20".to_string()).await, 40014);
    let v: Value = reply(client.post(format!("{}tag/get?access_token={t}&tagid=20", fake.base_url()))).await;
    assert_eq!(code(&v), 43001);
    // an app that may not read the directory; another app still may
    fake.add_app(CORP, "app-secret-two", 1000003);
    let t2 = gettoken(&fake, &client, CORP, "app-secret-two").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    fake.deny_directory(AGENT);
    assert_eq!(
        get(format!("user/simplelist?access_token={t}&department_id=10")).await,
        60011
    );
    assert_eq!(
        get(format!("department/simplelist?access_token={t}")).await,
        60011
    );
    assert_eq!(get(format!("tag/get?access_token={t}&tagid=20")).await, 60011);
    assert_eq!(get(format!("tag/get?access_token={t2}&tagid=20")).await, 0);
    fake.allow_directory(AGENT);
    assert_eq!(get(format!("tag/get?access_token={t}&tagid=20")).await, 0);
    fake.expire_tokens();
    assert_eq!(get(format!("tag/get?access_token={t}&tagid=20")).await, 42001);
}

#[tokio::test]
async fn directory_faults_are_fifo_per_endpoint() {
    let (fake, client, t) = directory_setup().await;
    fake.inject_directory_faults(
        Endpoint::TagGet,
        vec![Fault::Errcode(-1), Fault::HttpStatus(502), Fault::GarbageBody],
    );
    let url = format!("{}tag/get?access_token={t}&tagid=20", fake.base_url());
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(code(&r.json::<Value>().await.unwrap()), -1);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let r = client.get(&url).send().await.unwrap();
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
    // user/simplelist has its own (empty) FIFO
    let v = dir_get(
        &fake,
        &client,
        &format!("user/simplelist?access_token={t}&department_id=10"),
    )
    .await;
    assert_eq!(code(&v), 0);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tagname"], "tag20");
    assert_eq!(fake.directory_calls(Endpoint::TagGet), 4);
    let recorded: Vec<_> = fake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::TagGet)
        .map(|r| (r.status, r.errcode))
        .collect();
    assert_eq!(
        recorded,
        [(200, Some(-1)), (502, None), (200, None), (200, Some(0))]
    );
}

#[tokio::test]
#[should_panic(expected = "not a directory endpoint")]
async fn inject_directory_faults_panics_for_another_endpoint() {
    let (fake, _client) = setup().await;
    fake.inject_directory_faults(Endpoint::Send, vec![Fault::Errcode(-1)]);
}

// ---- duplicate check ----

/// Posts a raw body to message/send.
async fn send_bytes(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, body: &str) -> Value {
    reply(
        client
            .post(format!("{}message/send?access_token={tok}", fake.base_url()))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn duplicate_check_compares_raw_bytes_within_the_default_interval() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let body = format!(
        r#"{{"touser":"alice","msgtype":"text","agentid":{AGENT},"text":{{"content":"disk full"}},"enable_duplicate_check":1}}"#
    );
    let a = send_bytes(&fake, &client, &t, &body).await;
    let b = send_bytes(&fake, &client, &t, &body).await;
    assert_eq!((code(&a), code(&b)), (0, 0));
    assert_ne!(a["msgid"], b["msgid"]);
    assert_eq!((fake.delivered().len(), fake.duplicates_suppressed()), (1, 1));
    // the same JSON in other bytes is not "the same request": delivered
    let reordered = format!(
        r#"{{"agentid":{AGENT},"touser":"alice","msgtype":"text","text":{{"content":"disk full"}},"enable_duplicate_check":1}}"#
    );
    assert_eq!(code(&send_bytes(&fake, &client, &t, &reordered).await), 0);
    assert_eq!(
        code(&send_bytes(&fake, &client, &t, &format!("{body} ")).await),
        0
    );
    assert_eq!((fake.delivered().len(), fake.duplicates_suppressed()), (3, 1));
    // without the flag nothing is compared
    let plain = body.replace(r#","enable_duplicate_check":1"#, "");
    send_bytes(&fake, &client, &t, &plain).await;
    send_bytes(&fake, &client, &t, &plain).await;
    assert_eq!(fake.delivered().len(), 5);
    // default interval 1800 s, counted from the first acceptance (repeats do not extend it)
    fake.advance_time(Duration::from_secs(1799));
    send_bytes(&fake, &client, &t, &body).await;
    assert_eq!((fake.delivered().len(), fake.duplicates_suppressed()), (5, 2));
    fake.advance_time(Duration::from_secs(1));
    let t = token(&fake, &client).await;
    send_bytes(&fake, &client, &t, &body).await;
    assert_eq!((fake.delivered().len(), fake.duplicates_suppressed()), (6, 2));
    // the interval: 1..=14400 s
    let long = format!(
        "{},\"duplicate_check_interval\":14400}}",
        body.strip_suffix('}').unwrap()
    );
    assert_eq!(code(&send_bytes(&fake, &client, &t, &long).await), 0, "{long}");
    let too_long = long.replace("14400", "14401");
    assert_eq!(code(&send_bytes(&fake, &client, &t, &too_long).await), 40058);
    // another corp's identical request is not a duplicate
    fake.add_app("wwothercorp", "other-secret", AGENT);
    let t2 = gettoken(&fake, &client, "wwothercorp", "other-secret").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let before = fake.delivered().len();
    assert_eq!(code(&send_bytes(&fake, &client, &t2, &long).await), 0);
    assert_eq!(fake.delivered().len(), before + 1);
}

#[tokio::test]
async fn suppressed_duplicates_use_up_the_members_budget() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let mut dup = text("alice", "disk full");
    dup["enable_duplicate_check"] = json!(1);
    for _ in 0..30 {
        assert_eq!(code(&send_raw(&fake, &client, &t, &dup).await), 0);
    }
    assert_eq!((alice_got(&fake), fake.duplicates_suppressed()), (1, 29));
    // 29 repeats counted: a new message this minute is dropped
    send_ok(&fake, &client, &t, "alice", "new").await;
    assert_eq!((alice_got(&fake), fake.silently_dropped()), (1, 1));
}

#[tokio::test]
async fn a_duplicate_of_a_message_dropped_by_the_limit_is_not_delivered_either() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    for i in 0..30 {
        send_ok(&fake, &client, &t, "alice", &format!("m{i}")).await;
    }
    let mut dup = text("alice", "disk full");
    dup["enable_duplicate_check"] = json!(1);
    assert_eq!(code(&send_raw(&fake, &client, &t, &dup).await), 0);
    assert_eq!(fake.silently_dropped(), 1);
    // a minute later the budget is back, but WeCom already took that request once
    fake.advance_time(Duration::from_secs(61));
    assert_eq!(code(&send_raw(&fake, &client, &t, &dup).await), 0);
    assert_eq!((alice_got(&fake), fake.duplicates_suppressed()), (30, 1));
    send_ok(&fake, &client, &t, "alice", "new").await;
    assert_eq!(alice_got(&fake), 31);
}

// ---------------------------------------------------------------------------------------
// Template cards and callbacks (fake_wecom_cards.rs)

/// WeCom's published WXBizMsgCrypt sample, verbatim from the repository WeCom links as its
/// official encryption library, sbzhu/weworkapi_python, file callback/Sample.py: the
/// configuration ("假设企业在企业微信后台上设置的参数如下"), the URL-verification request of
/// 使用示例一, the encrypted POST of 使用示例二 and the plaintext reply of 使用示例三 (which
/// is what 使用示例二's ciphertext decrypts to).
mod wecom_sample {
    pub const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    pub const ENCODING_AES_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    pub const CORP_ID: &str = "ww1436e0e65a779aee";
    pub const VERIFY_MSG_SIG: &str = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb";
    pub const VERIFY_TIMESTAMP: &str = "1476416373";
    pub const VERIFY_NONCE: &str = "47744683";
    pub const VERIFY_ECHOSTR: &str =
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
    pub const REQ_MSG_SIG: &str = "0c3914025cb4b4d68103f6bfc8db550f79dcf48e";
    pub const REQ_TIMESTAMP: &str = "1476422779";
    pub const REQ_NONCE: &str = "1597212914";
    pub const REQ_DATA: &str = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>";
    pub const RESP_DATA: &str = "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>";
}

#[test]
fn callback_crypto_reproduces_wecoms_published_samples() {
    use wecom_sample::*;
    // 使用示例一: the signature of the verification GET, then its echostr
    let sig = callback_signature(TOKEN, VERIFY_TIMESTAMP, VERIFY_NONCE, VERIFY_ECHOSTR);
    assert_eq!(sig, VERIFY_MSG_SIG);
    let (echo, receive_id) = callback_decrypt(ENCODING_AES_KEY, VERIFY_ECHOSTR).unwrap();
    assert_eq!(receive_id, CORP_ID);
    // the sample does not print it; it is the 19-digit random string WeCom sends
    assert_eq!(echo, b"1288432023552776189");

    // 使用示例二: the POST's envelope, signature and plaintext
    let encrypt = xml_field(REQ_DATA, "Encrypt").unwrap();
    assert_eq!(xml_field(REQ_DATA, "ToUserName").as_deref(), Some(CORP_ID));
    assert_eq!(xml_field(REQ_DATA, "AgentID").as_deref(), Some("1000002"));
    assert_eq!(
        callback_signature(TOKEN, REQ_TIMESTAMP, REQ_NONCE, &encrypt),
        REQ_MSG_SIG
    );
    let (msg, receive_id) = callback_decrypt(ENCODING_AES_KEY, &encrypt).unwrap();
    assert_eq!(String::from_utf8(msg).unwrap(), RESP_DATA);
    assert_eq!(receive_id, CORP_ID);

    // and the fake's encryption gives the published ciphertexts byte for byte, given the
    // random prefixes those samples used (the first 16 plaintext bytes)
    assert_eq!(
        callback_encrypt(
            ENCODING_AES_KEY,
            CORP_ID,
            RESP_DATA.as_bytes(),
            *b"694ce5a83ae07fe3"
        )
        .unwrap(),
        encrypt
    );
    assert_eq!(
        callback_encrypt(
            ENCODING_AES_KEY,
            CORP_ID,
            b"1288432023552776189",
            *b"8908d0ff052afda0"
        )
        .unwrap(),
        VERIFY_ECHOSTR
    );
    let fields = xml_fields(RESP_DATA).unwrap();
    assert_eq!(fields[4], ("Content".to_string(), "你好".to_string()));
}

#[test]
fn callback_decrypt_refuses_anything_wecom_would_not_send() {
    use wecom_sample::*;
    let encrypt = xml_field(REQ_DATA, "Encrypt").unwrap();
    // a flipped ciphertext byte garbles the last block: its padding no longer checks out
    let mut raw = encrypt.into_bytes();
    let at = raw.len() - 6;
    raw[at] = if raw[at] == b'A' { b'B' } else { b'A' };
    assert!(callback_decrypt(ENCODING_AES_KEY, std::str::from_utf8(&raw).unwrap()).is_err());
    // a ciphertext cut to 16 bytes is not a multiple of 32
    assert!(callback_decrypt(ENCODING_AES_KEY, "MDEyMzQ1Njc4OWFiY2RlZg==").is_err());
    assert!(callback_decrypt(ENCODING_AES_KEY, "not base64!").is_err());
    // another key decrypts to garbage
    let other = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let (msg, id) =
        callback_decrypt(other, &callback_encrypt(other, "wwx", b"hi", [7; 16]).unwrap()).unwrap();
    assert_eq!((msg.as_slice(), id.as_str()), (&b"hi"[..], "wwx"));
    assert!(callback_decrypt(
        ENCODING_AES_KEY,
        &callback_encrypt(other, "wwx", b"hi", [7; 16]).unwrap()
    )
    .map_or(true, |(m, i)| m != b"hi" || i != "wwx"));
    assert!(callback_aes_key("short").is_err());
    // the signature covers every part
    let s = callback_signature("t", "1", "2", "x");
    assert_ne!(s, callback_signature("t", "1", "2", "y"));
    assert_eq!(s, callback_signature("t", "1", "2", "x"));
}

const CB_TOKEN: &str = "fakeCallbackToken01";
const CB_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// setup() plus carol and dave, party 2 {carol, dave}, tag 9 {dave}, and a callback URL
/// nothing listens on (enough to send and update cards).
async fn cards_setup() -> (FakeWeCom, reqwest::Client, String) {
    let (fake, client) = setup().await;
    fake.add_users(&["carol", "dave"]);
    fake.add_party("3", &["carol", "dave"]);
    fake.add_tag("9", &["dave"], &[]);
    fake.set_callback(AGENT, "http://127.0.0.1:9/wecom", CB_TOKEN, CB_KEY);
    let t = token(&fake, &client).await;
    (fake, client, t)
}

fn button_card(task_id: &str) -> Value {
    json!({
        "card_type": "button_interaction",
        "main_title": {"title": "DiskFull on db1", "desc": "critical"},
        "sub_title_text": "disk / at 97%",
        "horizontal_content_list": [{"keyname": "实例", "value": "db1:9100"}],
        "card_action": {"type": 1, "url": "https://am.example/#/alerts"},
        "task_id": task_id,
        "button_list": [
            {"text": "静默 2 小时", "style": 2, "key": "silence:2h"},
            {"text": "确认", "style": 1, "key": "ack"},
            {"type": 1, "text": "打开", "url": "https://am.example/"}
        ]
    })
}

fn card_msg(to: &str, card: Value) -> Value {
    json!({"touser": to, "msgtype": "template_card", "agentid": AGENT, "template_card": card})
}

/// Sends a button card to `to` and answers the send's response_code.
async fn send_card(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, to: &str, task_id: &str) -> String {
    let v = send_raw(fake, client, tok, &card_msg(to, button_card(task_id))).await;
    assert_eq!(code(&v), 0, "{v}");
    v["response_code"].as_str().expect("response_code").to_string()
}

async fn update(fake: &FakeWeCom, client: &reqwest::Client, tok: &str, body: Value) -> Value {
    reply(
        client
            .post(format!(
                "{}message/update_template_card?access_token={tok}",
                fake.base_url()
            ))
            .json(&body),
    )
    .await
}

fn grey(code: &str, users: &[&str], name: &str) -> Value {
    json!({"userids": users, "agentid": AGENT, "response_code": code, "button": {"replace_name": name}})
}

#[tokio::test]
async fn callback_cards_need_a_callback_url() {
    let (fake, client) = setup().await;
    let t = token(&fake, &client).await;
    let v = send_raw(&fake, &client, &t, &card_msg("alice", button_card("t1"))).await;
    assert_eq!(code(&v), 43012, "{v}");
    // a text_notice with action_menu is a callback card too
    let notice = json!({"card_type": "text_notice", "main_title": {"title": "t"},
        "card_action": {"type": 1, "url": "https://a.example/"}, "task_id": "n1",
        "action_menu": {"action_list": [{"text": "静默", "key": "m1"}]}});
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &card_msg("alice", notice.clone())).await),
        43012
    );
    assert!(fake.card_tasks().is_empty());

    fake.set_callback(AGENT, "https://receiver.example/wecom?x=1", CB_TOKEN, CB_KEY);
    let v = send_raw(&fake, &client, &t, &card_msg("alice", button_card("t1"))).await;
    assert_eq!(code(&v), 0, "{v}");
    let rc = v["response_code"].as_str().unwrap();
    assert!(rc.len() >= 32, "{rc}");
    assert_eq!(fake.card_tasks(), vec!["t1"]);
    assert_eq!(fake.response_codes_issued("t1"), vec![rc.to_string()]);
    assert_eq!(fake.card_view("t1", "ALICE").unwrap(), button_card("t1"));
    assert_eq!(fake.card_view("t1", "Bob"), None);
    // text_notice: accepted once the app has a callback, but it gets no response_code
    let v = send_raw(&fake, &client, &t, &card_msg("alice", notice)).await;
    assert_eq!(code(&v), 0, "{v}");
    assert!(v.get("response_code").is_none(), "{v}");
    let no_task = json!({"card_type": "text_notice", "main_title": {"title": "t"},
        "card_action": {"type": 1, "url": "https://a.example/"},
        "action_menu": {"action_list": [{"text": "静默", "key": "m1"}]}});
    assert_eq!(
        code(&send_raw(&fake, &client, &t, &card_msg("alice", no_task)).await),
        42014
    );
}

#[tokio::test]
#[should_panic(expected = "EncodingAESKey must be 43")]
async fn set_callback_panics_on_a_bad_key() {
    let (fake, _) = setup().await;
    fake.set_callback(AGENT, "https://r.example/", "tok", "tooShort");
}

#[tokio::test]
async fn button_interaction_cards_are_checked_rule_by_rule() {
    let (fake, client, t) = cards_setup().await;
    let key = |n: usize| "k".repeat(n);
    // (what is wrong, the card, the errcode)
    let mut cases: Vec<(&str, Value, i64)> = Vec::new();
    let mut case = |what: &'static str, expected: i64, change: &dyn Fn(&mut Value)| {
        let mut card = button_card(&format!("case{}", cases.len()));
        change(&mut card);
        cases.push((what, card, expected));
    };
    case("no task_id", 42014, &|c| {
        drop(c.as_object_mut().unwrap().remove("task_id"))
    });
    case("empty task_id", 42014, &|c| c["task_id"] = json!(""));
    case("task_id of 129 bytes", 42014, &|c| {
        c["task_id"] = json!("t".repeat(129))
    });
    case("task_id with a space", 42014, &|c| c["task_id"] = json!("a b"));
    case("no main_title", 42033, &|c| {
        drop(c.as_object_mut().unwrap().remove("main_title"))
    });
    case("empty main_title.title", 42033, &|c| {
        c["main_title"]["title"] = json!("")
    });
    case("main_title of 37 characters", 40058, &|c| {
        c["main_title"]["title"] = json!("告".repeat(37))
    });
    case("desc of 45 characters", 40058, &|c| {
        c["main_title"]["desc"] = json!("d".repeat(45))
    });
    case("sub_title_text of 161", 40058, &|c| {
        c["sub_title_text"] = json!("s".repeat(161))
    });
    case("no button_list", 40058, &|c| {
        drop(c.as_object_mut().unwrap().remove("button_list"))
    });
    case("no buttons", 40058, &|c| c["button_list"] = json!([]));
    case("seven buttons", 40058, &|c| {
        c["button_list"] = json!((0..7)
            .map(|i| json!({"text": "b", "key": format!("k{i}")}))
            .collect::<Vec<_>>())
    });
    case("button without text", 42038, &|c| {
        drop(c["button_list"][0].as_object_mut().unwrap().remove("text"))
    });
    case("button text of 11 characters", 42038, &|c| {
        c["button_list"][0]["text"] = json!("静".repeat(11))
    });
    case("callback button without key", 42039, &|c| {
        drop(c["button_list"][1].as_object_mut().unwrap().remove("key"))
    });
    case("key of 1025 bytes", 42039, &|c| {
        c["button_list"][1]["key"] = json!(key(1025))
    });
    case("duplicate key", 42039, &|c| {
        c["button_list"][1]["key"] = json!("silence:2h")
    });
    case("key also in action_menu", 42039, &|c| {
        c["action_menu"] = json!({"action_list": [{"text": "x", "key": "ack"}]})
    });
    case(
        "repeated action_menu key",
        42051,
        &|c| {
            c["action_menu"] = json!({"action_list": [{"text": "x", "key": "m"}, {"text": "y", "key": "m"}]})
        },
    );
    case("style 5", 40058, &|c| c["button_list"][0]["style"] = json!(5));
    case("style 0", 40058, &|c| c["button_list"][0]["style"] = json!(0));
    case("button type 2", 40058, &|c| {
        c["button_list"][0]["type"] = json!(2)
    });
    case("url button without url", 42028, &|c| {
        drop(c["button_list"][2].as_object_mut().unwrap().remove("url"))
    });
    case("card_action of a mini program", 42045, &|c| {
        c["card_action"] = json!({"type": 2, "appid": "wx1"})
    });
    case("card_action with a bad url", 42045, &|c| {
        c["card_action"]["url"] = json!("ftp://x")
    });
    case("card_action without url", 42028, &|c| {
        c["card_action"] = json!({"type": 1})
    });
    case("keyname missing", 42027, &|c| {
        c["horizontal_content_list"] = json!([{"value": "v"}])
    });
    case("keyname of 6 characters", 40058, &|c| {
        c["horizontal_content_list"][0]["keyname"] = json!("实例实例实例")
    });
    case("seven rows", 42035, &|c| {
        c["horizontal_content_list"] = json!((0..7).map(|_| json!({"keyname": "k"})).collect::<Vec<_>>())
    });
    case("member row of a stranger", 42050, &|c| {
        c["horizontal_content_list"] = json!([{"keyname": "值班", "type": 3, "userid": "zed"}])
    });
    case("selection without options", 42037, &|c| {
        c["button_selection"] = json!({"question_key": "q", "option_list": []})
    });
    case("selection without question_key", 42043, &|c| {
        c["button_selection"] = json!({"option_list": [{"id": "a", "text": "A"}]})
    });
    case(
        "repeated option id",
        42040,
        &|c| {
            c["button_selection"] = json!({"question_key": "q", "option_list": [{"id": "a", "text": "A"}, {"id": "a", "text": "B"}]})
        },
    );
    case("replace_text in a send", 40058, &|c| {
        c["replace_text"] = json!("已处理")
    });
    case("main_title not an object", 40058, &|c| {
        c["main_title"] = json!("t")
    });
    for (what, card, expected) in cases {
        let v = send_raw(&fake, &client, &t, &card_msg("alice", card)).await;
        assert_eq!(code(&v), expected, "{what}: {v}");
    }
    assert!(fake.card_tasks().is_empty(), "nothing refused became a task");

    // the limits themselves are allowed: 6 buttons of 10 characters, 1024-byte keys,
    // a 128-byte task_id of every allowed character, styles 1..=4, no card_action at all
    let mut card = button_card(&format!("{}_-@{}", "T".repeat(64), "9".repeat(61)));
    card.as_object_mut().unwrap().remove("card_action");
    card["button_list"] = json!((1..=6)
        .map(|i| json!({"text": "按".repeat(10), "style": (i % 4) + 1, "key": format!("{i}{}", key(1023))}))
        .collect::<Vec<_>>());
    card["main_title"]["title"] = json!("告".repeat(36));
    let v = send_raw(&fake, &client, &t, &card_msg("alice", card)).await;
    assert_eq!(code(&v), 0, "{v}");
}

#[tokio::test]
async fn a_task_id_is_used_once_per_app_for_ever() {
    let (fake, client, t) = cards_setup().await;
    send_card(&fake, &client, &t, "alice", "dup-1").await;
    fake.advance_time(Duration::from_secs(30 * 86_400));
    let t = token(&fake, &client).await;
    let v = send_raw(&fake, &client, &t, &card_msg("Bob", button_card("dup-1"))).await;
    assert_eq!(code(&v), 42014, "{v}");
    // another app may use it
    fake.add_app(CORP, "secret-two", 1000003);
    fake.set_callback(1000003, "http://127.0.0.1:9/two", CB_TOKEN, CB_KEY);
    let t2 = gettoken(&fake, &client, CORP, "secret-two").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut other = card_msg("Bob", button_card("dup-1"));
    other["agentid"] = json!(1000003);
    assert_eq!(code(&send_raw(&fake, &client, &t2, &other).await), 0);
    // a repeat the duplicate check suppresses is answered ok, without a response_code
    let mut dedup = card_msg("alice", button_card("dup-2"));
    dedup["enable_duplicate_check"] = json!(1);
    let first = send_raw(&fake, &client, &t, &dedup).await;
    assert!(first["response_code"].is_string(), "{first}");
    let again = send_raw(&fake, &client, &t, &dedup).await;
    assert_eq!(code(&again), 0);
    assert!(again.get("response_code").is_none(), "{again}");
    assert_eq!(fake.response_codes_issued("dup-2").len(), 1);
}

#[tokio::test]
async fn a_response_code_works_once_for_its_app_within_72_hours() {
    let (fake, client, t) = cards_setup().await;
    let a = send_card(&fake, &client, &t, "alice", "rc-a").await;
    let b = send_card(&fake, &client, &t, "alice", "rc-b").await;
    let c = send_card(&fake, &client, &t, "alice", "rc-c").await;

    // refused before the code is looked at: not consumed
    let bad_token = update(&fake, &client, "nope", grey(&a, &["alice"], "已确认")).await;
    assert_eq!(code(&bad_token), 40014);
    let mut wrong_agent = grey(&a, &["alice"], "已确认");
    wrong_agent["agentid"] = json!(42);
    assert_eq!(code(&update(&fake, &client, &t, wrong_agent).await), 40056);
    // a code that does not exist
    assert_eq!(
        code(&update(&fake, &client, &t, grey("no-such-code", &["alice"], "x")).await),
        60140
    );
    let mut missing = grey(&a, &["alice"], "x");
    missing.as_object_mut().unwrap().remove("response_code");
    assert_eq!(code(&update(&fake, &client, &t, missing).await), 60140);

    // just under 72 h: good, once
    fake.advance_time(RESPONSE_CODE_LIFETIME - Duration::from_secs(1));
    let t = token(&fake, &client).await;
    let v = update(&fake, &client, &t, grey(&a, &["alice"], "已确认")).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["invaliduser"], json!([]));
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&a, &["alice"], "已确认")).await),
        60140
    );
    let updates = fake.card_updates("rc-a");
    assert_eq!(updates.len(), 1, "the refused repeat is not the task's");
    assert_eq!(
        (updates[0].errcode, updates[0].code_origin.clone()),
        (0, CodeOrigin::Send)
    );
    assert_eq!(updates[0].applied_to, vec!["alice"]);

    // a call refused after the code was checked still used it up
    let both = json!({"userids": ["alice"], "agentid": AGENT, "response_code": b,
        "button": {"replace_name": "x"}, "template_card": button_card("rc-b")});
    assert_eq!(code(&update(&fake, &client, &t, both).await), 40058);
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&b, &["alice"], "已确认")).await),
        60140
    );
    assert_eq!(fake.card_updates("rc-b")[0].errcode, 40058);
    assert!(fake
        .card_view("rc-b", "alice")
        .unwrap()
        .get("button_replaced")
        .is_none());

    // 72 h and a second: expired
    fake.advance_time(Duration::from_secs(2));
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&c, &["alice"], "已确认")).await),
        60140
    );
    assert!(fake.card_updates("rc-c").is_empty());

    // another app's code
    let d = send_card(&fake, &client, &t, "alice", "rc-d").await;
    fake.add_app(CORP, "secret-two", 1000003);
    let t2 = gettoken(&fake, &client, CORP, "secret-two").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut foreign = grey(&d, &["alice"], "x");
    foreign["agentid"] = json!(1000003);
    assert_eq!(code(&update(&fake, &client, &t2, foreign).await), 42015);
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&d, &["alice"], "已确认")).await),
        0
    );
    assert_eq!(fake.update_calls(), 11);
}

#[tokio::test]
async fn replace_name_greys_the_buttons_of_the_recipients_named_and_no_one_else() {
    let (fake, client, t) = cards_setup().await;
    let first = send_card(&fake, &client, &t, "alice|Bob", "grey-1").await;
    let v = update(
        &fake,
        &client,
        &t,
        grey(&first, &["ALICE", "carol", "Zed"], "已静默"),
    )
    .await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(
        v["invaliduser"],
        json!(["carol", "zed"]),
        "not recipients, lower-cased"
    );
    let alice = fake.card_view("grey-1", "alice").unwrap();
    assert_eq!(alice["button_replaced"], "已静默");
    assert!(alice.get("button_list").is_none(), "{alice}");
    assert_eq!(alice["main_title"], button_card("grey-1")["main_title"]);
    assert_eq!(fake.card_view("grey-1", "Bob").unwrap(), button_card("grey-1"));
    let u = &fake.card_updates("grey-1")[0];
    assert_eq!(u.applied_to, vec!["alice"]);
    assert_eq!(u.invalid_users, vec!["carol", "zed"]);
    assert_eq!(u.body["button"]["replace_name"], "已静默");

    // each of these needs a fresh code: a new card each time
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        format!("grey-{}", n + 1)
    };
    let id = fresh();
    let rc = send_card(&fake, &client, &t, "alice", &id).await;
    let none = json!({"agentid": AGENT, "response_code": rc, "button": {"replace_name": "x"}});
    assert_eq!(code(&update(&fake, &client, &t, none).await), 82001);
    let id = fresh();
    let rc = send_card(&fake, &client, &t, "alice", &id).await;
    let all_invalid = json!({"userids": ["Bob"], "partyids": [3], "tagids": [9], "agentid": AGENT,
        "response_code": rc, "button": {"replace_name": "x"}});
    let v = update(&fake, &client, &t, all_invalid).await;
    assert_eq!(code(&v), 81013, "{v}");
    assert_eq!(
        (
            v["invaliduser"].clone(),
            v["invalidparty"].clone(),
            v["invalidtag"].clone()
        ),
        (json!(["bob"]), json!([3]), json!([9]))
    );
    let id = fresh();
    let rc = send_card(&fake, &client, &t, "alice", &id).await;
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&rc, &["alice"], "")).await),
        42020
    );
    let id = fresh();
    let rc = send_card(&fake, &client, &t, "alice", &id).await;
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&rc, &["alice"], &"长".repeat(11))).await),
        40058
    );
    let id = fresh();
    let rc = send_card(&fake, &client, &t, "alice", &id).await;
    let strings =
        json!({"partyids": ["3"], "agentid": AGENT, "response_code": rc, "button": {"replace_name": "x"}});
    assert_eq!(code(&update(&fake, &client, &t, strings).await), 40058);
    for i in 2..=6 {
        assert_eq!(
            fake.card_view(&format!("grey-{i}"), "alice").unwrap(),
            button_card(&format!("grey-{i}"))
        );
    }
}

#[tokio::test]
async fn partyids_tagids_and_atall_update_the_recipients_they_reach() {
    let (fake, client, t) = cards_setup().await;
    // alice by name, carol and dave through party 3
    let mut msg = card_msg("alice", button_card("reach"));
    msg["toparty"] = json!("3");
    let v = send_raw(&fake, &client, &t, &msg).await;
    let rc = v["response_code"].as_str().unwrap().to_string();
    assert_eq!(fake.card_members("reach"), vec!["alice", "carol", "dave"]);
    let by_party = json!({"partyids": [3], "tagids": [9], "agentid": AGENT, "response_code": rc,
        "button": {"replace_name": "已确认"}});
    let v = update(&fake, &client, &t, by_party).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["invalidtag"], json!([9]), "the card was not sent to tag 9");
    assert_eq!(fake.card_updates("reach")[0].applied_to, vec!["carol", "dave"]);
    assert!(fake
        .card_view("reach", "alice")
        .unwrap()
        .get("button_replaced")
        .is_none());

    // atall: every recipient of the task, whatever else the body names
    let mut msg = card_msg("alice|Bob", button_card("everyone"));
    msg["totag"] = json!("9");
    let v = send_raw(&fake, &client, &t, &msg).await;
    let rc = v["response_code"].as_str().unwrap().to_string();
    let all = json!({"atall": 1, "userids": ["carol"], "agentid": AGENT, "response_code": rc,
        "button": {"replace_name": "已确认"}});
    let v = update(&fake, &client, &t, all).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(
        fake.card_updates("everyone")[0].applied_to,
        vec!["Bob", "alice", "dave"]
    );
}

#[tokio::test]
async fn a_full_replacement_is_checked_like_a_send_and_brings_its_own_buttons() {
    let (fake, client, t) = cards_setup().await;
    let replace = |rc: &str, card: Value| json!({"userids": ["alice"], "agentid": AGENT, "response_code": rc, "template_card": card});

    let rc = send_card(&fake, &client, &t, "alice|Bob", "full").await;
    let mut next = button_card("full");
    next.as_object_mut().unwrap().remove("task_id");
    next["main_title"]["title"] = json!("DiskFull on db1 (silenced)");
    next["button_list"] = json!([{"text": "取消静默", "key": "unsilence"}]);
    let v = update(&fake, &client, &t, replace(&rc, next.clone())).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(fake.card_view("full", "alice").unwrap(), next);
    assert_eq!(fake.card_view("full", "Bob").unwrap(), button_card("full"));

    // replace_text: the new card with one grey label instead of its buttons
    let rc = send_card(&fake, &client, &t, "alice", "full-2").await;
    let mut done = button_card("full-2");
    done["replace_text"] = json!("已处理");
    assert_eq!(code(&update(&fake, &client, &t, replace(&rc, done)).await), 0);
    let view = fake.card_view("full-2", "alice").unwrap();
    assert_eq!(
        (view["button_replaced"].as_str(), view.get("button_list")),
        (Some("已处理"), None)
    );

    // a text_notice replacement: no buttons left
    let rc = send_card(&fake, &client, &t, "alice", "full-3").await;
    let notice = json!({"card_type": "text_notice", "main_title": {"title": "resolved"},
        "card_action": {"type": 1, "url": "https://am.example/"}});
    assert_eq!(
        code(&update(&fake, &client, &t, replace(&rc, notice.clone())).await),
        0
    );
    assert_eq!(fake.card_view("full-3", "alice").unwrap(), notice);

    // refused replacements (each consumes its code)
    let refusals: Vec<(&str, Value, i64)> = vec![
        ("another task_id", button_card("elsewhere"), 42014),
        (
            "a card type the fake does not model",
            json!({"card_type": "vote_interaction"}),
            42031,
        ),
        (
            "a send rule broken",
            {
                let mut c = button_card("x");
                c.as_object_mut().unwrap().remove("task_id");
                c["button_list"][0]["text"] = json!("");
                c
            },
            42038,
        ),
        (
            "a text_notice without card_action",
            json!({"card_type": "text_notice", "main_title": {"title": "t"}}),
            40058,
        ),
        (
            "replace_text of 11 characters",
            {
                let mut c = button_card("x");
                c.as_object_mut().unwrap().remove("task_id");
                c["replace_text"] = json!("已".repeat(11));
                c
            },
            40058,
        ),
    ];
    for (i, (what, card, expected)) in refusals.into_iter().enumerate() {
        let id = format!("refused-{i}");
        let rc = send_card(&fake, &client, &t, "alice", &id).await;
        let v = update(&fake, &client, &t, replace(&rc, card)).await;
        assert_eq!(code(&v), expected, "{what}: {v}");
        assert_eq!(fake.card_view(&id, "alice").unwrap(), button_card(&id), "{what}");
        let v = update(&fake, &client, &t, grey(&rc, &["alice"], "x")).await;
        assert_eq!(code(&v), 60140, "{what}: the code is used up");
    }
}

#[tokio::test]
async fn updates_count_against_the_per_member_limit_of_message_send() {
    let (fake, client, t) = cards_setup().await;
    let rc = send_card(&fake, &client, &t, "alice|Bob", "busy").await; // 1 each
    for i in 0..29 {
        send_ok(&fake, &client, &t, "alice", &format!("m{i}")).await; // alice: 30
    }
    let v = update(&fake, &client, &t, grey(&rc, &["alice", "Bob"], "已确认")).await;
    assert_eq!(code(&v), 0, "over the limit is still errcode 0: {v}");
    let u = &fake.card_updates("busy")[0];
    assert_eq!(
        (u.applied_to.clone(), u.dropped_for.clone()),
        (vec!["Bob".to_string()], vec!["alice".to_string()])
    );
    assert!(fake
        .card_view("busy", "alice")
        .unwrap()
        .get("button_replaced")
        .is_none());
    assert_eq!(
        fake.card_view("busy", "Bob").unwrap()["button_replaced"],
        "已确认"
    );
    // Bob: the card and the update make 2; 28 more messages fit, the 29th is dropped
    for i in 0..28 {
        send_ok(&fake, &client, &t, "Bob", &format!("b{i}")).await;
    }
    assert_eq!(fake.silently_dropped(), 0);
    send_ok(&fake, &client, &t, "Bob", "one too many").await;
    assert_eq!(fake.silently_dropped(), 1);

    // a member the send itself dropped never got the card: nothing to update, nothing counted
    let v = send_raw(&fake, &client, &t, &card_msg("alice|carol", button_card("late"))).await;
    let rc = v["response_code"].as_str().unwrap().to_string();
    assert_eq!(fake.card_members("late"), vec!["carol"]);
    assert_eq!(fake.card_view("late", "alice"), None);
    let v = update(&fake, &client, &t, grey(&rc, &["alice", "carol"], "已确认")).await;
    assert_eq!(
        (code(&v), v["invaliduser"].clone()),
        (0, json!([])),
        "alice is a recipient all the same"
    );
    let u = &fake.card_updates("late")[0];
    assert_eq!(
        (u.applied_to.clone(), u.skipped.clone()),
        (vec!["carol".to_string()], vec!["alice".to_string()])
    );
}

/// How the test receiver answers one request.
#[derive(Clone, Debug)]
enum Answer {
    /// POST: 200 with an empty body; GET: 200 with exactly the decrypted echostr.
    Correct,
    /// Sleep, then answer correctly.
    After(Duration),
    /// This status, empty body.
    Status(u16),
    /// GET: 200 with the decrypted echostr changed by this.
    Echo(fn(&str) -> String),
}

/// One request the test receiver got, checked with the fake's own crypto.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    query: std::collections::HashMap<String, String>,
    raw_query: String,
    body: Vec<u8>,
    signature_ok: bool,
    /// Decrypted Encrypt (POST) or echostr (GET).
    plaintext: Option<String>,
    receive_id: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    answers: std::collections::VecDeque<Answer>,
    received: Vec<Received>,
}

/// A small callback server that checks what the fake sends, as a service would.
struct Receiver {
    state: std::sync::Arc<std::sync::Mutex<ReceiverState>>,
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Receiver {
    async fn start(token: &'static str, key: &'static str) -> Receiver {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let state = std::sync::Arc::new(std::sync::Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let handler = move |req: HttpRequest, body: web::Bytes| {
            let state = shared.clone();
            async move {
                let query: std::collections::HashMap<String, String> =
                    web::Query::from_query(req.query_string())
                        .map(web::Query::into_inner)
                        .unwrap_or_default();
                let q = |k: &str| query.get(k).cloned().unwrap_or_default();
                let encrypted = if req.method() == actix_web::http::Method::GET {
                    q("echostr")
                } else {
                    xml_field(std::str::from_utf8(&body).unwrap_or(""), "Encrypt").unwrap_or_default()
                };
                let signature_ok =
                    callback_signature(token, &q("timestamp"), &q("nonce"), &encrypted) == q("msg_signature");
                let decrypted = callback_decrypt(key, &encrypted).ok();
                let plaintext = decrypted
                    .as_ref()
                    .map(|(m, _)| String::from_utf8_lossy(m).into_owned());
                let answer = {
                    let mut st = state.lock().unwrap();
                    st.received.push(Received {
                        method: req.method().to_string(),
                        query: query.clone(),
                        raw_query: req.query_string().to_string(),
                        body: body.to_vec(),
                        signature_ok,
                        plaintext: plaintext.clone(),
                        receive_id: decrypted.map(|(_, id)| id),
                    });
                    st.answers.pop_front().unwrap_or(Answer::Correct)
                };
                let echo = plaintext.unwrap_or_default();
                let is_get = req.method() == actix_web::http::Method::GET;
                let correct = move || {
                    if is_get {
                        HttpResponse::Ok().content_type("text/plain").body(echo.clone())
                    } else {
                        HttpResponse::Ok().finish()
                    }
                };
                match answer {
                    Answer::Correct => correct(),
                    Answer::After(d) => {
                        tokio::time::sleep(d).await;
                        correct()
                    }
                    Answer::Status(s) => {
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap()).finish()
                    }
                    Answer::Echo(f) => HttpResponse::Ok().body(f(&correct_echo(&req, key))),
                }
            }
        };
        let server = HttpServer::new(move || App::new().default_service(web::to(handler.clone())))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .bind(("127.0.0.1", 0))
            .unwrap();
        let url = format!("http://{}/wecom/callback", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        tokio::task::yield_now().await;
        Receiver { state, url, handle }
    }

    fn answer(&self, answers: Vec<Answer>) {
        self.state.lock().unwrap().answers.extend(answers);
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

/// The plaintext of a verification GET's echostr.
fn correct_echo(req: &actix_web::HttpRequest, key: &str) -> String {
    let query: std::collections::HashMap<String, String> =
        actix_web::web::Query::from_query(req.query_string())
            .map(actix_web::web::Query::into_inner)
            .unwrap_or_default();
    callback_decrypt(key, query.get("echostr").map(String::as_str).unwrap_or(""))
        .map(|(m, _)| String::from_utf8_lossy(&m).into_owned())
        .unwrap_or_default()
}

/// cards_setup() with the callback URL pointing at a fresh test receiver.
async fn click_setup() -> (FakeWeCom, reqwest::Client, String, Receiver) {
    let (fake, client, t) = cards_setup().await;
    let receiver = Receiver::start(CB_TOKEN, CB_KEY).await;
    fake.set_callback(AGENT, &receiver.url, CB_TOKEN, CB_KEY);
    (fake, client, t, receiver)
}

#[tokio::test]
async fn a_click_posts_the_documented_event_encrypted_and_signed() {
    let (fake, client, t, receiver) = click_setup().await;
    fake.set_clock_skew(3600);
    fake.advance_time(Duration::from_secs(10));
    let t = {
        drop(t);
        token(&fake, &client).await
    };
    let mut card = button_card("click-1");
    card["button_list"][1]["key"] = json!("ack]]>&<x>");
    let v = send_raw(&fake, &client, &t, &card_msg("alice|Bob", card)).await;
    assert_eq!(code(&v), 0, "{v}");

    let before = fake.wecom_now();
    let click = fake.click("click-1", "ALICE", "ack]]>&<x>").await;
    assert!(click.posted && click.acknowledged(), "{click:?}");
    assert_eq!(click.deliveries.len(), 1);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert!(r.signature_ok, "{r:?}");
    assert_eq!(r.receive_id.as_deref(), Some(CORP));
    let mut keys: Vec<_> = r.query.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["msg_signature", "nonce", "timestamp"]);
    assert!(r.raw_query.starts_with("msg_signature="), "{}", r.raw_query);
    // envelope: ToUserName, Encrypt, AgentID
    let envelope = xml_fields(std::str::from_utf8(&r.body).unwrap()).unwrap();
    let names: Vec<_> = envelope.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["ToUserName", "Encrypt", "AgentID"]);
    assert_eq!(
        (envelope[0].1.as_str(), envelope[2].1.as_str()),
        (CORP, "1000002")
    );

    // the event, field by field and in the documented order
    let xml = r.plaintext.clone().unwrap();
    assert_eq!(Some(&xml), click.event_xml.as_ref());
    let fields = xml_fields(&xml).unwrap();
    let names: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "ToUserName",
            "FromUserName",
            "CreateTime",
            "MsgType",
            "Event",
            "EventKey",
            "TaskId",
            "CardType",
            "ResponseCode",
            "AgentID"
        ]
    );
    let field = |n: &str| xml_field(&xml, n).unwrap();
    assert_eq!(field("ToUserName"), CORP);
    assert_eq!(field("FromUserName"), "alice");
    assert_eq!(field("MsgType"), "event");
    assert_eq!(field("Event"), "template_card_event");
    assert_eq!(field("EventKey"), "ack]]>&<x>");
    assert_eq!(field("TaskId"), "click-1");
    assert_eq!(field("CardType"), "button_interaction");
    assert_eq!(Some(field("ResponseCode")), click.response_code);
    assert_eq!(field("AgentID"), "1000002");
    // CreateTime and timestamp: WeCom's wall clock (skewed an hour, advanced 10 s)
    let wecom = before.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let create_time: i64 = field("CreateTime").parse().unwrap();
    assert!(
        (wecom..=wecom + 2).contains(&create_time),
        "{create_time} vs {wecom}"
    );
    assert_eq!(Some(create_time), click.create_time);
    let ts: i64 = r.query["timestamp"].parse().unwrap();
    assert!((wecom..=wecom + 2).contains(&ts));

    // the click's ResponseCode updates the card once, and is recorded as the click's
    let rc = click.response_code.clone().unwrap();
    assert_eq!(fake.response_codes_issued("click-1").len(), 2);
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&rc, &["alice"], "已确认")).await),
        0
    );
    assert_eq!(
        fake.card_updates("click-1")[0].code_origin,
        CodeOrigin::Click {
            user: "alice".into(),
            event_key: "ack]]>&<x>".into()
        }
    );

    // the request replays byte for byte; arbitrary XML can be sent correctly signed
    let (path_and_query, body) = fake.last_callback(AGENT).unwrap();
    assert!(
        path_and_query.starts_with("/wecom/callback?msg_signature="),
        "{path_and_query}"
    );
    assert_eq!(
        fake.post_callback_raw(AGENT, &path_and_query, body.clone()).await,
        (200, String::new())
    );
    let replay = receiver.received().pop().unwrap();
    assert_eq!(
        (replay.raw_query, replay.body),
        (r.raw_query.clone(), r.body.clone())
    );
    let (query, body) = fake.encrypt_for(AGENT, "<xml><Anything>x</Anything></xml>");
    assert_eq!(
        fake.post_callback_raw(AGENT, &format!("?{query}"), body).await.0,
        200
    );
    let own = receiver.received().pop().unwrap();
    assert!(own.signature_ok);
    assert_eq!(
        own.plaintext.as_deref(),
        Some("<xml><Anything>x</Anything></xml>")
    );
}

#[tokio::test]
async fn clicks_are_refused_unless_the_member_sees_that_button() {
    let (fake, client, t, receiver) = click_setup().await;
    let rc = send_card(&fake, &client, &t, "alice|Bob", "refuse").await;
    for (user, key, why) in [
        ("carol", "ack", "not a recipient"),
        ("zed", "ack", "not in the directory"),
        ("alice", "nope", "no such key"),
        ("alice", "", "the url button has no key"),
    ] {
        let c = fake.click("refuse", user, key).await;
        assert!(
            !c.posted && c.refused.is_some() && c.deliveries.is_empty(),
            "{why}: {c:?}"
        );
    }
    assert!(!fake.click("no-task", "alice", "ack").await.posted);
    // greyed for alice: she can no longer click, Bob still can
    assert_eq!(
        code(&update(&fake, &client, &t, grey(&rc, &["alice"], "已静默")).await),
        0
    );
    assert!(fake.click("refuse", "alice", "ack").await.refused.is_some());
    assert!(fake.click("refuse", "Bob", "silence:2h").await.acknowledged());
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(
        fake.response_codes_issued("refuse").len(),
        2,
        "refused clicks issue no code"
    );
}

#[tokio::test]
async fn an_event_not_acknowledged_in_time_is_delivered_again() {
    let (fake, client, t, receiver) = click_setup().await;
    fake.set_callback_timeout(Duration::from_millis(300));
    send_card(&fake, &client, &t, "alice", "slow").await;
    receiver.answer(vec![Answer::After(Duration::from_millis(800)), Answer::Correct]);
    let click = fake.click("slow", "alice", "ack").await;
    assert!(click.acknowledged(), "{click:?}");
    assert_eq!(click.deliveries.len(), 2);
    let first = &click.deliveries[0];
    assert!(first.timed_out && first.status.is_none(), "{first:?}");
    assert!(first.elapsed >= Duration::from_millis(300) && first.elapsed < Duration::from_millis(800));
    assert_eq!(click.deliveries[1].status, Some(200));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    // the same event, sealed afresh
    assert_eq!(got[0].plaintext, got[1].plaintext);
    assert!(got.iter().all(|r| r.signature_ok));
    assert_ne!(got[0].query["nonce"], got[1].query["nonce"]);
    assert_ne!(got[0].query["msg_signature"], got[1].query["msg_signature"]);
    assert_ne!(got[0].body, got[1].body);

    // non-200 answers: three retries, then WeCom gives up
    send_card(&fake, &client, &t, "alice", "failing").await;
    receiver.answer(vec![Answer::Status(500); 4]);
    let click = fake.click("failing", "alice", "ack").await;
    assert!(!click.acknowledged());
    let statuses: Vec<_> = click.deliveries.iter().map(|d| d.status).collect();
    assert_eq!(statuses, vec![Some(500); 4]);
    assert_eq!(receiver.received().len(), 6);
    // a 500 then a 200: two deliveries
    send_card(&fake, &client, &t, "alice", "flaky").await;
    receiver.answer(vec![Answer::Status(502)]);
    assert_eq!(fake.click("flaky", "alice", "ack").await.deliveries.len(), 2);
}

#[tokio::test]
async fn url_verification_wants_exactly_the_plaintext_within_a_second() {
    let (fake, _client, _t, receiver) = click_setup().await;
    assert_eq!(fake.verify_callback_url(AGENT).await, Ok(()));
    let got = receiver.received();
    assert_eq!(got[0].method, "GET");
    assert!(got[0].signature_ok, "{:?}", got[0]);
    assert_eq!(got[0].receive_id.as_deref(), Some(CORP));
    let echo = got[0].plaintext.clone().unwrap();
    assert!(
        echo.len() == 19 && echo.bytes().all(|b| b.is_ascii_digit()),
        "{echo}"
    );
    assert!(got[0].raw_query.contains("&echostr="), "{}", got[0].raw_query);

    receiver.answer(vec![Answer::Echo(|e| format!("{e}\n"))]);
    assert!(
        fake.verify_callback_url(AGENT).await.is_err(),
        "a trailing newline"
    );
    receiver.answer(vec![Answer::Echo(|e| format!("\"{e}\""))]);
    assert!(fake.verify_callback_url(AGENT).await.is_err(), "quoted");
    receiver.answer(vec![Answer::Echo(|e| format!("\u{feff}{e}"))]);
    assert!(fake.verify_callback_url(AGENT).await.is_err(), "a BOM");
    receiver.answer(vec![Answer::Status(403)]);
    assert!(fake.verify_callback_url(AGENT).await.is_err());
    receiver.answer(vec![Answer::After(Duration::from_millis(1300))]);
    let slow = fake.verify_callback_url(AGENT).await;
    assert!(slow.as_ref().is_err_and(|e| e.contains("no answer")), "{slow:?}");
    // URL verification ignores set_callback_timeout: still 1 s
    fake.set_callback_timeout(Duration::from_secs(5));
    receiver.answer(vec![Answer::After(Duration::from_millis(1300))]);
    assert!(fake.verify_callback_url(AGENT).await.is_err());
    assert_eq!(fake.verify_callback_url(AGENT).await, Ok(()));
    // nothing listening
    fake.set_callback(AGENT, "http://127.0.0.1:9/none", CB_TOKEN, CB_KEY);
    assert!(fake.verify_callback_url(AGENT).await.is_err());
}
