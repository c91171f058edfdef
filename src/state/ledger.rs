//! The record of accepted messages: remembers which messages WeCom accepted, so that when
//! Alertmanager re-sends a group (after a partial failure, from an HA peer, to another
//! replica) nothing already delivered goes out twice — claims, so that two requests for
//! the same message at the same time do not both send it, and pending holds on messages
//! collected into a digest, so that their retries are answered at once and nothing sends
//! them on its own while the digest is pending.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Clock;

/// A fingerprint of one message (see `deliver::identity`): 128 bits of a SHA-256.
pub type DeliveryKey = [u8; 16];

/// Lowercase hex of a delivery key, where it must be text (Redis keys, digest entries).
pub fn key_hex(key: &DeliveryKey) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(2 * key.len());
    for byte in key {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A delivery key back from [`key_hex`]; `None` for anything else.
pub fn key_from_hex(text: &[u8]) -> Option<DeliveryKey> {
    let mut key = [0; 16];
    if text.len() != 2 * key.len() {
        return None;
    }
    for (byte, pair) in key.iter_mut().zip(text.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(key)
}

/// Who may send a message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This sender holds the message until it records the outcome or the hold runs out.
    Mine(ClaimId),
    /// WeCom accepted it already: do not send it again.
    Accepted,
    /// Another sender (request, replica) holds it right now.
    Held,
    /// Collected into a pending digest: retries are answered at once, and nothing sends it
    /// on its own until the digest is sent or the hold runs out.
    Pending,
}

/// What the record says of a message, read without claiming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Nothing,
    Claimed,
    Pending,
    Accepted,
}

/// Identifies one claim, so that only its holder can give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimId(pub u64);

impl ClaimId {
    /// Random, so that claims of different replicas never collide.
    pub fn new() -> ClaimId {
        ClaimId(fastrand::u64(..))
    }
}

impl Default for ClaimId {
    fn default() -> Self {
        ClaimId::new()
    }
}

/// Accepted messages, each remembered for the window it was recorded with, and the claims
/// of messages being sent.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Claims `key` for `hold` (a holder that dies loses the claim when it runs out),
    /// unless it was accepted already, another sender holds it or it is pending in a
    /// digest. Atomic.
    async fn claim(&self, key: &DeliveryKey, hold: Duration) -> Claim;
    /// Records the message as accepted for `window`, ending any claim or pending hold on
    /// it (the digest that held it was sent).
    async fn accepted(&self, key: &DeliveryKey, window: Duration);
    /// Gives a claim back (the message was not accepted); another claim, or a pending
    /// hold, is left alone.
    async fn release(&self, key: &DeliveryKey, claim: ClaimId);
    /// Turns this sender's claim into a pending-digest hold for `hold`. False if the claim
    /// was no longer this sender's (then nothing changes).
    async fn pend(&self, key: &DeliveryKey, claim: ClaimId, hold: Duration) -> bool;
    /// Forgets a pending-digest hold (its digest was dropped); a claim or an acceptance is
    /// left alone.
    async fn unpend(&self, key: &DeliveryKey);
    /// What the record holds for `key` now, changing nothing (a retry that needs no work
    /// is answered from it).
    async fn peek(&self, key: &DeliveryKey) -> Recorded;
}

/// Bounds memory whatever the traffic; the entries expiring first go first.
const MAX_ENTRIES: usize = 100_000;
/// When the record is full, this share of it (the soonest to expire) is dropped at once,
/// so that the sweep's cost is spread over many insertions.
const EVICT_SHARE: usize = 10;

/// The record in this process. Compact: an accepted message costs one 16-byte key and an
/// 8-byte expiry in a hash map (about 3.3 MB at [`MAX_ENTRIES`]); claims, which live for
/// one delivery, and pending holds, which live until their digest is sent, are kept apart.
#[derive(Default)]
pub struct MemoryLedger {
    inner: Mutex<Entries>,
    clock: Clock,
}

/// The keys are SHA-256 bits already: hashing them again would only cost time.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

/// Keyed by the bytes themselves: a `u128` key would align each entry to 16 bytes, 32 per
/// record instead of 24.
pub(super) type KeyMap<V> = HashMap<DeliveryKey, V, BuildHasherDefault<KeyHasher>>;

/// What holds a message that is not accepted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Claim(ClaimId),
    Pending,
}

#[derive(Default)]
struct Entries {
    /// Key → when its record expires, in milliseconds since `epoch`.
    accepted: KeyMap<u64>,
    /// Key → its hold and when that runs out.
    holds: KeyMap<(Hold, Instant)>,
    epoch: Option<Instant>,
}

impl MemoryLedger {
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    #[cfg(test)]
    fn with_clock(clock: Clock) -> MemoryLedger {
        MemoryLedger {
            clock,
            ..MemoryLedger::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The maps stay consistent even if a holder panicked; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accepted messages recorded (for tests and measurements).
    pub fn len(&self) -> usize {
        self.lock().accepted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entries {
    /// `now` in milliseconds since the first use.
    fn millis(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u64
    }

    fn is_accepted(&mut self, key: &DeliveryKey, now: Instant) -> bool {
        let now = self.millis(now);
        match self.accepted.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.accepted.remove(key);
                false
            }
            None => false,
        }
    }

    /// The live hold on `key`, if any.
    fn hold(&self, key: &DeliveryKey, now: Instant) -> Option<Hold> {
        match self.holds.get(key) {
            Some((hold, until)) if *until > now => Some(*hold),
            _ => None,
        }
    }

    /// Makes room for one more record: expired ones go first, then the soonest to expire.
    fn make_room(&mut self, now: Instant) {
        if self.accepted.len() < MAX_ENTRIES {
            return;
        }
        let now = self.millis(now);
        self.accepted.retain(|_, until| *until > now);
        if self.accepted.len() < MAX_ENTRIES {
            return;
        }
        let mut expiries: Vec<u64> = self.accepted.values().copied().collect();
        let cut = expiries.len() / EVICT_SHARE;
        let (_, threshold, _) = expiries.select_nth_unstable(cut);
        let threshold = *threshold;
        self.accepted.retain(|_, until| *until > threshold);
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn claim(&self, key: &DeliveryKey, hold: Duration) -> Claim {
        let now = self.clock.now();
        let mut entries = self.lock();
        if entries.is_accepted(key, now) {
            return Claim::Accepted;
        }
        match entries.hold(key, now) {
            Some(Hold::Claim(_)) => return Claim::Held,
            Some(Hold::Pending) => return Claim::Pending,
            None => {}
        }
        if entries.holds.len() > MAX_ENTRIES {
            entries.holds.retain(|_, (_, until)| *until > now);
        }
        let id = ClaimId::new();
        entries.holds.insert(*key, (Hold::Claim(id), now + hold));
        Claim::Mine(id)
    }

    async fn accepted(&self, key: &DeliveryKey, window: Duration) {
        let now = self.clock.now();
        let mut entries = self.lock();
        entries.holds.remove(key);
        if window.is_zero() {
            return;
        }
        entries.make_room(now);
        let until = entries.millis(now) + window.as_millis() as u64;
        entries.accepted.insert(*key, until);
    }

    async fn release(&self, key: &DeliveryKey, claim: ClaimId) {
        let now = self.clock.now();
        let mut entries = self.lock();
        if entries.hold(key, now) == Some(Hold::Claim(claim)) {
            entries.holds.remove(key);
        }
    }

    async fn pend(&self, key: &DeliveryKey, claim: ClaimId, hold: Duration) -> bool {
        let now = self.clock.now();
        let mut entries = self.lock();
        if entries.hold(key, now) != Some(Hold::Claim(claim)) {
            return false;
        }
        entries.holds.insert(*key, (Hold::Pending, now + hold));
        true
    }

    async fn peek(&self, key: &DeliveryKey) -> Recorded {
        let now = self.clock.now();
        let mut entries = self.lock();
        if entries.is_accepted(key, now) {
            return Recorded::Accepted;
        }
        match entries.hold(key, now) {
            Some(Hold::Claim(_)) => Recorded::Claimed,
            Some(Hold::Pending) => Recorded::Pending,
            None => Recorded::Nothing,
        }
    }

    async fn unpend(&self, key: &DeliveryKey) {
        let now = self.clock.now();
        let mut entries = self.lock();
        if entries.hold(key, now) == Some(Hold::Pending) {
            entries.holds.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(10);

    fn key(i: u32) -> DeliveryKey {
        let mut key = [0; 16];
        key[..4].copy_from_slice(&i.to_le_bytes());
        key
    }

    #[tokio::test]
    async fn an_accepted_message_is_remembered_for_its_window_only() {
        let ledger = MemoryLedger::new();
        let Claim::Mine(_) = ledger.claim(&key(1), HOLD).await else {
            panic!("a new message is ours to send")
        };
        ledger.accepted(&key(1), Duration::from_millis(50)).await;
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Accepted);
        assert!(matches!(ledger.claim(&key(2), HOLD).await, Claim::Mine(_)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(matches!(ledger.claim(&key(1), HOLD).await, Claim::Mine(_)));
    }

    #[tokio::test]
    async fn a_held_message_is_not_claimed_twice_until_released_or_the_hold_runs_out() {
        let ledger = MemoryLedger::new();
        let Claim::Mine(first) = ledger.claim(&key(1), HOLD).await else {
            panic!("ours")
        };
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Held);
        ledger.release(&key(1), ClaimId(first.0.wrapping_add(1))).await;
        assert_eq!(
            ledger.claim(&key(1), HOLD).await,
            Claim::Held,
            "not someone else's to release"
        );
        ledger.release(&key(1), first).await;
        let Claim::Mine(_) = ledger.claim(&key(1), Duration::from_millis(20)).await else {
            panic!("released: ours again")
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            matches!(ledger.claim(&key(1), HOLD).await, Claim::Mine(_)),
            "a dead holder's claim runs out"
        );
    }

    #[tokio::test]
    async fn a_zero_window_records_nothing_and_windows_may_differ_per_entry() {
        let ledger = MemoryLedger::new();
        ledger.accepted(&key(1), Duration::ZERO).await;
        assert!(matches!(ledger.claim(&key(1), HOLD).await, Claim::Mine(_)));
        ledger.accepted(&key(2), Duration::from_secs(600)).await;
        ledger.accepted(&key(3), Duration::from_millis(20)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ledger.claim(&key(2), HOLD).await, Claim::Accepted);
        assert!(matches!(ledger.claim(&key(3), HOLD).await, Claim::Mine(_)));
    }

    #[tokio::test]
    async fn the_record_is_bounded_and_drops_the_soonest_to_expire_first() {
        let ledger = MemoryLedger::new();
        ledger.accepted(&key(0), Duration::from_secs(60)).await;
        for i in 1..=MAX_ENTRIES as u32 {
            ledger.accepted(&key(i), Duration::from_secs(600)).await;
        }
        assert!(ledger.len() <= MAX_ENTRIES);
        assert!(
            matches!(ledger.claim(&key(0), HOLD).await, Claim::Mine(_)),
            "the shortest-lived went first"
        );
        assert_eq!(
            ledger.claim(&key(MAX_ENTRIES as u32), HOLD).await,
            Claim::Accepted
        );
    }

    fn mine(claim: Claim) -> ClaimId {
        match claim {
            Claim::Mine(id) => id,
            other => panic!("expected a claim of ours, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_pending_message_answers_pending_until_its_digest_is_sent() {
        let clock = Clock::manual();
        let ledger = MemoryLedger::with_clock(clock.clone());
        let claim = mine(ledger.claim(&key(1), HOLD).await);
        assert!(ledger.pend(&key(1), claim, Duration::from_secs(600)).await);
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Pending);
        // Its claim is gone: neither releasing nor pending it again does anything.
        ledger.release(&key(1), claim).await;
        assert!(!ledger.pend(&key(1), claim, HOLD).await);
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Pending);
        // The digest was sent: accepted over pending.
        ledger.accepted(&key(1), Duration::from_secs(60)).await;
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Accepted);
        assert_eq!(ledger.len(), 1);
    }

    #[tokio::test]
    async fn peeking_reads_the_record_and_changes_nothing() {
        let ledger = MemoryLedger::with_clock(Clock::manual());
        assert_eq!(ledger.peek(&key(1)).await, Recorded::Nothing);
        assert_eq!(ledger.peek(&key(1)).await, Recorded::Nothing, "no claim was made");
        let claim = mine(ledger.claim(&key(1), HOLD).await);
        assert_eq!(ledger.peek(&key(1)).await, Recorded::Claimed);
        assert!(ledger.pend(&key(1), claim, HOLD).await);
        assert_eq!(ledger.peek(&key(1)).await, Recorded::Pending);
        ledger.accepted(&key(1), Duration::from_secs(60)).await;
        assert_eq!(ledger.peek(&key(1)).await, Recorded::Accepted);
    }

    #[tokio::test]
    async fn only_the_holder_of_a_claim_can_pend_it() {
        let clock = Clock::manual();
        let ledger = MemoryLedger::with_clock(clock.clone());
        assert!(!ledger.pend(&key(1), ClaimId(7), HOLD).await, "no claim at all");
        assert!(matches!(ledger.claim(&key(1), HOLD).await, Claim::Mine(_)));
        assert!(!ledger.pend(&key(1), ClaimId(7), HOLD).await, "someone else's");
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Held, "unchanged");
        // An expired claim is nobody's.
        let claim = mine(ledger.claim(&key(2), HOLD).await);
        clock.advance(HOLD);
        assert!(!ledger.pend(&key(2), claim, HOLD).await);
        // An accepted message has no claim to pend.
        let claim = mine(ledger.claim(&key(3), HOLD).await);
        ledger.accepted(&key(3), Duration::from_secs(60)).await;
        assert!(!ledger.pend(&key(3), claim, HOLD).await);
        assert_eq!(ledger.claim(&key(3), HOLD).await, Claim::Accepted);
    }

    #[tokio::test]
    async fn unpend_forgets_a_pending_hold_only_and_a_hold_runs_out() {
        let clock = Clock::manual();
        let ledger = MemoryLedger::with_clock(clock.clone());
        let claim = mine(ledger.claim(&key(1), HOLD).await);
        assert!(ledger.pend(&key(1), claim, Duration::from_secs(600)).await);
        ledger.unpend(&key(1)).await;
        let claim = mine(ledger.claim(&key(1), HOLD).await);
        ledger.unpend(&key(1)).await;
        assert_eq!(
            ledger.claim(&key(1), HOLD).await,
            Claim::Held,
            "a claim is left alone"
        );
        ledger.accepted(&key(2), Duration::from_secs(60)).await;
        ledger.unpend(&key(2)).await;
        assert_eq!(
            ledger.claim(&key(2), HOLD).await,
            Claim::Accepted,
            "so is an acceptance"
        );

        assert!(ledger.pend(&key(1), claim, Duration::from_secs(600)).await);
        clock.advance(Duration::from_secs(600) - Duration::from_millis(1));
        assert_eq!(ledger.claim(&key(1), HOLD).await, Claim::Pending);
        clock.advance(Duration::from_millis(1));
        assert!(
            matches!(ledger.claim(&key(1), HOLD).await, Claim::Mine(_)),
            "a digest that was never sent lets the retries deliver anew"
        );
    }

    #[tokio::test]
    async fn accepted_with_a_zero_window_ends_a_pending_hold_too() {
        let ledger = MemoryLedger::new();
        let claim = mine(ledger.claim(&key(1), HOLD).await);
        assert!(ledger.pend(&key(1), claim, HOLD).await);
        ledger.accepted(&key(1), Duration::ZERO).await;
        assert!(matches!(ledger.claim(&key(1), HOLD).await, Claim::Mine(_)));
    }
}
