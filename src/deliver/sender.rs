//! Sending one message through one app: token handling and retries within a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use serde_json::Value;

use super::api::{MethodUrl, SendReceipt, WeComApi};
use super::error::{ErrorClass, WeComError};
use super::retry::Retry;
use super::token::{AccessTokenCache, TokenError};
use crate::config::AppConfig;

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
    fn from_token(error: TokenError) -> SendFailure {
        SendFailure::Transient {
            reason: error.reason(),
            errcode: error.errcode(),
            error: error.to_string(),
        }
    }
}

/// How a message went out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Accepted(SendReceipt),
    /// Dry-run: logged, not sent.
    DryRun,
}

/// Delivers messages for one app; in dry-run mode it logs them instead.
pub struct AppSender {
    app: AppConfig,
    api: WeComApi,
    send_url: MethodUrl,
    tokens: Option<Arc<AccessTokenCache>>,
    call_timeout: Duration,
}

impl AppSender {
    /// `tokens` is `None` in dry-run mode.
    pub fn new(
        app: AppConfig,
        api: WeComApi,
        tokens: Option<Arc<AccessTokenCache>>,
        call_timeout: Duration,
    ) -> Self {
        AppSender {
            send_url: MethodUrl::new(&app.api_url, "message/send"),
            app,
            api,
            tokens,
            call_timeout,
        }
    }

    pub fn app(&self) -> &AppConfig {
        &self.app
    }

    pub fn is_dry_run(&self) -> bool {
        self.tokens.is_none()
    }

    /// Sends `body` (a complete `message/send` request) before `deadline`: a rejected token
    /// is replaced and the send retried once; transient failures are retried with capped
    /// exponential backoff while the deadline allows.
    pub async fn send(&self, body: &Value, deadline: Instant) -> Result<Sent, SendFailure> {
        let Some(tokens) = &self.tokens else {
            info!("dry-run: app {} would send: {body}", self.app.name);
            return Ok(Sent::DryRun);
        };
        let mut retry = Retry::new(deadline);
        let mut token_replaced = false;
        loop {
            let attempt = retry.attempt();
            let failure = match tokens.get(retry.call_timeout(self.call_timeout)).await {
                Err(error) if !error.is_retryable() => return Err(SendFailure::from_token(error)),
                Err(error) => SendFailure::from_token(error),
                Ok(token) => {
                    let timeout = retry.call_timeout(self.call_timeout);
                    match self.api.send_message(&self.send_url, &token, body, timeout).await {
                        Ok(receipt) => return Ok(Sent::Accepted(receipt)),
                        Err(error) if error.class() == ErrorClass::TokenRejected && !token_replaced => {
                            info!(
                                "app {}: WeCom rejected the access token ({error}); fetching a new one",
                                self.app.name
                            );
                            tokens.invalidate(&token).await;
                            token_replaced = true;
                            retry.forgive(); // a token refresh is not a retry of the message
                            continue;
                        }
                        Err(error) => match SendFailure::from_wecom(error) {
                            permanent @ SendFailure::Permanent { .. } => return Err(permanent),
                            transient => transient,
                        },
                    }
                }
            };
            if !retry
                .back_off(&format!("app {}", self.app.name), attempt, &failure)
                .await
            {
                return Err(failure);
            }
        }
    }
}
