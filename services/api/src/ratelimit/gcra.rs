//! The Generic Cell Rate Algorithm in one Lua script, so every api replica shares each bucket and
//! a check-and-take is atomic. A bucket is one Redis key holding its "theoretical arrival time";
//! it expires once the bucket would be full again, so idle clients cost nothing.

use redis::Script;
use redis::aio::ConnectionManager;
use shared::config::RateRule;

/// KEYS: bucket. ARGV: requests (also the burst), period in ms.
/// Returns {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA: &str = r"
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local reset = math.ceil(new_tat - now)
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', reset)
return {1, math.floor((period - (new_tat - now)) / interval + 1e-6), 0, reset}
";

/// The outcome of one request against a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    /// Until the next request would be allowed (0 when allowed).
    pub retry_after_ms: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
}

#[derive(Clone)]
pub struct Gcra {
    script: Script,
}

impl std::fmt::Debug for Gcra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gcra")
    }
}

impl Default for Gcra {
    fn default() -> Self {
        Self {
            script: Script::new(GCRA),
        }
    }
}

impl Gcra {
    /// Takes one request from `key`'s bucket under `rule`.
    pub async fn take(
        &self,
        redis: &ConnectionManager,
        key: &str,
        rule: RateRule,
    ) -> Result<Decision, redis::RedisError> {
        let mut conn = redis.clone();
        let (allowed, remaining, retry_after_ms, reset_ms): (i64, i64, i64, i64) = self
            .script
            .key(key)
            .arg(rule.requests.max(1))
            .arg(u64::from(rule.per_seconds.max(1)) * 1000)
            .invoke_async(&mut conn)
            .await?;
        let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Decision {
            allowed: allowed == 1,
            limit: rule.requests,
            remaining: non_negative(remaining),
            retry_after_ms: non_negative(retry_after_ms),
            reset_ms: non_negative(reset_ms),
        })
    }
}
