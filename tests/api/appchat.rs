//! Routes to app group chats (`app` + `chat`): posted through the app's token with
//! `appchat/send`, fitted and classified like app messages, within WeCom's 200 a minute.

use std::process::Command;

use crate::fake_wecom::{Endpoint, Fault};
use crate::helpers::*;

const CHAT: &str = "wrkOps1";

/// A route for everything to the ops chat, as `msgtype`.
fn chat_route(msgtype: &str) -> TestConfig {
    TestConfig::routes(&format!(
        "routes:\n  - {{name: ops-chat, app: ops, chat: {CHAT}, msgtype: {msgtype}}}\n"
    ))
}

async fn spawn_with_chat(config: TestConfig) -> TestApp {
    let app = spawn(config).await;
    app.wecom.add_chat(OPS_AGENT, CHAT, "alice", &["alice", "bob"]);
    app
}

/// The crashloop group as a distinct group number `i`.
fn group(i: usize) -> String {
    CRASHLOOP.replace("api-7d9f", &format!("api-{i}"))
}

#[tokio::test]
async fn a_chat_route_posts_the_message_to_the_chat_with_the_apps_token() {
    let app = spawn_with_chat(chat_route("markdown")).await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["target"], "ops/wrkOps1");
    assert_eq!(report["routes"][0]["outcome"], "sent");
    let messages = app.wecom.chat_messages(CHAT);
    assert_eq!(messages.len(), 1);
    let body = &messages[0];
    assert_eq!(body["chatid"], CHAT);
    assert_eq!(body["msgtype"], "markdown");
    assert!(body.get("agentid").is_none(), "the token names the app: {body}");
    assert!(
        body.get("enable_duplicate_check").is_none(),
        "appchat/send documents no duplicate check: {body}"
    );
    assert!(body["markdown"]["content"]
        .as_str()
        .unwrap()
        .contains("KubePodCrashLooping"));
    assert!(app.wecom.delivered().is_empty(), "nothing went to message/send");
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"alertmanager_wecom_notifications_total{outcome="sent",route="ops-chat",target="ops/wrkOps1"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_app_and_its_chats_share_one_access_token() {
    let app = spawn_with_chat(TestConfig::routes(&format!(
        "routes:\n  - {{name: people, continue: true, app: ops, msgtype: text, to: {{users: [alice]}}}}\n  - {{name: ops-chat, app: ops, chat: {CHAT}, msgtype: text}}\n"
    )))
    .await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.delivered().len(), 1);
    assert_eq!(app.wecom.chat_messages(CHAT).len(), 1);
    assert_eq!(app.wecom.gettoken_calls(), 1);

    // A token WeCom invalidated is replaced once, for the app and the chat alike.
    app.wecom.invalidate_tokens();
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.chat_messages(CHAT).len(), 2);
    assert_eq!(app.wecom.gettoken_calls(), 2);
}

#[tokio::test]
async fn a_textcard_to_a_chat_is_fitted_like_an_app_message() {
    let app = spawn_with_chat(chat_route("textcard")).await;
    let many = payload_with_alerts(
        60,
        r#""alertname":"HostDown""#,
        &"磁盘已满，请尽快清理。".repeat(20),
    );
    let (status, report) = app.post(&many).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["cut"], true);
    let card = &app.wecom.chat_messages(CHAT)[0]["textcard"];
    assert!(card["description"].as_str().unwrap().len() <= 512, "{card}");
    assert!(card["title"].as_str().unwrap().len() <= 128, "{card}");
}

#[tokio::test]
async fn an_unknown_chat_or_another_apps_chat_is_refused_for_good() {
    let app = spawn(chat_route("text")).await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 422, "{report}");
    let route = &report["routes"][0];
    assert_eq!(route["outcome"], "failed_permanent");
    assert_eq!(route["errcode"], 86001, "{route}");

    app.wecom.add_app(CORP_ID, "TESTSECRET-other-app", 1000009);
    app.wecom.add_chat(1000009, CHAT, "alice", &["alice", "bob"]);
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 422, "{report}");
    let error = report["routes"][0]["error"].as_str().unwrap();
    assert_eq!(report["routes"][0]["errcode"], 86008);
    assert!(error.contains("not created by this app"), "{error}");
}

#[tokio::test]
async fn an_app_that_may_not_use_chats_is_refused_and_says_so() {
    let app = spawn_with_chat(chat_route("text")).await;
    app.wecom.allow_appchat(OPS_AGENT, false);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 422, "{report}");
    let error = report["routes"][0]["error"].as_str().unwrap();
    assert!(error.contains("visible range"), "{error}");
    assert!(app.wecom.chat_messages(CHAT).is_empty());
}

#[tokio::test]
async fn transient_chat_failures_are_retried_and_a_resent_group_is_not_posted_twice() {
    let app = spawn_with_chat(chat_route("text")).await;
    app.wecom
        .inject_appchat_faults(vec![Fault::Errcode(-1), Fault::HttpStatus(502)]);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.appchat_calls(Endpoint::AppchatSend), 3);

    // Alertmanager re-sends the group (a retry, or its HA peer): already posted.
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "duplicate");
    assert_eq!(app.wecom.chat_messages(CHAT).len(), 1);
}

#[tokio::test]
async fn beyond_200_messages_a_minute_chat_messages_are_held_back_not_dropped() {
    let app = spawn_with_chat(TestConfig {
        top_extra: NO_DIGESTS.into(),
        ..chat_route("text")
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..203 {
        statuses.push(app.post(&group(i)).await.0);
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 200);
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 3);
    assert_eq!(app.wecom.chat_messages(CHAT).len(), 200);
    assert_eq!(app.wecom.appchat_silently_dropped(), 0);
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_member_rate_limited_total{target="ops/wrkOps1"}"#
        ),
        3.0
    );
}

#[tokio::test]
async fn two_chats_of_one_app_share_the_members_budget() {
    // A member of both chats may get 200 messages a minute from the app in all: the
    // budget is the app's, whichever chat a message goes to.
    let app = spawn(TestConfig {
        top_extra: NO_DIGESTS.into(),
        ..TestConfig::routes(
            "routes:\n  - {name: a, matchers: ['chat=\"a\"'], app: ops, chat: chatA, msgtype: text}\n  - {name: b, app: ops, chat: chatB, msgtype: text}\n",
        )
    })
    .await;
    app.wecom.add_chat(OPS_AGENT, "chatA", "alice", &["alice", "bob"]);
    app.wecom.add_chat(OPS_AGENT, "chatB", "alice", &["alice", "bob"]);
    let mut held = 0;
    for i in 0..210 {
        let labels = if i % 2 == 0 {
            format!(r#""alertname":"A{i}","chat":"a""#)
        } else {
            format!(r#""alertname":"B{i}""#)
        };
        held += usize::from(app.post(&payload_with_alerts(1, &labels, "x")).await.0 == 503);
    }
    assert_eq!(held, 10);
    assert_eq!(app.wecom.appchat_silently_dropped(), 0);
}

#[tokio::test]
async fn appchat_create_and_get_manage_a_chat_from_the_command_line() {
    let wecom = start_fake_wecom().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, config_yaml(&chat_route("text"), &wecom.base_url())).unwrap();
    let config = config.display().to_string();
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let output = Command::new(env!("CARGO_BIN_EXE_alertmanager-wecom"))
                .args(&args)
                .output()
                .expect("binary runs");
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, stdout, stderr) = run(args(&[
        "appchat",
        "create",
        "--config",
        &config,
        "--app",
        "ops",
        "--name",
        "值班告警",
        "--owner",
        "alice",
        "--users",
        "alice,bob",
        "--chatid",
        CHAT,
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("created chat wrkOps1"), "{stdout}");
    assert!(
        stdout.contains("chat: wrkOps1"),
        "prints the route to add: {stdout}"
    );
    let info = wecom.chat_info(CHAT).expect("the fake has the chat");
    assert_eq!(info["owner"], "alice");
    assert_eq!(info["name"], "值班告警");

    let (code, stdout, stderr) = run(args(&[
        "appchat", "get", "--config", &config, "--app", "ops", "--chatid", CHAT,
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["userlist"], serde_json::json!(["alice", "bob"]));

    // Mistakes: checked before asking WeCom, or WeCom's refusal explained.
    let cases = [
        (vec!["--users", "alice"], "2 to 1999 members"),
        (
            vec!["--users", "alice,bob", "--chatid", "has-dash"],
            "not a WeCom chat id",
        ),
        (vec!["--users", "alice,bob", "--chatid", CHAT], "exists already"),
        (vec!["--users", "alice,nobody"], "86007"),
    ];
    for (extra, expected) in cases {
        let mut list = args(&[
            "appchat", "create", "--config", &config, "--app", "ops", "--name", "x", "--owner", "alice",
        ]);
        list.extend(args(&extra));
        let (code, _, stderr) = run(list).await;
        assert_eq!(code, 1, "{extra:?}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains(SECRET_MARK), "{stderr}");
    }
    let (code, _, stderr) = run(args(&[
        "appchat", "get", "--config", &config, "--app", "nope", "--chatid", CHAT,
    ]))
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no such app"), "{stderr}");
}
