//! Interactive cards against the fake WeCom (which clicks as WeCom does: encrypted, signed,
//! re-delivered when unanswered) and a stand-in Alertmanager API: silence and acknowledge
//! from the card, the card updated for its recipients, resolves updating the card in place,
//! and everything a forged, replayed, stale or disallowed click must not do. The end-to-end
//! suite (tests/e2e/interactive.rs) does the same against a real Alertmanager.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::*;

pub const CALLBACK_TOKEN: &str = "TESTSECRETcallbackTok3n";
/// 43 characters, as WeCom's console generates them (and a secret: it starts with the mark).
pub const CALLBACK_AES_KEY: &str = "TESTSECRETabcdefghijklmnopqrstuvwxyz0123456";

/// The ops app's secret and callback lines, for `TestConfig::secret_line`.
pub fn secret_and_callback() -> String {
    format!(
        "secret: {OPS_SECRET}\n    callback: {{token: {CALLBACK_TOKEN}, encoding_aes_key: {CALLBACK_AES_KEY}}}"
    )
}

/// A route with buttons to alice and bob, silences going to `alertmanager`.
fn config(alertmanager: &str, buttons: &str) -> TestConfig {
    TestConfig {
        secret_line: secret_and_callback(),
        top_extra: format!("alertmanager: {{url: '{alertmanager}', timeout: 1s}}\n"),
        ..TestConfig::routes(&format!(
            "routes:\n  - {{name: oncall, app: ops, msgtype: template_card, to: {{users: [alice, bob]}}, buttons: {buttons}}}\n"
        ))
    }
}

/// The app, with the fake's callback pointed at it.
async fn spawn_interactive(alertmanager: &str, buttons: &str) -> TestApp {
    let app = spawn(config(alertmanager, buttons)).await;
    app.wecom.set_callback(
        OPS_AGENT,
        &format!("{}/wecom/callback/ops", app.address),
        CALLBACK_TOKEN,
        CALLBACK_AES_KEY,
    );
    app
}

/// A group of `alerts` firing (or resolved) alerts named `Disk`.
fn disk_group(alerts: usize, status: &str) -> String {
    let ends = if status == "resolved" {
        "2026-11-25T18:00:00Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    let alerts: Vec<Value> = (0..alerts)
        .map(|i| {
            json!({
                "status": status,
                "labels": {"alertname": "DiskFull", "severity": "critical", "instance": format!("host-{i}"), "path": "/data/(x|y)"},
                "annotations": {"summary": format!("disk {i} full")},
                "startsAt": "2026-11-25T17:46:42Z",
                "endsAt": ends,
                "generatorURL": "http://prometheus.example.com/graph",
                "fingerprint": format!("{i:016x}")
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"DiskFull\"}",
        "status": status,
        "receiver": "wecom",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.com",
        "truncatedAlerts": 0,
        "alerts": alerts
    })
    .to_string()
}

/// Waits until `check` holds (a click is acted on in the background).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stand-in for Alertmanager's silences API: records what it is asked, answers as
/// configured.
#[derive(Clone, Default)]
pub struct StandInAlertmanager {
    silences: Arc<Mutex<Vec<Value>>>,
    /// 0: answer normally; else answer this HTTP status.
    fail_with: Arc<Mutex<u16>>,
    delay: Arc<Mutex<Duration>>,
    pub url: String,
}

impl StandInAlertmanager {
    pub async fn start() -> StandInAlertmanager {
        let mut am = StandInAlertmanager::default();
        let state = am.clone();
        let server = HttpServer::new(move || {
            let state = state.clone();
            App::new()
                .app_data(web::Data::new(state))
                .route("/api/v2/silences", web::post().to(post_silence))
                .route("/api/v2/silences", web::get().to(get_silences))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        am.url = format!("http://127.0.0.1:{port}");
        am
    }

    pub fn silences(&self) -> Vec<Value> {
        self.silences.lock().unwrap().clone()
    }

    fn fail_with(&self, status: u16) {
        *self.fail_with.lock().unwrap() = status;
    }

    fn delay(&self, by: Duration) {
        *self.delay.lock().unwrap() = by;
    }
}

async fn post_silence(state: web::Data<StandInAlertmanager>, body: web::Json<Value>) -> HttpResponse {
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let status = *state.fail_with.lock().unwrap();
    if status != 0 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json("silence refused by the stand-in");
    }
    let mut silences = state.silences.lock().unwrap();
    let id = format!("silence-{}", silences.len() + 1);
    let mut silence = body.into_inner();
    silence["id"] = json!(id);
    silence["status"] = json!({"state": "active"});
    silences.push(silence);
    HttpResponse::Ok().json(json!({ "silenceID": id }))
}

async fn get_silences(state: web::Data<StandInAlertmanager>) -> HttpResponse {
    HttpResponse::Ok().json(state.silences())
}

/// Fires a group at the app and answers the task id of its card.
async fn fire(app: &TestApp, alerts: usize) -> String {
    let (status, report) = app.post(&disk_group(alerts, "firing")).await;
    assert_eq!(status, 200, "{report}");
    let tasks = app.wecom.card_tasks();
    assert_eq!(tasks.len(), 1, "one card for the group: {tasks:?}");
    tasks[0].clone()
}

fn buttons(card: &Value) -> Vec<String> {
    card["button_list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b["key"].as_str().unwrap().to_string())
        .collect()
}

fn status_row(card: &Value) -> Option<String> {
    card["horizontal_content_list"]
        .as_array()?
        .iter()
        .find(|row| row["keyname"] == "状态")
        .map(|row| row["value"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_firing_group_arrives_as_a_card_with_acknowledge_and_silence_buttons() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 2).await;
    let card = app.wecom.card_view(&task, "alice").expect("alice got the card");
    assert_eq!(card["card_type"], "button_interaction");
    assert_eq!(buttons(&card), ["ack", "silence:1h", "silence:4h", "silence:24h"]);
    assert!(task.starts_with("am-"), "{task}");
    assert!(app.wecom.card_view(&task, "bob").is_some());
    let texts: Vec<&str> = card["button_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["认领", "静默 1h", "静默 4h", "静默 24h"]);
}

#[tokio::test]
async fn silence_creates_one_exact_silence_per_alert_and_greys_the_card_for_everyone() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 2).await;
    let click = app.wecom.click(&task, "alice", "silence:4h").await;
    assert!(click.acknowledged(), "{click:?}");
    assert_eq!(click.deliveries.len(), 1, "answered at once: no re-delivery");
    eventually("two silences", || am.silences().len() == 2).await;
    eventually("the card updated", || {
        app.wecom
            .card_view(&task, "bob")
            .is_some_and(|card| card["card_type"] == "text_notice")
    })
    .await;
    for (i, silence) in am.silences().iter().enumerate() {
        let mut matchers: Vec<(String, String, bool, bool)> = silence["matchers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["value"].as_str().unwrap().to_string(),
                    m["isRegex"].as_bool().unwrap(),
                    m["isEqual"].as_bool().unwrap(),
                )
            })
            .collect();
        matchers.sort();
        let literal = |name: &str, value: &str| (name.to_string(), value.to_string(), false, true);
        assert_eq!(
            matchers,
            vec![
                literal("alertname", "DiskFull"),
                literal("instance", &format!("host-{i}")),
                literal("path", "/data/(x|y)"),
                literal("severity", "critical"),
            ],
            "exactly the alert's labels, literally"
        );
        assert_eq!(silence["createdBy"], "alice");
        assert!(silence["comment"].as_str().unwrap().contains(&task));
        let starts = chrono::DateTime::parse_from_rfc3339(silence["startsAt"].as_str().unwrap()).unwrap();
        let ends = chrono::DateTime::parse_from_rfc3339(silence["endsAt"].as_str().unwrap()).unwrap();
        assert_eq!((ends - starts).num_seconds(), 4 * 3600);
    }
    let card = app.wecom.card_view(&task, "bob").unwrap();
    assert_eq!(status_row(&card).as_deref(), Some("已静默 4h · alice"));
    assert!(card.get("button_list").is_none(), "nothing left to click: {card}");
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_silences_created_total{route="oncall"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_cards_updated_total{reason="silenced",route="oncall"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_callbacks_total{app="ops",event="template_card_event",outcome="acted"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn acknowledge_shows_who_for_every_recipient_and_keeps_the_silence_buttons() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 1).await;
    assert!(app.wecom.click(&task, "bob", "ack").await.acknowledged());
    eventually("the card acknowledged", || {
        app.wecom
            .card_view(&task, "alice")
            .is_some_and(|card| status_row(&card).is_some())
    })
    .await;
    let card = app.wecom.card_view(&task, "alice").unwrap();
    assert_eq!(status_row(&card).as_deref(), Some("已认领 · bob"));
    assert_eq!(buttons(&card), ["silence:1h", "silence:4h", "silence:24h"]);
    assert!(am.silences().is_empty(), "acknowledging silences nothing");
    // And silencing after acknowledging still works, from the updated card.
    assert!(app.wecom.click(&task, "alice", "silence:1h").await.acknowledged());
    eventually("one silence", || am.silences().len() == 1).await;
}

#[tokio::test]
async fn a_resolved_group_updates_its_card_in_place_and_sends_no_new_message() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 2).await;
    let sent_before = app.wecom.delivered().len();
    let (status, report) = app.post(&disk_group(2, "resolved")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(app.wecom.delivered().len(), sent_before, "no new message");
    let card = app.wecom.card_view(&task, "alice").unwrap();
    assert_eq!(card["card_type"], "text_notice", "{card}");
    assert_eq!(card["source"]["desc"], "RESOLVED");
    assert!(card.get("button_list").is_none());
    // Alertmanager's retry of the resolved notification: answered from the record.
    let (status, report) = app.post(&disk_group(2, "resolved")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["routes"][0]["outcome"], "duplicate", "{report}");
    assert_eq!(app.wecom.update_calls(), 1);
    assert_eq!(app.wecom.delivered().len(), sent_before);
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_cards_updated_total{reason="resolved",route="oncall"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_resolve_after_the_code_expired_is_a_new_message() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    fire(&app, 1).await;
    let sent_before = app.wecom.delivered().len();
    app.wecom
        .inject_update_faults(vec![crate::fake_wecom::Fault::Errcode(60140)]);
    let (status, report) = app.post(&disk_group(1, "resolved")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        app.wecom.delivered().len(),
        sent_before + 1,
        "the resolved card as a new message"
    );
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_cards_updated_total{reason="refused",route="oncall"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_forged_signature_a_replay_and_a_stale_callback_change_nothing() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 1).await;
    assert!(app.wecom.click(&task, "alice", "ack").await.acknowledged());
    eventually("acknowledged", || {
        app.wecom
            .card_view(&task, "bob")
            .is_some_and(|c| status_row(&c).is_some())
    })
    .await;
    let updates = app.wecom.update_calls();
    let (query, body) = app.wecom.last_callback(OPS_AGENT).unwrap();

    // Replayed byte for byte: acknowledged (WeCom must not retry it), not acted on.
    let (status, _) = app.wecom.post_callback_raw(OPS_AGENT, &query, body.clone()).await;
    assert_eq!(status, 200);

    // The signature of another token.
    let forged = query.replace("msg_signature=", "msg_signature=0");
    let (status, text) = app
        .wecom
        .post_callback_raw(OPS_AGENT, &forged, body.clone())
        .await;
    assert_eq!(status, 403, "{text}");

    // Ciphertext tampered with, the original's signature.
    let mut tampered = body.clone();
    let at = tampered
        .windows(18)
        .position(|w| w == b"<Encrypt><![CDATA[")
        .expect("an Encrypt element")
        + 20;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let (status, _) = app.wecom.post_callback_raw(OPS_AGENT, &query, tampered).await;
    assert_eq!(status, 403);

    // A click WeCom signed an hour ago.
    app.wecom.set_clock_skew(-3600);
    let stale = app.wecom.click(&task, "alice", "silence:1h").await;
    assert_eq!(stale.deliveries[0].status, Some(403), "{stale:?}");
    app.wecom.set_clock_skew(0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(am.silences().is_empty(), "nothing silenced");
    assert_eq!(app.wecom.update_calls(), updates, "no card updated");
    let scrape = app.metrics().await;
    let count = |outcome: &str, event: &str| {
        metric(
            &scrape,
            &format!(
                r#"alertmanager_wecom_callbacks_total{{app="ops",event="{event}",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!(count("duplicate", "template_card_event"), 1.0);
    // The forged signature, and the tampered ciphertext (the signature covers it).
    assert_eq!(count("refused_signature", "unknown"), 2.0);
    assert!(count("refused_stale", "unknown") >= 1.0);
    let logs = captured_logs();
    assert!(
        !logs.contains(CALLBACK_AES_KEY) && !logs.contains(CALLBACK_TOKEN),
        "no callback secret in logs"
    );
}

#[tokio::test]
async fn a_click_by_someone_not_allowed_silences_nothing_and_tells_them_why() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{allowed_users: [alice]}").await;
    let task = fire(&app, 1).await;
    assert!(app.wecom.click(&task, "bob", "silence:1h").await.acknowledged());
    eventually("bob is told", || {
        app.wecom
            .member_messages("bob")
            .iter()
            .any(|m| m.to_string().contains("没有权限"))
    })
    .await;
    assert!(am.silences().is_empty());
    let card = app.wecom.card_view(&task, "alice").unwrap();
    assert_eq!(buttons(&card).len(), 4, "the card is unchanged");
    // Counted once the click's handling ends, just after bob was told.
    let not_allowed =
        r#"alertmanager_wecom_callbacks_total{app="ops",event="template_card_event",outcome="not_allowed"}"#;
    let started = Instant::now();
    while metric(&app.metrics().await, not_allowed) < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "counted as not_allowed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn alertmanager_down_is_said_on_the_card_and_to_the_user_and_a_second_click_works() {
    let am = StandInAlertmanager::start().await;
    am.fail_with(503);
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 1).await;
    assert!(app.wecom.click(&task, "alice", "silence:1h").await.acknowledged());
    eventually("the failure on the card", || {
        app.wecom
            .card_view(&task, "bob")
            .and_then(|c| status_row(&c))
            .is_some_and(|s| s.starts_with("静默失败"))
    })
    .await;
    let card = app.wecom.card_view(&task, "bob").unwrap();
    assert_eq!(buttons(&card).len(), 4, "buttons kept, to try again");
    eventually("alice is told why", || {
        app.wecom
            .member_messages("alice")
            .iter()
            .any(|m| m.to_string().contains("503"))
    })
    .await;
    am.fail_with(0);
    assert!(app.wecom.click(&task, "alice", "silence:1h").await.acknowledged());
    eventually("the silence", || am.silences().len() == 1).await;
}

#[tokio::test]
async fn a_slow_alertmanager_does_not_delay_the_answer_to_wecom() {
    let am = StandInAlertmanager::start().await;
    am.delay(Duration::from_millis(2500));
    let app = spawn_interactive(&am.url, "{}").await;
    app.wecom.set_callback_timeout(Duration::from_secs(1));
    let task = fire(&app, 1).await;
    let click = app.wecom.click(&task, "alice", "silence:1h").await;
    assert_eq!(click.deliveries.len(), 1, "{click:?}");
    assert!(
        click.deliveries[0].elapsed < Duration::from_millis(900),
        "{click:?}"
    );
}

#[tokio::test]
async fn a_click_on_an_unknown_card_or_button_is_ignored() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 1).await;
    let event = |task_id: &str, key: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[alice]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey><TaskId><![CDATA[{task_id}]]></TaskId><CardType><![CDATA[button_interaction]]></CardType><ResponseCode><![CDATA[made-up]]></ResponseCode><AgentID>{OPS_AGENT}</AgentID></xml>",
            chrono::Utc::now().timestamp()
        )
    };
    for (task_id, key) in [("am-unknown", "silence:1h"), (task.as_str(), "silence:999h")] {
        let (query, body) = app.wecom.encrypt_for(OPS_AGENT, &event(task_id, key));
        let (status, _) = app
            .wecom
            .post_callback_raw(OPS_AGENT, &format!("?{query}"), body)
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(am.silences().is_empty());
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_callbacks_total{app="ops",event="template_card_event",outcome="unknown_task"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn the_admin_consoles_url_verification_succeeds() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    app.wecom.verify_callback_url(OPS_AGENT).await.expect("verified");
    let response = app
        .http
        .get(format!(
            "{}/wecom/callback/nosuchapp?msg_signature=x&timestamp=1&nonce=1&echostr=x",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_card_of_more_alerts_than_a_click_silences_offers_only_acknowledge() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let task = fire(&app, 51).await;
    let card = app.wecom.card_view(&task, "alice").unwrap();
    assert_eq!(buttons(&card), ["ack"]);
}

#[tokio::test]
async fn a_callback_that_is_not_a_card_click_is_answered_and_ignored() {
    let am = StandInAlertmanager::start().await;
    let app = spawn_interactive(&am.url, "{}").await;
    let text = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[alice]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><AgentID>{OPS_AGENT}</AgentID></xml>"
    );
    let (query, body) = app.wecom.encrypt_for(OPS_AGENT, &text);
    let (status, _) = app
        .wecom
        .post_callback_raw(OPS_AGENT, &format!("?{query}"), body)
        .await;
    assert_eq!(status, 200, "WeCom must not deliver it again");
    let scrape = app.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            r#"alertmanager_wecom_callbacks_total{app="ops",event="other",outcome="ignored"}"#
        ),
        1.0
    );
    assert!(am.silences().is_empty());
}
