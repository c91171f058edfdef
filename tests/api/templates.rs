//! Template features through `POST /alerts`: template_card, custom templates.

use crate::helpers::*;

#[tokio::test]
async fn every_fixture_is_delivered_as_a_template_card_within_wecom_limits() {
    let app = spawn(TestConfig::routes(
        "routes:\n  - {name: cards, app: ops, msgtype: template_card, to: {users: [alice]}}\n",
    ))
    .await;
    let many = payload_with_alerts(
        200,
        r#""alertname":"HostDown","team":"infra","severity":"critical""#,
        "host is down",
    );
    for payload in [CRASHLOOP, UNICODE_MARKUP, RESOLVED, many.as_str()] {
        let (status, report) = app.post(payload).await;
        assert_eq!(status, 200, "{report}");
    }
    let delivered = app.wecom.delivered();
    assert_eq!(delivered.len(), 4, "the strict fake accepted every card");
    let card = &delivered[0].body["template_card"];
    assert_eq!(card["card_type"], "text_notice");
    assert!(card["main_title"]["title"]
        .as_str()
        .unwrap()
        .contains("KubePodCrashLooping"));
    assert_eq!(card["emphasis_content"]["title"], "critical");
    // Labels go in the sub-title: row keynames hold 5 characters, too few for most names.
    let sub_title = card["sub_title_text"].as_str().unwrap();
    assert!(sub_title.contains("pod=api-7d9f"), "{sub_title}");
    assert!(card["jump_list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["url"].as_str().unwrap().contains("prometheus")));
    assert_eq!(card["card_action"]["url"], "http://vm:19095");
    // Markup in values is data: it arrives as the literal text.
    let unicode = delivered[1].body["template_card"].to_string();
    assert!(
        unicode.contains("{{ weird }}") || unicode.contains("连接数"),
        "{unicode}"
    );
}

#[tokio::test]
async fn the_render_endpoint_previews_without_sending() {
    let app = spawn(TestConfig {
        top_extra: "server:\n  auth: {bearer_token: TESTSECRET-render}\n".into(),
        ..TestConfig::default()
    })
    .await;
    let url = format!("{}/-/render?route=pay", app.address);
    let refused = app.http.post(&url).body(CRASHLOOP).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401, "same auth as /alerts");
    let response = app
        .http
        .post(&url)
        .bearer_auth("TESTSECRET-render")
        .body(CRASHLOOP)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let previews: serde_json::Value = response.json().await.unwrap();
    let preview = &previews[0];
    assert_eq!(preview["route"], "pay");
    assert_eq!(preview["msgtype"], "markdown");
    assert_eq!(preview["cut"], false);
    assert!(preview["sizes"]["content"].as_u64().unwrap() > 100);
    assert_eq!(preview["requests"][0]["touser"], "alice");
    assert_eq!(
        app.wecom.send_calls() + app.wecom.gettoken_calls(),
        0,
        "nothing sent"
    );
    let bad = app
        .http
        .post(&url)
        .bearer_auth("TESTSECRET-render")
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}
