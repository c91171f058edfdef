//! The seam every delivery target implements.
//!
//! A target builds its WeCom requests, makes one call at a time (the shared retry loop in
//! `retry` decides whether to call again), owns its rate budget and the content limits its
//! messages are fitted to, and names itself in metrics and logs. A new kind of target is a
//! new file implementing [`Target`] plus one arm in `registry::build_targets`.

use async_trait::async_trait;
use serde_json::Value;

pub use super::api::CallLimit;
use super::api::SendReceipt;
use super::clients::Clients;
use super::error::{ErrorClass, WeComError};
use super::outcome::SendFailure;
use crate::config::{Mentions, RateLimit, Recipients, TargetKind, WeComSettings};
use crate::metrics::Metrics;
use crate::render::{ContentLimits, MessageContent};
use crate::secret::Secret;
use crate::state::{Charge, RateLimits};

/// Who one notification's message reaches: recipients for app routes, mentions for robots.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    pub recipients: &'a Recipients,
    pub mentions: &'a Mentions,
}

/// One WeCom request, and what it counts against the target's rate budget.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Value,
    /// What it books and checks in the target's budget scope (the notifier sets how many
    /// slots it must leave and how long it may be in flight).
    pub charge: Charge,
    /// Which recipients (with the part of a series and the alerts, what makes a request
    /// the same request again, whatever its text).
    pub identity: String,
}

/// The rate budget a target's messages count against.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The target's scope in the shared rate budgets (`app:ops`, `robot:dba`, …).
    pub scope: String,
    pub limits: RateLimits,
}

/// A target's limits as the budgets count them: WeCom's (or the configured) numbers, with
/// the safety margin of `wecom.rate_margin` on every window.
pub fn rate_limits(limit: RateLimit, settings: &WeComSettings) -> RateLimits {
    RateLimits {
        per_minute: limit.per_minute,
        per_hour: limit.per_hour,
        margin: settings.rate_margin,
    }
}

/// Which WeCom method a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Sends a message (`message/send`, a robot's webhook, `appchat/send`).
    Send,
    /// Changes a sent interactive card (`message/update_template_card`).
    UpdateCard,
}

/// Why one call failed, as the retry loop needs to know it.
#[derive(Debug)]
pub enum CallFailure {
    /// Worth another attempt after a pause.
    Retry(SendFailure),
    /// No attempt now would help: WeCom refused the message, or the credentials are wrong.
    GiveUp(SendFailure),
    /// WeCom rejected the credential (access token) the call used: once it is dropped
    /// ([`Target::drop_credential`]), one more attempt at once, with a fresh one, may
    /// succeed.
    CredentialRejected { failure: SendFailure, stale: Secret },
}

impl CallFailure {
    /// Classifies a failed WeCom call (docs/wecom-api.md#errcodes).
    /// `token` is the credential the call used, if it had one.
    pub fn from_wecom(error: WeComError, token: Option<&Secret>) -> CallFailure {
        match (error.class(), token) {
            (ErrorClass::Permanent, _) => CallFailure::GiveUp(SendFailure::from_wecom(error)),
            (ErrorClass::TokenRejected, Some(token)) => CallFailure::CredentialRejected {
                failure: SendFailure::from_wecom(error),
                stale: token.clone(),
            },
            _ => CallFailure::Retry(SendFailure::from_wecom(error)),
        }
    }

    pub fn into_failure(self) -> SendFailure {
        match self {
            CallFailure::Retry(failure) | CallFailure::GiveUp(failure) => failure,
            CallFailure::CredentialRejected { failure, .. } => failure,
        }
    }
}

/// A place messages are delivered to.
#[async_trait]
pub trait Target: Send + Sync {
    fn kind(&self) -> TargetKind;
    /// Names the target in metrics and logs.
    fn name(&self) -> &str;
    /// Logs messages instead of sending them (no credentials, or `--dry-run`).
    fn is_dry_run(&self) -> bool;
    /// What its text and markdown contents are fitted to.
    fn limits(&self) -> &'static ContentLimits;
    fn budget(&self) -> &Budget;
    /// The requests one part of a message goes out as (one per recipient batch, for apps).
    fn requests(&self, part: &MessageContent, audience: Audience<'_>) -> Vec<Request>;
    /// Why a request over budget is held back, for the answer and the log.
    fn over_budget(&self, over: &[String]) -> String;
    /// One attempt at sending `body`.
    async fn call(&self, body: &Value, limit: CallLimit) -> Result<SendReceipt, CallFailure>;
    /// One attempt at updating a sent card with `body`; only app messages have cards that
    /// can be updated.
    async fn update_card(&self, _body: &Value, _limit: CallLimit) -> Result<SendReceipt, CallFailure> {
        Err(CallFailure::GiveUp(SendFailure::Permanent {
            reason: "unsupported",
            errcode: None,
            error: format!("{} {} has no cards to update", self.kind().as_str(), self.name()),
        }))
    }
    /// Forgets a credential WeCom rejected, so the next call fetches a fresh one.
    async fn drop_credential(&self, _stale: &Secret) {}
    /// Pre-initialises the metric series this target owns.
    fn prepare_metrics(&self, metrics: &Metrics) {
        metrics.member_rate_limited.with_label_values(&[self.name()]);
    }
}

/// Everything WeCom-facing a target is built from.
pub struct Parts<'a> {
    pub clients: &'a Clients,
    pub settings: &'a WeComSettings,
    pub dry_run: bool,
}

/// The notifier logs a dry-run target's messages instead of calling it; should a call
/// happen anyway, it fails rather than send without credentials.
pub fn dry_run_call(name: &str) -> CallFailure {
    CallFailure::GiveUp(SendFailure::Permanent {
        reason: "dry_run",
        errcode: None,
        error: format!("{name} is in dry-run mode (no credentials): nothing was sent"),
    })
}
