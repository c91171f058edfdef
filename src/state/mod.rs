//! Delivery state: what every sender of the same notifications must agree on — the record
//! of messages WeCom accepted, and the rate budgets counted against WeCom's limits.
//!
//! Behind async traits, so that a store shared by several replicas can stand in for the
//! in-memory one without its callers knowing which they talk to. Keys and members are
//! opaque strings and bytes here: what they mean is the deliver layer's business. This
//! layer imports only the configuration (its settings) and the metrics (its gauges).

pub mod ledger;
pub mod rate_budget;
pub mod redis;
mod shared;

use std::sync::Arc;

use crate::config::StateSettings;
use crate::metrics::Metrics;

pub use ledger::{Claim, ClaimId, DeliveryKey, Ledger, MemoryLedger};
pub use rate_budget::{MemoryRateBudgets, RateBudgets, RateLimits, Reservation};

/// The delivery state one process uses, chosen when it starts and kept across reloads.
#[derive(Clone)]
pub struct DeliveryStore {
    pub ledger: Arc<dyn Ledger>,
    pub budgets: Arc<dyn RateBudgets>,
    /// The shared store, for its watcher.
    shared: Option<Arc<shared::SharedStore>>,
}

impl DeliveryStore {
    /// The store `settings` ask for. Redis is connected to on first use, so a Redis that
    /// is down at start-up only means starting degraded.
    pub fn from_settings(
        settings: &StateSettings,
        metrics: &Metrics,
    ) -> Result<DeliveryStore, redis::StoreError> {
        metrics
            .state_backend
            .with_label_values(&[settings.backend()])
            .set(1);
        metrics.state_degraded.set(0);
        match settings {
            StateSettings::Memory => Ok(DeliveryStore::in_memory()),
            StateSettings::Redis(redis) => {
                let store = shared::SharedStore::new(redis::RedisStore::new(redis)?, metrics.clone());
                Ok(DeliveryStore {
                    ledger: store.clone(),
                    budgets: store.clone(),
                    shared: Some(store),
                })
            }
        }
    }

    /// State in this process only: right for a single replica.
    pub fn in_memory() -> DeliveryStore {
        DeliveryStore {
            ledger: Arc::new(MemoryLedger::new()),
            budgets: Arc::new(MemoryRateBudgets::new()),
            shared: None,
        }
    }

    /// Starts watching a shared store's health (within a tokio runtime, once the service
    /// serves): a Redis that is down shows in `state_degraded` without waiting for an alert.
    pub fn watch(&self) {
        if let Some(store) = &self.shared {
            store.watch();
        }
    }
}
