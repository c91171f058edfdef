//! How a delivery ended: per message ([`SendFailure`]) and per route's notification
//! ([`Outcome`], [`RouteReport`], which is what Alertmanager reads in our answer).

use serde::Serialize;

use super::error::{ErrorClass, WeComError};
use super::token::TokenError;
use crate::config::RouteConfig;

/// How one route's notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// WeCom accepted every message.
    Sent,
    /// Every message had been accepted before (a re-sent group); nothing was sent again.
    Duplicate,
    /// Dry-run: logged, not sent.
    DryRun,
    /// Worth retrying: Alertmanager should try again (503).
    FailedTransient,
    /// WeCom refused the message; retrying will not help (422).
    FailedPermanent,
    /// Collected into a storm digest (or pending in one): answered 503 until a digest
    /// that represents it was accepted, then its retry is answered 200.
    Digested,
}

impl Outcome {
    /// Every outcome: the label values of `notifications_total`.
    pub const ALL: [Outcome; 6] = [
        Outcome::Sent,
        Outcome::Duplicate,
        Outcome::DryRun,
        Outcome::FailedTransient,
        Outcome::FailedPermanent,
        Outcome::Digested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Duplicate => "duplicate",
            Outcome::DryRun => "dry_run",
            Outcome::FailedTransient => "failed_transient",
            Outcome::FailedPermanent => "failed_permanent",
            Outcome::Digested => "digested",
        }
    }
}

/// The report of one route's notification, returned to Alertmanager in the response body.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    pub route: String,
    /// The app, robot or chat.
    pub target: String,
    pub msgtype: &'static str,
    pub alerts: usize,
    /// Requests this notification needed (parts of a series times recipient batches).
    pub messages: usize,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RouteReport {
    /// The report of `route`'s notification of `alerts` alerts in `messages` requests, with
    /// no error yet.
    pub fn new(route: &RouteConfig, alerts: usize, messages: usize, outcome: Outcome) -> RouteReport {
        RouteReport {
            route: route.name.clone(),
            target: route.target_name().to_string(),
            msgtype: route.msgtype.as_str(),
            alerts,
            messages,
            outcome,
            cut: false,
            errcode: None,
            error: None,
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// Retrying later may work (Alertmanager should retry: 503).
    #[error("{error}")]
    Transient {
        reason: &'static str,
        errcode: Option<i64>,
        error: String,
    },
    /// WeCom refused this message; the same request will be refused again (422).
    #[error("{error}")]
    Permanent {
        reason: &'static str,
        errcode: Option<i64>,
        error: String,
    },
}

impl SendFailure {
    pub fn from_wecom(error: WeComError) -> SendFailure {
        let (reason, errcode, text) = (error.reason(), error.errcode(), error.to_string());
        match error.class() {
            ErrorClass::Permanent => SendFailure::Permanent {
                reason,
                errcode,
                error: text,
            },
            _ => SendFailure::Transient {
                reason,
                errcode,
                error: text,
            },
        }
    }

    /// Credential problems are answered as transient: the operator can fix the secret or
    /// the trusted IPs, and Alertmanager's retries then deliver the alert instead of
    /// dropping it. The token cache's backoff keeps those retries away from WeCom.
    pub fn from_token(error: TokenError) -> SendFailure {
        SendFailure::Transient {
            reason: error.reason(),
            errcode: error.errcode(),
            error: error.to_string(),
        }
    }

    /// A message held back because WeCom would drop or refuse it (a rate limit).
    pub fn rate_limited(error: String) -> SendFailure {
        SendFailure::Transient {
            reason: "rate_limited",
            errcode: None,
            error,
        }
    }

    /// Whether WeCom may have received (and counted) the message although the call failed:
    /// no answer came back, or not WeCom's.
    pub fn may_have_reached_wecom(&self) -> bool {
        matches!(
            self,
            SendFailure::Transient {
                reason: "transport" | "http_status" | "bad_reply",
                ..
            }
        )
    }

    pub fn is_rate_limited(&self) -> bool {
        matches!(
            self,
            SendFailure::Transient {
                reason: "rate_limited",
                ..
            }
        )
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, SendFailure::Transient { .. })
    }

    /// The outcome of a notification that failed with this, and its errcode.
    pub fn outcome(&self) -> (Outcome, Option<i64>) {
        match self {
            SendFailure::Transient { errcode, .. } => (Outcome::FailedTransient, *errcode),
            SendFailure::Permanent { errcode, .. } => (Outcome::FailedPermanent, *errcode),
        }
    }
}
