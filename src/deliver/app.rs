//! App messages (`message/send`): to users, parties and tags, with the app's access token,
//! in recipient batches WeCom accepts, counted per member against WeCom's silent drop —
//! parties, tags and `@all` included (see [`AppTarget::charge`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{MethodUrl, SendReceipt, WeComApi};
use super::batch;
use super::credentials::{app_tokens, drop_token, with_token};
use super::directory::{Directory, Group};
use super::error::Endpoint;
use super::target::{
    dry_run_call, rate_limits, Audience, Budget, CallFailure, CallLimit, Parts, Request, Target,
};
use super::token::AccessTokenCache;
use crate::config::{AppConfig, Recipients, TargetKind};
use crate::metrics::Metrics;
use crate::render::{ContentLimits, MessageContent};
use crate::secret::Secret;
use crate::state::Charge;

/// App messages' content limits (docs/wecom-api.md#message-limits).
pub const LIMITS: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 2048,
    markdown_v2: 0,
};

/// The budget key every message of the app books: the most any one member can have got,
/// which is what a message to `@all` must check.
const EVERY_MESSAGE: &str = "*";
/// The budget key of messages to `@all`: they reach every member, so every member's check
/// adds them.
const EVERYONE: &str = "@all";

/// Delivers app messages for one app.
pub struct AppTarget {
    app: AppConfig,
    api: WeComApi,
    send_url: MethodUrl,
    update_url: MethodUrl,
    /// `None` in dry-run mode.
    tokens: Option<Arc<AccessTokenCache>>,
    budget: Budget,
    /// Where parties and tags are resolved to members (`directory: true`).
    directory: Option<Arc<Directory>>,
    /// `duplicate_check_interval` in seconds, when WeCom's duplicate check is asked for.
    duplicate_check: Option<u64>,
}

impl AppTarget {
    pub fn new(app: &AppConfig, parts: &Parts<'_>) -> AppTarget {
        let window = parts.settings.dedup_window.as_secs();
        AppTarget {
            send_url: MethodUrl::new(&app.api_url, "message/send"),
            update_url: MethodUrl::new(&app.api_url, "message/update_template_card"),
            api: parts.clients.api.clone(),
            tokens: app_tokens(app, parts),
            budget: Budget {
                scope: format!("app:{}", app.name),
                limits: rate_limits(app.rate_limit, parts.settings),
            },
            directory: app.directory.then(|| {
                parts
                    .clients
                    .directory(app, app_tokens(app, parts), parts.settings.timeout)
            }),
            duplicate_check: (parts.settings.duplicate_check && window > 0).then_some(window),
            app: app.clone(),
        }
    }

    /// A complete `message/send` body. Serialised deterministically (sorted keys), so the
    /// same message is the same request for WeCom's duplicate check.
    fn body(&self, to: &Recipients, content: &MessageContent) -> Value {
        let msgtype = content.msgtype().as_str();
        let mut body = json!({
            "msgtype": msgtype,
            "agentid": self.app.agent_id,
            msgtype: content.body(),
            "safe": u8::from(self.app.safe),
        });
        let fields = [
            ("touser", &to.users),
            ("toparty", &to.parties),
            ("totag", &to.tags),
        ];
        for (field, ids) in fields {
            if !ids.is_empty() {
                body[field] = json!(ids.join("|"));
            }
        }
        if let Some(interval) = self.duplicate_check {
            body["enable_duplicate_check"] = json!(1);
            body["duplicate_check_interval"] = json!(interval);
        }
        body
    }
}

impl AppTarget {
    /// What one message to `to` counts against (docs/storms.md#budgets). WeCom counts
    /// per member, so: each user is a key; a party or tag is its members when the app reads
    /// them from the directory, else one key of its own (a member in several parties, or
    /// also addressed by name, is then under-counted: turn on `directory` for those); every
    /// member's check adds the messages sent to `@all`, and a message to `@all` checks the
    /// app's busiest member, bounded by all of the app's messages.
    fn charge(&self, to: &Recipients) -> Charge {
        let mut keys: Vec<String> = Vec::new();
        let mut everyone = false;
        for user in &to.users {
            if user == EVERYONE {
                everyone = true;
            } else {
                keys.push(user.to_lowercase());
            }
        }
        for (kind, ids) in [
            (Group::Party as fn(String) -> Group, &to.parties),
            (Group::Tag, &to.tags),
        ] {
            for id in ids {
                let group = kind(id.clone());
                match self.directory.as_ref().and_then(|d| d.members(&group)) {
                    Some(members) => keys.extend(members.iter().cloned()),
                    None => keys.push(group.budget_key()),
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut checks: Vec<Vec<String>> = keys
            .iter()
            .map(|key| vec![key.clone(), EVERYONE.to_string()])
            .collect();
        let mut book = keys;
        book.push(EVERY_MESSAGE.to_string());
        if everyone {
            book.push(EVERYONE.to_string());
            checks.push(vec![EVERY_MESSAGE.to_string()]);
        }
        Charge {
            book,
            checks,
            ..Charge::default()
        }
    }
}

#[async_trait]
impl Target for AppTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::App
    }

    fn name(&self) -> &str {
        &self.app.name
    }

    fn is_dry_run(&self) -> bool {
        self.tokens.is_none()
    }

    fn limits(&self) -> &'static ContentLimits {
        &LIMITS
    }

    fn budget(&self) -> &Budget {
        &self.budget
    }

    fn requests(&self, part: &MessageContent, audience: Audience<'_>) -> Vec<Request> {
        batch::batches(audience.recipients)
            .into_iter()
            .map(|to| Request {
                body: self.body(&to, part),
                charge: self.charge(&to),
                identity: format!(
                    "{}|{}|{}",
                    to.users.join(","),
                    to.parties.join(","),
                    to.tags.join(",")
                ),
            })
            .collect()
    }

    fn over_budget(&self, over: &[String]) -> String {
        format!(
            "app {} already sent {} their limit of {} messages a minute ({} an hour); WeCom would silently drop this one, so it is held back for Alertmanager to retry",
            self.app.name,
            over.join(", "),
            self.budget.limits.per_minute,
            self.budget.limits.per_hour.unwrap_or_default()
        )
    }

    async fn call(&self, body: &Value, limit: CallLimit) -> Result<SendReceipt, CallFailure> {
        let Some(tokens) = &self.tokens else {
            return Err(dry_run_call(&self.app.name));
        };
        with_token(tokens, limit, |token| async move {
            self.api
                .send_message(
                    Endpoint::MessageSend,
                    &self.send_url,
                    &token,
                    body,
                    limit.timeout(),
                )
                .await
        })
        .await
    }

    async fn update_card(&self, body: &Value, limit: CallLimit) -> Result<SendReceipt, CallFailure> {
        let Some(tokens) = &self.tokens else {
            return Err(dry_run_call(&self.app.name));
        };
        with_token(tokens, limit, |token| async move {
            self.api
                .send_message(
                    Endpoint::UpdateTemplateCard,
                    &self.update_url,
                    &token,
                    body,
                    limit.timeout(),
                )
                .await
        })
        .await
    }

    async fn drop_credential(&self, stale: &Secret) {
        if let Some(tokens) = &self.tokens {
            drop_token(&self.app.name, tokens, stale).await;
        }
    }

    fn prepare_metrics(&self, metrics: &Metrics) {
        let name = self.app.name.as_str();
        metrics.member_rate_limited.with_label_values(&[name]);
        for reason in super::token::REFRESH_REASONS {
            metrics.token_refreshes.with_label_values(&[name, reason]);
        }
        for reason in super::token::FAILURE_REASONS {
            metrics.token_failures.with_label_values(&[name, reason]);
        }
        for kind in super::api::RecipientKind::ALL {
            metrics
                .invalid_recipients
                .with_label_values(&[name, kind.as_str()]);
        }
    }
}
