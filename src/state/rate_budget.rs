//! Rate budgets: messages counted per key (a member, a robot, a chat) within sliding
//! windows, booked before a message is sent. WeCom silently drops app messages beyond its
//! per-member limits — the send still succeeds — so the deliver layer refuses to send
//! what WeCom would drop, and the notification is retried later instead of lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// How many messages one key may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_minute: usize,
    /// `None`: no hourly limit.
    pub per_hour: Option<usize>,
}

/// Messages booked against rate limits, shared by everything that sends on one budget.
#[async_trait]
pub trait RateBudgets: Send + Sync {
    /// Books one message for each of `keys` within `scope` (an app, a robot, a chat), all
    /// or none. On refusal, returns the keys that are out of budget.
    async fn try_reserve(
        &self,
        scope: &str,
        keys: &[String],
        limits: RateLimits,
    ) -> Result<Reservation, Vec<String>>;
    /// Gives a reservation back when its message was not accepted.
    async fn release(&self, reservation: Reservation);
}

/// Messages booked by [`RateBudgets::try_reserve`].
#[must_use = "release the reservation if the message is not accepted"]
#[derive(Debug)]
pub struct Reservation {
    pub(super) scope: String,
    pub(super) keys: Vec<String>,
    /// Random, so bookings of different replicas in a shared store never collide.
    pub(super) id: u64,
    /// Booked in the shared store (else in this process's).
    pub(super) shared: bool,
}

/// Scope → key → when each message was booked, with its reservation id.
type Booked = HashMap<String, HashMap<String, VecDeque<(Instant, u64)>>>;

/// Budgets counted in this process.
#[derive(Default)]
pub struct MemoryRateBudgets {
    sent: Mutex<Booked>,
}

/// Keys tracked per scope before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl MemoryRateBudgets {
    pub fn new() -> MemoryRateBudgets {
        MemoryRateBudgets::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Booked> {
        self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl RateBudgets for MemoryRateBudgets {
    async fn try_reserve(
        &self,
        scope: &str,
        keys: &[String],
        limits: RateLimits,
    ) -> Result<Reservation, Vec<String>> {
        let now = Instant::now();
        let mut sent = self.lock();
        let scoped = sent.entry(scope.to_string()).or_default();
        let over: Vec<String> = keys
            .iter()
            .filter(|key| {
                let Some(times) = scoped.get_mut(key.as_str()) else {
                    return false;
                };
                while times.front().is_some_and(|(t, _)| now.duration_since(*t) >= HOUR) {
                    times.pop_front();
                }
                let last_minute = times
                    .iter()
                    .rev()
                    .take_while(|(t, _)| now.duration_since(*t) < MINUTE)
                    .count();
                last_minute >= limits.per_minute || limits.per_hour.is_some_and(|max| times.len() >= max)
            })
            .cloned()
            .collect();
        if !over.is_empty() {
            return Err(over);
        }
        let id = fastrand::u64(..);
        for key in keys {
            scoped.entry(key.clone()).or_default().push_back((now, id));
        }
        if scoped.len() > SWEEP_ABOVE {
            scoped.retain(|_, times| times.back().is_some_and(|(t, _)| now.duration_since(*t) < HOUR));
        }
        Ok(Reservation {
            scope: scope.to_string(),
            keys: keys.to_vec(),
            id,
            shared: false,
        })
    }

    async fn release(&self, reservation: Reservation) {
        let mut sent = self.lock();
        let Some(scoped) = sent.get_mut(&reservation.scope) else {
            return;
        };
        for key in reservation.keys {
            if let Some(times) = scoped.get_mut(&key) {
                if let Some(position) = times.iter().rposition(|(_, id)| *id == reservation.id) {
                    times.remove(position);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: RateLimits = RateLimits {
        per_minute: 30,
        per_hour: Some(1000),
    };

    fn keys(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn the_31st_message_in_a_minute_to_one_key_is_refused_all_or_none() {
        let budgets = MemoryRateBudgets::new();
        for _ in 0..MEMBER.per_minute {
            let _ = budgets
                .try_reserve("app:ops", &keys(&["alice", "bob"]), MEMBER)
                .await
                .unwrap();
        }
        assert_eq!(
            budgets
                .try_reserve("app:ops", &keys(&["alice", "carol"]), MEMBER)
                .await
                .err(),
            Some(keys(&["alice"]))
        );
        // all or none: carol was not booked by the refused attempt
        for _ in 0..MEMBER.per_minute {
            let _ = budgets
                .try_reserve("app:ops", &keys(&["carol"]), MEMBER)
                .await
                .unwrap();
        }
        assert!(budgets
            .try_reserve("app:ops", &keys(&["carol"]), MEMBER)
            .await
            .is_err());
        // another scope has its own budget
        assert!(budgets
            .try_reserve("app:pay", &keys(&["alice"]), MEMBER)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_released_reservation_frees_its_slot() {
        let budgets = MemoryRateBudgets::new();
        for _ in 0..MEMBER.per_minute - 1 {
            let _ = budgets.try_reserve("s", &keys(&["alice"]), MEMBER).await.unwrap();
        }
        let last = budgets.try_reserve("s", &keys(&["alice"]), MEMBER).await.unwrap();
        assert!(budgets.try_reserve("s", &keys(&["alice"]), MEMBER).await.is_err());
        budgets.release(last).await;
        assert!(budgets.try_reserve("s", &keys(&["alice"]), MEMBER).await.is_ok());
    }

    #[tokio::test]
    async fn the_hourly_limit_counts_too() {
        let budgets = MemoryRateBudgets::new();
        let limits = RateLimits {
            per_minute: 100,
            per_hour: Some(3),
        };
        for _ in 0..3 {
            let _ = budgets.try_reserve("s", &keys(&["a"]), limits).await.unwrap();
        }
        assert!(budgets.try_reserve("s", &keys(&["a"]), limits).await.is_err());
    }
}
