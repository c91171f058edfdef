//! What outlives a configuration reload: the HTTP connection pool, access tokens, rate
//! counts and the record of accepted messages. A reload that keeps an app's credentials
//! keeps its token, and messages accepted before a reload are still not sent twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::api::WeComApi;
use super::ledger::DeliveryLedger;
use super::rate_budget::RateBudget;
use super::token::AccessTokenCache;
use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::secret::Secret;

pub struct DeliveryState {
    pub api: WeComApi,
    pub ledger: DeliveryLedger,
    pub metrics: Metrics,
    /// By app name, corp, API URL and a hash of the secret: new credentials, new cache.
    tokens: Mutex<HashMap<[u8; 32], Arc<AccessTokenCache>>>,
    /// By target kind and name.
    budgets: Mutex<HashMap<String, Arc<RateBudget>>>,
}

impl DeliveryState {
    pub fn new(metrics: Metrics, dedup_window: Duration) -> DeliveryState {
        DeliveryState {
            api: WeComApi::new(metrics.clone()),
            ledger: DeliveryLedger::new(dedup_window),
            metrics,
            tokens: Mutex::default(),
            budgets: Mutex::default(),
        }
    }

    /// The token cache for this app and secret, shared with earlier configurations.
    pub fn token_cache(&self, app: &AppConfig, secret: &Secret) -> Arc<AccessTokenCache> {
        let mut hasher = Sha256::new();
        for part in [
            app.name.as_str(),
            app.corp_id.as_str(),
            app.api_url.as_str(),
            secret.expose(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let key: [u8; 32] = hasher.finalize().into();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .entry(key)
            .or_insert_with(|| {
                Arc::new(AccessTokenCache::new(
                    &app.name,
                    &app.corp_id,
                    secret.clone(),
                    &app.api_url,
                    self.api.clone(),
                    self.metrics.clone(),
                ))
            })
            .clone()
    }

    /// The rate budget named `key`, created by `make` the first time.
    pub fn budget(&self, key: &str, make: fn() -> RateBudget) -> Arc<RateBudget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        budgets
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }
}
