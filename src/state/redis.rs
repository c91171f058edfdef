//! Delivery state in Redis (or any Redis-protocol server: Valkey, managed offerings), so
//! that every replica sees the same record of accepted messages, the same claims and the
//! same rate budgets. Each operation is one round trip; claims and multi-key budget
//! reservations are Lua scripts, atomic on the server, and rate windows are counted by the
//! server's clock (`TIME`), not each pod's. Every key has a TTL.
//!
//! Keys (`P` is `key_prefix`): `Pmsg:HEX` holds `c:ID` while claimed and `a` once accepted;
//! `Prate:{SCOPE}:KEY` is a sorted set of bookings scored by the server's time in ms (the
//! braces keep one scope's keys in one Redis Cluster slot, as a multi-key script needs).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::OnceCell;

use super::ledger::{Claim, ClaimId, DeliveryKey};
use super::rate_budget::RateLimits;
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

const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'a' then return 2 end
return 3
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Books ARGV[3] in every key unless one of them is over its limits; answers the 1-based
/// indices of the keys over budget (none: booked).
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_minute = tonumber(ARGV[1])
local per_hour = tonumber(ARGV[2])
local over = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 3600000)
  local minute = redis.call('ZCOUNT', key, '(' .. (now - 60000), '+inf')
  if minute >= per_minute or (per_hour > 0 and redis.call('ZCARD', key) >= per_hour) then
    table.insert(over, i)
  end
end
if #over > 0 then return over end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, 3600000)
end
return {}
";

pub struct RedisStore {
    client: redis::Client,
    settings: RedisSettings,
    connection: OnceCell<ConnectionManager>,
    claim: Script,
    release: Script,
    reserve: Script,
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
            reserve: Script::new(RESERVE),
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
        use std::fmt::Write;
        let mut name = String::with_capacity(self.settings.key_prefix.len() + 4 + 2 * key.len());
        name.push_str(&self.settings.key_prefix);
        name.push_str("msg:");
        for byte in key {
            let _ = write!(name, "{byte:02x}");
        }
        name
    }

    fn rate_key(&self, scope: &str, key: &str) -> String {
        format!("{}rate:{{{scope}}}:{key}", self.settings.key_prefix)
    }

    pub async fn claim(&self, key: &DeliveryKey, hold: Duration) -> Result<Claim, StoreError> {
        let id = ClaimId::new();
        let name = self.message_key(key);
        let answer: i64 = self
            .run(|mut c| async move {
                self.claim
                    .key(name)
                    .arg(format!("c:{}", id.0))
                    .arg(hold.as_millis().max(1) as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match answer {
            1 => Ok(Claim::Mine(id)),
            2 => Ok(Claim::Accepted),
            3 => Ok(Claim::Held),
            other => Err(StoreError::Unexpected(other.to_string())),
        }
    }

    pub async fn accepted(&self, key: &DeliveryKey, window: Duration) -> Result<(), StoreError> {
        let name = self.message_key(key);
        if window.is_zero() {
            return self.run(|mut c| async move { c.del(name).await }).await;
        }
        let millis = window.as_millis() as u64;
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

    /// Books a message for every key of `scope`, all or none; `Err(over)` names the keys
    /// out of budget. `id` marks the booking for [`RedisStore::unbook`].
    pub async fn book(
        &self,
        scope: &str,
        keys: &[String],
        limits: RateLimits,
        id: u64,
    ) -> Result<Result<(), Vec<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Ok(()));
        }
        let names: Vec<String> = keys.iter().map(|k| self.rate_key(scope, k)).collect();
        let over: Vec<usize> = self
            .run(|mut c| async move {
                let mut invocation = self.reserve.prepare_invoke();
                for name in &names {
                    invocation.key(name);
                }
                invocation
                    .arg(limits.per_minute)
                    .arg(limits.per_hour.unwrap_or(0))
                    .arg(id.to_string())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if over.is_empty() {
            return Ok(Ok(()));
        }
        Ok(Err(over
            .into_iter()
            .filter_map(|i| keys.get(i.wrapping_sub(1)).cloned())
            .collect()))
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
}
