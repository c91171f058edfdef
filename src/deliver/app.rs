//! App messages (`message/send`): to users, parties and tags, with the app's access token,
//! in recipient batches WeCom accepts, counted per member against WeCom's silent drop.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{MethodUrl, SendReceipt, WeComApi};
use super::batch;
use super::credentials::{app_tokens, drop_token, with_token};
use super::target::{dry_run_call, Audience, Budget, CallFailure, CallLimit, Parts, Request, Target};
use super::token::AccessTokenCache;
use crate::config::{AppConfig, Recipients, TargetKind};
use crate::metrics::Metrics;
use crate::render::{ContentLimits, MessageContent};
use crate::secret::Secret;
use crate::state::RateLimits;

/// App messages' content limits (docs/wecom-api.md#message-limits).
pub const LIMITS: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 2048,
    markdown_v2: 0,
};

/// One app to one member: beyond this WeCom drops messages silently
/// (docs/wecom-api.md#rate-limits).
pub const MEMBER_LIMITS: RateLimits = RateLimits {
    per_minute: 30,
    per_hour: Some(1000),
    margin: std::time::Duration::ZERO,
};

/// Delivers app messages for one app.
pub struct AppTarget {
    app: AppConfig,
    api: WeComApi,
    send_url: MethodUrl,
    /// `None` in dry-run mode.
    tokens: Option<Arc<AccessTokenCache>>,
    budget: Budget,
    /// `duplicate_check_interval` in seconds, when WeCom's duplicate check is asked for.
    duplicate_check: Option<u64>,
}

impl AppTarget {
    pub fn new(app: &AppConfig, parts: &Parts<'_>) -> AppTarget {
        let window = parts.settings.dedup_window.as_secs();
        AppTarget {
            send_url: MethodUrl::new(&app.api_url, "message/send"),
            api: parts.clients.api.clone(),
            tokens: app_tokens(app, parts),
            budget: Budget {
                scope: format!("app:{}", app.name),
                limits: MEMBER_LIMITS,
            },
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
                budget_keys: member_keys(&to.users),
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
            MEMBER_LIMITS.per_minute,
            MEMBER_LIMITS.per_hour.unwrap_or_default()
        )
    }

    async fn call(&self, body: &Value, limit: CallLimit) -> Result<SendReceipt, CallFailure> {
        let Some(tokens) = &self.tokens else {
            return Err(dry_run_call(&self.app.name));
        };
        with_token(tokens, limit, |token| async move {
            self.api
                .send_message(&self.send_url, &token, body, limit.timeout())
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

/// WeCom userids are case-insensitive (it answers them lower-cased), and `@all` is not a
/// member whose messages can be counted.
fn member_keys(users: &[String]) -> Vec<String> {
    users
        .iter()
        .filter(|user| *user != "@all")
        .map(|user| user.to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_counted_case_insensitively_and_at_all_is_not_a_member() {
        let users: Vec<String> = ["Alice", "bob", "@all"].iter().map(|s| s.to_string()).collect();
        assert_eq!(member_keys(&users), vec!["alice", "bob"]);
    }
}
