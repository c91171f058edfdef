//! Messages are fitted to WeCom's limits: never refused for length, never cut inside a
//! character, and a cut is always visible. (The fake WeCom rejects anything over a limit.)

use crate::helpers::*;

fn route(msgtype: &str) -> TestConfig {
    TestConfig::routes(&format!(
        "routes:\n  - {{name: all, app: ops, msgtype: {msgtype}, to: {{users: [alice]}}}}\n"
    ))
}

#[tokio::test]
async fn a_long_chinese_annotation_is_cut_on_a_character_boundary_in_every_msgtype() {
    let summary = "数据库连接数过高，请立即检查慢查询。".repeat(200); // ~10 KB
    let payload = payload_with_alerts(1, r#""alertname":"数据库连接数过高","team":"db""#, &summary);
    for msgtype in ["markdown", "text", "textcard"] {
        let app = spawn(route(msgtype)).await;
        let (status, report) = app.post(&payload).await;
        assert_eq!(status, 200, "{msgtype}: {report}");
        assert_eq!(report["routes"][0]["cut"], true);
        let body = &app.wecom.delivered()[0].body[msgtype];
        let (text, limit) = match msgtype {
            "textcard" => (body["description"].as_str().unwrap(), 512),
            _ => (body["content"].as_str().unwrap(), 2048),
        };
        assert!(text.len() <= limit, "{msgtype}: {} bytes", text.len());
        assert!(text.contains('…'), "{msgtype}: the cut is marked: {text}");
        // Every character is whole: the text ends with the marker or markup, not a fragment.
        assert!(text.chars().all(|c| c != char::REPLACEMENT_CHARACTER));
    }
}

#[tokio::test]
async fn a_big_group_becomes_a_numbered_series_of_at_most_three_then_a_summary() {
    let payload = payload_with_alerts(300, r#""alertname":"HostDown","team":"infra""#, "host is down");
    for msgtype in ["markdown", "text"] {
        let app = spawn(route(msgtype)).await;
        let (status, report) = app.post(&payload).await;
        assert_eq!(status, 200, "{msgtype}: {report}");
        assert_eq!(report["routes"][0]["messages"], 3);
        let delivered = app.wecom.delivered();
        assert_eq!(delivered.len(), 3, "{msgtype}: never more than max_messages");
        let texts: Vec<String> = delivered
            .iter()
            .map(|m| m.body[msgtype]["content"].as_str().unwrap().to_string())
            .collect();
        for (i, text) in texts.iter().enumerate() {
            assert!(text.starts_with(&format!("({}/3) ", i + 1)), "{msgtype}: {text}");
        }
        // One line per alert (the full form does not fit), the common summary in the header.
        let shown: usize = texts.iter().map(|t| t.matches("🔥 host-").count()).sum();
        let marker = format!("… and {} more alerts, see Alertmanager", 300 - shown);
        assert!(
            texts[2].ends_with(&marker),
            "{msgtype}: expected {marker:?} in {}",
            texts[2]
        );
        // Each alert appears once across the series.
        for i in 0..shown {
            let name = format!("🔥 host-{i} ");
            assert_eq!(
                texts.iter().map(|t| t.matches(&name).count()).sum::<usize>(),
                1,
                "{msgtype}: host-{i}"
            );
        }
    }
}

#[tokio::test]
async fn with_max_messages_one_a_big_group_is_summarised_in_one_message() {
    let payload = payload_with_alerts(300, r#""alertname":"HostDown","team":"infra""#, "host is down");
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: all, app: ops, msgtype: markdown, max_messages: 1, to: {users: [alice]}}\n",
    ))
    .await;
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 1);
    let text = delivered[0].body["markdown"]["content"].as_str().unwrap();
    let shown = text.matches("🔥 host-").count();
    assert!(
        text.ends_with(&format!("… and {} more alerts, see Alertmanager", 300 - shown)),
        "{text}"
    );
}

#[tokio::test]
async fn a_big_group_on_a_textcard_is_summarised() {
    let payload = payload_with_alerts(300, r#""alertname":"HostDown","team":"infra""#, "host is down");
    let app = spawn(route("textcard")).await;
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    let description = app.wecom.delivered()[0].body["textcard"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    // A header, then one line per alert: many more than the full form's two or three.
    let shown = description.matches("🔥 host-").count();
    assert!(shown >= 10, "{shown} alerts shown: {description}");
    assert!(
        description.contains(&format!("… and {} more alerts", 300 - shown)),
        "{description}"
    );
}

#[tokio::test]
async fn a_long_textcard_title_is_cut_within_128_bytes() {
    let name = "非常长的告警名称".repeat(20);
    let payload = payload_with_alerts(1, &format!(r#""alertname":"{name}","team":"db""#), "x");
    let app = spawn(route("textcard")).await;
    let (status, report) = app.post(&payload).await;
    assert_eq!(status, 200, "{report}");
    let title = app.wecom.delivered()[0].body["textcard"]["title"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(title.len() <= 128, "{} bytes", title.len());
    assert!(title.ends_with('…'));
}
