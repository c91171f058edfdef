//! The delivery state's own interfaces against a real `redis-server` (on a free loopback
//! port): rate budgets with check groups, keep and in-flight stamps; the ledger's pending
//! holds; pending digests shared by two replicas; one command per operation; and local
//! state taking over, without a panic, when Redis goes away.

use std::time::{Duration, Instant};

use alertmanager_wecom::config::{RedisSettings, StateSettings};
use alertmanager_wecom::metrics::Metrics;
use alertmanager_wecom::secret::Secret;
use alertmanager_wecom::state::{
    Charge, Claim, ClaimId, DeliveryKey, DeliveryStore, DigestBatch, RateLimits, Recorded,
};

use crate::redis_server::{RedisServer, Reply};

const PREFIX: &str = "t:";
const HOLD: Duration = Duration::from_secs(600);
const HOUR: Duration = Duration::from_secs(3600);

/// One replica's state on `redis`, and the metrics it reports to.
fn replica(redis: &RedisServer) -> (DeliveryStore, Metrics) {
    let settings = StateSettings::Redis(RedisSettings {
        url: Secret::new(redis.url()),
        key_prefix: PREFIX.to_string(),
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_millis(250),
    });
    let metrics = Metrics::new();
    let store = DeliveryStore::from_settings(&settings, &metrics).expect("a valid URL");
    (store, metrics)
}

fn limits(per_minute: usize, per_hour: Option<usize>, margin: Duration) -> RateLimits {
    RateLimits {
        per_minute,
        per_hour,
        margin,
    }
}

fn keys(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Books `book` and checks `checks`, settled at once.
fn charge(book: &[&str], checks: &[&[&str]]) -> Charge {
    Charge {
        book: keys(book),
        checks: checks.iter().map(|group| keys(group)).collect(),
        ..Charge::default()
    }
}

fn key(i: u32) -> DeliveryKey {
    let mut key = [0xab; 16];
    key[..4].copy_from_slice(&i.to_le_bytes());
    key
}

fn id(i: u8) -> String {
    format!("{i:032x}")
}

fn rate_key(scope: &str, key: &str) -> String {
    format!("{PREFIX}rate:{{{scope}}}:{key}")
}

fn digest_key(part: &str) -> String {
    format!("{PREFIX}digest:{{digests}}:{part}")
}

/// The server's clock in ms.
fn server_ms(redis: &RedisServer) -> i64 {
    match redis.command(&["TIME"]) {
        Ok(Reply::Array(Some(parts))) => {
            let number = |reply: &Reply| match reply {
                Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).parse::<i64>().unwrap(),
                other => panic!("TIME: {other:?}"),
            };
            number(&parts[0]) * 1000 + number(&parts[1]) / 1000
        }
        other => panic!("TIME: {other:?}"),
    }
}

fn integer(redis: &RedisServer, args: &[&str]) -> i64 {
    match redis.command(args) {
        Ok(Reply::Integer(n)) => n,
        other => panic!("{args:?}: {other:?}"),
    }
}

/// The scores of a sorted set, lowest first.
fn scores(redis: &RedisServer, key: &str) -> Vec<i64> {
    match redis.command(&["ZRANGE", key, "0", "-1", "WITHSCORES"]) {
        Ok(Reply::Array(Some(items))) => items
            .chunks(2)
            .map(|pair| match &pair[1] {
                Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).parse::<f64>().unwrap() as i64,
                other => panic!("ZRANGE {key}: {other:?}"),
            })
            .collect(),
        other => panic!("ZRANGE {key}: {other:?}"),
    }
}

fn score(redis: &RedisServer, key: &str, member: &str) -> Option<i64> {
    match redis.command(&["ZSCORE", key, member]) {
        Ok(Reply::Bulk(Some(bytes))) => Some(String::from_utf8_lossy(&bytes).parse::<f64>().unwrap() as i64),
        Ok(Reply::Bulk(None)) => None,
        other => panic!("ZSCORE {key}: {other:?}"),
    }
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
async fn budgets_in_redis_sum_check_groups_keep_slots_and_book_all_or_none() {
    let redis = RedisServer::start();
    let (store, metrics) = replica(&redis);
    let member = limits(30, Some(1000), Duration::ZERO);
    let all = charge(&["@all"], &[&["@all"]]);
    for _ in 0..20 {
        let _ = store.budgets.try_reserve("app:ops", &all, member).await.unwrap();
    }
    let alice = charge(&["alice"], &[&["alice", "@all"]]);
    for _ in 0..10 {
        let _ = store
            .budgets
            .try_reserve("app:ops", &alice, member)
            .await
            .unwrap();
    }
    assert_eq!(
        store.budgets.try_reserve("app:ops", &alice, member).await.err(),
        Some(keys(&["alice"]))
    );
    // All or none: bob's group passes, alice's does not, and bob is not booked.
    let both = charge(
        &["alice", "bob"],
        &[&["alice", "@all"], &["bob", "@all"], &["alice"], &[]],
    );
    assert_eq!(
        store.budgets.try_reserve("app:ops", &both, member).await.err(),
        Some(keys(&["alice"]))
    );
    assert!(redis.keys(&rate_key("app:ops", "bob")).is_empty(), "all or none");
    // Two failing groups, each named by its first key once.
    let bob = charge(&["bob"], &[&["bob", "@all"]]);
    for _ in 0..10 {
        let _ = store.budgets.try_reserve("app:ops", &bob, member).await.unwrap();
    }
    assert_eq!(
        store.budgets.try_reserve("app:ops", &both, member).await.err(),
        Some(keys(&["alice", "bob"]))
    );
    assert_eq!(scores(&redis, &rate_key("app:ops", "bob")).len(), 10);
    // Another scope has its own budget.
    assert!(store.budgets.try_reserve("app:pay", &alice, member).await.is_ok());

    // keep: a charge keeping 5 slots stops 5 short of the limit; a digest (keep 0) may
    // take them.
    let keeping = Charge {
        keep: 5,
        ..charge(&["carol"], &[&["carol"]])
    };
    for _ in 0..25 {
        let _ = store
            .budgets
            .try_reserve("app:ops", &keeping, member)
            .await
            .unwrap();
    }
    assert!(store
        .budgets
        .try_reserve("app:ops", &keeping, member)
        .await
        .is_err());
    let digest = charge(&["carol"], &[&["carol"]]);
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            store
                .budgets
                .try_reserve("app:ops", &digest, member)
                .await
                .unwrap(),
        );
    }
    assert!(store
        .budgets
        .try_reserve("app:ops", &digest, member)
        .await
        .is_err());
    store.budgets.release(last.unwrap()).await;
    assert!(
        store
            .budgets
            .try_reserve("app:ops", &digest, member)
            .await
            .is_ok(),
        "released: its slot is free again"
    );
    assert_eq!(metrics.state_degraded.get(), 0, "all of it on Redis");
}

#[tokio::test]
async fn a_booking_in_redis_is_stamped_with_its_deadline_until_settled_then_with_the_answer() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let name = rate_key("app:ops", "alice");
    let in_flight = Charge {
        in_flight: Duration::from_secs(30),
        ..charge(&["alice"], &[&["alice"]])
    };
    let before = server_ms(&redis);
    let reservation = store
        .budgets
        .try_reserve("app:ops", &in_flight, limits(30, Some(1000), Duration::ZERO))
        .await
        .unwrap();
    let after = server_ms(&redis);
    let [stamp] = scores(&redis, &name)[..] else {
        panic!("one booking")
    };
    assert!(
        (before + 30_000..=after + 30_000).contains(&stamp),
        "{before} {stamp} {after}"
    );
    let ttl = integer(&redis, &["PTTL", &name]);
    assert!(
        ttl > 30_000 + 3_600_000 - 1_000,
        "lives as long as a window counts it: {ttl}"
    );

    let before = server_ms(&redis);
    store.budgets.settle(&reservation).await;
    let after = server_ms(&redis);
    let [settled] = scores(&redis, &name)[..] else {
        panic!("one booking")
    };
    assert!((before..=after).contains(&settled), "{before} {settled} {after}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.budgets.settle(&reservation).await;
    assert_eq!(scores(&redis, &name), [settled], "never later than its stamp");
}

#[tokio::test]
async fn redis_counts_both_windows_by_its_clock_with_the_margin() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let name = rate_key("s", "alice");
    let check = charge(&[], &[&["alice"]]);
    let age = |ms: i64| (server_ms(&redis) - ms).to_string();

    // Minute window, margin 2 s: a message stamped 61 s ago still counts, 62.5 s ago not.
    let minute = limits(1, None, Duration::from_secs(2));
    redis.command(&["ZADD", &name, &age(61_000), "old"]).unwrap();
    assert!(store.budgets.try_reserve("s", &check, minute).await.is_err());
    redis.command(&["ZADD", &name, &age(62_500), "old"]).unwrap();
    assert!(store.budgets.try_reserve("s", &check, minute).await.is_ok());
    assert!(scores(&redis, &name).is_empty(), "no window counts it: forgotten");

    // A stamp in the future (a message in flight) counts whenever it was booked.
    redis
        .command(&["ZADD", &name, &age(-20_000), "in-flight"])
        .unwrap();
    assert!(store.budgets.try_reserve("s", &check, minute).await.is_err());
    redis.command(&["DEL", &name]).unwrap();

    // Hour window: 59 min ago counts against 1/hour, over an hour ago not.
    let hourly = limits(100, Some(1), Duration::ZERO);
    redis.command(&["ZADD", &name, &age(3_540_000), "old"]).unwrap();
    assert!(store.budgets.try_reserve("s", &check, hourly).await.is_err());
    redis.command(&["ZADD", &name, &age(3_600_500), "old"]).unwrap();
    assert!(store.budgets.try_reserve("s", &check, hourly).await.is_ok());
}

#[tokio::test]
async fn bookings_in_redis_are_trimmed_to_what_a_limit_can_see() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let small = limits(3, Some(5), Duration::ZERO);
    let unchecked = charge(&["alice"], &[]);
    for _ in 0..20 {
        let _ = store.budgets.try_reserve("s", &unchecked, small).await.unwrap();
    }
    assert_eq!(scores(&redis, &rate_key("s", "alice")).len(), 5);
    let keeping = Charge { keep: 2, ..unchecked };
    for _ in 0..5 {
        let _ = store.budgets.try_reserve("s", &keeping, small).await.unwrap();
    }
    assert_eq!(scores(&redis, &rate_key("s", "alice")).len(), 7);
    assert!(store
        .budgets
        .try_reserve("s", &charge(&[], &[&["alice"]]), small)
        .await
        .is_err());
}

#[tokio::test]
async fn the_ledger_in_redis_holds_a_pending_message_across_replicas() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis);
    let (b, _) = replica(&redis);
    let Claim::Mine(claim) = a.ledger.claim(&key(1), HOLD).await else {
        panic!("a new message is ours")
    };
    assert!(
        !b.ledger.pend(&key(1), ClaimId(claim.0 ^ 1), HOLD).await,
        "not b's claim"
    );
    assert_eq!(b.ledger.claim(&key(1), HOLD).await, Claim::Held);
    assert_eq!(b.ledger.peek(&key(1)).await, Recorded::Claimed);
    assert!(a.ledger.pend(&key(1), claim, HOLD).await);
    assert_eq!(b.ledger.peek(&key(1)).await, Recorded::Pending);
    assert_eq!(b.ledger.claim(&key(1), HOLD).await, Claim::Pending);
    assert!(
        !a.ledger.pend(&key(1), claim, HOLD).await,
        "the claim became the hold"
    );
    a.ledger.release(&key(1), claim).await;
    assert_eq!(
        b.ledger.claim(&key(1), HOLD).await,
        Claim::Pending,
        "not released"
    );
    let name = format!("{PREFIX}msg:01000000{}", "ab".repeat(12));
    let ttl = integer(&redis, &["PTTL", &name]);
    assert!(ttl > 590_000 && ttl <= 600_000, "held for the hold: {ttl}");

    // The digest was sent: accepted over pending.
    b.ledger.accepted(&key(1), Duration::from_secs(60)).await;
    assert_eq!(a.ledger.peek(&key(1)).await, Recorded::Accepted);
    assert_eq!(a.ledger.peek(&key(2)).await, Recorded::Nothing);
    assert_eq!(a.ledger.claim(&key(1), HOLD).await, Claim::Accepted);
    b.ledger.unpend(&key(1)).await;
    assert_eq!(
        a.ledger.claim(&key(1), HOLD).await,
        Claim::Accepted,
        "unpend leaves it"
    );

    // The digest was dropped: unpend lets the retries deliver anew, and leaves claims be.
    let Claim::Mine(claim) = a.ledger.claim(&key(2), HOLD).await else {
        panic!("ours")
    };
    b.ledger.unpend(&key(2)).await;
    assert_eq!(
        b.ledger.claim(&key(2), HOLD).await,
        Claim::Held,
        "a claim is left alone"
    );
    assert!(a.ledger.pend(&key(2), claim, HOLD).await);
    b.ledger.unpend(&key(2)).await;
    assert!(matches!(b.ledger.claim(&key(2), HOLD).await, Claim::Mine(_)));
}

#[tokio::test]
async fn a_digest_in_redis_replaces_entries_by_key_and_keeps_their_order_and_header() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let digests = &store.digests;
    digests
        .add(&id(1), b"to alice", &key(1), b"disk full", Duration::ZERO, HOLD)
        .await;
    digests
        .add(&id(1), b"to alice", &key(2), b"cpu hot", Duration::ZERO, HOLD)
        .await;
    digests
        .add(
            &id(1),
            b"to alice",
            &key(1),
            b"disk full (retry)",
            Duration::ZERO,
            HOLD,
        )
        .await;
    assert_eq!(digests.due(10).await, [id(1)]);
    let batch = digests.take(&id(1)).await.unwrap();
    assert_eq!(batch.id, id(1));
    assert_eq!(batch.header, b"to alice");
    assert_eq!(
        texts(&batch),
        [(1, "disk full (retry)".into()), (2, "cpu hot".into())]
    );
    assert!(batch.waited < Duration::from_secs(5));
    assert_eq!(digests.take(&id(1)).await, None, "taken once");
    assert!(digests.due(10).await.is_empty());
    for part in ["entries", "order"] {
        assert!(
            redis.keys(&digest_key(&format!("{}:{part}", id(1)))).is_empty(),
            "{part}"
        );
    }
}

#[tokio::test]
async fn a_digest_in_redis_falls_due_after_its_interval_and_not_sooner_after_a_send() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let digests = &store.digests;
    let now = server_ms(&redis);
    digests.add(&id(1), b"h", &key(1), b"a", HOUR, HOLD).await;
    digests
        .add(&id(2), b"h", &key(1), b"a", Duration::ZERO, HOLD)
        .await;
    assert_eq!(digests.due(10).await, [id(2)], "the other is due in an hour");
    let due = score(&redis, &digest_key("due"), &id(1)).unwrap();
    assert!((now + 3_600_000..now + 3_605_000).contains(&due), "{now} {due}");
    let ttl = integer(&redis, &["PTTL", &digest_key(&format!("{}:entries", id(1)))]);
    assert!(ttl > 590_000 && ttl <= 600_000, "kept for the hold: {ttl}");

    // Sent: the next falls due an hour on, whatever the interval it is added with.
    let _ = digests.take(&id(2)).await.unwrap();
    digests.sent(&id(2), HOUR).await;
    digests
        .add(&id(2), b"h", &key(2), b"b", Duration::ZERO, HOLD)
        .await;
    assert!(digests.due(10).await.is_empty());
    assert!(score(&redis, &digest_key("due"), &id(2)).unwrap() >= now + 3_600_000);

    // An entry added while a digest is out is pushed back by its send.
    digests
        .add(&id(3), b"h", &key(1), b"a", Duration::ZERO, HOLD)
        .await;
    let _ = digests.take(&id(3)).await.unwrap();
    digests
        .add(&id(3), b"h", &key(2), b"b", Duration::ZERO, HOLD)
        .await;
    assert_eq!(digests.due(10).await, [id(3)]);
    digests.sent(&id(3), HOUR).await;
    assert!(digests.due(10).await.is_empty());
}

#[tokio::test]
async fn two_replicas_share_digests_and_only_one_take_gets_them() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis);
    let (b, _) = replica(&redis);
    for i in 0..50 {
        a.digests
            .add(
                &id(7),
                b"to ops",
                &key(i),
                format!("alert {i}").as_bytes(),
                Duration::ZERO,
                HOLD,
            )
            .await;
    }
    assert_eq!(b.digests.due(10).await, [id(7)], "a's add is b's to see");
    assert!(b.digests.oldest_pending().await.is_some());
    let digest = id(7);
    let (from_a, from_b) = tokio::join!(a.digests.take(&digest), b.digests.take(&digest));
    let batches: Vec<DigestBatch> = from_a.into_iter().chain(from_b).collect();
    assert_eq!(batches.len(), 1, "exactly one taker");
    assert_eq!(batches[0].entries.len(), 50);
    assert_eq!(texts(&batches[0])[49], (49, "alert 49".into()));
    assert!(a.digests.due(10).await.is_empty() && b.digests.due(10).await.is_empty());
    assert_eq!(a.digests.oldest_pending().await, None);
}

#[tokio::test]
async fn a_digest_put_back_in_redis_rejoins_before_newer_entries_and_a_newer_entry_wins() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis);
    let (b, _) = replica(&redis);
    a.digests
        .add(&id(1), b"to alice", &key(1), b"a", Duration::ZERO, HOLD)
        .await;
    a.digests
        .add(&id(1), b"to alice", &key(2), b"b", Duration::ZERO, HOLD)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batch = a.digests.take(&id(1)).await.unwrap();
    assert!(batch.waited >= Duration::from_millis(100), "{:?}", batch.waited);
    // While a's send fails, b collects more.
    b.digests
        .add(&id(1), b"to alice", &key(3), b"c", HOUR, HOLD)
        .await;
    b.digests
        .add(&id(1), b"to alice", &key(2), b"b (newer)", HOUR, HOLD)
        .await;
    let now = server_ms(&redis);
    a.digests.put_back(batch, HOUR, HOLD).await;
    assert!(b.digests.due(10).await.is_empty(), "due again in retry_in");
    assert!(score(&redis, &digest_key("due"), &id(1)).unwrap() >= now + 3_600_000);
    let oldest = b.digests.oldest_pending().await.unwrap();
    assert!(
        oldest >= Duration::from_millis(100),
        "the batch's wait goes on: {oldest:?}"
    );

    let batch = b.digests.take(&id(1)).await.unwrap();
    assert_eq!(
        texts(&batch),
        [(1, "a".into()), (2, "b (newer)".into()), (3, "c".into())]
    );
    assert!(batch.waited >= Duration::from_millis(100));
    // Put back into a digest with nothing pending: the header comes back with it.
    b.digests.put_back(batch, Duration::ZERO, HOLD).await;
    assert_eq!(a.digests.due(10).await, [id(1)]);
    let batch = a.digests.take(&id(1)).await.unwrap();
    assert_eq!(batch.header, b"to alice");
    assert_eq!(batch.entries.len(), 3);
}

#[tokio::test]
async fn a_digest_in_redis_not_taken_within_its_hold_is_forgotten() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let digests = &store.digests;
    let hold = Duration::from_millis(150);
    digests
        .add(&id(1), b"h", &key(1), b"a", Duration::ZERO, hold)
        .await;
    digests
        .add(&id(2), b"h", &key(1), b"a", Duration::ZERO, HOLD)
        .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(digests.due(10).await, [id(2)]);
    assert_eq!(digests.take(&id(1)).await, None);
    assert_eq!(
        score(&redis, &digest_key("first"), &id(1)),
        None,
        "out of the shared sets"
    );
    assert_eq!(score(&redis, &digest_key("expiry"), &id(1)), None);
    assert!(redis.keys(&digest_key(&format!("{}:*", id(1)))).is_empty());
    let _ = digests.take(&id(2)).await.unwrap();
    assert_eq!(digests.oldest_pending().await, None);

    // Forgotten entries do not come back with the next add.
    digests
        .add(&id(1), b"h", &key(2), b"b", Duration::ZERO, HOLD)
        .await;
    assert_eq!(texts(&digests.take(&id(1)).await.unwrap()), [(2, "b".into())]);
}

#[tokio::test]
async fn a_full_digest_in_redis_collects_nothing_more_but_replaces() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let digests = &store.digests;
    digests
        .add(&id(1), b"h", &key(0), b"first", Duration::ZERO, HOLD)
        .await;
    // Fill it up to 10,000 entries in one command.
    let entries = digest_key(&format!("{}:entries", id(1)));
    let fields: Vec<String> = (1..10_000).map(|i| format!("{i:032x}")).collect();
    let mut args = vec!["HSET", entries.as_str()];
    for field in &fields {
        args.push(field);
        args.push("x");
    }
    redis.command(&args).unwrap();
    digests
        .add(&id(1), b"h", &key(10_001), b"one too many", Duration::ZERO, HOLD)
        .await;
    assert_eq!(integer(&redis, &["HLEN", &entries]), 10_000);
    digests
        .add(&id(1), b"h", &key(0), b"replaced", Duration::ZERO, HOLD)
        .await;
    let batch = digests.take(&id(1)).await.unwrap();
    assert_eq!(
        texts(&batch),
        [(0, "replaced".into())],
        "only the ordered entries"
    );
}

#[tokio::test]
async fn oldest_pending_in_redis_is_the_longest_wait_of_entries_not_taken() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let digests = &store.digests;
    assert_eq!(digests.oldest_pending().await, None);
    digests.add(&id(1), b"h", &key(1), b"a", HOUR, HOLD).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    digests.add(&id(2), b"h", &key(1), b"a", HOUR, HOLD).await;
    let oldest = digests.oldest_pending().await.unwrap();
    assert!(
        (Duration::from_millis(120)..Duration::from_secs(5)).contains(&oldest),
        "{oldest:?}"
    );
    let _ = digests.take(&id(1)).await.unwrap();
    assert!(digests.oldest_pending().await.unwrap() < Duration::from_millis(120));
    let _ = digests.take(&id(2)).await.unwrap();
    assert_eq!(digests.oldest_pending().await, None);
}

/// Calls of `command` since the last `CONFIG RESETSTAT`.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let Ok(Reply::Bulk(Some(info))) = redis.command(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats")
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// The commands the store sent since the last `CONFIG RESETSTAT`: scripts and the
/// record's PSETEX (the commands scripts run inside Redis count in their own names, and
/// none of them is one of these).
fn commands_sent(redis: &RedisServer) -> u64 {
    ["evalsha", "eval", "script|load", "psetex"]
        .iter()
        .map(|command| calls(redis, command))
        .sum()
}

#[tokio::test]
async fn every_operation_is_one_command_on_redis() {
    let redis = RedisServer::start();
    let (store, _) = replica(&redis);
    let member = limits(30, Some(1000), Duration::from_secs(2));
    let group = charge(&["alice", "@all"], &[&["alice", "@all"], &["bob", "@all"]]);
    let once = |what: &str| {
        let sent = commands_sent(&redis);
        if what == "release" {
            // Bookings given back: one ZREM per key booked, pipelined.
            assert_eq!((sent, calls(&redis, "zrem")), (0, 1), "{what}");
        } else {
            assert_eq!(sent, 1, "{what}: {sent} commands");
        }
        redis.command(&["CONFIG", "RESETSTAT"]).unwrap();
    };
    for warm in [true, false] {
        // The first time round loads the scripts (a NOSCRIPT answer, then SCRIPT LOAD).
        redis.command(&["CONFIG", "RESETSTAT"]).unwrap();
        let check = |what: &str| {
            if !warm {
                once(what)
            } else {
                redis.command(&["CONFIG", "RESETSTAT"]).unwrap();
            }
        };
        let reservation = store
            .budgets
            .try_reserve("app:ops", &group, member)
            .await
            .unwrap();
        check("try_reserve");
        store.budgets.settle(&reservation).await;
        check("settle");
        let single = store
            .budgets
            .try_reserve("app:ops", &charge(&["carol"], &[&["carol"]]), member)
            .await
            .unwrap();
        check("try_reserve");
        store.budgets.release(single).await;
        check("release");
        let k = key(u32::from(warm));
        let digest = id(if warm { 1 } else { 2 });
        let Claim::Mine(claim) = store.ledger.claim(&k, HOLD).await else {
            panic!("ours")
        };
        check("claim");
        assert!(store.ledger.pend(&k, claim, HOLD).await);
        check("pend");
        store.ledger.unpend(&k).await;
        check("unpend");
        store.ledger.accepted(&k, HOLD).await;
        check("accepted");
        store
            .digests
            .add(&digest, b"h", &k, b"e", Duration::ZERO, HOLD)
            .await;
        check("add");
        assert_eq!(store.digests.due(10).await, [digest.as_str()]);
        check("due");
        assert!(store.digests.oldest_pending().await.is_some());
        check("oldest_pending");
        let batch = store.digests.take(&digest).await.unwrap();
        check("take");
        store.digests.put_back(batch, Duration::ZERO, HOLD).await;
        check("put_back");
        let _ = store.digests.take(&digest).await.unwrap();
        check("take");
        store.digests.sent(&digest, Duration::ZERO).await;
        check("sent");
    }
}

#[tokio::test]
async fn redis_going_away_falls_back_to_local_state_and_local_digests_go_out_after() {
    let mut redis = RedisServer::start();
    let (store, metrics) = replica(&redis);
    store.watch();
    let member = limits(30, Some(1000), Duration::ZERO);
    store
        .digests
        .add(&id(1), b"h", &key(1), b"shared", Duration::ZERO, HOLD)
        .await;
    assert_eq!(metrics.state_degraded.get(), 0);

    redis.stop();
    let started = Instant::now();
    let Claim::Mine(claim) = store.ledger.claim(&key(2), HOLD).await else {
        panic!("claimed locally")
    };
    assert_eq!(metrics.state_degraded.get(), 1);
    assert!(store.ledger.pend(&key(2), claim, HOLD).await);
    assert_eq!(store.ledger.claim(&key(2), HOLD).await, Claim::Pending);
    store.ledger.unpend(&key(2)).await;
    store.ledger.accepted(&key(2), HOLD).await;
    assert_eq!(store.ledger.claim(&key(2), HOLD).await, Claim::Accepted);
    let alice = charge(&["alice"], &[&["alice"]]);
    let reservation = store
        .budgets
        .try_reserve("app:ops", &alice, member)
        .await
        .unwrap();
    store.budgets.settle(&reservation).await;
    store.budgets.release(reservation).await;
    store
        .digests
        .add(&id(2), b"to bob", &key(3), b"local", Duration::ZERO, HOLD)
        .await;
    assert_eq!(store.digests.due(10).await, [id(2)]);
    let batch = store.digests.take(&id(2)).await.unwrap();
    store.digests.put_back(batch, Duration::ZERO, HOLD).await;
    store.digests.sent(&id(3), HOUR).await;
    assert!(store.digests.oldest_pending().await.is_some());
    assert!(started.elapsed() < Duration::from_secs(2), "not stuck on Redis");

    redis.start_again();
    let back = Instant::now();
    while metrics.state_degraded.get() != 0 {
        assert!(back.elapsed() < Duration::from_secs(10), "back on Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Redis came back empty; what was collected locally meanwhile still goes out.
    assert_eq!(store.digests.due(10).await, [id(2)]);
    let batch = store.digests.take(&id(2)).await.unwrap();
    assert_eq!(
        (batch.header.as_slice(), texts(&batch)),
        (&b"to bob"[..], vec![(3, "local".into())])
    );
    assert_eq!(store.digests.take(&id(2)).await, None);
    // And its failed send puts it back where every replica sees it.
    store.digests.put_back(batch, Duration::ZERO, HOLD).await;
    let (other, _) = replica(&redis);
    assert_eq!(other.digests.due(10).await, [id(2)]);
}

#[tokio::test]
async fn card_values_are_shared_by_replicas_taken_once_and_expire() {
    let redis = RedisServer::start();
    let (a, _) = replica(&redis);
    let (b, _) = replica(&redis);
    a.cards.put("card:am-1", b"record", HOUR).await;
    assert_eq!(b.cards.get("card:am-1").await.as_deref(), Some(&b"record"[..]));
    // A task id: the first writer's wins, on every replica.
    assert_eq!(a.cards.put_new("task:k", b"am-a", HOUR).await, b"am-a");
    assert_eq!(b.cards.put_new("task:k", b"am-b", HOUR).await, b"am-a");
    // A code is taken by one replica only.
    a.cards.put("code:am-1", b"code", HOUR).await;
    let (first, second) = tokio::join!(a.cards.take("code:am-1"), b.cards.take("code:am-1"));
    assert_eq!(
        [first, second].iter().filter(|taken| taken.is_some()).count(),
        1,
        "one taker"
    );
    // Every key has its TTL.
    b.cards.put("slot:s", b"am-1", Duration::from_millis(200)).await;
    let Reply::Integer(ttl) = redis.command(&["PTTL", &format!("{PREFIX}card:slot:s")]).unwrap() else {
        panic!("a TTL")
    };
    assert!((1..=200).contains(&ttl), "{ttl}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.cards.get("slot:s").await, None);
}
