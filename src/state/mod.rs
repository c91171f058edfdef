//! Delivery state: what every sender of the same notifications must agree on — the record
//! of messages WeCom accepted (and of those collected into a digest), the rate budgets
//! counted against WeCom's limits, the digests waiting to be sent, and what interactive
//! cards need to be updated later.
//!
//! Behind async traits, so that a store shared by several replicas can stand in for the
//! in-memory one without its callers knowing which they talk to. Keys and members are
//! opaque strings and bytes here: what they mean is the deliver layer's business. This
//! layer imports only the configuration (its settings) and the metrics (its gauges).

pub mod cards;
pub mod digest;
pub mod ledger;
pub mod rate_budget;
pub mod redis;
mod shared;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::StateSettings;
use crate::metrics::Metrics;

pub use cards::{CardStore, MemoryCards};
pub use digest::{DigestBatch, MemoryDigests, PendingDigests};
pub use ledger::{key_from_hex, key_hex, Claim, ClaimId, DeliveryKey, Ledger, MemoryLedger, Recorded};
pub use rate_budget::{Charge, MemoryRateBudgets, RateBudgets, RateLimits, Reservation};

/// The delivery state one process uses, chosen when it starts and kept across reloads.
#[derive(Clone)]
pub struct DeliveryStore {
    pub ledger: Arc<dyn Ledger>,
    pub budgets: Arc<dyn RateBudgets>,
    pub digests: Arc<dyn PendingDigests>,
    /// Interactive cards: what a click or a resolve needs to find and update its card.
    pub cards: Arc<dyn CardStore>,
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
                    digests: store.clone(),
                    cards: store.clone(),
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
            digests: Arc::new(MemoryDigests::new()),
            cards: Arc::new(MemoryCards::new()),
            shared: None,
        }
    }

    /// Whether the state lives in a shared store (each operation is a round trip) rather
    /// than in this process.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Starts watching a shared store's health (within a tokio runtime, once the service
    /// serves): a Redis that is down shows in `state_degraded` without waiting for an alert.
    pub fn watch(&self) {
        if let Some(store) = &self.shared {
            store.watch();
        }
    }
}

/// Where the in-memory state reads the time: the system's monotonic clock, or in unit
/// tests one that moves only when told, so that windows of minutes and hours are tested
/// without waiting for them.
#[derive(Clone, Default)]
struct Clock {
    manual: Option<Arc<Mutex<Instant>>>,
}

impl Clock {
    fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(now) => *now.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    /// A clock standing still until [`Clock::advance`] moves it.
    #[cfg(test)]
    fn manual() -> Clock {
        Clock {
            // Far from the monotonic clock's origin, so that an hour back is an instant.
            manual: Some(Arc::new(Mutex::new(Instant::now() + Duration::from_secs(86_400)))),
        }
    }

    #[cfg(test)]
    fn advance(&self, by: Duration) {
        let now = self.manual.as_ref().expect("a manual clock");
        *now.lock().unwrap() += by;
    }
}

/// Milliseconds of a duration, for the shared store's arguments (saturating; at least
/// `floor`).
fn millis(duration: Duration, floor: u64) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(floor)
}
