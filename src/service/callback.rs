//! Clicks on interactive cards (docs/interactive-cards.md): WeCom's callback checked
//! (signature, freshness, decryption, corp id), answered at once — WeCom waits 5 s and
//! then delivers the click again —, and acted on in the background: acknowledge, or
//! silence the card's alerts in Alertmanager, then update the card for its recipients.
//! What to silence comes from the card's record, never from the callback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use log::{info, warn};

use super::Service;
use crate::config::{AlertmanagerSettings, Config};
use crate::deliver::cards::{self, is_task_id, unix_now, CardRecord};
use crate::interact::crypto::{check_freshness, CallbackCrypto, CallbackError};
use crate::interact::event::{self, CardEvent, Incoming};
use crate::interact::silence::{AlertmanagerAuth, AlertmanagerClient, NewSilence, SilenceError};
use crate::render::card::{short_duration, ButtonAction};

/// The event name of clicks in callbacks and metrics.
const CARD_EVENT: &str = "template_card_event";

/// The query WeCom adds to every callback.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub msg_signature: String,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub nonce: String,
    /// URL verification only.
    #[serde(default)]
    pub echostr: Option<String>,
}

/// Why a callback was refused (nothing was done).
#[derive(Debug, thiserror::Error)]
pub enum CallbackRefusal {
    #[error("no app named {0:?} has a callback configured")]
    UnknownApp(String),
    #[error("{0}")]
    Invalid(#[from] CallbackError),
}

impl CallbackRefusal {
    /// The `outcome` label of the callbacks metric.
    fn outcome(&self) -> String {
        match self {
            CallbackRefusal::UnknownApp(_) => "unknown_app".into(),
            CallbackRefusal::Invalid(error) => format!("refused_{}", error.reason()),
        }
    }
}

/// The callback side of every app that has one.
pub struct Callbacks {
    apps: HashMap<String, AppCallback>,
    /// `alertmanager.url` with its credentials, built once; `None`: each card's
    /// `externalURL`.
    configured: Option<AlertmanagerClient>,
    timeout: Duration,
}

struct AppCallback {
    crypto: CallbackCrypto,
    max_age: Duration,
}

impl Callbacks {
    /// Errors say which app's callback or which Alertmanager setting cannot be used.
    pub fn new(config: &Config) -> Result<Callbacks, String> {
        let mut apps = HashMap::new();
        for app in &config.apps {
            if let Some(callback) = &app.callback {
                let crypto =
                    CallbackCrypto::new(callback.token.clone(), &callback.encoding_aes_key, &app.corp_id)
                        .map_err(|e| format!("app {:?}: {e}", app.name))?;
                apps.insert(
                    app.name.clone(),
                    AppCallback {
                        crypto,
                        max_age: callback.max_age,
                    },
                );
            }
        }
        let settings = &config.alertmanager;
        let configured = settings
            .url
            .as_deref()
            .map(|url| AlertmanagerClient::new(url, configured_auth(settings), settings.timeout))
            .transpose()
            .map_err(|e| format!("alertmanager.url: {e}"))?;
        Ok(Callbacks {
            apps,
            configured,
            timeout: settings.timeout,
        })
    }

    fn app(&self, app: &str) -> Result<&AppCallback, CallbackRefusal> {
        self.apps
            .get(app)
            .ok_or_else(|| CallbackRefusal::UnknownApp(app.to_string()))
    }

    /// The Alertmanager a card's silences go to: the configured one (with its credentials),
    /// else the card's `externalURL` — without credentials, which are never sent to a URL
    /// that came in a webhook.
    fn alertmanager(&self, record: &CardRecord) -> Result<AlertmanagerClient, SilenceError> {
        match &self.configured {
            Some(client) => Ok(client.clone()),
            None => AlertmanagerClient::new(&record.external_url, AlertmanagerAuth::None, self.timeout),
        }
    }
}

fn configured_auth(settings: &AlertmanagerSettings) -> AlertmanagerAuth {
    match (&settings.bearer_token, &settings.basic_auth) {
        (Some(token), _) => AlertmanagerAuth::Bearer(token.clone()),
        (None, Some((username, password))) => AlertmanagerAuth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        (None, None) => AlertmanagerAuth::None,
    }
}

impl Service {
    /// Answers WeCom's URL verification (the admin console saving the callback URL): the
    /// decrypted `echostr`.
    pub fn verify_callback_url(&self, app: &str, query: &CallbackQuery) -> Result<String, CallbackRefusal> {
        let result = self.callbacks.app(app).and_then(|callback| {
            check_freshness(&query.timestamp, unix_now(), callback.max_age)?;
            let echostr = query.echostr.as_deref().unwrap_or_default();
            Ok(callback
                .crypto
                .verify_url(&query.msg_signature, &query.timestamp, &query.nonce, echostr)?)
        });
        let outcome = match &result {
            Ok(_) => "acted".to_string(),
            Err(refusal) => refusal.outcome(),
        };
        self.count_callback(app, "verify", &outcome);
        match &result {
            Ok(_) => info!("app {app}: callback URL verified by WeCom"),
            Err(refusal) => warn!("app {app}: callback URL verification refused: {refusal}"),
        }
        result
    }

    /// Checks and decrypts a callback, and starts acting on it: the caller answers WeCom
    /// at once. Re-deliveries and replays of a click are acknowledged and not acted on.
    pub async fn receive_callback(
        self: &Arc<Self>,
        app: &str,
        query: &CallbackQuery,
        body: &[u8],
    ) -> Result<(), CallbackRefusal> {
        let incoming = self.decrypt_callback(app, query, body);
        let event = match incoming {
            Err(refusal) => {
                warn!("app {app}: callback refused, nothing done: {refusal}");
                self.count_callback(app, "unknown", &refusal.outcome());
                return Err(refusal);
            }
            Ok(Incoming::Other { msg_type, event }) => {
                info!(
                    "app {app}: callback of type {msg_type} ({}) ignored: only card clicks are acted on",
                    event.as_deref().unwrap_or("no event")
                );
                self.count_callback(app, "other", "ignored");
                return Ok(());
            }
            Ok(Incoming::CardEvent(event)) => event,
        };
        // A re-delivery repeats the event: its user, time and ResponseCode (fresh for each
        // click, so two clicks within a second are still two).
        let click = format!(
            "{app}|{}|{}|{}|{}|{}",
            event.from_user_name, event.create_time, event.task_id, event.event_key, event.response_code
        );
        if !self.notifier.cards().first_click(&click).await {
            info!(
                "app {app}: click by {} on card {} already handled (WeCom re-delivered it, or a replay)",
                event.from_user_name, event.task_id
            );
            self.count_callback(app, CARD_EVENT, "duplicate");
            return Ok(());
        }
        let service = Arc::clone(self);
        let app = app.to_string();
        tokio::spawn(async move {
            let outcome = service.act_on_click(&app, &event).await;
            service.count_callback(&app, CARD_EVENT, outcome);
        });
        Ok(())
    }

    fn decrypt_callback(
        &self,
        app: &str,
        query: &CallbackQuery,
        body: &[u8],
    ) -> Result<Incoming, CallbackRefusal> {
        let callback = self.callbacks.app(app)?;
        check_freshness(&query.timestamp, unix_now(), callback.max_age)?;
        let xml =
            callback
                .crypto
                .decrypt_message(&query.msg_signature, &query.timestamp, &query.nonce, body)?;
        Ok(event::parse(&xml)?)
    }

    /// Acts on one click; answers the `outcome` label.
    async fn act_on_click(&self, app: &str, event: &CardEvent) -> &'static str {
        let user = event.from_user_name.as_str();
        let cards = self.notifier.cards();
        let record = match is_task_id(&event.task_id) {
            true => cards.get(&event.task_id).await,
            false => None,
        };
        let Some(mut record) = record.filter(|r| r.app == app) else {
            info!(
                "app {app}: click by {user} on card {:?}, which is unknown or older than 72 h: ignored",
                event.task_id
            );
            return "unknown_task";
        };
        let action = ButtonAction::parse(&event.event_key).filter(|_| record.has_button(&event.event_key));
        let Some(action) = action else {
            warn!(
                "app {app}: click by {user} on card {} with key {:?}, which the card was not sent with: ignored",
                record.task_id, event.event_key
            );
            return "ignored";
        };
        if !self.may_click(&record, user) {
            warn!(
                "route {}: {user} clicked {:?} on card {} but is not allowed to: nothing done",
                record.route,
                action.text(),
                record.task_id
            );
            let text = format!(
                "你没有权限操作这张告警卡片（路由 {}）。可操作的人：{}。\nYou may not act on this alert card (route {}).",
                record.route,
                self.allowed_description(&record),
                record.route
            );
            self.tell(&record, user, &text).await;
            return "not_allowed";
        }
        match action {
            ButtonAction::Acknowledge => self.acknowledge(&mut record, user, &event.response_code).await,
            ButtonAction::Silence(duration) => {
                self.silence(&mut record, user, duration, &event.response_code)
                    .await
            }
        }
    }

    async fn acknowledge(&self, record: &mut CardRecord, user: &str, code: &str) -> &'static str {
        let status = format!("已认领 · {user}");
        let card = cards::with_status(&record.card, &status, |key| {
            key != ButtonAction::Acknowledge.key()
        });
        // No silence buttons left to keep: a card without buttons.
        let card = if card["button_list"].as_array().is_some_and(|b| b.is_empty()) {
            cards::as_notice(&card)
        } else {
            card
        };
        let body = cards::replace_card(record.agent_id, code, &card);
        match self.notifier.update_card(record, &body).await {
            Ok(()) => {
                info!(
                    "route {}: card {} acknowledged by {user}",
                    record.route, record.task_id
                );
                self.notifier.count_update(&record.route, "acknowledged");
                record.acknowledged_by = Some(user.to_string());
                record.card = card;
                record
                    .buttons
                    .retain(|key| *key != ButtonAction::Acknowledge.key());
                self.notifier.cards().save(record).await;
                "acted"
            }
            Err(failure) => {
                warn!(
                    "route {}: acknowledging card {} for {user}: WeCom refused the update: {failure}",
                    record.route, record.task_id
                );
                self.tell(record, user, &format!("认领未能显示在卡片上：{failure}"))
                    .await;
                "failed"
            }
        }
    }

    async fn silence(
        &self,
        record: &mut CardRecord,
        user: &str,
        duration: Duration,
        code: &str,
    ) -> &'static str {
        let created = self.create_silences(record, user, duration).await;
        let length = short_duration(duration);
        match created {
            Ok(ids) => {
                self.metrics
                    .silences_created
                    .with_label_values(&[&record.route])
                    .inc_by(ids.len() as u64);
                info!(
                    "route {}: {user} silenced card {} for {length}: {} silence(s) {}",
                    record.route,
                    record.task_id,
                    ids.len(),
                    ids.join(", ")
                );
                let status = format!("已静默 {length} · {user}");
                record.silenced_by = Some(user.to_string());
                record.card = cards::as_notice(&cards::with_status(&record.card, &status, |_| false));
                record.buttons.clear();
                let body = cards::replace_card(record.agent_id, code, &record.card);
                self.notifier.cards().save(record).await;
                match self.notifier.update_card(record, &body).await {
                    Ok(()) => self.notifier.count_update(&record.route, "silenced"),
                    Err(failure) => {
                        warn!(
                            "route {}: card {} silenced but WeCom refused to update it: {failure}",
                            record.route, record.task_id
                        );
                        self.tell(
                            record,
                            user,
                            &format!(
                                "已静默 {length}（Alertmanager 静默 {}），但卡片未能更新：{failure}",
                                ids.join(", ")
                            ),
                        )
                        .await;
                    }
                }
                "acted"
            }
            Err(error) => {
                warn!(
                    "route {}: {user} asked to silence card {} for {length}, but Alertmanager refused or could not be reached: {error}",
                    record.route, record.task_id
                );
                let status = format!("静默失败 · {}", error.card_text());
                let card = cards::with_status(&record.card, &status, |_| true);
                if self
                    .notifier
                    .update_card(record, &cards::replace_card(record.agent_id, code, &card))
                    .await
                    .is_ok()
                {
                    self.notifier.count_update(&record.route, "silence_failed");
                    record.card = card;
                    self.notifier.cards().save(record).await;
                }
                let again = if error.is_retryable() {
                    "可稍后重试"
                } else {
                    "请在 Alertmanager 中静默"
                };
                self.tell(
                    record,
                    user,
                    &format!("静默 {length} 失败：{error}。{again}。\nSilencing failed: {error}"),
                )
                .await;
                "failed"
            }
        }
    }

    /// One silence per alert of the card, matching its labels exactly; stops at the first
    /// failure (the silences created so far stay, and a second click reuses them).
    async fn create_silences(
        &self,
        record: &CardRecord,
        user: &str,
        duration: Duration,
    ) -> Result<Vec<String>, SilenceError> {
        let client = self.callbacks.alertmanager(record)?;
        let starts_at = Utc::now();
        let ends_at = starts_at + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::hours(1));
        let mut ids = Vec::with_capacity(record.alerts.len());
        for labels in &record.alerts {
            let silence = NewSilence {
                matchers: labels.clone(),
                starts_at,
                ends_at,
                created_by: user.to_string(),
                comment: format!(
                    "Silenced from WeCom by {user}: card {} of route {} (alertmanager-wecom)",
                    record.task_id, record.route
                ),
            };
            // A second click (or a colleague's) reuses a silence that already covers it.
            match client.find_active(labels).await? {
                Some(existing) if existing.ends_at >= ends_at => ids.push(existing.id),
                _ => ids.push(client.create_silence(&silence).await?),
            }
        }
        Ok(ids)
    }

    /// Who may click: the route's `allowed_users`, else the card's recipients. A card to
    /// parties or tags lets their members click: WeCom calls back only for a member who
    /// received the card, and the callback's signature proves it was WeCom.
    fn may_click(&self, record: &CardRecord, user: &str) -> bool {
        let same = |id: &String| id.eq_ignore_ascii_case(user);
        let route = self.config.routes.iter().find(|r| r.name == record.route);
        let allowed = route
            .and_then(|r| r.buttons.as_ref())
            .map(|b| b.allowed_users.as_slice())
            .unwrap_or_default();
        if !allowed.is_empty() {
            return allowed.iter().any(same);
        }
        let to = &record.recipients;
        to.users.iter().any(|id| same(id) || id == "@all") || !to.parties.is_empty() || !to.tags.is_empty()
    }

    fn allowed_description(&self, record: &CardRecord) -> String {
        let route = self.config.routes.iter().find(|r| r.name == record.route);
        match route.and_then(|r| r.buttons.as_ref()) {
            Some(buttons) if !buttons.allowed_users.is_empty() => buttons.allowed_users.join(", "),
            _ => record.recipients.users.join(", "),
        }
    }

    /// Tells the clicking user something, best effort (a click's answer is the card).
    async fn tell(&self, record: &CardRecord, user: &str, text: &str) {
        if let Err(failure) = self.notifier.tell(&record.app, user, text).await {
            warn!(
                "app {}: could not tell {user} why their click did nothing: {failure}",
                record.app
            );
        }
    }

    fn count_callback(&self, app: &str, event: &str, outcome: &str) {
        self.metrics
            .callbacks
            .with_label_values(&[app, event, outcome])
            .inc();
    }
}
