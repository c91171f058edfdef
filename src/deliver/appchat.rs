//! App group chats (应用群聊, `appchat/*`): a chat an app created through the API, posted to
//! with the app's access token. Every message reaches every member, and WeCom silently
//! drops a member's messages beyond 200 a minute (docs/wecom-api.md#app-group-chats).
//! Also the calls behind `alertmanager-wecom appchat create|get`, since such chats exist
//! only if created through the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{MethodUrl, SendReceipt, WeComApi};
use super::credentials::{app_tokens, drop_token, with_token};
use super::error::Endpoint;
use super::outcome::SendFailure;
use super::target::{
    dry_run_call, rate_limits, Audience, Budget, CallFailure, CallLimit, Parts, Request, Target,
};
use super::token::AccessTokenCache;
use crate::config::{AppConfig, RateLimit, TargetKind};
use crate::render::{ContentLimits, MessageContent};
use crate::secret::Secret;
use crate::state::Charge;

/// The same content limits as app messages (docs/wecom-api.md#app-group-chats).
const LIMITS: ContentLimits = ContentLimits {
    text: 2048,
    markdown: 2048,
    markdown_v2: 0,
};

/// Delivers to one chat through the app that created it.
pub struct ChatTarget {
    name: String,
    chat_id: String,
    app: String,
    safe: bool,
    api: WeComApi,
    send_url: MethodUrl,
    tokens: Option<Arc<AccessTokenCache>>,
    budget: Budget,
}

impl ChatTarget {
    /// `name` is the route target's name (`app/chat_id`).
    pub fn new(app: &AppConfig, chat_id: &str, name: &str, parts: &Parts<'_>) -> ChatTarget {
        ChatTarget {
            name: name.to_string(),
            chat_id: chat_id.to_string(),
            app: app.name.clone(),
            safe: app.safe,
            api: parts.clients.api.clone(),
            send_url: MethodUrl::new(&app.api_url, Endpoint::AppchatSend.as_str()),
            tokens: app_tokens(app, parts),
            budget: Budget {
                scope: format!("appchat:{}", app.name),
                limits: rate_limits(RateLimit::APPCHAT_MEMBER, parts.settings),
            },
        }
    }
}

#[async_trait]
impl Target for ChatTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Chat
    }

    fn name(&self) -> &str {
        &self.name
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

    /// WeCom documents no duplicate check for `appchat/send`, so none is asked for: the
    /// record of accepted messages is what keeps a re-sent group from posting twice.
    fn requests(&self, part: &MessageContent, _audience: Audience<'_>) -> Vec<Request> {
        let msgtype = part.msgtype().as_str();
        vec![Request {
            body: json!({
                "chatid": self.chat_id,
                "msgtype": msgtype,
                msgtype: part.body(),
                "safe": u8::from(self.safe),
            }),
            charge: Charge::one_key(&self.app),
            identity: String::new(),
        }]
    }

    fn over_budget(&self, _over: &[String]) -> String {
        format!(
            "app {} already posted {} messages a minute to its chats, WeCom's limit per chat member; it would silently drop this one for chat {}, so it is held back for Alertmanager to retry",
            self.app, self.budget.limits.per_minute, self.chat_id
        )
    }

    async fn call(&self, body: &Value, limit: CallLimit) -> Result<SendReceipt, CallFailure> {
        let Some(tokens) = &self.tokens else {
            return Err(dry_run_call(&self.name));
        };
        with_token(tokens, limit, |token| async move {
            self.api
                .send_appchat(&self.send_url, &token, body, limit.timeout())
                .await
        })
        .await
    }

    async fn drop_credential(&self, stale: &Secret) {
        if let Some(tokens) = &self.tokens {
            drop_token(&self.app, tokens, stale).await;
        }
    }
}

/// What `appchat create` asks WeCom for.
#[derive(Debug, Clone)]
pub struct NewChat {
    pub name: String,
    pub owner: String,
    pub users: Vec<String>,
    pub chat_id: Option<String>,
}

/// Why a chat could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("{0}")]
    Invalid(String),
    #[error("app {0} has no secret configured: WeCom cannot be asked without one")]
    NoSecret(String),
    #[error("{0}")]
    WeCom(SendFailure),
}

impl NewChat {
    /// WeCom's rules for a new chat, checked before asking (docs/wecom-api.md#app-group-chats).
    pub fn check(&self) -> Result<(), ChatError> {
        let invalid = |message: String| Err(ChatError::Invalid(message));
        let chars = self.name.chars().count();
        if chars == 0 || chars > 50 {
            return invalid(format!("--name must be 1 to 50 characters, got {chars}"));
        }
        // "At most 2000, the app included" (创建群聊会话): 1999 people at the most.
        if !(2..=1999).contains(&self.users.len()) {
            return invalid(format!(
                "--users must name 2 to 1999 members (WeCom's 2000 counts the app), got {}",
                self.users.len()
            ));
        }
        if !self.users.contains(&self.owner) {
            return invalid(format!("--owner {:?} must be one of --users", self.owner));
        }
        if let Some(chat_id) = &self.chat_id {
            crate::config::check_chat_id(chat_id)
                .map_err(|m| ChatError::Invalid(format!("--chatid: {m}")))?;
        }
        Ok(())
    }
}

/// Calls `appchat/create` and `appchat/get` for one app.
pub struct ChatAdmin {
    app: AppConfig,
    api: WeComApi,
    tokens: AccessTokenCache,
    timeout: Duration,
}

impl ChatAdmin {
    pub fn new(app: &AppConfig, api: WeComApi, timeout: Duration) -> Result<ChatAdmin, ChatError> {
        let secret = app
            .secret
            .clone()
            .ok_or_else(|| ChatError::NoSecret(app.name.clone()))?;
        let tokens = AccessTokenCache::new(
            &app.name,
            &app.corp_id,
            secret,
            &app.api_url,
            api.clone(),
            api.metrics(),
        );
        Ok(ChatAdmin {
            app: app.clone(),
            api,
            tokens,
            timeout,
        })
    }

    /// Creates the chat; answers its chat id.
    pub async fn create(&self, chat: &NewChat) -> Result<String, ChatError> {
        chat.check()?;
        let mut body = json!({ "name": chat.name, "owner": chat.owner, "userlist": chat.users });
        if let Some(chat_id) = &chat.chat_id {
            body["chatid"] = json!(chat_id);
        }
        let reply = self.call(Endpoint::AppchatCreate, &body).await?;
        reply["chatid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChatError::Invalid("WeCom created the chat but answered no chatid".into()))
    }

    /// The chat's name, owner and members (`chat_info`).
    pub async fn get(&self, chat_id: &str) -> Result<Value, ChatError> {
        crate::config::check_chat_id(chat_id).map_err(|m| ChatError::Invalid(format!("--chatid: {m}")))?;
        let reply = self
            .call(Endpoint::AppchatGet, &json!({ "chatid": chat_id }))
            .await?;
        Ok(reply["chat_info"].clone())
    }

    async fn call(&self, endpoint: Endpoint, body: &Value) -> Result<Value, ChatError> {
        let deadline = Instant::now() + self.timeout;
        let url = MethodUrl::new(&self.app.api_url, endpoint.as_str());
        let limit = CallLimit {
            deadline,
            cap: self.timeout,
        };
        let outcome = with_token(&self.tokens, limit, |token| async move {
            self.api
                .call_json(endpoint, &url, &token, body, limit.timeout())
                .await
        })
        .await;
        outcome.map_err(|failure| ChatError::WeCom(failure.into_failure()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> NewChat {
        NewChat {
            name: "告警 ops".into(),
            owner: "alice".into(),
            users: vec!["alice".into(), "bob".into()],
            chat_id: Some("wrkOps1".into()),
        }
    }

    #[test]
    fn a_new_chat_is_checked_against_wecoms_rules_before_asking() {
        assert!(chat().check().is_ok());
        type Change = fn(&mut NewChat);
        let cases: [(Change, &str); 5] = [
            (|c| c.name = "名".repeat(51), "1 to 50 characters"),
            (|c| c.users.truncate(1), "2 to 1999 members"),
            (
                |c| c.users = (0..2000).map(|i| format!("u{i}")).collect(),
                "2 to 1999",
            ),
            (|c| c.owner = "carol".into(), "must be one of --users"),
            (|c| c.chat_id = Some("no-dashes".into()), "--chatid"),
        ];
        for (change, expected) in cases {
            let mut chat = chat();
            change(&mut chat);
            let error = chat.check().unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let mut exactly_50 = chat();
        exactly_50.name = "名".repeat(50);
        assert!(exactly_50.check().is_ok(), "characters, not bytes");
    }
}
