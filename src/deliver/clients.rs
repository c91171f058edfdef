//! What of the WeCom side outlives a configuration reload: the HTTP connection pool and
//! the access tokens. A reload that keeps an app's credentials keeps its token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::api::WeComApi;
use super::directory::{Directory, DEFAULT_REFRESH};
use super::token::AccessTokenCache;
use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// An app's directory view and the token cache it reads with.
type DirectoryOf = (Option<Arc<AccessTokenCache>>, Arc<Directory>);

pub struct Clients {
    pub api: WeComApi,
    /// By app name, corp, API URL and a hash of the secret: new credentials, new cache.
    tokens: Mutex<HashMap<[u8; 32], Arc<AccessTokenCache>>>,
    /// By app name, with the token cache it reads with: what was read of the directory
    /// outlives a reload that keeps the app's credentials.
    directories: Mutex<HashMap<String, DirectoryOf>>,
}

impl Clients {
    pub fn new(metrics: Metrics) -> Clients {
        Clients {
            api: WeComApi::new(metrics),
            tokens: Mutex::default(),
            directories: Mutex::default(),
        }
    }

    /// The token cache for this app and secret, shared with earlier configurations and
    /// with every target that sends through the app.
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
                    self.api.metrics(),
                ))
            })
            .clone()
    }

    /// The app's view of the directory (read with `tokens`; `None`: dry-run, nothing is
    /// read), shared with earlier configurations that used the same credentials.
    pub fn directory(
        &self,
        app: &AppConfig,
        tokens: Option<Arc<AccessTokenCache>>,
        call_timeout: Duration,
    ) -> Arc<Directory> {
        let mut directories = self.directories.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, directory)) = directories.get(&app.name) {
            let same = match (known, &tokens) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return directory.clone();
            }
        }
        let directory = Arc::new(
            Directory::new(app, self.api.clone(), tokens.clone(), DEFAULT_REFRESH)
                .with_call_timeout(call_timeout),
        );
        directories.insert(app.name.clone(), (tokens, directory.clone()));
        directory
    }
}
