//! Remembers which messages WeCom accepted, so that when Alertmanager re-sends a group
//! (after a partial failure, or from an HA peer) nothing already delivered goes out twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A fingerprint of one delivery: group key, route and the exact request body.
pub type DeliveryKey = [u8; 32];

/// Bounds memory whatever the traffic; the oldest entries go first.
const MAX_ENTRIES: usize = 100_000;

pub fn delivery_key(group_key: &str, route: &str, body: &str) -> DeliveryKey {
    let mut hasher = Sha256::new();
    for part in [group_key, route, body] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Accepted deliveries within a time window.
pub struct DeliveryLedger {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    window: Duration,
    keys: HashSet<DeliveryKey>,
    /// Insertion order equals expiry order: every entry lives for the same window.
    order: VecDeque<(Instant, DeliveryKey)>,
}

impl DeliveryLedger {
    pub fn new(window: Duration) -> DeliveryLedger {
        DeliveryLedger {
            inner: Mutex::new(Entries {
                window,
                ..Entries::default()
            }),
        }
    }

    /// A reloaded configuration may change the window; what is recorded stays.
    pub fn set_window(&self, window: Duration) {
        self.lock().window = window;
    }

    pub fn contains(&self, key: &DeliveryKey) -> bool {
        let mut entries = self.lock();
        entries.expire(Instant::now());
        entries.keys.contains(key)
    }

    pub fn record(&self, key: DeliveryKey) {
        let mut entries = self.lock();
        if entries.window.is_zero() {
            return;
        }
        let now = Instant::now();
        entries.expire(now);
        if entries.keys.insert(key) {
            entries.order.push_back((now, key));
        }
        while entries.order.len() > MAX_ENTRIES {
            if let Some((_, oldest)) = entries.order.pop_front() {
                entries.keys.remove(&oldest);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The set stays consistent even if a holder panicked; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Entries {
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_delivery_is_remembered_for_the_window_only() {
        let ledger = DeliveryLedger::new(Duration::from_millis(50));
        let key = delivery_key("{}:{a=\"b\"}", "db", "{}");
        assert!(!ledger.contains(&key));
        ledger.record(key);
        assert!(ledger.contains(&key));
        assert!(!ledger.contains(&delivery_key("{}:{a=\"b\"}", "pay", "{}")));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!ledger.contains(&key));
    }

    #[test]
    fn key_parts_cannot_run_into_each_other() {
        assert_ne!(delivery_key("ab", "c", ""), delivery_key("a", "bc", ""));
    }
}
