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

async fn gettoken_raw(fake: &FakeWeCom, client: &reqwest::Client, query: &str) -> Value {
    client
        .get(format!("{}gettoken?{query}", fake.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    client
        .post(format!("{}message/send?access_token={tok}", fake.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    let long_url = format!("https://a.example/{}", "a".repeat(2048));
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
    let v: Value = client
        .post(format!("{}message/send?access_token={t}", fake.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
