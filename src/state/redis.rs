//! Delivery state in Redis (or any Redis-protocol server: Valkey, managed offerings), so
//! that every replica sees the same record of accepted messages, the same claims, the same
//! rate budgets and the same pending digests. Each operation is one round trip; everything
//! that reads before it writes is a Lua script, atomic on the server, and times are the
//! server's clock (`TIME`), not each pod's. Every key has a TTL.
//!
//! Keys (`P` is `key_prefix`):
//!
//! - `Pmsg:HEX` holds `c:ID` while claimed, `p` while pending in a digest, `a` once
//!   accepted.
//! - `Prate:{SCOPE}:KEY` is a sorted set of bookings: member = reservation id, score = its
//!   stamp in the server's ms (see `rate_budget` for the counting rule).
//! - Digests, all under the hash tag `{digests}`: `Pdigest:{digests}:due` (member = digest
//!   id, score = when it falls due, ms), `…:first` (score = when its oldest pending entry
//!   joined: `oldest_pending` reads its lowest) and `…:expiry` (score = when its pending
//!   entries are forgotten); per digest `…:ID:entries` (hash: entry key in hex → entry),
//!   `…:ID:order` (sorted set: entry key → join order), `…:ID:meta` (hash: `h` header, `f`
//!   first-joined ms, `s` join counter, `t` taken-at ms, `w` full-warning given) and
//!   `…:ID:next` (not due before this ms: the last send plus its interval, expiring then).
//!   A digest's keys live `hold` from its last add; the shared sets drop a digest's member
//!   once its `expiry` is past (in `due` and `oldest_pending`, and when it is taken).
//!
//! - `Pcard:KEY` holds a value of the interactive cards' store (`cards`), with its TTL.
//!
//! The braces keep the keys one script touches in one Redis Cluster slot, as a multi-key
//! script needs.

use std::time::Duration;

use log::warn;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;

use super::digest::{DigestBatch, MAX_ENTRIES_PER_DIGEST};
use super::ledger::{key_from_hex as unhex, key_hex as hex, Claim, ClaimId, DeliveryKey, Recorded};
use super::millis;
use super::rate_budget::{Plan, RateLimits};
use crate::config::RedisSettings;

/// A failed store operation: the caller falls back to local state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis: no answer within state.command_timeout ({0:?})")]
    Timeout(Duration),
    #[error("redis: unexpected answer {0:?}")]
    Unexpected(String),
}

impl From<redis::RedisError> for StoreError {
    /// The error's kind and detail; the URL (which may hold the password) is never in it.
    fn from(error: redis::RedisError) -> StoreError {
        StoreError::Redis(error.to_string())
    }
}

/// Now in the server's ms, as `now` (a script's first lines).
macro_rules! server_now {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}

/// Drops from the shared digest sets (KEYS[1] due, KEYS[2] first, KEYS[3] expiry) the
/// digests whose pending entries expired.
macro_rules! forget_expired_digests {
    () => {
        r"
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
"
    };
}

/// Lets the shared digest sets (`KEYS[from..to]`) live at least `hold` ms.
macro_rules! keep_shared_sets {
    () => {
        r"
local function keep(from, to, hold)
  for i = from, to do
    if redis.call('PTTL', KEYS[i]) < hold then redis.call('PEXPIRE', KEYS[i], hold) end
  end
end
"
    };
}

/// `put_new`: keep the first writer's value.
const CARD_PUT_NEW: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// `take`: one taker gets the value (GETDEL needs Redis 6.2; this works on any).
const CARD_TAKE: &str = r"
local held = redis.call('GET', KEYS[1])
if held then redis.call('DEL', KEYS[1]) end
return held
";

const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'a' then return 2 end
if v == 'p' then return 4 end
return 3
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

const PEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'p', 'PX', ARGV[2])
  return 1
end
return 0
";

const UNPEND: &str = r"
if redis.call('GET', KEYS[1]) == 'p' then return redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: the charge's distinct keys. ARGV: per_minute, per_hour (0: none), margin ms,
/// keep, in_flight ms, reservation id, the number of check groups, each group as its size
/// and its keys' 1-based indices, then the number of keys booked and their indices.
/// Answers the 0-based positions of the failing groups (none: booked).
const RESERVE: &str = concat!(
    server_now!(),
    r"
local per_minute = tonumber(ARGV[1])
local per_hour = tonumber(ARGV[2])
local margin = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local in_flight = tonumber(ARGV[5])
local id = ARGV[6]
local minute_from = now - 60000 - margin
local hour_from = now - 3600000 - margin
local forget_from, window = minute_from, 60000 + margin
if per_hour > 0 then forget_from, window = hour_from, 3600000 + margin end
local cap = math.max(per_minute, per_hour) + keep
local minute, hour = {}, {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', forget_from)
  hour[i] = redis.call('ZCARD', key)
  minute[i] = redis.call('ZCOUNT', key, '(' .. minute_from, '+inf')
end
local at = 8
local failing = {}
for group = 0, tonumber(ARGV[7]) - 1 do
  local size = tonumber(ARGV[at])
  local in_minute, in_hour = 0, 0
  for j = at + 1, at + size do
    local k = tonumber(ARGV[j])
    in_minute = in_minute + minute[k]
    in_hour = in_hour + hour[k]
  end
  at = at + size + 1
  if in_minute + 1 + keep > per_minute or (per_hour > 0 and in_hour + 1 + keep > per_hour) then
    table.insert(failing, group)
  end
end
if #failing > 0 then return failing end
local stamp = now + in_flight
local ttl = in_flight + window + 1000
for j = at + 1, at + tonumber(ARGV[at]) do
  local key = KEYS[tonumber(ARGV[j])]
  redis.call('ZADD', key, stamp, id)
  local n = redis.call('ZCARD', key)
  if n > cap then redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1) end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return {}
"
);

/// KEYS: the keys booked; ARGV[1]: the reservation id. Lowers its stamp to now.
const SETTLE: &str = concat!(
    server_now!(),
    r"
for _, key in ipairs(KEYS) do
  local stamp = redis.call('ZSCORE', key, ARGV[1])
  if stamp and tonumber(stamp) > now then redis.call('ZADD', key, 'XX', now, ARGV[1]) end
end
return 1
"
);

/// KEYS of the digest scripts: the shared due, first and expiry sets, then the digest's
/// entries, order, meta and next keys.
const DIGEST_ADD: &str = concat!(
    server_now!(),
    keep_shared_sets!(),
    r"
local id, field = ARGV[1], ARGV[2]
local hold = tonumber(ARGV[6])
if redis.call('EXISTS', KEYS[4]) == 1 then
  if redis.call('HEXISTS', KEYS[4], field) == 0 and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[7]) then
    if redis.call('HSETNX', KEYS[6], 'w', '1') == 1 then return 2 end
    return 3
  end
else
  -- The oldest entry joins now; whatever an expired digest left behind goes.
  redis.call('DEL', KEYS[5])
  redis.call('HDEL', KEYS[6], 'w')
  local due = now + tonumber(ARGV[5])
  local next = tonumber(redis.call('GET', KEYS[7]) or 0)
  if next > due then due = next end
  redis.call('HSET', KEYS[6], 'f', now)
  redis.call('ZADD', KEYS[1], due, id)
  redis.call('ZADD', KEYS[2], now, id)
end
if redis.call('HSET', KEYS[4], field, ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[5], redis.call('HINCRBY', KEYS[6], 's', 1), field)
end
redis.call('HSET', KEYS[6], 'h', ARGV[4])
redis.call('ZADD', KEYS[3], now + hold, id)
for i = 4, 6 do redis.call('PEXPIRE', KEYS[i], hold) end
keep(1, 3, hold)
return 1
"
);

/// Answers nil, or {waited ms, header, key, entry, key, entry, …} oldest first.
const DIGEST_TAKE: &str = concat!(
    server_now!(),
    r"
local id = ARGV[1]
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
if redis.call('EXISTS', KEYS[4]) == 0 then return false end
local first = tonumber(redis.call('HGET', KEYS[6], 'f') or now)
local out = {tostring(math.max(0, now - first)), redis.call('HGET', KEYS[6], 'h') or ''}
for _, field in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local entry = redis.call('HGET', KEYS[4], field)
  if entry then
    out[#out + 1] = field
    out[#out + 1] = entry
  end
end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[6], 'h', 'w')
redis.call('HSET', KEYS[6], 't', now)
return out
"
);

/// ARGV: id, interval ms.
const DIGEST_SENT: &str = concat!(
    server_now!(),
    r"
local next = now + tonumber(ARGV[2])
redis.call('SET', KEYS[7], next, 'PX', ARGV[2])
redis.call('HDEL', KEYS[6], 't')
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) < next then redis.call('ZADD', KEYS[1], 'XX', next, ARGV[1]) end
return 1
"
);

/// ARGV: id, retry_in ms, hold ms, waited ms, header, then key and entry of each entry,
/// oldest first.
const DIGEST_PUT_BACK: &str = concat!(
    server_now!(),
    keep_shared_sets!(),
    r"
local id = ARGV[1]
local hold = tonumber(ARGV[3])
local taken = tonumber(redis.call('HGET', KEYS[6], 't') or now)
if taken > now then taken = now end
redis.call('HDEL', KEYS[6], 't')
local first = taken - tonumber(ARGV[4])
local low = 0
if redis.call('EXISTS', KEYS[4]) == 1 then
  local oldest = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if oldest[2] then low = tonumber(oldest[2]) end
  local joined = tonumber(redis.call('HGET', KEYS[6], 'f') or first)
  if joined < first then first = joined end
else
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[6], 'h', ARGV[5])
end
-- The batch joined before whatever was added meanwhile; an entry added meanwhile under
-- the same key keeps its value and takes the batch's place.
local n = (#ARGV - 5) / 2
for i = 1, n do
  local field = ARGV[4 + 2 * i]
  redis.call('HSETNX', KEYS[4], field, ARGV[5 + 2 * i])
  redis.call('ZADD', KEYS[5], low - n - 1 + i, field)
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('HSET', KEYS[6], 'f', first)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
redis.call('ZADD', KEYS[2], first, id)
redis.call('ZADD', KEYS[3], now + hold, id)
for i = 4, 6 do redis.call('PEXPIRE', KEYS[i], hold) end
keep(1, 3, hold)
return 1
"
);

/// KEYS: the shared due, first and expiry sets; ARGV[1]: how many at most.
const DIGEST_DUE: &str = concat!(
    server_now!(),
    forget_expired_digests!(),
    r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
"
);

/// KEYS: the shared due, first and expiry sets. Answers ms, or -1 when nothing is pending.
const DIGEST_OLDEST: &str = concat!(
    server_now!(),
    forget_expired_digests!(),
    r"
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if not oldest[2] then return -1 end
return math.max(0, now - tonumber(oldest[2]))
"
);

pub struct RedisStore {
    client: redis::Client,
    settings: RedisSettings,
    connection: OnceCell<ConnectionManager>,
    claim: Script,
    release: Script,
    pend: Script,
    unpend: Script,
    reserve: Script,
    settle: Script,
    digest_add: Script,
    digest_take: Script,
    digest_sent: Script,
    digest_put_back: Script,
    digest_due: Script,
    digest_oldest: Script,
    card_put_new: Script,
    card_take: Script,
}

impl RedisStore {
    /// Parses the URL; connects on first use (and again after losing the connection).
    pub fn new(settings: &RedisSettings) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(settings.url.expose())?;
        Ok(RedisStore {
            client,
            settings: settings.clone(),
            connection: OnceCell::new(),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            pend: Script::new(PEND),
            unpend: Script::new(UNPEND),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            digest_add: Script::new(DIGEST_ADD),
            digest_take: Script::new(DIGEST_TAKE),
            digest_sent: Script::new(DIGEST_SENT),
            digest_put_back: Script::new(DIGEST_PUT_BACK),
            digest_due: Script::new(DIGEST_DUE),
            digest_oldest: Script::new(DIGEST_OLDEST),
            card_put_new: Script::new(CARD_PUT_NEW),
            card_take: Script::new(CARD_TAKE),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let connect = async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.settings.connect_timeout))
                .set_response_timeout(Some(self.settings.command_timeout))
                .set_number_of_retries(1);
            self.client
                .get_connection_manager_with_config(config)
                .await
                .map_err(StoreError::from)
        };
        let timeout = self.settings.connect_timeout + self.settings.command_timeout;
        let manager = tokio::time::timeout(timeout, self.connection.get_or_try_init(|| connect))
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        Ok(manager.clone())
    }

    /// Runs one operation within `command_timeout`.
    async fn run<T, F>(&self, operation: impl FnOnce(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        let timeout = self.settings.command_timeout;
        tokio::time::timeout(timeout, operation(connection))
            .await
            .map_err(|_| StoreError::Timeout(timeout))?
            .map_err(StoreError::from)
    }

    /// Whether the server answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unexpected(pong))
        }
    }

    fn message_key(&self, key: &DeliveryKey) -> String {
        format!("{}msg:{}", self.settings.key_prefix, hex(key))
    }

    fn rate_key(&self, scope: &str, key: &str) -> String {
        format!("{}rate:{{{scope}}}:{key}", self.settings.key_prefix)
    }

    /// The keys of digest `id`'s scripts: the shared due, first and expiry sets, then its
    /// entries, order, meta and next keys.
    fn digest_keys(&self, id: &str) -> [String; 7] {
        let base = format!("{}digest:{{digests}}:", self.settings.key_prefix);
        [
            format!("{base}due"),
            format!("{base}first"),
            format!("{base}expiry"),
            format!("{base}{id}:entries"),
            format!("{base}{id}:order"),
            format!("{base}{id}:meta"),
            format!("{base}{id}:next"),
        ]
    }

    pub async fn claim(&self, key: &DeliveryKey, hold: Duration) -> Result<Claim, StoreError> {
        let id = ClaimId::new();
        let name = self.message_key(key);
        let answer: i64 = self
            .run(|mut c| async move {
                self.claim
                    .key(name)
                    .arg(format!("c:{}", id.0))
                    .arg(millis(hold, 1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match answer {
            1 => Ok(Claim::Mine(id)),
            2 => Ok(Claim::Accepted),
            3 => Ok(Claim::Held),
            4 => Ok(Claim::Pending),
            other => Err(StoreError::Unexpected(other.to_string())),
        }
    }

    pub async fn accepted(&self, key: &DeliveryKey, window: Duration) -> Result<(), StoreError> {
        let name = self.message_key(key);
        if window.is_zero() {
            return self.run(|mut c| async move { c.del(name).await }).await;
        }
        let millis = millis(window, 1);
        self.run(|mut c| async move { c.pset_ex(name, "a", millis).await })
            .await
    }

    pub async fn release(&self, key: &DeliveryKey, claim: ClaimId) -> Result<(), StoreError> {
        let name = self.message_key(key);
        let _: i64 = self
            .run(|mut c| async move {
                self.release
                    .key(name)
                    .arg(format!("c:{}", claim.0))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    pub async fn pend(&self, key: &DeliveryKey, claim: ClaimId, hold: Duration) -> Result<bool, StoreError> {
        let name = self.message_key(key);
        let answer: i64 = self
            .run(|mut c| async move {
                self.pend
                    .key(name)
                    .arg(format!("c:{}", claim.0))
                    .arg(millis(hold, 1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(answer == 1)
    }

    pub async fn peek(&self, key: &DeliveryKey) -> Result<Recorded, StoreError> {
        let name = self.message_key(key);
        let value: Option<String> = self.run(|mut c| async move { c.get(name).await }).await?;
        Ok(match value.as_deref() {
            None => Recorded::Nothing,
            Some("a") => Recorded::Accepted,
            Some("p") => Recorded::Pending,
            Some(_) => Recorded::Claimed,
        })
    }

    pub async fn unpend(&self, key: &DeliveryKey) -> Result<(), StoreError> {
        let name = self.message_key(key);
        let _: i64 = self
            .run(|mut c| async move { self.unpend.key(name).invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Books `plan` within `scope`, all or none; `Err(over)` names the first key of each
    /// failing check. `id` marks the booking for [`RedisStore::settle`] and
    /// [`RedisStore::unbook`].
    pub(super) async fn book(
        &self,
        scope: &str,
        plan: &Plan<'_>,
        keep: usize,
        in_flight: Duration,
        limits: RateLimits,
        id: u64,
    ) -> Result<Result<(), Vec<String>>, StoreError> {
        if plan.keys.is_empty() {
            return Ok(Ok(()));
        }
        let names: Vec<String> = plan.keys.iter().map(|k| self.rate_key(scope, k)).collect();
        let failing: Vec<usize> = self
            .run(|mut c| async move {
                let mut invocation = self.reserve.prepare_invoke();
                for name in &names {
                    invocation.key(name);
                }
                invocation
                    .arg(limits.per_minute)
                    .arg(limits.per_hour.unwrap_or(0))
                    .arg(millis(limits.margin, 0))
                    .arg(keep)
                    .arg(millis(in_flight, 0))
                    .arg(id.to_string())
                    .arg(plan.checks.len());
                for group in &plan.checks {
                    invocation.arg(group.len());
                    for &k in group {
                        invocation.arg(k + 1);
                    }
                }
                invocation.arg(plan.book.len());
                for &k in &plan.book {
                    invocation.arg(k + 1);
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        if failing.is_empty() {
            return Ok(Ok(()));
        }
        Ok(Err(plan.refused(failing)))
    }

    /// Re-stamps booking `id` of `keys` to the server's now, if that is earlier.
    pub async fn settle(&self, scope: &str, keys: &[String], id: u64) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = keys.iter().map(|k| self.rate_key(scope, k)).collect();
        let _: i64 = self
            .run(|mut c| async move {
                let mut invocation = self.settle.prepare_invoke();
                for name in &names {
                    invocation.key(name);
                }
                invocation.arg(id.to_string()).invoke_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    pub async fn unbook(&self, scope: &str, keys: &[String], id: u64) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(()); // nothing was booked (see `book`)
        }
        let names: Vec<String> = keys.iter().map(|k| self.rate_key(scope, k)).collect();
        self.run(|mut c| async move {
            let mut pipe = redis::pipe();
            for name in &names {
                pipe.zrem(name, id.to_string()).ignore();
            }
            pipe.query_async(&mut c).await
        })
        .await
    }

    /// Adds an entry to a digest (see `PendingDigests::add`); a digest already holding
    /// [`MAX_ENTRIES_PER_DIGEST`] entries takes no more (logged once until it is taken).
    pub async fn digest_add(
        &self,
        id: &str,
        header: &[u8],
        entry_key: &DeliveryKey,
        entry: &[u8],
        interval: Duration,
        hold: Duration,
    ) -> Result<(), StoreError> {
        let keys = self.digest_keys(id);
        let answer: i64 = self
            .run(|mut c| async move {
                let mut invocation = self.digest_add.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation
                    .arg(id)
                    .arg(hex(entry_key))
                    .arg(entry)
                    .arg(header)
                    .arg(millis(interval, 0))
                    .arg(millis(hold, 1))
                    .arg(MAX_ENTRIES_PER_DIGEST)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match answer {
            1 | 3 => Ok(()),
            2 => {
                warn!(
                    "digest {id} is full ({MAX_ENTRIES_PER_DIGEST} entries): further notifications for it are not \
                     collected until it is sent; their pending holds run out and Alertmanager's retries deliver them"
                );
                Ok(())
            }
            other => Err(StoreError::Unexpected(other.to_string())),
        }
    }

    pub async fn digest_take(&self, id: &str) -> Result<Option<DigestBatch>, StoreError> {
        let keys = self.digest_keys(id);
        let answer: Option<Vec<Vec<u8>>> = self
            .run(|mut c| async move {
                let mut invocation = self.digest_take.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation.arg(id).invoke_async(&mut c).await
            })
            .await?;
        let Some(answer) = answer else {
            return Ok(None);
        };
        let unexpected = || StoreError::Unexpected(format!("digest take answered {} items", answer.len()));
        if answer.len() < 2 || answer.len() % 2 != 0 {
            return Err(unexpected());
        }
        let waited: u64 = std::str::from_utf8(&answer[0])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(unexpected)?;
        let mut items = answer.into_iter().skip(1);
        let header = items.next().unwrap_or_default();
        let mut entries = Vec::new();
        while let (Some(key), Some(entry)) = (items.next(), items.next()) {
            let key = unhex(&key).ok_or_else(|| StoreError::Unexpected("digest entry key".into()))?;
            entries.push((key, entry));
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(DigestBatch {
            id: id.to_string(),
            header,
            entries,
            waited: Duration::from_millis(waited),
        }))
    }

    pub async fn digest_sent(&self, id: &str, interval: Duration) -> Result<(), StoreError> {
        let keys = self.digest_keys(id);
        let _: i64 = self
            .run(|mut c| async move {
                let mut invocation = self.digest_sent.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation
                    .arg(id)
                    .arg(millis(interval, 1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    pub async fn digest_put_back(
        &self,
        batch: &DigestBatch,
        retry_in: Duration,
        hold: Duration,
    ) -> Result<(), StoreError> {
        if batch.entries.is_empty() {
            return Ok(());
        }
        let keys = self.digest_keys(&batch.id);
        let _: i64 = self
            .run(|mut c| async move {
                let mut invocation = self.digest_put_back.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                invocation
                    .arg(&batch.id)
                    .arg(millis(retry_in, 0))
                    .arg(millis(hold, 1))
                    .arg(millis(batch.waited, 0))
                    .arg(&batch.header[..]);
                for (key, entry) in &batch.entries {
                    invocation.arg(hex(key)).arg(&entry[..]);
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    pub async fn digests_due(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.digest_keys("");
        self.run(|mut c| async move {
            self.digest_due
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(limit)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    pub async fn oldest_pending_digest(&self) -> Result<Option<Duration>, StoreError> {
        let keys = self.digest_keys("");
        let millis: i64 = self
            .run(|mut c| async move {
                self.digest_oldest
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(u64::try_from(millis).ok().map(Duration::from_millis))
    }

    fn card_key(&self, key: &str) -> String {
        format!("{}card:{key}", self.settings.key_prefix)
    }

    pub async fn card_put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let name = self.card_key(key);
        let millis = millis(ttl, 1);
        self.run(|mut c| async move { c.pset_ex(name, value, millis).await })
            .await
    }

    pub async fn card_put_new(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Vec<u8>, StoreError> {
        let name = self.card_key(key);
        self.run(|mut c| async move {
            self.card_put_new
                .key(name)
                .arg(value)
                .arg(millis(ttl, 1))
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    pub async fn card_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = self.card_key(key);
        self.run(|mut c| async move { c.get(name).await }).await
    }

    pub async fn card_take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = self.card_key(key);
        self.run(|mut c| async move { self.card_take.key(name).invoke_async(&mut c).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_keys_go_to_hex_and_back() {
        let key: DeliveryKey = *b"\x00\x01\xfe\xffabcdefghijkl";
        assert_eq!(hex(&key), "0001feff6162636465666768696a6b6c");
        assert_eq!(unhex(hex(&key).as_bytes()), Some(key));
        assert_eq!(unhex(b"00"), None);
        assert_eq!(unhex(b"zz01feff6162636465666768696a6b6c"), None);
    }
}
