//! Login lockout: `rate_limit.lockout_failures` failed sign-ins of one username within
//! `lockout_window_seconds` lock it for `lockout_seconds` (423 `account_locked`, with the unlock
//! time in `locked_until`). Counted in Redis, so every replica sees the same lock; unknown
//! usernames are counted too, so the answer does not reveal which accounts exist.

use chrono::{DateTime, Utc};
use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use shared::config::RateLimitConfig;

use crate::error::ApiError;

/// KEYS: failures counter, lock. ARGV: window ms, failures, lock ms, now ms.
/// Returns the unlock time in ms when this failure locked the account, else 0.
const FAIL: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  local until_ms = tonumber(ARGV[4]) + tonumber(ARGV[3])
  redis.call('SET', KEYS[2], until_ms, 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return until_ms
end
return 0
";

#[derive(Clone)]
pub struct Lockout {
    config: RateLimitConfig,
    key_prefix: String,
    script: Script,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout").finish_non_exhaustive()
    }
}

fn locked(until: DateTime<Utc>) -> ApiError {
    let at = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ApiError::new(
        axum::http::StatusCode::LOCKED,
        "account_locked",
        format!("too many failed sign-ins; try again after {at}"),
    )
    .with_field("locked_until", at)
}

impl Lockout {
    pub fn new(config: RateLimitConfig, key_prefix: String) -> Self {
        Self {
            config,
            key_prefix,
            script: Script::new(FAIL),
        }
    }

    /// Keys hold a hash of the username: it is attacker-chosen text of any length.
    fn keys(&self, username: &str) -> (String, String) {
        let digest = Sha256::digest(username.as_bytes());
        let id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        (
            format!("{}lockout:{id}:failures", self.key_prefix),
            format!("{}lockout:{id}:locked", self.key_prefix),
        )
    }

    /// 423 while `username` is locked. Like the rate limits, the lockout fails open: with Redis
    /// unreachable a sign-in is still checked against the password, and a warning says the
    /// lockout is not being enforced.
    pub async fn check(&self, redis: &ConnectionManager, username: &str) -> Result<(), ApiError> {
        let (_, lock) = self.keys(username);
        let mut conn = redis.clone();
        let until: Option<i64> = match redis::cmd("GET").arg(&lock).query_async(&mut conn).await {
            Ok(until) => until,
            Err(error) => return not_enforced(&error),
        };
        match until.and_then(DateTime::<Utc>::from_timestamp_millis) {
            Some(until) if until > Utc::now() => Err(locked(until)),
            _ => Ok(()),
        }
    }

    /// Records a failed sign-in; the failure that reaches the limit answers 423 itself.
    pub async fn failed(&self, redis: &ConnectionManager, username: &str) -> Result<(), ApiError> {
        let (failures, lock) = self.keys(username);
        let mut conn = redis.clone();
        let counted: Result<i64, _> = self
            .script
            .key(failures)
            .key(lock)
            .arg(self.config.lockout_window_seconds.saturating_mul(1000))
            .arg(self.config.lockout_failures)
            .arg(self.config.lockout_seconds.saturating_mul(1000))
            .arg(Utc::now().timestamp_millis())
            .invoke_async(&mut conn)
            .await;
        let until = match counted {
            Ok(until) => until,
            Err(error) => return not_enforced(&error),
        };
        match DateTime::<Utc>::from_timestamp_millis(until).filter(|_| until > 0) {
            Some(until) => {
                tracing::warn!("sign-in locked after repeated failures");
                Err(locked(until))
            }
            None => Ok(()),
        }
    }

    /// A successful sign-in forgets the failures.
    pub async fn succeeded(
        &self,
        redis: &ConnectionManager,
        username: &str,
    ) -> Result<(), ApiError> {
        let (failures, _) = self.keys(username);
        let mut conn = redis.clone();
        match redis::cmd("DEL")
            .arg(failures)
            .query_async::<()>(&mut conn)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => not_enforced(&error),
        }
    }
}

fn not_enforced(error: &redis::RedisError) -> Result<(), ApiError> {
    tracing::warn!(%error, "login lockout not enforced: Redis is unreachable");
    Ok(())
}
