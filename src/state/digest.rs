//! Pending digests: notifications a storm would push past WeCom's limits, collected per
//! audience until one message can carry them all. An entry is added under its message's
//! delivery key (the ledger holds that key as pending meanwhile), a digest falls due an
//! interval after its oldest entry joined, and exactly one sender takes it, sends it and
//! says so — or puts it back to be tried again. Ids, headers and entries are opaque here:
//! the deliver layer hashes the audience into the id and renders the entries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::warn;

use super::ledger::{DeliveryKey, KeyMap};
use super::Clock;

/// A digest's entries, taken for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestBatch {
    pub id: String,
    /// What the digest is for (its audience), as given to `add`; opaque here.
    pub header: Vec<u8>,
    /// Entry key → entry, oldest first.
    pub entries: Vec<(DeliveryKey, Vec<u8>)>,
    /// How long its oldest entry had waited when it was taken.
    pub waited: Duration,
}

/// Digests waiting to be sent, shared by every sender of the same notifications.
#[async_trait]
pub trait PendingDigests: Send + Sync {
    /// Adds `entry` under `entry_key` to digest `id` (an entry with the same key is
    /// replaced: retries are idempotent) and stores `header` (the same for every entry of an
    /// id). The digest falls due `interval` after its oldest pending entry joined, and never
    /// sooner than `interval` after the previous digest with this id was sent. A digest not
    /// taken within `hold` of its last add is forgotten (its ledger entries, pended with the
    /// same hold, expire too, and Alertmanager's retries deliver the notifications anew).
    async fn add(
        &self,
        id: &str,
        header: &[u8],
        entry_key: &DeliveryKey,
        entry: &[u8],
        interval: Duration,
        hold: Duration,
    );
    /// Ids of the digests due now, most overdue first (at most `limit`).
    async fn due(&self, limit: usize) -> Vec<String>;
    /// Takes every entry of digest `id` for sending, atomically: no other taker (replica)
    /// gets them. None when it has no entries.
    async fn take(&self, id: &str) -> Option<DigestBatch>;
    /// The taken digest was sent: the next with this id falls due no sooner than
    /// `interval` from now.
    async fn sent(&self, id: &str, interval: Duration);
    /// The taken digest could not be sent: its entries rejoin (an entry added meanwhile
    /// under the same key wins), due again `retry_in` from now; hold as in add.
    async fn put_back(&self, batch: DigestBatch, retry_in: Duration, hold: Duration);
    /// How long the oldest pending (not taken) entry has waited; None when nothing is
    /// pending.
    async fn oldest_pending(&self) -> Option<Duration>;
}

/// Entries one digest collects at most.
pub const MAX_ENTRIES_PER_DIGEST: usize = 10_000;
/// Digests kept at most (pending, or remembered for when they were last sent).
pub const MAX_DIGESTS: usize = 10_000;
/// Entries of all digests together at most, and their bytes (headers included).
pub const MAX_ENTRIES: usize = 100_000;
pub const MAX_BYTES: usize = 64 << 20;

/// Digests in this process, bounded by the limits above. An `add` beyond them collects
/// nothing and logs a warning (once per digest while it is full, once for all while the
/// whole is full): the caller's pending hold on that notification then runs out, and
/// Alertmanager's retry delivers it — late, not lost. A `put_back` is never refused: its
/// entries were collected here within the limits already, so a digest holds at most twice
/// its cap.
#[derive(Default)]
pub struct MemoryDigests {
    inner: Mutex<Digests>,
    clock: Clock,
}

#[derive(Default)]
struct Digests {
    by_id: HashMap<String, Digest>,
    /// Pending entries of all digests, and their bytes.
    entries: usize,
    bytes: usize,
    /// Whether the whole being full was logged (until a take makes room).
    warned_full: bool,
}

struct Digest {
    header: Vec<u8>,
    /// Pending entries in the order they joined, and where each key is.
    entries: Vec<(DeliveryKey, Vec<u8>)>,
    index: KeyMap<usize>,
    /// The bytes of the entries and the header.
    bytes: usize,
    /// When the oldest pending entry joined (while there are entries).
    first: Instant,
    /// When the pending entries fall due (while there are entries).
    due: Instant,
    /// When the pending entries are forgotten: `hold` after the last add or put-back.
    expires: Instant,
    /// Not due before this: the last send plus its interval.
    not_before: Option<Instant>,
    /// When the entries out for sending were taken (until sent or put back).
    taken_at: Option<Instant>,
    /// Whether this digest being full was logged (until taken).
    warned_full: bool,
}

impl Digest {
    fn new(now: Instant) -> Digest {
        Digest {
            header: Vec::new(),
            entries: Vec::new(),
            index: KeyMap::default(),
            bytes: 0,
            first: now,
            due: now,
            expires: now,
            not_before: None,
            taken_at: None,
            warned_full: false,
        }
    }

    fn is_pending(&self) -> bool {
        !self.entries.is_empty()
    }

    fn set_header(&mut self, header: &[u8]) {
        if self.header != header {
            self.bytes = self.bytes - self.header.len() + header.len();
            self.header = header.to_vec();
        }
    }

    /// Adds or replaces the entry under `key`.
    fn put(&mut self, key: &DeliveryKey, entry: &[u8]) {
        match self.index.get(key) {
            Some(&at) => {
                let old = std::mem::replace(&mut self.entries[at].1, entry.to_vec());
                self.bytes = self.bytes - old.len() + entry.len();
            }
            None => {
                self.index.insert(*key, self.entries.len());
                self.entries.push((*key, entry.to_vec()));
                self.bytes += entry.len();
            }
        }
    }

    /// Takes the pending entries (and the header) out.
    fn clear(&mut self) -> (Vec<u8>, Vec<(DeliveryKey, Vec<u8>)>) {
        self.index.clear();
        self.bytes = 0;
        (
            std::mem::take(&mut self.header),
            std::mem::take(&mut self.entries),
        )
    }

    /// Forgets the pending entries if their hold ran out.
    fn expire(&mut self, now: Instant) {
        if self.is_pending() && self.expires <= now {
            self.clear();
        }
    }

    /// Whether nothing is left worth remembering.
    fn is_idle(&self, now: Instant) -> bool {
        !self.is_pending() && self.expires <= now && self.not_before.is_none_or(|at| at <= now)
    }
}

impl Digests {
    /// Runs `change` on digest `id` (created if absent, its expired entries forgotten
    /// first), keeping the totals in step.
    fn change<R>(&mut self, id: &str, now: Instant, change: impl FnOnce(&mut Digest) -> R) -> R {
        if !self.by_id.contains_key(id) {
            self.by_id.insert(id.to_string(), Digest::new(now));
        }
        let digest = self.by_id.get_mut(id).expect("just inserted");
        let (entries, bytes) = (digest.entries.len(), digest.bytes);
        digest.expire(now);
        let result = change(digest);
        self.entries = self.entries + digest.entries.len() - entries;
        self.bytes = self.bytes + digest.bytes - bytes;
        result
    }

    /// Forgets expired entries and idle digests.
    fn sweep(&mut self, now: Instant) {
        let (mut entries, mut bytes) = (0, 0);
        self.by_id.retain(|_, digest| {
            digest.expire(now);
            entries += digest.entries.len();
            bytes += digest.bytes;
            !digest.is_idle(now)
        });
        (self.entries, self.bytes) = (entries, bytes);
    }

    /// Whether one more entry of `size` bytes, in a new digest or not, stays within the
    /// limits of the whole.
    fn has_room(&self, new_digest: bool, size: usize) -> bool {
        (!new_digest || self.by_id.len() < MAX_DIGESTS)
            && self.entries < MAX_ENTRIES
            && self.bytes + size <= MAX_BYTES
    }
}

impl MemoryDigests {
    pub fn new() -> MemoryDigests {
        MemoryDigests::default()
    }

    #[cfg(test)]
    fn with_clock(clock: Clock) -> MemoryDigests {
        MemoryDigests {
            clock,
            ..MemoryDigests::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Digests> {
        // Consistent after every statement that could panic; keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pending entries of all digests (for tests and measurements).
    pub fn len(&self) -> usize {
        self.lock().entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl PendingDigests for MemoryDigests {
    async fn add(
        &self,
        id: &str,
        header: &[u8],
        entry_key: &DeliveryKey,
        entry: &[u8],
        interval: Duration,
        hold: Duration,
    ) {
        let now = self.clock.now();
        let mut digests = self.lock();
        if digests.by_id.contains_key(id) {
            digests.change(id, now, |_| ()); // forgets its entries if their hold ran out
        }
        let existing = digests
            .by_id
            .get(id)
            .map(|digest| (digest.index.contains_key(entry_key), digest.entries.len()));
        let replacing = existing.is_some_and(|(replacing, _)| replacing);
        if !replacing {
            let size = entry.len() + header.len();
            if !digests.has_room(existing.is_none(), size) {
                digests.sweep(now);
            }
            let new_digest = !digests.by_id.contains_key(id);
            if !digests.has_room(new_digest, size) {
                if !std::mem::replace(&mut digests.warned_full, true) {
                    warn!(
                        "pending digests are full ({MAX_DIGESTS} digests, {MAX_ENTRIES} entries or {MAX_BYTES} bytes): \
                         further notifications are not collected; their pending holds run out and Alertmanager's \
                         retries deliver them"
                    );
                }
                return;
            }
            if existing.is_some_and(|(_, entries)| entries >= MAX_ENTRIES_PER_DIGEST) {
                let digest = digests.by_id.get_mut(id).expect("exists");
                if !std::mem::replace(&mut digest.warned_full, true) {
                    warn!(
                        "digest {id} is full ({MAX_ENTRIES_PER_DIGEST} entries): further notifications for it are \
                         not collected until it is sent; their pending holds run out and Alertmanager's retries \
                         deliver them"
                    );
                }
                return;
            }
        }
        digests.change(id, now, |digest| {
            if !digest.is_pending() {
                digest.first = now;
                digest.due = (now + interval).max(digest.not_before.unwrap_or(now));
            }
            digest.set_header(header);
            digest.put(entry_key, entry);
            digest.expires = now + hold;
        });
    }

    async fn due(&self, limit: usize) -> Vec<String> {
        let now = self.clock.now();
        let mut digests = self.lock();
        digests.sweep(now);
        let mut due: Vec<(Instant, &String)> = digests
            .by_id
            .iter()
            .filter(|(_, digest)| digest.is_pending() && digest.due <= now)
            .map(|(id, digest)| (digest.due, id))
            .collect();
        due.sort_unstable();
        due.into_iter().take(limit).map(|(_, id)| id.clone()).collect()
    }

    async fn take(&self, id: &str) -> Option<DigestBatch> {
        let now = self.clock.now();
        let mut digests = self.lock();
        if !digests.by_id.contains_key(id) {
            return None;
        }
        let batch = digests.change(id, now, |digest| {
            if !digest.is_pending() {
                return None;
            }
            let (header, entries) = digest.clear();
            digest.taken_at = Some(now);
            digest.warned_full = false;
            Some(DigestBatch {
                id: id.to_string(),
                header,
                entries,
                waited: now.saturating_duration_since(digest.first),
            })
        });
        if batch.is_some() {
            digests.warned_full = false;
        }
        batch
    }

    async fn sent(&self, id: &str, interval: Duration) {
        let now = self.clock.now();
        let mut digests = self.lock();
        digests.change(id, now, |digest| {
            let not_before = now + interval;
            digest.not_before = Some(not_before);
            digest.taken_at = None;
            if digest.is_pending() {
                digest.due = digest.due.max(not_before);
            }
        });
    }

    async fn put_back(&self, batch: DigestBatch, retry_in: Duration, hold: Duration) {
        if batch.entries.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut digests = self.lock();
        digests.change(&batch.id, now, |digest| {
            let taken = digest.taken_at.take().filter(|at| *at <= now).unwrap_or(now);
            let first = taken.checked_sub(batch.waited).unwrap_or(taken);
            let newer = std::mem::take(&mut digest.entries);
            let was_pending = !newer.is_empty();
            if was_pending {
                digest.first = digest.first.min(first);
            } else {
                digest.first = first;
                digest.set_header(&batch.header);
            }
            digest.index.clear();
            digest.bytes = digest.header.len();
            // The batch joined first; an entry added meanwhile under the same key replaces
            // its value (and keeps its place: it is the same notification).
            for (key, entry) in batch.entries.iter().chain(&newer) {
                digest.put(key, entry);
            }
            digest.due = now + retry_in;
            digest.expires = now + hold;
        });
    }

    async fn oldest_pending(&self) -> Option<Duration> {
        let now = self.clock.now();
        let digests = self.lock();
        digests
            .by_id
            .values()
            .filter(|digest| digest.is_pending() && digest.expires > now)
            .map(|digest| digest.first)
            .min()
            .map(|first| now.saturating_duration_since(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);
    const HOLD: Duration = Duration::from_secs(600);
    const MILLI: Duration = Duration::from_millis(1);

    fn key(i: u32) -> DeliveryKey {
        let mut key = [0; 16];
        key[..4].copy_from_slice(&i.to_le_bytes());
        key
    }

    fn id(i: u8) -> String {
        format!("{i:032x}")
    }

    fn digests() -> (MemoryDigests, Clock) {
        let clock = Clock::manual();
        (MemoryDigests::with_clock(clock.clone()), clock)
    }

    async fn add(digests: &MemoryDigests, digest: &str, entry: u32, text: &str) {
        digests
            .add(digest, b"to alice", &key(entry), text.as_bytes(), INTERVAL, HOLD)
            .await;
    }

    fn texts(batch: &DigestBatch) -> Vec<(u32, String)> {
        batch
            .entries
            .iter()
            .map(|(key, entry)| {
                (
                    u32::from_le_bytes(key[..4].try_into().unwrap()),
                    String::from_utf8(entry.clone()).unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn an_entry_added_again_under_its_key_replaces_the_first_and_keeps_its_place() {
        let (digests, clock) = digests();
        add(&digests, &id(1), 1, "disk full").await;
        clock.advance(Duration::from_secs(5));
        add(&digests, &id(1), 2, "cpu hot").await;
        add(&digests, &id(1), 1, "disk full (retry)").await;
        assert_eq!(digests.len(), 2);
        clock.advance(Duration::from_secs(3));
        let batch = digests.take(&id(1)).await.unwrap();
        assert_eq!(batch.id, id(1));
        assert_eq!(batch.header, b"to alice");
        assert_eq!(
            texts(&batch),
            [(1, "disk full (retry)".into()), (2, "cpu hot".into())]
        );
        assert_eq!(batch.waited, Duration::from_secs(8));
        assert!(digests.is_empty());
    }

    #[tokio::test]
    async fn a_digest_falls_due_an_interval_after_its_oldest_entry_and_not_sooner_after_a_send() {
        let (digests, clock) = digests();
        add(&digests, &id(1), 1, "a").await;
        clock.advance(Duration::from_secs(30));
        add(&digests, &id(1), 2, "b").await;
        clock.advance(Duration::from_secs(30) - MILLI);
        assert!(digests.due(10).await.is_empty());
        clock.advance(MILLI);
        assert_eq!(digests.due(10).await, [id(1)]);
        let _ = digests.take(&id(1)).await.unwrap();
        assert!(digests.due(10).await.is_empty(), "taken: no longer due");
        digests.sent(&id(1), Duration::from_secs(300)).await;

        // The next entry joins 10 s after the send: due 300 s after the send, not 60 s
        // after it joined.
        clock.advance(Duration::from_secs(10));
        add(&digests, &id(1), 3, "c").await;
        clock.advance(Duration::from_secs(290) - MILLI);
        assert!(digests.due(10).await.is_empty());
        clock.advance(MILLI);
        assert_eq!(digests.due(10).await, [id(1)]);
    }

    #[tokio::test]
    async fn a_send_pushes_back_entries_added_while_it_was_out() {
        let (digests, clock) = digests();
        add(&digests, &id(1), 1, "a").await;
        clock.advance(INTERVAL);
        let _ = digests.take(&id(1)).await.unwrap();
        add(&digests, &id(1), 2, "b").await;
        clock.advance(Duration::from_secs(1));
        digests.sent(&id(1), Duration::from_secs(120)).await;
        clock.advance(Duration::from_secs(120) - MILLI);
        assert!(digests.due(10).await.is_empty());
        clock.advance(MILLI);
        assert_eq!(digests.due(10).await, [id(1)]);
    }

    #[tokio::test]
    async fn due_lists_the_most_overdue_first_within_the_limit() {
        let (digests, clock) = digests();
        for i in [3, 1, 2] {
            add(&digests, &id(i), 1, "x").await;
            clock.advance(Duration::from_secs(1));
        }
        clock.advance(INTERVAL);
        assert_eq!(digests.due(10).await, [id(3), id(1), id(2)]);
        assert_eq!(digests.due(2).await, [id(3), id(1)]);
        assert!(digests.due(0).await.is_empty());
    }

    #[tokio::test]
    async fn only_one_taker_gets_the_entries() {
        let (digests, _clock) = digests();
        assert_eq!(digests.take(&id(1)).await, None, "nothing there");
        for i in 0..100 {
            add(&digests, &id(1), i, "x").await;
        }
        let digests = std::sync::Arc::new(digests);
        let takers: Vec<_> = (0..8)
            .map(|_| {
                let digests = digests.clone();
                tokio::spawn(async move { digests.take(&id(1)).await })
            })
            .collect();
        let mut got = Vec::new();
        for taker in takers {
            got.extend(taker.await.unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entries.len(), 100);
    }

    #[tokio::test]
    async fn a_batch_put_back_rejoins_before_newer_entries_and_a_newer_entry_wins_its_key() {
        let (digests, clock) = digests();
        add(&digests, &id(1), 1, "a").await;
        add(&digests, &id(1), 2, "b").await;
        clock.advance(INTERVAL);
        let batch = digests.take(&id(1)).await.unwrap();
        assert_eq!(batch.waited, INTERVAL);
        clock.advance(Duration::from_secs(4)); // the send fails meanwhile
        add(&digests, &id(1), 3, "c").await;
        add(&digests, &id(1), 2, "b (newer)").await;
        digests.put_back(batch, Duration::from_secs(10), HOLD).await;
        assert_eq!(
            digests.oldest_pending().await,
            Some(INTERVAL + Duration::from_secs(4))
        );
        clock.advance(Duration::from_secs(10) - MILLI);
        assert!(digests.due(10).await.is_empty(), "due again after retry_in");
        clock.advance(MILLI);
        assert_eq!(digests.due(10).await, [id(1)]);
        let batch = digests.take(&id(1)).await.unwrap();
        assert_eq!(
            texts(&batch),
            [(1, "a".into()), (2, "b (newer)".into()), (3, "c".into())]
        );
        assert_eq!(batch.header, b"to alice");
        assert_eq!(batch.waited, INTERVAL + Duration::from_secs(14));
        assert!(digests.is_empty());

        // Put back into an empty digest: the header comes back with it.
        digests.put_back(batch, Duration::ZERO, HOLD).await;
        let batch = digests.take(&id(1)).await.unwrap();
        assert_eq!(batch.header, b"to alice");
        assert_eq!(batch.entries.len(), 3);
    }

    #[tokio::test]
    async fn a_digest_not_taken_within_its_hold_of_the_last_add_is_forgotten() {
        let (digests, clock) = digests();
        add(&digests, &id(1), 1, "a").await;
        clock.advance(HOLD / 2);
        add(&digests, &id(1), 2, "b").await;
        clock.advance(HOLD - MILLI);
        assert_eq!(digests.oldest_pending().await, Some(HOLD / 2 + HOLD - MILLI));
        assert_eq!(digests.due(10).await, [id(1)]);
        clock.advance(MILLI);
        assert_eq!(digests.oldest_pending().await, None);
        assert!(digests.due(10).await.is_empty());
        assert_eq!(digests.take(&id(1)).await, None);
        assert!(digests.is_empty());
        assert!(digests.lock().by_id.is_empty(), "nothing left of it");

        // Forgotten entries do not come back with the next add.
        add(&digests, &id(1), 3, "c").await;
        clock.advance(INTERVAL);
        let batch = digests.take(&id(1)).await.unwrap();
        assert_eq!(texts(&batch), [(3, "c".into())]);
        assert_eq!(batch.waited, INTERVAL);
    }

    #[tokio::test]
    async fn oldest_pending_is_the_longest_wait_of_entries_not_taken() {
        let (digests, clock) = digests();
        assert_eq!(digests.oldest_pending().await, None);
        add(&digests, &id(1), 1, "a").await;
        clock.advance(Duration::from_secs(20));
        add(&digests, &id(2), 1, "a").await;
        add(&digests, &id(1), 2, "b").await;
        clock.advance(Duration::from_secs(5));
        assert_eq!(digests.oldest_pending().await, Some(Duration::from_secs(25)));
        let _ = digests.take(&id(1)).await.unwrap();
        assert_eq!(digests.oldest_pending().await, Some(Duration::from_secs(5)));
        let _ = digests.take(&id(2)).await.unwrap();
        assert_eq!(digests.oldest_pending().await, None);
    }

    #[tokio::test]
    async fn a_full_digest_collects_nothing_more_but_replaces_and_others_go_on() {
        let (digests, _clock) = digests();
        for i in 0..MAX_ENTRIES_PER_DIGEST as u32 {
            add(&digests, &id(1), i, "x").await;
        }
        add(&digests, &id(1), u32::MAX, "one too many").await;
        add(&digests, &id(1), 0, "replaced").await;
        add(&digests, &id(2), 0, "another digest").await;
        assert_eq!(digests.len(), MAX_ENTRIES_PER_DIGEST + 1);
        let batch = digests.take(&id(1)).await.unwrap();
        assert_eq!(batch.entries.len(), MAX_ENTRIES_PER_DIGEST);
        assert_eq!(texts(&batch)[0], (0, "replaced".into()));
        // Taken: room again.
        add(&digests, &id(1), u32::MAX, "now it fits").await;
        assert_eq!(digests.len(), 2);
    }

    #[tokio::test]
    async fn digests_overall_are_bounded() {
        let (digests, clock) = digests();
        for i in 0..MAX_DIGESTS {
            digests
                .add(&format!("{i:032x}"), b"h", &key(0), b"x", INTERVAL, HOLD)
                .await;
        }
        digests
            .add(
                &format!("{:032x}", MAX_DIGESTS),
                b"h",
                &key(0),
                b"x",
                INTERVAL,
                HOLD,
            )
            .await;
        assert_eq!(digests.len(), MAX_DIGESTS);
        assert_eq!(digests.take(&format!("{:032x}", MAX_DIGESTS)).await, None);
        // Once the hold ran out, the room is there again.
        clock.advance(HOLD);
        digests
            .add(
                &format!("{:032x}", MAX_DIGESTS),
                b"h",
                &key(0),
                b"x",
                INTERVAL,
                HOLD,
            )
            .await;
        assert_eq!(digests.len(), 1);
    }
}
