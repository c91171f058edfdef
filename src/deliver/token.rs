//! The access token of one WeCom app: cached, fetched by one caller at a time (concurrent
//! senders wait for that one fetch), refreshed ahead of expiry, and never fetched in a loop
//! when WeCom says the credentials are wrong (repeated bad secrets get the IP banned).

use std::time::{Duration, Instant};

use log::{error, info};
use tokio::sync::Mutex;

use super::api::{MethodUrl, WeComApi};
use super::error::{errcode_meaning, ErrorClass, WeComError};
use crate::metrics::Metrics;
use crate::secret::Secret;

/// First pause after WeCom rejected the credentials; doubles up to [`MAX_CREDENTIAL_BACKOFF`].
const FIRST_CREDENTIAL_BACKOFF: Duration = Duration::from_secs(30);
const MAX_CREDENTIAL_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Why a token was fetched (label values of `token_refreshes_total`).
pub const REFRESH_REASONS: [&str; 3] = ["initial", "expiring", "rejected"];
/// Why fetching a token failed (label values of `token_failures_total`).
pub const FAILURE_REASONS: [&str; 2] = ["credentials", "transient"];

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("app {app}: WeCom rejected the credentials: {error}")]
    Credentials { app: String, error: WeComError },
    #[error("app {app}: WeCom rejected the credentials (errcode {errcode}: {}); not asking again for {}s", errcode_meaning(*errcode), remaining.as_secs())]
    BackingOff {
        app: String,
        errcode: i64,
        remaining: Duration,
    },
    #[error("app {app}: cannot fetch an access token: {error}")]
    Transient { app: String, error: WeComError },
}

impl TokenError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, TokenError::Transient { .. })
    }

    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Credentials { .. } | TokenError::BackingOff { .. } => "credentials",
            TokenError::Transient { error, .. } => error.reason(),
        }
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            TokenError::Credentials { error, .. } | TokenError::Transient { error, .. } => error.errcode(),
            TokenError::BackingOff { errcode, .. } => Some(*errcode),
        }
    }
}

struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

struct CredentialBackoff {
    errcode: i64,
    until: Instant,
    next: Duration,
}

#[derive(Default)]
struct State {
    token: Option<CachedToken>,
    backoff: Option<CredentialBackoff>,
    /// Set when a send rejected the cached token, so the next fetch is counted as "rejected".
    rejected: bool,
}

/// Access token cache for one app.
pub struct AccessTokenCache {
    app: String,
    corp_id: String,
    secret: Secret,
    token_url: MethodUrl,
    api: WeComApi,
    metrics: Metrics,
    state: Mutex<State>,
}

impl AccessTokenCache {
    pub fn new(
        app: &str,
        corp_id: &str,
        secret: Secret,
        base_url: &str,
        api: WeComApi,
        metrics: Metrics,
    ) -> Self {
        AccessTokenCache {
            app: app.to_string(),
            corp_id: corp_id.to_string(),
            secret,
            token_url: MethodUrl::new(base_url, "gettoken"),
            api,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// A valid token: the cached one, or a freshly fetched one. Holding the lock across the
    /// fetch makes concurrent callers share a single gettoken call.
    pub async fn get(&self, timeout: Duration) -> Result<Secret, TokenError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(cached) = &state.token {
            if now < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        if let Some(backoff) = &state.backoff {
            if now < backoff.until {
                return Err(TokenError::BackingOff {
                    app: self.app.clone(),
                    errcode: backoff.errcode,
                    remaining: backoff.until - now,
                });
            }
        }
        let [initial, expiring, rejected] = REFRESH_REASONS;
        let reason = if state.rejected {
            rejected
        } else if state.token.is_some() {
            expiring
        } else {
            initial
        };
        match self
            .api
            .get_token(&self.token_url, &self.corp_id, &self.secret, timeout)
            .await
        {
            Ok(grant) => {
                self.metrics
                    .token_refreshes
                    .with_label_values(&[&self.app, reason])
                    .inc();
                if state.backoff.take().is_some() {
                    info!("app {}: WeCom accepts the credentials again", self.app);
                }
                state.rejected = false;
                state.token = Some(CachedToken {
                    token: grant.token.clone(),
                    refresh_at: Instant::now() + refresh_after(grant.expires_in),
                });
                Ok(grant.token)
            }
            Err(error)
                if error.class() == ErrorClass::Credentials || error.class() == ErrorClass::Permanent =>
            {
                self.metrics
                    .token_failures
                    .with_label_values(&[&self.app, FAILURE_REASONS[0]])
                    .inc();
                let errcode = error.errcode().unwrap_or_default();
                let pause = state
                    .backoff
                    .as_ref()
                    .map_or(FIRST_CREDENTIAL_BACKOFF, |b| b.next);
                state.token = None;
                state.backoff = Some(CredentialBackoff {
                    errcode,
                    until: Instant::now() + pause,
                    next: (pause * 2).min(MAX_CREDENTIAL_BACKOFF),
                });
                error!(
                    "app {}: WeCom rejected the app's credentials ({error}); check corp_id, the secret and the app's trusted IPs. Not asking again for {}s",
                    self.app,
                    pause.as_secs()
                );
                Err(TokenError::Credentials {
                    app: self.app.clone(),
                    error,
                })
            }
            Err(error) => {
                self.metrics
                    .token_failures
                    .with_label_values(&[&self.app, FAILURE_REASONS[1]])
                    .inc();
                Err(TokenError::Transient {
                    app: self.app.clone(),
                    error,
                })
            }
        }
    }

    /// Forgets `stale` after WeCom rejected it. Compares first, so that of many senders
    /// rejected with the same token only the first one causes a new fetch.
    pub async fn invalidate(&self, stale: &Secret) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|cached| &cached.token == stale) {
            state.token = None;
            state.rejected = true;
        }
    }
}

/// Refresh ahead of expiry: a tenth of the lifetime early, at least 1 s and at most 5 min.
fn refresh_after(expires_in: Duration) -> Duration {
    let margin = (expires_in / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
    expires_in.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_ahead_of_expiry() {
        assert_eq!(
            refresh_after(Duration::from_secs(7200)),
            Duration::from_secs(6900)
        );
        assert_eq!(refresh_after(Duration::from_secs(60)), Duration::from_secs(54));
        assert_eq!(refresh_after(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(refresh_after(Duration::from_secs(0)), Duration::ZERO);
    }
}
