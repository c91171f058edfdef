//! Interactive cards with a real Alertmanager: a firing alert arrives as a card with
//! buttons; "silence 1h" creates a silence in that Alertmanager with exactly the alert's
//! labels (read back with GET /api/v2/silences) and the card shows it; acknowledging and
//! resolving update the card in place without a new message; a forged signature, a replay
//! and a disallowed user change nothing.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const CALLBACK_TOKEN: &str = "TESTSECRETe2ecallback";
const CALLBACK_AES_KEY: &str = "TESTSECRETe2eabcdefghijklmnopqrstuvwxyz0123";

const ROUTES: &str = r#"routes:
  - {name: oncall, app: ops, msgtype: template_card, to: {users: [alice, bob]}, buttons: {allowed_users: [alice]}}
"#;

fn callback_lines() -> String {
    format!("    callback: {{token: {CALLBACK_TOKEN}, encoding_aes_key: {CALLBACK_AES_KEY}}}")
}

async fn interactive_stack() -> Stack {
    let stack = Stack::start(Options {
        routes: ROUTES.into(),
        app_extra: callback_lines(),
        ..Options::default()
    })
    .await;
    stack.wecom.set_callback(
        OPS_AGENT,
        &format!("{}/wecom/callback/ops", stack.service.address),
        CALLBACK_TOKEN,
        CALLBACK_AES_KEY,
    );
    // What WeCom's admin console does before it saves the URL.
    stack
        .wecom
        .verify_callback_url(OPS_AGENT)
        .await
        .expect("the service answers WeCom's URL verification");
    stack
}

fn status_row(card: &Value) -> Option<String> {
    card["horizontal_content_list"]
        .as_array()?
        .iter()
        .find(|row| row["keyname"] == "状态")
        .and_then(|row| row["value"].as_str().map(str::to_string))
}

/// The matchers of a silence read back from Alertmanager, as (name, value, isRegex, isEqual).
fn matchers(silence: &Value) -> Vec<(String, String, bool, bool)> {
    let mut matchers: Vec<_> = silence["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["value"].as_str().unwrap().to_string(),
                m["isRegex"].as_bool().unwrap(),
                m["isEqual"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    matchers.sort();
    matchers
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn silence_from_the_card_creates_the_silence_in_alertmanager_and_forgeries_change_nothing() {
    let stack = interactive_stack().await;
    let labels = [
        ("alertname", "DiskFull"),
        ("team", "db"),
        ("instance", "db-(1|2)"),
    ];
    stack
        .alertmanager
        .post_alerts(&[alert(&labels, "disk 97% full")])
        .await;
    stack.delivered_at_least(1).await;
    let task = stack.wecom.card_tasks()[0].clone();
    let card = stack.wecom.card_view(&task, "alice").expect("alice has the card");
    assert_eq!(card["card_type"], "button_interaction", "{card}");

    // bob got the card but the route allows only alice: nothing happens, bob is told.
    assert!(stack.wecom.click(&task, "bob", "silence:1h").await.acknowledged());
    eventually("bob is told he may not", DELIVERY_TIMEOUT, || async {
        let told = stack.wecom.member_messages("bob");
        told.iter()
            .any(|m| m.to_string().contains("没有权限"))
            .then_some(())
    })
    .await;

    // A forged signature.
    let (query, body) = stack
        .wecom
        .encrypt_for(OPS_AGENT, "<xml><MsgType>event</MsgType></xml>");
    let forged = format!("?{}", query.replace("msg_signature=", "msg_signature=f"));
    let (status, _) = stack.wecom.post_callback_raw(OPS_AGENT, &forged, body).await;
    assert_eq!(status, 403);
    assert!(
        stack.alertmanager.silences().await.is_empty(),
        "nothing silenced yet"
    );

    // alice silences for an hour.
    let click = stack.wecom.click(&task, "alice", "silence:1h").await;
    assert!(click.acknowledged(), "{click:?}");
    let silences = eventually("a silence in Alertmanager", DELIVERY_TIMEOUT, || async {
        let silences = stack.alertmanager.silences().await;
        (!silences.is_empty()).then_some(silences)
    })
    .await;
    assert_eq!(silences.len(), 1, "{silences:#?}");
    let silence = &silences[0];
    assert_eq!(silence["status"]["state"], "active");
    assert_eq!(silence["createdBy"], "alice");
    assert!(silence["comment"].as_str().unwrap().contains(&task));
    let literal = |n: &str, v: &str| (n.to_string(), v.to_string(), false, true);
    assert_eq!(
        matchers(silence),
        vec![
            literal("alertname", "DiskFull"),
            literal("instance", "db-(1|2)"),
            literal("team", "db"),
        ],
        "exactly the alert's labels, matched literally"
    );
    eventually("the card shows the silence", DELIVERY_TIMEOUT, || async {
        let card = stack.wecom.card_view(&task, "bob")?;
        (status_row(&card)? == "已静默 1h · alice" && card.get("button_list").is_none()).then_some(())
    })
    .await;

    // A replay of alice's click, byte for byte: answered, not acted on again.
    let (query, body) = stack.wecom.last_callback(OPS_AGENT).unwrap();
    let (status, _) = stack.wecom.post_callback_raw(OPS_AGENT, &query, body).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.alertmanager.silences().await.len(), 1, "still one silence");

    // Alertmanager now mutes the alert: no further message for it.
    let scrape = stack.service.metrics().await;
    assert_eq!(
        scrape.sum(
            "alertmanager_wecom_silences_created_total",
            &[("route", "oncall")]
        ),
        1.0
    );
    assert_eq!(
        scrape.sum(
            "alertmanager_wecom_callbacks_total",
            &[("event", "template_card_event"), ("outcome", "duplicate")]
        ),
        1.0
    );
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager: apt-get install -y prometheus-alertmanager; run with cargo test --test e2e -- --ignored"]
async fn acknowledging_and_resolving_update_the_card_in_place_without_new_messages() {
    let stack = interactive_stack().await;
    let disk = alert(&[("alertname", "DiskFull"), ("team", "db")], "disk 97% full");
    stack.alertmanager.post_alerts(std::slice::from_ref(&disk)).await;
    let first = stack.delivered_at_least(1).await;
    let task = stack.wecom.card_tasks()[0].clone();

    assert!(stack.wecom.click(&task, "alice", "ack").await.acknowledged());
    eventually("the card acknowledged", DELIVERY_TIMEOUT, || async {
        let card = stack.wecom.card_view(&task, "bob")?;
        (status_row(&card)? == "已认领 · alice").then_some(())
    })
    .await;

    stack.alertmanager.post_alerts(&[resolved(&disk)]).await;
    eventually("the card resolved in place", DELIVERY_TIMEOUT, || async {
        let card = stack.wecom.card_view(&task, "alice")?;
        (card["source"]["desc"] == "RESOLVED").then_some(())
    })
    .await;
    let card = stack.wecom.card_view(&task, "bob").unwrap();
    assert!(
        card.get("button_list").is_none(),
        "no buttons on a resolved card: {card}"
    );
    // Give Alertmanager a group interval to send anything else it would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.wecom.delivered().len(),
        first.len(),
        "the resolve was an update, not a message"
    );
    assert!(stack.alertmanager.silences().await.is_empty());
}

#[tokio::test]
#[ignore = "needs prometheus-alertmanager and redis-server: apt-get install -y prometheus-alertmanager redis-server; run with cargo test --test e2e -- --ignored"]
async fn with_ha_alertmanagers_and_two_replicas_a_click_reaching_either_replica_silences_the_one_card() {
    let stack = HaStack::start(HaOptions {
        routes: ROUTES.into(),
        app_extra: callback_lines(),
        ..HaOptions::default()
    })
    .await;
    // WeCom calls back one URL: behind a load balancer, any replica. Here: replica 2.
    stack.wecom.set_callback(
        OPS_AGENT,
        &format!("{}/wecom/callback/ops", stack.services[1].address),
        CALLBACK_TOKEN,
        CALLBACK_AES_KEY,
    );
    let disk = alert(&[("alertname", "DiskFull"), ("team", "db")], "disk 97% full");
    stack.post_alerts(&[disk]).await;
    let task = eventually("one card", DELIVERY_TIMEOUT, || async {
        stack.wecom.card_tasks().first().cloned()
    })
    .await;
    // Both Alertmanagers notified the group; the peers' replicas agreed on one card.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        stack.wecom.card_tasks().len(),
        1,
        "one card across HA peers and replicas"
    );

    assert!(stack
        .wecom
        .click(&task, "alice", "silence:4h")
        .await
        .acknowledged());
    for alertmanager in &stack.alertmanagers {
        // Created in the notifying Alertmanager, gossiped to its peer.
        let silences = eventually("the silence in both Alertmanagers", DELIVERY_TIMEOUT, || async {
            let silences = alertmanager.silences().await;
            (!silences.is_empty()).then_some(silences)
        })
        .await;
        assert_eq!(silences.len(), 1, "{silences:#?}");
        assert_eq!(silences[0]["createdBy"], "alice");
    }
    eventually("the card shows the silence", DELIVERY_TIMEOUT, || async {
        let card = stack.wecom.card_view(&task, "bob")?;
        (status_row(&card)? == "已静默 4h · alice").then_some(())
    })
    .await;
}
