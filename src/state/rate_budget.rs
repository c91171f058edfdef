//! Rate budgets: messages counted per key (a member, a party, a tag, `@all`, a robot, a
//! chat) within sliding windows, booked before a message is sent. WeCom silently drops app
//! messages beyond its per-member limits — the send still succeeds — so the deliver layer
//! refuses to send what WeCom would drop, and the notification waits (or joins a digest)
//! instead of being lost.
//!
//! # Counting
//!
//! Each booking has a *stamp*: the time it was booked plus the charge's `in_flight` (how
//! long from then WeCom may still receive the message), lowered to the time of
//! [`RateBudgets::settle`] once WeCom answered. At `now` a booking counts
//!
//! - in the minute window iff `stamp > now − 60 s − margin`,
//! - in the hour window iff `stamp > now − 3600 s − margin`,
//!
//! so stamps in the future — messages in flight — always count. A charge passes iff for
//! every check group `Σ minute counts of its keys + 1 + keep ≤ per_minute` and, with an
//! hourly limit, `Σ hour counts + 1 + keep ≤ per_hour`.
//!
//! Why that never lets through what WeCom drops: WeCom counts a message when it receives
//! it, at some `r`. Our stamp of that message is never earlier than `r`: before the answer
//! it is the send's deadline, after the answer at `a ≥ r` it is `min(deadline, a)`. A new
//! message checked at `t` is received at some `r' ≥ t`. Every message in WeCom's sliding
//! window ending at `r'` (`r > r' − 60 s`) thus has a stamp `≥ r > r' − 60 s ≥ t − 60 s`:
//! it is in our count at `t`. So a charge that passes ours passes WeCom's sliding window,
//! and with it WeCom's fixed (calendar) windows, each of which, up to `r'`, lies within
//! that sliding one. The margin covers what this reasoning assumes away: WeCom counting a
//! message later than it answered, and WeCom's clock against ours (the shared store counts
//! by Redis's clock, the same for every replica).
//!
//! Memory is bounded: per key only the `max(per_minute, per_hour) + keep` most recently
//! stamped bookings are kept — exact, since a key holding that many is over every limit on
//! its own, whatever the older ones (only a key booked past its limits, without a check,
//! can then count one short for each of its kept bookings given back) — and keys whose
//! bookings no window counts any more are swept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Clock;

pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);

/// How many messages one key (or one check group of keys) may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_minute: usize,
    /// `None`: no hourly limit.
    pub per_hour: Option<usize>,
    /// Added to both windows: covers WeCom counting later than it answered, and clock
    /// differences.
    pub margin: Duration,
}

impl RateLimits {
    /// Bookings worth keeping per key: beyond that many, a count is over every limit
    /// whatever the older ones.
    pub(super) fn cap(&self, keep: usize) -> usize {
        self.per_minute.max(self.per_hour.unwrap_or(0)) + keep
    }

    /// How far back the longest window this scope counts reaches, margin included.
    pub(super) fn longest_window(&self) -> Duration {
        let window = if self.per_hour.is_some() { HOUR } else { MINUTE };
        window + self.margin
    }
}

/// One message's charge against a scope's budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Charge {
    /// Keys the message books one message for.
    pub book: Vec<String>,
    /// Groups of keys whose counts together must stay within the limits (e.g. a member's own
    /// key plus the `@all` key, whose messages reach every member). Every key in a check
    /// need not be in `book`.
    pub checks: Vec<Vec<String>>,
    /// Slots the message must leave free in every check, in both windows (kept for digests).
    pub keep: usize,
    /// How long from now WeCom may still receive the message (the send's deadline): until
    /// settled, the booking counts as received that late.
    pub in_flight: Duration,
}

impl Charge {
    /// One key booked and checked alone (a robot, an app's chats).
    pub fn one_key(key: &str) -> Charge {
        Charge {
            book: vec![key.to_string()],
            checks: vec![vec![key.to_string()]],
            ..Charge::default()
        }
    }
}

/// A charge's keys, each once, with its checks and bookings as positions in that list (a
/// key named twice in a group or in `book` counts, and is booked, once). Empty groups
/// check nothing.
pub(super) struct Plan<'a> {
    pub keys: Vec<&'a str>,
    pub checks: Vec<Vec<usize>>,
    pub book: Vec<usize>,
}

impl<'a> Plan<'a> {
    pub fn of(charge: &'a Charge) -> Plan<'a> {
        let mut keys: Vec<&str> = Vec::new();
        let mut position = |key: &'a str| match keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                keys.len() - 1
            }
        };
        let mut distinct = |names: &'a [String]| {
            let mut positions: Vec<usize> = Vec::with_capacity(names.len());
            for name in names {
                let i = position(name);
                if !positions.contains(&i) {
                    positions.push(i);
                }
            }
            positions
        };
        let checks = charge
            .checks
            .iter()
            .filter(|group| !group.is_empty())
            .map(|group| distinct(group))
            .collect();
        let book = distinct(&charge.book);
        Plan { keys, checks, book }
    }

    /// The keys booked, in order.
    pub fn booked(&self) -> Vec<String> {
        self.book.iter().map(|&i| self.keys[i].to_string()).collect()
    }

    /// The first key of each failing check (`failing`: positions in `checks`), each once.
    pub fn refused(&self, failing: impl IntoIterator<Item = usize>) -> Vec<String> {
        let mut over: Vec<String> = Vec::new();
        for check in failing {
            if let Some(&first) = self.checks.get(check).and_then(|group| group.first()) {
                let key = self.keys[first];
                if !over.iter().any(|k| k == key) {
                    over.push(key.to_string());
                }
            }
        }
        over
    }
}

/// Messages booked against rate limits, shared by everything that sends on one budget.
#[async_trait]
pub trait RateBudgets: Send + Sync {
    /// Books `charge` within `scope` (an app, a robot, a chat), all or none. On refusal
    /// returns the first key of each failing check.
    async fn try_reserve(
        &self,
        scope: &str,
        charge: &Charge,
        limits: RateLimits,
    ) -> Result<Reservation, Vec<String>>;
    /// WeCom answered the message: it was received by now; re-stamps the booking to now
    /// (never later than its stamp).
    async fn settle(&self, reservation: &Reservation);
    /// Gives a reservation back when its message was not accepted.
    async fn release(&self, reservation: Reservation);
}

/// Messages booked by [`RateBudgets::try_reserve`].
#[must_use = "settle the reservation once WeCom answered, or release it if the message is not accepted"]
#[derive(Debug)]
pub struct Reservation {
    pub(super) scope: String,
    /// The keys booked, each once.
    pub(super) keys: Vec<String>,
    /// Random, so bookings of different replicas in a shared store never collide.
    pub(super) id: u64,
    /// Booked in the shared store (else in this process's).
    pub(super) shared: bool,
}

/// One key's bookings, `(stamp, reservation id)`, in the order of their stamps.
type Bookings = VecDeque<(Instant, u64)>;

/// Scope → key → bookings.
type Booked = HashMap<String, HashMap<String, Bookings>>;

/// Budgets counted in this process.
#[derive(Default)]
pub struct MemoryRateBudgets {
    sent: Mutex<Booked>,
    clock: Clock,
}

/// Keys tracked per scope before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// How many bookings stamped after `from` (all when `from` is `None`).
fn count_after(bookings: &Bookings, from: Option<Instant>) -> usize {
    match from {
        None => bookings.len(),
        Some(from) => bookings.len() - bookings.partition_point(|(stamp, _)| *stamp <= from),
    }
}

fn insert(bookings: &mut Bookings, stamp: Instant, id: u64) {
    let at = bookings.partition_point(|(s, _)| *s <= stamp);
    bookings.insert(at, (stamp, id));
}

/// Drops the bookings stamped at or before `from` (no window counts them) and all but the
/// `cap` most recent.
fn forget(bookings: &mut Bookings, from: Option<Instant>, cap: usize) {
    if let Some(from) = from {
        let old = bookings.partition_point(|(stamp, _)| *stamp <= from);
        bookings.drain(..old);
    }
    if bookings.len() > cap {
        let extra = bookings.len() - cap;
        bookings.drain(..extra);
    }
}

impl MemoryRateBudgets {
    pub fn new() -> MemoryRateBudgets {
        MemoryRateBudgets::default()
    }

    #[cfg(test)]
    fn with_clock(clock: Clock) -> MemoryRateBudgets {
        MemoryRateBudgets {
            clock,
            ..MemoryRateBudgets::default()
        }
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
        charge: &Charge,
        limits: RateLimits,
    ) -> Result<Reservation, Vec<String>> {
        let plan = Plan::of(charge);
        let now = self.clock.now();
        let minute_from = now.checked_sub(MINUTE + limits.margin);
        let hour_from = now.checked_sub(HOUR + limits.margin);
        let forget_from = now.checked_sub(limits.longest_window());
        let cap = limits.cap(charge.keep);
        let mut sent = self.lock();
        if !sent.contains_key(scope) {
            sent.insert(scope.to_string(), HashMap::new());
        }
        let scoped = sent.get_mut(scope).expect("just inserted");

        let mut minute = Vec::with_capacity(plan.keys.len());
        let mut hour = Vec::with_capacity(plan.keys.len());
        for key in &plan.keys {
            match scoped.get_mut(*key) {
                Some(bookings) => {
                    forget(bookings, forget_from, cap);
                    minute.push(count_after(bookings, minute_from));
                    hour.push(count_after(bookings, hour_from));
                }
                None => {
                    minute.push(0);
                    hour.push(0);
                }
            }
        }
        let need = 1 + charge.keep;
        let failing = plan.checks.iter().enumerate().filter_map(|(i, group)| {
            let in_minute: usize = group.iter().map(|&k| minute[k]).sum();
            let in_hour: usize = group.iter().map(|&k| hour[k]).sum();
            let over = in_minute + need > limits.per_minute
                || limits.per_hour.is_some_and(|max| in_hour + need > max);
            over.then_some(i)
        });
        let over = plan.refused(failing);
        if !over.is_empty() {
            return Err(over);
        }

        let id = fastrand::u64(..);
        let stamp = now + charge.in_flight;
        for &i in &plan.book {
            let bookings = scoped.entry(plan.keys[i].to_string()).or_default();
            insert(bookings, stamp, id);
            forget(bookings, forget_from, cap);
        }
        if scoped.len() > SWEEP_ABOVE {
            scoped.retain(|_, bookings| {
                bookings
                    .back()
                    .is_some_and(|(stamp, _)| forget_from.is_none_or(|from| *stamp > from))
            });
        }
        Ok(Reservation {
            scope: scope.to_string(),
            keys: plan.booked(),
            id,
            shared: false,
        })
    }

    async fn settle(&self, reservation: &Reservation) {
        let now = self.clock.now();
        let mut sent = self.lock();
        let Some(scoped) = sent.get_mut(&reservation.scope) else {
            return;
        };
        for key in &reservation.keys {
            let Some(bookings) = scoped.get_mut(key) else {
                continue;
            };
            if let Some(at) = bookings.iter().rposition(|(_, id)| *id == reservation.id) {
                if bookings[at].0 > now {
                    bookings.remove(at);
                    insert(bookings, now, reservation.id);
                }
            }
        }
    }

    async fn release(&self, reservation: Reservation) {
        let mut sent = self.lock();
        let Some(scoped) = sent.get_mut(&reservation.scope) else {
            return;
        };
        for key in reservation.keys {
            if let Some(bookings) = scoped.get_mut(&key) {
                if let Some(at) = bookings.iter().rposition(|(_, id)| *id == reservation.id) {
                    bookings.remove(at);
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
        margin: Duration::ZERO,
    };

    const SECOND: Duration = Duration::from_secs(1);
    const MILLI: Duration = Duration::from_millis(1);

    fn keys(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// Books every key and checks each on its own, settled at once.
    fn each(ids: &[&str]) -> Charge {
        Charge {
            book: keys(ids),
            checks: ids.iter().map(|id| keys(&[id])).collect(),
            ..Charge::default()
        }
    }

    fn budgets() -> (MemoryRateBudgets, Clock) {
        let clock = Clock::manual();
        (MemoryRateBudgets::with_clock(clock.clone()), clock)
    }

    async fn book_n(budgets: &MemoryRateBudgets, scope: &str, charge: &Charge, limits: RateLimits, n: usize) {
        for i in 0..n {
            let reservation = budgets.try_reserve(scope, charge, limits).await;
            assert!(reservation.is_ok(), "booking {i} of {n}: {reservation:?}");
        }
    }

    #[tokio::test]
    async fn the_31st_message_in_a_minute_to_one_key_is_refused_all_or_none() {
        let (budgets, _clock) = budgets();
        book_n(&budgets, "app:ops", &each(&["alice", "bob"]), MEMBER, 30).await;
        assert_eq!(
            budgets
                .try_reserve("app:ops", &each(&["alice", "carol"]), MEMBER)
                .await
                .err(),
            Some(keys(&["alice"]))
        );
        // all or none: carol was not booked by the refused attempt
        book_n(&budgets, "app:ops", &each(&["carol"]), MEMBER, 30).await;
        assert!(budgets
            .try_reserve("app:ops", &each(&["carol"]), MEMBER)
            .await
            .is_err());
        // another scope has its own budget
        assert!(budgets
            .try_reserve("app:pay", &each(&["alice"]), MEMBER)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_check_group_sums_its_keys_and_a_refusal_names_each_failing_groups_first_key() {
        let (budgets, _clock) = budgets();
        // 20 to @all, 10 to alice alone: alice has had 30 in all.
        let all = Charge {
            book: keys(&["@all"]),
            checks: vec![keys(&["@all"])],
            ..Charge::default()
        };
        book_n(&budgets, "s", &all, MEMBER, 20).await;
        let alice = Charge {
            book: keys(&["alice"]),
            checks: vec![keys(&["alice", "@all"])],
            ..Charge::default()
        };
        book_n(&budgets, "s", &alice, MEMBER, 10).await;
        assert_eq!(
            budgets.try_reserve("s", &alice, MEMBER).await.err(),
            Some(keys(&["alice"]))
        );
        let bob = Charge {
            book: keys(&["bob"]),
            checks: vec![keys(&["bob", "@all"])],
            ..Charge::default()
        };
        book_n(&budgets, "s", &bob, MEMBER, 10).await;
        // A message to both: two failing groups, each named by its first key, once.
        let both = Charge {
            book: keys(&["alice", "bob", "bob"]),
            checks: vec![
                keys(&["alice", "@all", "@all"]),
                keys(&["bob", "@all"]),
                keys(&["bob"]),
                vec![],
            ],
            ..Charge::default()
        };
        assert_eq!(
            budgets.try_reserve("s", &both, MEMBER).await.err(),
            Some(keys(&["alice", "bob"]))
        );
        // Unchecked keys are booked all the same; checks may name keys not booked.
        let party = Charge {
            book: keys(&["party:2"]),
            checks: vec![keys(&["carol", "party:2"])],
            ..Charge::default()
        };
        book_n(&budgets, "s", &party, MEMBER, 30).await;
        assert_eq!(
            budgets.try_reserve("s", &party, MEMBER).await.err(),
            Some(keys(&["carol"]))
        );
    }

    #[tokio::test]
    async fn keep_leaves_slots_free_in_both_windows() {
        let (budgets, _clock) = budgets();
        let keeping = Charge {
            keep: 5,
            ..each(&["alice"])
        };
        book_n(&budgets, "s", &keeping, MEMBER, 25).await;
        assert!(budgets.try_reserve("s", &keeping, MEMBER).await.is_err());
        // What was kept is there for a charge that keeps nothing (a digest).
        book_n(&budgets, "s", &each(&["alice"]), MEMBER, 5).await;
        assert!(budgets.try_reserve("s", &each(&["alice"]), MEMBER).await.is_err());

        let hourly = RateLimits {
            per_minute: 100,
            per_hour: Some(10),
            margin: Duration::ZERO,
        };
        let keeping = Charge {
            keep: 3,
            ..each(&["bob"])
        };
        book_n(&budgets, "s", &keeping, hourly, 7).await;
        assert!(budgets.try_reserve("s", &keeping, hourly).await.is_err());
    }

    #[tokio::test]
    async fn a_booking_in_flight_counts_until_settled_and_settling_restamps_it_to_now() {
        let (budgets, clock) = budgets();
        let limits = RateLimits {
            per_minute: 1,
            per_hour: None,
            margin: Duration::ZERO,
        };
        let slow = Charge {
            in_flight: Duration::from_secs(30),
            ..each(&["alice"])
        };
        let unsettled = budgets.try_reserve("s", &slow, limits).await.unwrap();
        // 60 s on, the booking made 60 s ago still counts: its message may have reached
        // WeCom as late as 30 s after it was booked.
        clock.advance(Duration::from_secs(60));
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        clock.advance(Duration::from_secs(30) - MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        clock.advance(MILLI);
        let next = budgets.try_reserve("s", &slow, limits).await.unwrap();
        budgets.settle(&unsettled).await; // long gone: nothing to restamp

        // Settled 5 s after booking: counted from then on, for 60 s.
        clock.advance(Duration::from_secs(5));
        budgets.settle(&next).await;
        clock.advance(Duration::from_secs(60) - MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        clock.advance(MILLI);
        let settled = budgets.try_reserve("s", &each(&["alice"]), limits).await.unwrap();
        // Settling never moves a stamp later: this one stays stamped with its booking time.
        clock.advance(Duration::from_secs(30));
        budgets.settle(&settled).await;
        clock.advance(Duration::from_secs(30) - MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        clock.advance(MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_ok());
    }

    #[tokio::test]
    async fn the_margin_widens_both_windows() {
        let (budgets, clock) = budgets();
        let limits = RateLimits {
            per_minute: 1,
            per_hour: Some(2),
            margin: Duration::from_secs(2),
        };
        let _ = budgets.try_reserve("s", &each(&["alice"]), limits).await.unwrap();
        clock.advance(Duration::from_secs(62) - MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        clock.advance(MILLI);
        let _ = budgets.try_reserve("s", &each(&["alice"]), limits).await.unwrap();
        // Two in the hour: the first leaves the hour window 3602 s after it was booked.
        clock.advance(Duration::from_secs(3602 - 62) - MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        clock.advance(MILLI);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_ok());
    }

    #[tokio::test]
    async fn the_hourly_limit_counts_messages_older_than_a_minute() {
        let (budgets, clock) = budgets();
        let limits = RateLimits {
            per_minute: 100,
            per_hour: Some(3),
            margin: Duration::ZERO,
        };
        for i in 0..3 {
            if i > 0 {
                clock.advance(Duration::from_secs(20 * 60));
            }
            let _ = budgets.try_reserve("s", &each(&["a"]), limits).await.unwrap();
        }
        // 0, 20 and 40 minutes ago, and the first leaves the hour only now.
        clock.advance(Duration::from_secs(20 * 60) - MILLI);
        assert!(budgets.try_reserve("s", &each(&["a"]), limits).await.is_err());
        clock.advance(MILLI);
        assert!(budgets.try_reserve("s", &each(&["a"]), limits).await.is_ok());
    }

    #[tokio::test]
    async fn a_released_reservation_frees_its_slot() {
        let (budgets, _clock) = budgets();
        book_n(&budgets, "s", &each(&["alice"]), MEMBER, MEMBER.per_minute - 1).await;
        let last = budgets.try_reserve("s", &each(&["alice"]), MEMBER).await.unwrap();
        assert!(budgets.try_reserve("s", &each(&["alice"]), MEMBER).await.is_err());
        budgets.release(last).await;
        assert!(budgets.try_reserve("s", &each(&["alice"]), MEMBER).await.is_ok());
    }

    #[tokio::test]
    async fn only_the_most_recent_bookings_a_limit_can_see_are_kept_and_counts_stay_exact() {
        let (budgets, clock) = budgets();
        let limits = RateLimits {
            per_minute: 3,
            per_hour: Some(5),
            margin: Duration::ZERO,
        };
        // Booked without a check: nothing stops them, only the trimming bounds them.
        let unchecked = Charge {
            book: keys(&["alice"]),
            ..Charge::default()
        };
        book_n(&budgets, "s", &unchecked, limits, 50).await;
        let kept = |budgets: &MemoryRateBudgets| budgets.lock()["s"]["alice"].len();
        assert_eq!(kept(&budgets), limits.cap(0));
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_err());
        // With keep, a little more is kept.
        let keeping = Charge {
            keep: 2,
            ..unchecked.clone()
        };
        book_n(&budgets, "s", &keeping, limits, 5).await;
        assert_eq!(kept(&budgets), limits.cap(2));
        // An hour on every one of them has left the window, and with them the key.
        clock.advance(HOUR + SECOND);
        assert!(budgets.try_reserve("s", &each(&["alice"]), limits).await.is_ok());
        assert_eq!(kept(&budgets), 1);
    }
}
