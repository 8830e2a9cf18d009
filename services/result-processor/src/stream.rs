//! The Redis fan-out: each execution's stream (`{prefix}exec:{id}:stream`) that the api's SSE
//! reads, see `docs/design/execution-pipeline.md`.
//!
//! Appends are de-duplicated, because the consumer is at-least-once: a hash next to the stream
//! (`{prefix}exec:{id}:seen`) remembers what was appended (each status once, the last output
//! `seq` per stream, the result once). A Lua script checks the hash, appends and records in one
//! atomic step, so a redelivered message (or two racing workers) never adds an entry twice.
//! Once the `result` entry is in, nothing else is appended: the SSE stream ends there, and the
//! result carries the whole output anyway.

use redis::Script;
use redis::aio::ConnectionManager;
use shared::executions::stream;

/// KEYS: stream, seen hash. ARGV: dedupe field, seq ('' = append once), maxlen, ttl, then
/// (type, data) pairs. Returns 1 when it appended, 0 when it was a duplicate.
const APPEND: &str = r"
if redis.call('HEXISTS', KEYS[2], 'result') == 1 then return 0 end
if ARGV[2] == '' then
  if redis.call('HSETNX', KEYS[2], ARGV[1], '1') == 0 then return 0 end
else
  local last = redis.call('HGET', KEYS[2], ARGV[1])
  if last and tonumber(last) >= tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
for i = 5, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'type', ARGV[i], 'data', ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
";

/// The dedupe field of the final entry; its presence closes the stream to further appends.
pub const RESULT_FIELD: &str = "result";
/// Marks that `result_stored` was published for the stored result.
const PUBLISHED_FIELD: &str = "published:result_stored";

/// What an append is de-duplicated on.
#[derive(Debug, Clone, Copy)]
pub enum Dedupe<'a> {
    /// Appended at most once per execution under this name.
    Once(&'a str),
    /// Appended only if `seq` is above the last one appended under this name.
    Seq(&'a str, u64),
}

#[derive(Clone)]
pub struct StreamWriter {
    redis: ConnectionManager,
    key_prefix: String,
    script: Script,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    pub fn new(redis: ConnectionManager, key_prefix: String) -> Self {
        Self {
            redis,
            key_prefix,
            script: Script::new(APPEND),
        }
    }

    pub fn seen_key(&self, execution_id: &str) -> String {
        format!("{}exec:{execution_id}:seen", self.key_prefix)
    }

    /// Appends `entries` (type, JSON data) unless `dedupe` says they were appended already.
    pub async fn append(
        &self,
        execution_id: &str,
        dedupe: Dedupe<'_>,
        entries: &[(&str, String)],
    ) -> Result<bool, redis::RedisError> {
        let (field, seq) = match dedupe {
            Dedupe::Once(field) => (field.to_owned(), String::new()),
            Dedupe::Seq(field, seq) => (field.to_owned(), seq.to_string()),
        };
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(stream::key(&self.key_prefix, execution_id))
            .key(self.seen_key(execution_id))
            .arg(field)
            .arg(seq)
            .arg(stream::MAX_LEN)
            .arg(stream::TTL_SECONDS);
        for (kind, data) in entries {
            invocation.arg(*kind).arg(data);
        }
        let mut conn = self.redis.clone();
        let appended: i64 = invocation.invoke_async(&mut conn).await?;
        if appended == 1 {
            for (kind, _) in entries {
                ::metrics::counter!(crate::metrics::STREAM_ENTRIES, "type" => (*kind).to_owned())
                    .increment(1);
            }
        }
        Ok(appended == 1)
    }

    /// Whether `result_stored` was already published for this execution.
    pub async fn result_published(&self, execution_id: &str) -> Result<bool, redis::RedisError> {
        let mut conn = self.redis.clone();
        redis::cmd("HEXISTS")
            .arg(self.seen_key(execution_id))
            .arg(PUBLISHED_FIELD)
            .query_async(&mut conn)
            .await
    }

    pub async fn mark_result_published(&self, execution_id: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        let key = self.seen_key(execution_id);
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(PUBLISHED_FIELD)
            .arg("1")
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(stream::TTL_SECONDS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }
}
