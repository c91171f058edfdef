//! Alerts reach the routed recipients, in the configured msgtype.

use crate::helpers::*;

fn single_route(msgtype: &str) -> TestConfig {
    TestConfig::routes(&format!(
        "routes:\n  - {{name: all, app: ops, msgtype: {msgtype}, to: {{users: [alice], parties: [2]}}}}\n"
    ))
}

#[tokio::test]
async fn every_fixture_is_delivered_as_textcard_markdown_and_text() {
    for msgtype in ["textcard", "markdown", "text"] {
        let app = spawn(single_route(msgtype)).await;
        for fixture in [CRASHLOOP, UNICODE_MARKUP, RESOLVED] {
            let (status, report) = app.post(fixture).await;
            assert_eq!(status, 200, "{msgtype}: {report}");
            assert_eq!(report["routes"][0]["outcome"], "sent", "{msgtype}: {report}");
        }
        let delivered = app.wecom.delivered();
        assert_eq!(delivered.len(), 3, "{msgtype}");
        for message in &delivered {
            assert_eq!(message.msgtype, msgtype);
            assert_eq!(message.agent_id, OPS_AGENT);
            assert_eq!(message.users, vec!["alice"]);
            assert_eq!(message.parties, vec!["2"]);
        }
        let text = |i: usize| delivered[i].body[msgtype].to_string();
        assert!(text(0).contains("KubePodCrashLooping"), "{msgtype}: {}", text(0));
        assert!(text(1).contains("数据库连接数过高"), "{msgtype}: {}", text(1));
        assert!(text(2).contains("TargetDown"), "{msgtype}: {}", text(2));
        assert!(text(0).contains("FIRING"), "{msgtype}: {}", text(0));
        assert!(text(2).contains("RESOLVED"), "{msgtype}: {}", text(2));
    }
}

#[tokio::test]
async fn a_group_is_split_by_route_and_each_part_goes_to_its_own_recipients() {
    let app = spawn_app().await;
    let payload = crashloop_with(r#""alertname":"DiskFull","team":"db""#);
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    let mut delivered = app.wecom.delivered();
    delivered.sort_by_key(|m| m.msgtype.clone());
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].msgtype, "markdown"); // team pay
    assert!(delivered[0].body.to_string().contains("KubePodCrashLooping"));
    assert!(!delivered[0].body.to_string().contains("DiskFull"));
    assert_eq!(delivered[1].msgtype, "textcard"); // team db
    assert_eq!(delivered[1].parties, vec!["2"]);
    assert!(delivered[1].body.to_string().contains("DiskFull"));
    assert!(!delivered[1].body.to_string().contains("KubePodCrashLooping"));
}

/// A textcard carries one link: Alertmanager's page of its alerts, where each has its graph
/// and a Silence button; without an http(s) externalURL, the first alert's graph.
#[tokio::test]
async fn the_textcard_links_to_alertmanagers_page_of_its_alerts_or_else_to_the_graph() {
    let app = spawn(single_route("textcard")).await;
    app.post(CRASHLOOP).await;
    app.post(RESOLVED).await; // no generatorURL
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 2);
    assert!(delivered[0].body["textcard"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://vm:19095/#/alerts?filter=%7Balertname%3D%22KubePodCrashLooping%22"));
    assert!(delivered[1].body["textcard"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://vm:19095/#/alerts?filter=%7Balertname%3D%22TargetDown%22"));
    let app = spawn(single_route("textcard")).await;
    app.post(&CRASHLOOP.replace(
        r#""externalURL":"http://vm:19095""#,
        r#""externalURL":"vm:19095""#,
    ))
    .await;
    assert!(app.wecom.delivered()[0].body["textcard"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://prometheus.example.com:9090/graph"));
}

#[tokio::test]
async fn annotation_markup_and_template_syntax_arrive_as_literal_text() {
    for msgtype in ["textcard", "markdown", "text"] {
        let app = spawn(single_route(msgtype)).await;
        // The summary carries the markup too, since the textcard shows only the summary.
        let mut payload: serde_json::Value = serde_json::from_str(UNICODE_MARKUP).unwrap();
        let description = payload["alerts"][0]["annotations"]["description"].clone();
        payload["alerts"][0]["annotations"]["summary"] = description;
        let (status, report) = app.post(&payload.to_string()).await;
        assert_eq!(status, 200, "{report}");
        let body = &app.wecom.delivered()[0].body[msgtype];
        let shown = body
            .get("description")
            .or_else(|| body.get("content"))
            .and_then(|v| v.as_str())
            .unwrap();
        // The handlebars-looking text was not evaluated.
        assert!(shown.contains("{{ weird }}"), "{msgtype}: {shown}");
        match msgtype {
            "textcard" => {
                assert!(shown.contains("&lt;b&gt;并&lt;/b&gt;"), "{shown}");
                assert!(!shown.contains("<font"), "{shown}");
                let title = body["title"].as_str().unwrap();
                assert!(title.contains("数据库连接数过高"), "{title}");
            }
            "markdown" => {
                assert!(shown.contains(r"\*\*bold\*\*"), "{shown}");
                assert!(shown.contains(r"\[link\](http://evil.example)"), "{shown}");
                assert!(
                    shown.contains("&lt;font color=\"warning\"&gt;x&lt;/font&gt;"),
                    "{shown}"
                );
            }
            _ => assert!(
                shown.contains("<b>并</b>") && shown.contains("**bold**"),
                "{shown}"
            ),
        }
    }
}

#[tokio::test]
async fn more_than_1000_users_are_sent_in_batches_and_nobody_is_missed() {
    let users: Vec<String> = (0..1500).map(|i| format!("user{i}")).collect();
    let app = spawn(TestConfig::routes(&format!(
        "routes:\n  - {{name: all, app: ops, msgtype: text, to: {{users: [{}]}}}}\n",
        users.join(", ")
    )))
    .await;
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    app.wecom.add_users(&refs);
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["messages"], 2);
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].users.len(), 1000);
    assert_eq!(delivered[1].users.len(), 500);
}

#[tokio::test]
async fn recipients_wecom_reports_invalid_are_counted_and_the_rest_still_get_it() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: all, app: ops, msgtype: text, to: {users: [alice, Ghost], tags: [99]}}\n",
    ))
    .await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.delivered()[0].users, vec!["alice"]);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_invalid_recipients_total{app="ops",kind="user"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_invalid_recipients_total{app="ops",kind="tag"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn an_alert_no_route_matches_is_counted_and_reported_not_silently_dropped() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: db, matchers: ['team=\"db\"'], app: ops, msgtype: text, to: {users: [alice]}}\n",
    ))
    .await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unrouted"], 1);
    assert!(app.wecom.delivered().is_empty());
    assert_eq!(
        metric(&app.metrics().await, "alertmanager_wecom_alerts_unrouted_total"),
        1.0
    );
}

#[tokio::test]
async fn an_app_without_a_secret_renders_and_logs_but_sends_nothing() {
    let app = spawn(TestConfig {
        secret_line: String::new(),
        ..TestConfig::default()
    })
    .await;
    let (status, report) = app.post(CRASHLOOP).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "dry_run");
    assert_eq!(app.wecom.send_calls() + app.wecom.gettoken_calls(), 0);
    assert!(captured_logs().contains("dry-run: app ops would send"));
}

#[tokio::test]
async fn with_digests_off_a_storm_is_held_back_rather_than_silently_dropped() {
    let app = spawn(TestConfig {
        top_extra: NO_DIGESTS.into(),
        ..single_route("text")
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..35 {
        let payload = CRASHLOOP.replace("api-7d9f", &format!("api-{i}"));
        let (status, report) = app.post(&payload).await;
        if status == 503 {
            let error = report["routes"][0]["error"].as_str().unwrap();
            assert!(
                error.contains("alice") && error.contains("silently drop"),
                "{error}"
            );
        }
        statuses.push(status);
    }
    // WeCom delivers 30 a minute to one member; the rest are held back for Alertmanager
    // to retry instead of being "sent" into the void.
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 30);
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 5);
    assert_eq!(app.wecom.silently_dropped(), 0);
    assert_eq!(app.wecom.delivered().len(), 30);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"alertmanager_wecom_member_rate_limited_total{target="ops"}"#
        ),
        5.0
    );
}
