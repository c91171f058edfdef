//! An app's access token, as the targets that send through an app use it (app messages
//! and app group chats): fetched from the shared cache, dropped when WeCom rejects it.

use std::future::Future;
use std::sync::Arc;

use log::info;

use super::error::WeComError;
use super::outcome::SendFailure;
use super::target::{CallFailure, CallLimit, Parts};
use super::token::{AccessTokenCache, TokenError};
use crate::config::AppConfig;
use crate::secret::Secret;

/// The app's token cache, shared with earlier configurations and with the app's chats;
/// `None` (dry-run) without a secret or with `--dry-run`.
pub fn app_tokens(app: &AppConfig, parts: &Parts<'_>) -> Option<Arc<AccessTokenCache>> {
    match (&app.secret, parts.dry_run) {
        (Some(secret), false) => Some(parts.clients.token_cache(app, secret)),
        _ => None,
    }
}

/// One call that needs the app's access token.
pub async fn with_token<T, F, Fut>(
    tokens: &AccessTokenCache,
    limit: CallLimit,
    call: F,
) -> Result<T, CallFailure>
where
    F: FnOnce(Secret) -> Fut,
    Fut: Future<Output = Result<T, WeComError>>,
{
    let token = match tokens.get(limit.timeout()).await {
        Ok(token) => token,
        Err(error) => return Err(token_failure(error)),
    };
    call(token.clone())
        .await
        .map_err(|error| CallFailure::from_wecom(error, Some(&token)))
}

/// Drops a token WeCom rejected (compare first: of many senders rejected with the same
/// token, only the first causes a new fetch).
pub async fn drop_token(app: &str, tokens: &AccessTokenCache, stale: &Secret) {
    info!("app {app}: WeCom rejected the access token; fetching a new one");
    tokens.invalidate(stale).await;
}

fn token_failure(error: TokenError) -> CallFailure {
    if error.is_retryable() {
        CallFailure::Retry(SendFailure::from_token(error))
    } else {
        CallFailure::GiveUp(SendFailure::from_token(error))
    }
}
