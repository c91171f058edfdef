//! Counting messages against WeCom's rate limits before sending. WeCom silently drops app
//! messages beyond 30 a minute (1000 an hour) to one member — the send still succeeds —
//! and a group robot takes 20 messages a minute. We count what was sent and refuse to send
//! what WeCom would drop or refuse, so the notification is retried later instead of lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// One app to one member.
pub const MEMBER_PER_MINUTE: usize = 30;
pub const MEMBER_PER_HOUR: usize = 1000;
/// One group robot.
pub const ROBOT_PER_MINUTE: usize = 20;

/// Messages sent to each key (a user, or a robot) within the last hour.
pub struct RateBudget {
    per_minute: usize,
    per_hour: usize,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateBudget {
    pub fn new(per_minute: usize, per_hour: usize) -> RateBudget {
        RateBudget {
            per_minute,
            per_hour,
            sent: Mutex::default(),
        }
    }

    /// The budget of one app towards each member.
    pub fn members() -> RateBudget {
        RateBudget::new(MEMBER_PER_MINUTE, MEMBER_PER_HOUR)
    }

    /// The budget of one group robot (key it by the robot's name).
    pub fn robot() -> RateBudget {
        RateBudget::new(ROBOT_PER_MINUTE, usize::MAX)
    }

    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    /// Books one message for each of `keys`, all or none. On refusal, returns the keys
    /// that are out of budget. `@all` cannot be tracked and is let through.
    pub fn try_reserve(&self, keys: &[String]) -> Result<Reservation, Vec<String>> {
        let now = Instant::now();
        let mut sent = self.lock();
        let keys: Vec<String> = keys
            .iter()
            .filter(|u| *u != "@all")
            .map(|u| u.to_lowercase())
            .collect();
        let over: Vec<String> = keys
            .iter()
            .filter(|user| {
                let Some(times) = sent.get_mut(*user) else {
                    return false;
                };
                while times.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
                    times.pop_front();
                }
                let last_minute = times
                    .iter()
                    .rev()
                    .take_while(|t| now.duration_since(**t) < MINUTE)
                    .count();
                last_minute >= self.per_minute || times.len() >= self.per_hour
            })
            .cloned()
            .collect();
        if !over.is_empty() {
            return Err(over);
        }
        for user in &keys {
            sent.entry(user.clone()).or_default().push_back(now);
        }
        if sent.len() > 10_000 {
            sent.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < HOUR));
        }
        Ok(Reservation { users: keys, at: now })
    }

    /// Gives a reservation back when the message was not accepted.
    pub fn release(&self, reservation: Reservation) {
        let mut sent = self.lock();
        for user in reservation.users {
            if let Some(times) = sent.get_mut(&user) {
                if let Some(position) = times.iter().rposition(|t| *t == reservation.at) {
                    times.remove(position);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Messages booked by [`RateBudget::try_reserve`].
#[must_use = "release the reservation if the message is not accepted"]
pub struct Reservation {
    users: Vec<String>,
    at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_31st_message_in_a_minute_to_one_user_is_refused() {
        let budget = RateBudget::members();
        for _ in 0..MEMBER_PER_MINUTE {
            let _ = budget.try_reserve(&users(&["alice", "bob"])).unwrap();
        }
        assert_eq!(
            budget.try_reserve(&users(&["Alice", "carol"])).err(),
            Some(users(&["alice"]))
        );
        // all or none: carol was not booked by the refused attempt
        for _ in 0..MEMBER_PER_MINUTE {
            let _ = budget.try_reserve(&users(&["carol"])).unwrap();
        }
        assert!(budget.try_reserve(&users(&["carol"])).is_err());
        assert!(budget.try_reserve(&users(&["@all"])).is_ok());
    }

    #[test]
    fn a_released_reservation_frees_its_slot() {
        let budget = RateBudget::members();
        for _ in 0..MEMBER_PER_MINUTE - 1 {
            let _ = budget.try_reserve(&users(&["alice"])).unwrap();
        }
        let last = budget.try_reserve(&users(&["alice"])).unwrap();
        assert!(budget.try_reserve(&users(&["alice"])).is_err());
        budget.release(last);
        assert!(budget.try_reserve(&users(&["alice"])).is_ok());
    }
}
