//! What interactive cards leave behind for later: the card a click refers to (by its
//! task id), the code that updates it, which card a group's resolve should update, the task
//! id a retried send must reuse, and which clicks were already acted on. Every replica must
//! see the same, so it lives beside the record of accepted messages.
//!
//! A small store of opaque values with a TTL: what keys and values mean is the deliver and
//! service layers' business (`deliver::cards`). `take` hands a value to one caller only,
//! for codes WeCom accepts once; `put_new` keeps the first writer's value, for task ids and
//! click de-duplication.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Clock;

/// Values kept in memory at most: a bound for a process without Redis, far above what a
/// 72-hour window of cards holds in practice (each card leaves about four entries).
pub const MAX_MEMORY_ENTRIES: usize = 200_000;

#[async_trait]
pub trait CardStore: Send + Sync {
    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration);
    /// Stores `value` unless `key` holds one; answers the value `key` holds afterwards
    /// (the first writer's).
    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Vec<u8>;
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Removes the value and answers it: of concurrent takers, one gets it.
    async fn take(&self, key: &str) -> Option<Vec<u8>>;
}

/// Cards of this process only (a single replica).
#[derive(Default)]
pub struct MemoryCards {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    clock: Clock,
}

impl MemoryCards {
    pub fn new() -> MemoryCards {
        MemoryCards::default()
    }

    #[cfg(test)]
    fn with_clock(clock: Clock) -> MemoryCards {
        MemoryCards {
            entries: Mutex::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for one more entry: drops what expired, and if that is not enough the
    /// entries closest to expiring (they matter least).
    fn make_room(entries: &mut HashMap<String, (Vec<u8>, Instant)>, now: Instant) {
        if entries.len() < MAX_MEMORY_ENTRIES {
            return;
        }
        entries.retain(|_, (_, until)| *until > now);
        if entries.len() >= MAX_MEMORY_ENTRIES {
            let mut expiries: Vec<Instant> = entries.values().map(|(_, until)| *until).collect();
            let cut = expiries.len() / 10;
            let (_, threshold, _) = expiries.select_nth_unstable(cut);
            let threshold = *threshold;
            entries.retain(|_, (_, until)| *until > threshold);
        }
    }
}

#[async_trait]
impl CardStore for MemoryCards {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) {
        let now = self.clock.now();
        let mut entries = self.lock();
        Self::make_room(&mut entries, now);
        entries.insert(key.to_string(), (value.to_vec(), now + ttl));
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Vec<u8> {
        let now = self.clock.now();
        let mut entries = self.lock();
        if let Some((held, until)) = entries.get(key) {
            if *until > now {
                return held.clone();
            }
        }
        Self::make_room(&mut entries, now);
        entries.insert(key.to_string(), (value.to_vec(), now + ttl));
        value.to_vec()
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.clock.now();
        self.lock()
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(value, _)| value.clone())
    }

    async fn take(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.clock.now();
        self.lock()
            .remove(key)
            .filter(|(_, until)| *until > now)
            .map(|(value, _)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire_with_their_ttl() {
        let clock = Clock::manual();
        let cards = MemoryCards::with_clock(clock.clone());
        cards.put("card:t1", b"one", Duration::from_secs(60)).await;
        assert_eq!(cards.get("card:t1").await.as_deref(), Some(&b"one"[..]));
        clock.advance(Duration::from_secs(61));
        assert_eq!(cards.get("card:t1").await, None);
        assert_eq!(cards.take("card:t1").await, None);
    }

    #[tokio::test]
    async fn the_first_writer_wins_until_its_value_expires() {
        let clock = Clock::manual();
        let cards = MemoryCards::with_clock(clock.clone());
        let ttl = Duration::from_secs(10);
        assert_eq!(cards.put_new("task:k", b"a", ttl).await, b"a");
        assert_eq!(cards.put_new("task:k", b"b", ttl).await, b"a");
        clock.advance(Duration::from_secs(11));
        assert_eq!(cards.put_new("task:k", b"b", ttl).await, b"b");
    }

    #[tokio::test]
    async fn a_value_is_taken_once() {
        let cards = MemoryCards::new();
        cards.put("code:t", b"c", Duration::from_secs(60)).await;
        assert_eq!(cards.take("code:t").await.as_deref(), Some(&b"c"[..]));
        assert_eq!(cards.take("code:t").await, None);
    }

    #[tokio::test]
    async fn memory_stays_bounded_when_cards_pile_up() {
        let cards = MemoryCards::new();
        for i in 0..MAX_MEMORY_ENTRIES + 10 {
            cards
                .put(&format!("k{i}"), b"v", Duration::from_secs(60 + i as u64))
                .await;
        }
        let held = cards.lock().len();
        assert!(held <= MAX_MEMORY_ENTRIES, "{held} entries");
        let last = format!("k{}", MAX_MEMORY_ENTRIES + 9);
        assert!(cards.get(&last).await.is_some(), "the newest entry is kept");
    }
}
