//! A shared store with local state to fall back on: the store going away never stops
//! paging. While Redis answers, every operation goes to it (and accepted messages are
//! also recorded locally, so a replica that loses Redis still knows what it delivered
//! itself; digests collected locally during an outage are still offered, taken and sent
//! once Redis is back). When an operation fails or times out, the replica switches to its local state
//! at once — one log line, `state_degraded` 1 — and a watcher brings it back to the shared
//! store when Redis answers again (one log line, gauge 0). While degraded, requests do not
//! wait on Redis at all. The watcher also pings Redis when no request does, so a Redis that
//! is down at start-up, or goes away between alerts, shows in the gauge at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{error, info};

use super::cards::{CardStore, MemoryCards};
use super::digest::{DigestBatch, MemoryDigests, PendingDigests};
use super::ledger::{Claim, ClaimId, DeliveryKey, Ledger, MemoryLedger, Recorded};
use super::rate_budget::{Charge, MemoryRateBudgets, Plan, RateBudgets, RateLimits, Reservation};
use super::redis::{RedisStore, StoreError};
use crate::metrics::Metrics;

/// How often the watcher asks whether Redis answers.
const PROBE_EVERY: Duration = Duration::from_secs(2);

pub struct SharedStore {
    redis: RedisStore,
    local_ledger: MemoryLedger,
    local_budgets: MemoryRateBudgets,
    local_digests: MemoryDigests,
    local_cards: MemoryCards,
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
            local_digests: MemoryDigests::new(),
            local_cards: MemoryCards::new(),
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

impl SharedStore {
    /// Runs `operation` on Redis unless degraded; a failure degrades. `None`: use local
    /// state.
    async fn on_redis<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        if self.is_degraded() {
            return None;
        }
        match operation.await {
            Ok(value) => Some(value),
            Err(error) => {
                self.degrade(&error);
                None
            }
        }
    }
}

#[async_trait]
impl Ledger for SharedStore {
    async fn claim(&self, key: &DeliveryKey, hold: Duration) -> Claim {
        match self.on_redis(self.redis.claim(key, hold)).await {
            Some(claim) => claim,
            None => self.local_ledger.claim(key, hold).await,
        }
    }

    async fn accepted(&self, key: &DeliveryKey, window: Duration) {
        self.local_ledger.accepted(key, window).await;
        self.on_redis(self.redis.accepted(key, window)).await;
    }

    async fn release(&self, key: &DeliveryKey, claim: ClaimId) {
        self.local_ledger.release(key, claim).await;
        self.on_redis(self.redis.release(key, claim)).await;
    }

    async fn pend(&self, key: &DeliveryKey, claim: ClaimId, hold: Duration) -> bool {
        match self.on_redis(self.redis.pend(key, claim, hold)).await {
            Some(pended) => pended,
            None => self.local_ledger.pend(key, claim, hold).await,
        }
    }

    async fn unpend(&self, key: &DeliveryKey) {
        self.local_ledger.unpend(key).await;
        self.on_redis(self.redis.unpend(key)).await;
    }

    async fn peek(&self, key: &DeliveryKey) -> Recorded {
        match self.on_redis(self.redis.peek(key)).await {
            Some(recorded) => recorded,
            None => self.local_ledger.peek(key).await,
        }
    }
}

#[async_trait]
impl RateBudgets for SharedStore {
    async fn try_reserve(
        &self,
        scope: &str,
        charge: &Charge,
        limits: RateLimits,
    ) -> Result<Reservation, Vec<String>> {
        let id = fastrand::u64(..);
        let plan = Plan::of(charge);
        let booking = self
            .redis
            .book(scope, &plan, charge.keep, charge.in_flight, limits, id);
        match self.on_redis(booking).await {
            Some(Ok(())) => Ok(Reservation {
                scope: scope.to_string(),
                keys: plan.booked(),
                id,
                shared: true,
            }),
            Some(Err(over)) => Err(over),
            None => self.local_budgets.try_reserve(scope, charge, limits).await,
        }
    }

    /// While degraded a shared booking keeps its deadline for a stamp: it counts a little
    /// longer than it needs to, which errs on the safe side.
    async fn settle(&self, reservation: &Reservation) {
        if !reservation.shared {
            return self.local_budgets.settle(reservation).await;
        }
        self.on_redis(
            self.redis
                .settle(&reservation.scope, &reservation.keys, reservation.id),
        )
        .await;
    }

    /// While degraded a shared booking is left to expire with its hour: not worth waiting
    /// on a Redis that is away.
    async fn release(&self, reservation: Reservation) {
        if !reservation.shared {
            return self.local_budgets.release(reservation).await;
        }
        self.on_redis(
            self.redis
                .unbook(&reservation.scope, &reservation.keys, reservation.id),
        )
        .await;
    }
}

/// Digests go to Redis while it answers, else stay local. Those collected locally during
/// an outage are offered by `due` and taken by `take` after it too (no one else knows of
/// them), and put back to Redis if their send fails.
#[async_trait]
impl PendingDigests for SharedStore {
    async fn add(
        &self,
        id: &str,
        header: &[u8],
        entry_key: &DeliveryKey,
        entry: &[u8],
        interval: Duration,
        hold: Duration,
    ) {
        let added = self
            .redis
            .digest_add(id, header, entry_key, entry, interval, hold);
        if self.on_redis(added).await.is_none() {
            self.local_digests
                .add(id, header, entry_key, entry, interval, hold)
                .await;
        }
    }

    async fn due(&self, limit: usize) -> Vec<String> {
        let mut due = self
            .on_redis(self.redis.digests_due(limit))
            .await
            .unwrap_or_default();
        if due.len() < limit {
            for id in self.local_digests.due(limit).await {
                if due.len() < limit && !due.contains(&id) {
                    due.push(id);
                }
            }
        }
        due
    }

    async fn take(&self, id: &str) -> Option<DigestBatch> {
        match self.on_redis(self.redis.digest_take(id)).await {
            Some(Some(batch)) => Some(batch),
            _ => self.local_digests.take(id).await,
        }
    }

    async fn sent(&self, id: &str, interval: Duration) {
        self.local_digests.sent(id, interval).await;
        self.on_redis(self.redis.digest_sent(id, interval)).await;
    }

    async fn put_back(&self, batch: DigestBatch, retry_in: Duration, hold: Duration) {
        let put = self.redis.digest_put_back(&batch, retry_in, hold);
        if self.on_redis(put).await.is_none() {
            self.local_digests.put_back(batch, retry_in, hold).await;
        }
    }

    async fn oldest_pending(&self) -> Option<Duration> {
        let shared = self.on_redis(self.redis.oldest_pending_digest()).await.flatten();
        let local = self.local_digests.oldest_pending().await;
        shared.max(local)
    }
}

/// Cards written while Redis answers are also kept locally, so a replica that loses Redis
/// can still update the cards it sent itself.
#[async_trait]
impl CardStore for SharedStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) {
        self.local_cards.put(key, value, ttl).await;
        self.on_redis(self.redis.card_put(key, value, ttl)).await;
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Vec<u8> {
        match self.on_redis(self.redis.card_put_new(key, value, ttl)).await {
            Some(held) => {
                self.local_cards.put(key, &held, ttl).await;
                held
            }
            None => self.local_cards.put_new(key, value, ttl).await,
        }
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.on_redis(self.redis.card_get(key)).await {
            Some(value) => value,
            None => self.local_cards.get(key).await,
        }
    }

    async fn take(&self, key: &str) -> Option<Vec<u8>> {
        let local = self.local_cards.take(key).await;
        match self.on_redis(self.redis.card_take(key)).await {
            Some(value) => value,
            None => local,
        }
    }
}
