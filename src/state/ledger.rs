//! The record of accepted messages: remembers which messages WeCom accepted, so that when
//! Alertmanager re-sends a group (after a partial failure, or from an HA peer) nothing
//! already delivered goes out twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// A fingerprint of one message (see `deliver::identity`).
pub type DeliveryKey = [u8; 32];

/// Accepted messages, each remembered for the window it was recorded with.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Whether a message with this key was accepted and its window has not run out.
    async fn contains(&self, key: &DeliveryKey) -> bool;
    /// Remembers an accepted message for `window` (nothing for a zero window).
    async fn record(&self, key: DeliveryKey, window: Duration);
}

/// Bounds memory whatever the traffic; the oldest entries go first.
const MAX_ENTRIES: usize = 100_000;

/// The record in this process.
#[derive(Default)]
pub struct MemoryLedger {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    expires: HashMap<DeliveryKey, Instant>,
    /// In recording order. A reload may change the window, so this is not quite expiry
    /// order; `expires` is the truth, this only bounds and trims it.
    order: VecDeque<(Instant, DeliveryKey)>,
}

impl MemoryLedger {
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The map stays consistent even if a holder panicked; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn contains(&self, key: &DeliveryKey) -> bool {
        let mut entries = self.lock();
        let now = Instant::now();
        entries.expire(now);
        entries.expires.get(key).is_some_and(|until| *until > now)
    }

    async fn record(&self, key: DeliveryKey, window: Duration) {
        if window.is_zero() {
            return;
        }
        let mut entries = self.lock();
        let now = Instant::now();
        entries.expire(now);
        let until = now + window;
        entries.expires.insert(key, until);
        entries.order.push_back((until, key));
        while entries.order.len() > MAX_ENTRIES {
            if let Some((until, oldest)) = entries.order.pop_front() {
                entries.forget(&oldest, until);
            }
        }
    }
}

impl Entries {
    fn expire(&mut self, now: Instant) {
        while let Some((until, key)) = self.order.front().copied() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.forget(&key, until);
        }
    }

    /// Drops `key` unless it was recorded again later (with another expiry).
    fn forget(&mut self, key: &DeliveryKey, until: Instant) {
        if self.expires.get(key) == Some(&until) {
            self.expires.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorded_delivery_is_remembered_for_the_window_only() {
        let ledger = MemoryLedger::new();
        let key = [1; 32];
        assert!(!ledger.contains(&key).await);
        ledger.record(key, Duration::from_millis(50)).await;
        assert!(ledger.contains(&key).await);
        assert!(!ledger.contains(&[2; 32]).await);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!ledger.contains(&key).await);
    }

    #[tokio::test]
    async fn a_zero_window_records_nothing_and_windows_may_differ_per_entry() {
        let ledger = MemoryLedger::new();
        ledger.record([1; 32], Duration::ZERO).await;
        assert!(!ledger.contains(&[1; 32]).await);
        ledger.record([2; 32], Duration::from_secs(600)).await;
        ledger.record([3; 32], Duration::from_millis(20)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            ledger.contains(&[2; 32]).await,
            "a longer window outlives a shorter one"
        );
        assert!(!ledger.contains(&[3; 32]).await);
    }

    #[tokio::test]
    async fn the_record_is_bounded_and_forgets_the_oldest_first() {
        let ledger = MemoryLedger::new();
        for i in 0..=MAX_ENTRIES as u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            ledger.record(key, Duration::from_secs(600)).await;
        }
        assert!(!ledger.contains(&[0; 32]).await);
        assert_eq!(ledger.lock().expires.len(), MAX_ENTRIES);
    }
}
