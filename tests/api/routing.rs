//! Routing through `POST /alerts`: who gets paged, for each way SREs express it.

use crate::fake_wecom::Fault;
use crate::helpers::*;

const ROBOT_KEY: &str = "TESTSECRET-robot-key-9d8e";

/// A crashloop-like group with one alert per (alertname, owner) given.
fn group(alerts: &[(&str, &str)]) -> String {
    let alerts: Vec<String> = alerts
        .iter()
        .map(|(name, owner)| {
            let owner_label = if owner.is_empty() { String::new() } else { format!(r#","owner":"{owner}""#) };
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"{name}","team":"db"{owner_label}}},"annotations":{{"summary":"{name} for {owner}"}},"startsAt":"2026-11-25T17:46:42Z","generatorURL":"http://prometheus.example.com/graph"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{team=\"db\"}}","status":"firing","receiver":"wecom","externalURL":"http://am.example.com","alerts":[{}]}}"#,
        alerts.join(",")
    )
}

#[tokio::test]
async fn recipients_come_from_the_alerts_owner_label() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: owners, app: ops, msgtype: text, to: {users: [\"{{labels.owner}}\"]}}\n",
    ))
    .await;
    let (status, report) = app.post(&group(&[("DiskFull", "alice|bob")])).await;
    assert_eq!(status, 200, "{report}");
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].users, vec!["alice", "bob"]);
}

#[tokio::test]
async fn a_group_with_different_owners_is_split_so_nobody_gets_anothers_alert() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: owners, app: ops, msgtype: text, to: {users: [\"{{labels.owner}}\"]}}\n",
    ))
    .await;
    let (status, report) = app
        .post(&group(&[
            ("DiskFull", "alice"),
            ("SlowQueries", "bob"),
            ("Backlog", "alice"),
        ]))
        .await;
    assert_eq!(status, 200, "{report}");
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 2);
    let for_alice = delivered
        .iter()
        .find(|m| m.users == ["alice"])
        .unwrap()
        .body
        .to_string();
    let for_bob = delivered
        .iter()
        .find(|m| m.users == ["bob"])
        .unwrap()
        .body
        .to_string();
    assert!(
        for_alice.contains("DiskFull") && for_alice.contains("Backlog") && !for_alice.contains("SlowQueries")
    );
    assert!(for_bob.contains("SlowQueries") && !for_bob.contains("DiskFull"));
}

#[tokio::test]
async fn an_alert_without_an_owner_goes_to_the_fallback() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: owners, app: ops, msgtype: text, to: {users: [\"{{labels.owner}}\"]}, fallback_to: {tags: [1]}}\n",
    ))
    .await;
    let (status, report) = app.post(&group(&[("DiskFull", "alice"), ("Orphan", "")])).await;
    assert_eq!(status, 200, "{report}");
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 2);
    let fallback = delivered.iter().find(|m| m.tags == ["1"]).unwrap();
    assert!(fallback.body.to_string().contains("Orphan"));
    assert!(fallback.users.is_empty());
}

#[tokio::test]
async fn without_a_fallback_an_ownerless_alert_fails_loudly() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: owners, app: ops, msgtype: text, to: {users: [\"{{labels.owner}}\"]}}\n",
    ))
    .await;
    let (status, report) = app.post(&group(&[("DiskFull", "alice"), ("Orphan", "")])).await;
    assert_eq!(status, 422, "{report}");
    let error = report["routes"][1]["error"].as_str().unwrap();
    assert!(
        error.contains("Orphan") && error.contains("fallback_to"),
        "{error}"
    );
    assert_eq!(app.wecom.delivered().len(), 1, "alice's alert still went out");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_recipients_unresolved_total{route="owners"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn continue_fans_an_alert_out_to_every_matching_route() {
    let app = spawn(TestConfig::routes(
        r#"routes:
  - {name: dba, matchers: ['team="db"'], continue: true, app: ops, msgtype: text, to: {users: [alice]}}
  - {name: db-oncall, matchers: ['team="db"', 'alertname=~"Disk.*"'], app: ops, msgtype: markdown, to: {parties: [2]}}
  - {name: rest, app: ops, msgtype: text, to: {tags: [1]}}
"#,
    ))
    .await;
    let (status, report) = app.post(&group(&[("DiskFull", "")])).await;
    assert_eq!(status, 200, "{report}");
    let mut routes: Vec<&str> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    routes.sort_unstable();
    assert_eq!(routes, vec!["db-oncall", "dba"]);
    assert_eq!(app.wecom.delivered().len(), 2);
}

#[tokio::test]
async fn group_by_sends_one_message_per_namespace() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: ns, group_by: [namespace], app: ops, msgtype: text, to: {users: [alice]}}\n",
    ))
    .await;
    let payload = crashloop_with(r#""alertname":"KubePodCrashLooping","namespace":"db""#);
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.delivered().len(), 2);
}

#[tokio::test]
async fn resolved_alerts_are_not_sent_where_send_resolved_is_false() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: page, send_resolved: false, app: ops, msgtype: text, to: {users: [alice]}}\n",
    ))
    .await;
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["routes"].as_array().unwrap().is_empty());
    assert_eq!(report["unrouted"], 0);
    assert!(app.wecom.delivered().is_empty());
}

#[tokio::test]
async fn two_apps_each_use_their_own_token() {
    let wecom = start_fake_wecom().await;
    wecom.add_app(CORP_ID, "TESTSECRET-dev-app", 1000003);
    let routes = r#"routes:
  - {name: pay, matchers: ['team="pay"'], app: ops, msgtype: text, to: {users: [alice]}}
  - {name: rest, app: dev, msgtype: text, to: {users: [bob]}}
"#;
    let yaml = config_yaml(&TestConfig::routes(routes), &wecom.base_url()).replace(
        "apps:\n",
        &format!(
            "apps:\n  - {{name: dev, corp_id: {CORP_ID}, agent_id: 1000003, secret: TESTSECRET-dev-app}}\n"
        ),
    );
    let app = spawn_with_yaml(&yaml, wecom).await;
    for payload in [
        CRASHLOOP,
        RESOLVED,
        CRASHLOOP.replace("api-7d9f", "api-2").as_str(),
    ] {
        let (status, report) = app.post(payload).await;
        assert_eq!(status, 200, "{report}");
    }
    assert_eq!(app.wecom.gettoken_calls(), 2, "one token per app, each cached");
    let mut agents: Vec<i64> = app.wecom.delivered().iter().map(|m| m.agent_id).collect();
    agents.sort_unstable();
    assert_eq!(agents, vec![OPS_AGENT, OPS_AGENT, 1000003]);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_notifications_total{outcome="sent",route="rest",target="dev"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_robot_posts_to_its_chat_and_mentions_the_owners() {
    let app = spawn(TestConfig::routes(&format!(
        r#"robots:
  - {{name: dba-chat, key: {ROBOT_KEY}}}
routes:
  - name: db-chat
    robot: dba-chat
    msgtype: text
    mention: {{users: ["{{{{labels.owner}}}}"], mobiles: ["13800000000"]}}
"#
    )))
    .await;
    app.wecom.add_robot(ROBOT_KEY);
    let (status, report) = app
        .post(&group(&[("DiskFull", "alice"), ("SlowQueries", "bob")]))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["target"], "dba-chat");
    let messages = app.wecom.robot_messages(ROBOT_KEY);
    assert_eq!(messages.len(), 1);
    let text = &messages[0]["text"];
    assert_eq!(text["mentioned_list"], serde_json::json!(["alice", "bob"]));
    assert_eq!(text["mentioned_mobile_list"], serde_json::json!(["13800000000"]));
    assert!(text["content"].as_str().unwrap().contains("SlowQueries"));
    assert_eq!(app.wecom.gettoken_calls(), 0, "robots need no token");
}

#[tokio::test]
async fn a_robot_markdown_message_mentions_with_userid_tags_and_may_be_long() {
    let app = spawn(TestConfig::routes(&format!(
        "robots: [{{name: chat, key: {ROBOT_KEY}}}]\nroutes:\n  - {{name: chat, robot: chat, msgtype: markdown, mention: {{users: [\"{{{{labels.owner}}}}\"]}}}}\n"
    )))
    .await;
    app.wecom.add_robot(ROBOT_KEY);
    // One line per alert: 100 of them take more than 2048 bytes.
    let many = payload_with_alerts(100, r#""alertname":"HostDown","owner":"alice""#, "host is down");
    let (status, report) = app.post(&many).await;
    assert_eq!(status, 200, "{report}");
    let content = app.wecom.robot_messages(ROBOT_KEY)[0]["markdown"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(content.contains("<@alice>"), "{content}");
    assert!(
        content.len() > 2048 && content.len() <= 4096,
        "{} bytes",
        content.len()
    );
}

/// A mention pings: a series of robot messages mentions once, in its first message, both
/// as text's `mentioned_list` and as markdown's `<@userid>`.
#[tokio::test]
async fn a_robot_series_mentions_once() {
    let app = spawn(TestConfig::routes(&format!(
        "robots: [{{name: chat, key: {ROBOT_KEY}}}]\nroutes:\n  - {{name: text, robot: chat, msgtype: text, continue: true, mention: {{users: [alice]}}}}\n  - {{name: md, robot: chat, msgtype: markdown, mention: {{users: [alice]}}}}\n"
    )))
    .await;
    app.wecom.add_robot(ROBOT_KEY);
    let many = payload_with_alerts(400, r#""alertname":"HostDown","owner":"alice""#, "host is down");
    let (status, report) = app.post(&many).await;
    assert_eq!(status, 200, "{report}");
    let messages = app.wecom.robot_messages(ROBOT_KEY);
    let texts: Vec<_> = messages.iter().filter(|m| m["msgtype"] == "text").collect();
    let markdowns: Vec<_> = messages.iter().filter(|m| m["msgtype"] == "markdown").collect();
    assert!(texts.len() > 1 && markdowns.len() > 1, "two series: {messages:?}");
    assert_eq!(texts[0]["text"]["mentioned_list"], serde_json::json!(["alice"]));
    assert!(markdowns[0]["markdown"]["content"]
        .as_str()
        .unwrap()
        .contains("<@alice>"));
    for text in &texts[1..] {
        assert!(text["text"].get("mentioned_list").is_none(), "{text}");
    }
    for markdown in &markdowns[1..] {
        assert!(!markdown["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains("<@alice>"));
    }
}

#[tokio::test]
async fn robot_errors_are_classified_like_app_errors() {
    let app = spawn(TestConfig::routes(&format!(
        "robots: [{{name: chat, key: {ROBOT_KEY}}}]\nroutes:\n  - {{name: chat, robot: chat, msgtype: markdown_v2}}\n"
    )))
    .await;
    // Not registered: WeCom answers 93000 (invalid key or robot removed) — permanent.
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["routes"][0]["errcode"], 93000);
    let error = report["routes"][0]["error"].as_str().unwrap();
    assert!(!error.contains(SECRET_MARK), "the key never shows: {error}");

    app.wecom.add_robot(ROBOT_KEY);
    app.wecom.inject_robot_faults(vec![Fault::Errcode(-1)]);
    let (status, report) = app.post(RESOLVED).await;
    assert_eq!(status, 200, "transient errors are retried: {report}");
    assert_eq!(app.wecom.robot_messages(ROBOT_KEY)[0]["msgtype"], "markdown_v2");
}

#[tokio::test]
async fn a_robot_over_20_messages_a_minute_holds_the_rest_back() {
    let app = spawn(TestConfig {
        top_extra: NO_DIGESTS.into(),
        ..TestConfig::routes(&format!(
            "robots: [{{name: chat, key: {ROBOT_KEY}}}]\nroutes:\n  - {{name: chat, robot: chat, msgtype: text}}\n"
        ))
    })
    .await;
    app.wecom.add_robot(ROBOT_KEY);
    let mut statuses = Vec::new();
    for i in 0..22 {
        statuses.push(
            app.post(&CRASHLOOP.replace("api-7d9f", &format!("api-{i}")))
                .await
                .0,
        );
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 20);
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 2);
    assert_eq!(app.wecom.robot_messages(ROBOT_KEY).len(), 20);
}
