//! Interactive cards (docs/interactive-cards.md): a firing card with buttons is sent with
//! a `task_id` and leaves a record — its alerts, recipients and the `response_code` WeCom
//! answered — in the shared card store for 72 hours, where a click (on any replica) finds
//! what to silence and a resolve finds the card to update in place. This file owns the
//! record, its keys, the bodies of `message/update_template_card`, and the notifier's
//! card-sending paths; the service layer acts on clicks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::api::SendReceipt;
use super::outcome::SendFailure;
use super::target::{Audience, Method, Request, Target};
use super::{Notifier, Unsent};
use crate::config::{Mentions, Recipients, RouteConfig};
use crate::model::{Alert, AlertStatus};
use crate::render::MessageContent;
use crate::state::{key_hex, CardStore, DeliveryKey};

/// How long WeCom accepts a `response_code` (更新模版卡片消息: 72小时内有效).
pub const CODE_LIFETIME: Duration = Duration::from_secs(72 * 3600);
/// Codes are forgotten this much before WeCom would refuse them, so that an update never
/// races their expiry (a refused update costs a fallback message).
const CODE_MARGIN: Duration = Duration::from_secs(600);
/// A retried send reuses its first attempt's task id this long (an Alertmanager retry
/// comes within minutes): a timed-out attempt WeCom did accept then makes the retry a
/// duplicate task id, not a second card.
const TASK_ID_REUSE: Duration = Duration::from_secs(3600);
/// Re-deliveries of a click come within seconds (WeCom retries three times); an hour
/// covers them and any replay within the freshness window.
const CLICK_MEMORY: Duration = Duration::from_secs(3600);
pub use crate::render::card::MAX_SILENCED_ALERTS;

/// What a notification's card keeps of its alerts, computed before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPlan {
    /// Whether the card shows firing alerts (it has buttons), or is the resolved state.
    pub firing: bool,
    /// The firing alerts' label sets, in order (at most [`MAX_SILENCED_ALERTS`]).
    pub alerts: Vec<Vec<(String, String)>>,
    /// How many firing alerts the card stands for.
    pub firing_count: usize,
    /// Alertmanager's URL as the webhook gave it: where silences go by default.
    pub external_url: String,
}

impl CardPlan {
    pub fn of(alerts: &[&Alert], external_url: &str) -> CardPlan {
        let firing: Vec<&&Alert> = alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .collect();
        CardPlan {
            firing: !firing.is_empty(),
            alerts: firing
                .iter()
                .take(MAX_SILENCED_ALERTS)
                .map(|alert| {
                    alert
                        .labels
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_string()))
                        .collect()
                })
                .collect(),
            firing_count: firing.len(),
            external_url: external_url.to_string(),
        }
    }

    /// Whether one click may silence all of the card's alerts.
    pub fn can_silence(&self) -> bool {
        self.firing_count <= MAX_SILENCED_ALERTS
    }
}

/// A sent interactive card, as clicks and resolves find it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardRecord {
    pub task_id: String,
    /// The app (its target name) and agent id that sent it.
    pub app: String,
    pub agent_id: i64,
    pub route: String,
    pub group_key: String,
    /// The recipients of this card (one recipient batch of the notification).
    pub recipients: Recipients,
    /// The firing alerts' label sets: what a silence matches, never the callback's content.
    pub alerts: Vec<Vec<(String, String)>>,
    pub firing_count: usize,
    pub external_url: String,
    /// The button keys the card was sent with: a click's key must be one of them.
    pub buttons: Vec<String>,
    /// The card as it was sent (the base of every update).
    pub card: Value,
    /// Unix seconds.
    pub sent_at: i64,
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    #[serde(default)]
    pub silenced_by: Option<String>,
    #[serde(default)]
    pub resolved: bool,
}

impl CardRecord {
    /// Whether the record's buttons include `key`.
    pub fn has_button(&self, key: &str) -> bool {
        self.buttons.iter().any(|b| b == key)
    }
}

/// The card store as the deliver and service layers use it.
#[derive(Clone)]
pub struct Cards {
    store: Arc<dyn CardStore>,
}

impl Cards {
    pub fn new(store: Arc<dyn CardStore>) -> Cards {
        Cards { store }
    }

    /// The task id of a request's card: the one its first attempt used (a retry must send
    /// the same card), else a fresh one. WeCom takes at most 128 bytes of `[0-9A-Za-z_-@]`,
    /// never the same twice within an app.
    pub async fn task_id(&self, key: Option<&DeliveryKey>) -> String {
        let fresh = format!("am-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        match key {
            None => fresh,
            Some(key) => {
                let held = self
                    .store
                    .put_new(&format!("task:{}", key_hex(key)), fresh.as_bytes(), TASK_ID_REUSE)
                    .await;
                String::from_utf8(held).unwrap_or(fresh)
            }
        }
    }

    /// Remembers a card WeCom accepted: its record, the slot a resolve looks it up by, and
    /// its `response_code`.
    pub async fn sent(&self, record: &CardRecord, slot: &str, code: Option<&str>) {
        let ttl = CODE_LIFETIME;
        self.save(record).await;
        self.store
            .put(&format!("slot:{slot}"), record.task_id.as_bytes(), ttl)
            .await;
        if let Some(code) = code {
            self.put_code(&record.task_id, code).await;
        }
    }

    pub async fn get(&self, task_id: &str) -> Option<CardRecord> {
        let bytes = self.store.get(&format!("card:{task_id}")).await?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores the record again (after a click changed it), for what is left of its 72 h.
    pub async fn save(&self, record: &CardRecord) {
        let bytes = serde_json::to_vec(record).expect("a card record serialises");
        let age = Duration::from_secs(u64::try_from(unix_now() - record.sent_at).unwrap_or(0));
        let ttl = CODE_LIFETIME.saturating_sub(age).max(Duration::from_secs(1));
        self.store
            .put(&format!("card:{}", record.task_id), &bytes, ttl)
            .await;
    }

    /// The latest card sent for a slot (see [`slot`]).
    pub async fn latest(&self, slot: &str) -> Option<String> {
        let bytes = self.store.get(&format!("slot:{slot}")).await?;
        String::from_utf8(bytes).ok()
    }

    /// Takes the card's send `response_code`: one user of it at a time.
    pub async fn take_code(&self, task_id: &str) -> Option<String> {
        let bytes = self.store.take(&format!("code:{task_id}")).await?;
        String::from_utf8(bytes).ok()
    }

    /// Keeps a code an update could not use (WeCom did not answer, or no budget).
    pub async fn put_code(&self, task_id: &str, code: &str) {
        self.store
            .put(
                &format!("code:{task_id}"),
                code.as_bytes(),
                CODE_LIFETIME.saturating_sub(CODE_MARGIN),
            )
            .await;
    }

    /// Whether this is the first time the click `id` is seen (re-deliveries and replays
    /// are not).
    pub async fn first_click(&self, id: &str) -> bool {
        let mine = fastrand::u64(..).to_string();
        let held = self
            .store
            .put_new(&format!("click:{id}"), mine.as_bytes(), CLICK_MEMORY)
            .await;
        held == mine.as_bytes()
    }
}

/// Where a resolve finds its firing card: the group, the route and the recipient batch.
pub fn slot(group_key: &str, route: &str, identity: &str) -> String {
    let mut hash = Sha256::new();
    for part in [group_key, route, identity] {
        hash.update(part.len().to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` is a task id WeCom could have given back to us.
pub fn is_task_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'@'))
}

/// An update replacing the card for all its recipients (更新为新的卡片).
pub fn replace_card(agent_id: i64, code: &str, card: &Value) -> Value {
    json!({
        "atall": 1,
        "agentid": agent_id,
        "response_code": code,
        "template_card": card,
    })
}

/// The card with a status line on top of its rows (what happened to it) and only the
/// buttons in `keep`.
pub fn with_status(card: &Value, status: &str, keep: impl Fn(&str) -> bool) -> Value {
    let mut card = card.clone();
    if let Some(object) = card.as_object_mut() {
        let mut rows = object
            .get("horizontal_content_list")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        rows.retain(|row| row.get("keyname").and_then(Value::as_str) != Some(STATUS_ROW));
        rows.insert(0, json!({ "keyname": STATUS_ROW, "value": status }));
        rows.truncate(6);
        object.insert("horizontal_content_list".into(), Value::Array(rows));
        if let Some(Value::Array(buttons)) = object.get_mut("button_list") {
            buttons.retain(|button| button.get("key").and_then(Value::as_str).is_some_and(&keep));
        }
    }
    card
}

/// The card without buttons, as a `text_notice` card (an interactive card may be replaced
/// by any kind): what a card becomes once nothing on it is left to click. Its status row
/// says why; `button.replace_name` would say it in a grey button of at most 10 characters,
/// too short for "silenced 24h · a userid".
pub fn as_notice(card: &Value) -> Value {
    let mut card = card.clone();
    if let Some(object) = card.as_object_mut() {
        object.insert("card_type".into(), Value::from("text_notice"));
        object.remove("button_list");
        object.remove("task_id");
    }
    card
}

/// The key name of the status row [`with_status`] adds ("status", ≤ 5 characters).
const STATUS_ROW: &str = "状态";

/// Now in unix seconds (card ages, callback timestamps).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Notifier {
    /// The card store.
    pub fn cards(&self) -> Cards {
        Cards::new(self.store.cards.clone())
    }

    /// Sends one request of an interactive route: a firing card gets its task id and, once
    /// accepted, its record; a resolved one replaces its firing card when that card's code
    /// is still usable, else goes out as a new message.
    pub(super) async fn send_card(
        &self,
        target: &dyn Target,
        (route, plan, group_key): (&RouteConfig, &CardPlan, &str),
        (request, key): (&Request, Option<&DeliveryKey>),
        (deadline, keep): (Instant, usize),
    ) -> Result<Option<SendReceipt>, Unsent> {
        let slot = slot(group_key, &route.name, &request.identity);
        let cards = self.cards();
        if !plan.firing {
            if let Some(updated) = self
                .update_in_place(target, route, &slot, request, deadline, keep)
                .await
            {
                return updated;
            }
            return self
                .send_as(target, Method::Send, &request.body, request, deadline, keep)
                .await;
        }
        if request.body["template_card"]["card_type"] != "button_interaction" {
            // No buttons (too many alerts to silence, acknowledge off): an ordinary card.
            return self.send(target, request, deadline, keep).await;
        }
        let task_id = cards.task_id(key).await;
        let mut body = request.body.clone();
        body["template_card"]["task_id"] = Value::from(task_id.clone());
        let sent = self
            .send_as(target, Method::Send, &body, request, deadline, keep)
            .await;
        if let Ok(Some(receipt)) = &sent {
            let card = body["template_card"].clone();
            let record = CardRecord {
                task_id,
                app: target.name().to_string(),
                agent_id: body["agentid"].as_i64().unwrap_or_default(),
                route: route.name.clone(),
                group_key: group_key.to_string(),
                recipients: recipients_of(&body),
                alerts: plan.alerts.clone(),
                firing_count: plan.firing_count,
                external_url: plan.external_url.clone(),
                buttons: card["button_list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["key"].as_str().map(str::to_string))
                    .collect(),
                card,
                sent_at: unix_now(),
                acknowledged_by: None,
                silenced_by: None,
                resolved: false,
            };
            if receipt.response_code.is_none() {
                warn!(
                    "route {}: WeCom accepted card {} without a response_code: its resolve will be a new message",
                    route.name, record.task_id
                );
            }
            cards.sent(&record, &slot, receipt.response_code.as_deref()).await;
        }
        sent
    }

    /// Replaces the firing card of `slot` with the resolved card of `request`. `None`: no
    /// card to update (none sent, its code used or expired, or WeCom refused the update),
    /// so the caller sends a new message.
    async fn update_in_place(
        &self,
        target: &dyn Target,
        route: &RouteConfig,
        slot: &str,
        request: &Request,
        deadline: Instant,
        keep: usize,
    ) -> Option<Result<Option<SendReceipt>, Unsent>> {
        let cards = self.cards();
        let task_id = cards.latest(slot).await?;
        let mut record = cards.get(&task_id).await?;
        if record.resolved {
            return None;
        }
        let code = cards.take_code(&task_id).await?;
        let card = &request.body["template_card"];
        let body = replace_card(record.agent_id, &code, card);
        match self
            .send_as(target, Method::UpdateCard, &body, request, deadline, keep)
            .await
        {
            Ok(receipt) => {
                self.count_update(&route.name, "resolved");
                info!(
                    "route {}: card {task_id} updated in place to its resolved state",
                    route.name
                );
                record.card = card.clone();
                record.resolved = true;
                cards.save(&record).await;
                Some(Ok(receipt))
            }
            Err(Unsent::Failed(failure)) if !failure.is_transient() => {
                self.count_update(&route.name, "refused");
                warn!(
                    "route {}: WeCom refused to update card {task_id} ({failure}); sending the resolved card as a new message",
                    route.name
                );
                None
            }
            Err(unsent) => {
                // Not now (budget, WeCom busy or silent): Alertmanager's retry tries again
                // with the same code.
                cards.put_code(&task_id, &code).await;
                Some(Err(unsent))
            }
        }
    }

    /// Updates a card for a click: `body` is one of [`replace_buttons`] and
    /// [`replace_card`], booked against the recipients' budget like a message.
    pub async fn update_card(&self, record: &CardRecord, body: &Value) -> Result<(), SendFailure> {
        let content = MessageContent::TemplateCard {
            card: record.card.clone(),
        };
        self.send_outside_a_webhook(
            &record.app,
            &record.recipients,
            &content,
            Method::UpdateCard,
            Some(body),
        )
        .await
    }

    /// Sends a text message to one user of an app: why their click did nothing.
    pub async fn tell(&self, app: &str, user: &str, text: &str) -> Result<(), SendFailure> {
        let to = Recipients {
            users: vec![user.to_string()],
            ..Recipients::default()
        };
        let content = MessageContent::Text {
            content: text.to_string(),
        };
        self.send_outside_a_webhook(app, &to, &content, Method::Send, None)
            .await
    }

    /// One call for a click, booked like a message to `to` with `content` (one recipient
    /// batch): `body` if given, else the message itself; within a deadline of its own.
    async fn send_outside_a_webhook(
        &self,
        app: &str,
        to: &Recipients,
        content: &MessageContent,
        method: Method,
        body: Option<&Value>,
    ) -> Result<(), SendFailure> {
        let target = self.app_target(app)?;
        let audience = Audience {
            recipients: to,
            mentions: &Mentions::default(),
        };
        let request = target
            .requests(content, audience)
            .into_iter()
            .next()
            .ok_or_else(|| SendFailure::Permanent {
                reason: "no_recipients",
                errcode: None,
                error: "nobody to send to".into(),
            })?;
        let deadline = Instant::now() + self.settings.delivery_deadline;
        let body = body.unwrap_or(&request.body);
        match self.send_as(target, method, body, &request, deadline, 0).await {
            Ok(_) => Ok(()),
            Err(Unsent::OverBudget(failure) | Unsent::Failed(failure)) => Err(failure),
        }
    }

    pub fn count_update(&self, route: &str, reason: &str) {
        self.metrics
            .cards_updated
            .with_label_values(&[route, reason])
            .inc();
    }

    fn app_target(&self, app: &str) -> Result<&dyn Target, SendFailure> {
        self.targets
            .get(app)
            .map(|t| t.as_ref())
            .ok_or_else(|| SendFailure::Permanent {
                reason: "unknown_app",
                errcode: None,
                error: format!("app {app:?} is no longer configured"),
            })
    }
}

/// The recipients a `message/send` body addresses.
fn recipients_of(body: &Value) -> Recipients {
    let ids = |field: &str| -> Vec<String> {
        body[field]
            .as_str()
            .unwrap_or_default()
            .split('|')
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect()
    };
    Recipients {
        users: ids("touser"),
        parties: ids("toparty"),
        tags: ids("totag"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_in_wecoms_alphabet() {
        assert!(is_task_id("am-0123456789abcdef0123456789abcdef"));
        assert!(is_task_id("a_b@c-1"));
        assert!(!is_task_id(""));
        assert!(!is_task_id("has space"));
        assert!(!is_task_id(&"a".repeat(129)));
    }

    #[tokio::test]
    async fn a_retry_reuses_its_first_attempts_task_id_and_another_message_does_not() {
        let cards = Cards::new(Arc::new(crate::state::MemoryCards::new()));
        let first = cards.task_id(Some(&[1; 16])).await;
        assert!(is_task_id(&first), "{first}");
        assert_eq!(cards.task_id(Some(&[1; 16])).await, first);
        assert_ne!(cards.task_id(Some(&[2; 16])).await, first);
        assert_ne!(cards.task_id(None).await, cards.task_id(None).await);
    }

    #[tokio::test]
    async fn a_click_is_acted_on_once() {
        let cards = Cards::new(Arc::new(crate::state::MemoryCards::new()));
        assert!(cards.first_click("ops|alice|1700000000|t|ack").await);
        assert!(!cards.first_click("ops|alice|1700000000|t|ack").await);
        assert!(cards.first_click("ops|alice|1700000001|t|ack").await);
    }

    #[test]
    fn a_status_replaces_the_previous_one_and_drops_buttons() {
        let card = json!({
            "horizontal_content_list": [{"keyname": "since", "value": "12:00"}],
            "button_list": [{"key": "ack"}, {"key": "silence:1h"}],
        });
        let acknowledged = with_status(&card, "已认领 · alice", |key| key != "ack");
        let again = with_status(&acknowledged, "已认领 · bob", |key| key != "ack");
        let rows = again["horizontal_content_list"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["value"], "已认领 · bob");
        assert_eq!(again["button_list"], json!([{"key": "silence:1h"}]));
    }

    #[test]
    fn a_card_with_nothing_left_to_click_becomes_a_notice_with_its_status() {
        let card = json!({"card_type": "button_interaction", "task_id": "am-1", "button_list": [{"key": "ack"}],
                          "card_action": {"type": 1, "url": "http://am"}});
        let notice = as_notice(&with_status(&card, "已静默 24h · alice", |_| false));
        assert_eq!(notice["card_type"], "text_notice");
        assert!(notice.get("button_list").is_none() && notice.get("task_id").is_none());
        assert_eq!(
            notice["horizontal_content_list"][0]["value"],
            "已静默 24h · alice"
        );
        assert_eq!(
            notice["card_action"]["url"], "http://am",
            "text_notice needs its card_action"
        );
    }

    #[test]
    fn slots_tell_groups_routes_and_batches_apart() {
        let a = slot("{}:{a}", "r", "0/1|alice||");
        assert_eq!(a.len(), 32);
        assert_ne!(a, slot("{}:{b}", "r", "0/1|alice||"));
        assert_ne!(a, slot("{}:{a}", "r2", "0/1|alice||"));
        assert_ne!(a, slot("{}:{a}", "r", "0/1|bob||"));
    }
}
