//! A shared store with local state to fall back on: the store going away never stops
//! paging. While Redis answers, every operation goes to it (and accepted messages are
//! also recorded locally, so a replica that loses Redis still knows what it delivered
//! itself). When an operation fails or times out, the replica switches to its local state
//! at once — one log line, `state_degraded` 1 — and a watcher brings it back to the shared
//! store when Redis answers again (one log line, gauge 0). While degraded, requests do not
//! wait on Redis at all. The watcher also pings Redis when no request does, so a Redis that
//! is down at start-up, or goes away between alerts, shows in the gauge at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{error, info};

use super::ledger::{Claim, ClaimId, DeliveryKey, Ledger, MemoryLedger};
use super::rate_budget::{MemoryRateBudgets, RateBudgets, RateLimits, Reservation};
use super::redis::{RedisStore, StoreError};
use crate::metrics::Metrics;

/// How often the watcher asks whether Redis answers.
const PROBE_EVERY: Duration = Duration::from_secs(2);

pub struct SharedStore {
    redis: RedisStore,
    local_ledger: MemoryLedger,
    local_budgets: MemoryRateBudgets,
    degraded: AtomicBool,
    watching: AtomicBool,
    metrics: Metrics,
}

impl SharedStore {
    pub fn new(redis: RedisStore, metrics: Metrics) -> Arc<SharedStore> {
        metrics.state_degraded.set(0);
        Arc::new(SharedStore {
            redis,
            local_ledger: MemoryLedger::new(),
            local_budgets: MemoryRateBudgets::new(),
            degraded: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            metrics,
        })
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Switches to local state (once per outage).
    fn degrade(&self, error: &StoreError) {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.metrics.state_degraded.set(1);
            error!(
                "shared state unreachable ({error}): delivering on this replica's local state until Redis answers again; \
                 meanwhile replicas may deliver a message twice or overrun WeCom's rate limits"
            );
        }
    }

    fn recover(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            self.metrics.state_degraded.set(0);
            info!("shared state reachable again: back on Redis");
        }
    }

    /// Starts the watcher (once; needs a tokio runtime): pings Redis now and every
    /// [`PROBE_EVERY`], degrading on failure and recovering on success.
    pub fn watch(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            // Ends with the store (a reload keeps it; the process exit ends both).
            while let Some(store) = store.upgrade() {
                match store.redis.ping().await {
                    Ok(()) => store.recover(),
                    Err(error) => store.degrade(&error),
                }
                drop(store);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }
}

/// The ledger and budgets of a [`SharedStore`]; `Arc` so that a failure can start the probe.
#[derive(Clone)]
pub struct Shared(pub Arc<SharedStore>);

#[async_trait]
impl Ledger for Shared {
    async fn claim(&self, key: &DeliveryKey, hold: Duration) -> Claim {
        let store = &self.0;
        if !store.is_degraded() {
            match store.redis.claim(key, hold).await {
                Ok(claim) => return claim,
                Err(error) => store_failed(&self.0, &error),
            }
        }
        store.local_ledger.claim(key, hold).await
    }

    async fn accepted(&self, key: &DeliveryKey, window: Duration) {
        let store = &self.0;
        store.local_ledger.accepted(key, window).await;
        if !store.is_degraded() {
            if let Err(error) = store.redis.accepted(key, window).await {
                store_failed(&self.0, &error);
            }
        }
    }

    async fn release(&self, key: &DeliveryKey, claim: ClaimId) {
        let store = &self.0;
        store.local_ledger.release(key, claim).await;
        if !store.is_degraded() {
            if let Err(error) = store.redis.release(key, claim).await {
                store_failed(&self.0, &error);
            }
        }
    }
}

#[async_trait]
impl RateBudgets for Shared {
    async fn try_reserve(
        &self,
        scope: &str,
        keys: &[String],
        limits: RateLimits,
    ) -> Result<Reservation, Vec<String>> {
        let store = &self.0;
        if !store.is_degraded() {
            let id = fastrand::u64(..);
            match store.redis.book(scope, keys, limits, id).await {
                Ok(Ok(())) => {
                    return Ok(Reservation {
                        scope: scope.to_string(),
                        keys: keys.to_vec(),
                        id,
                        shared: true,
                    })
                }
                Ok(Err(over)) => return Err(over),
                Err(error) => store_failed(&self.0, &error),
            }
        }
        store.local_budgets.try_reserve(scope, keys, limits).await
    }

    async fn release(&self, reservation: Reservation) {
        let store = &self.0;
        if !reservation.shared {
            return store.local_budgets.release(reservation).await;
        }
        if store.is_degraded() {
            // Its booking expires with the hour; not worth waiting on a Redis that is away.
            return;
        }
        if let Err(error) = store
            .redis
            .unbook(&reservation.scope, &reservation.keys, reservation.id)
            .await
        {
            store_failed(&self.0, &error);
        }
    }
}

fn store_failed(store: &SharedStore, error: &StoreError) {
    store.degrade(error);
}
