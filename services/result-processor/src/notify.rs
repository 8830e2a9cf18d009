//! The `execution_finished` notification, created where the terminal result is stored: once
//! per execution however often the terminal event is delivered. MongoDB keeps the notification
//! (a unique index on execution and kind makes the insert idempotent); the user's Redis stream
//! carries it to the api replica that holds the user's SSE stream, appended at most once per
//! execution by a Lua script (check, append and record in one step).

use mongodb::bson::{self, doc};
use mongodb::{Collection, Database};
use redis::Script;
use redis::aio::ConnectionManager;
use shared::executions::ExecutionDoc;
use shared::mongo::batch::{BatchError, InsertBatcher, Inserted};
use shared::notifications::{
    EXECUTION_FINISHED, NOTIFICATIONS_COLLECTION, Notification, NotificationDoc, stream,
};

/// KEYS: stream, seen hash. ARGV: execution id, maxlen, ttl, data. 1 = appended, 0 = duplicate.
const APPEND_ONCE: &str = r"
if redis.call('HSETNX', KEYS[2], ARGV[1], '1') == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("storing the notification failed")]
    Mongo(#[from] mongodb::error::Error),
    #[error("storing the notification failed")]
    Batch(#[from] BatchError),
    #[error("encoding the notification failed")]
    Encode(#[from] bson::ser::Error),
    #[error("encoding the notification failed")]
    Json(#[from] serde_json::Error),
    #[error("appending the notification to the user's stream failed")]
    Redis(#[from] redis::RedisError),
    #[error("the notification of execution {0} vanished after its insert")]
    Vanished(String),
}

/// Notifications inserted in one command at the most.
const MAX_BATCH: usize = 256;

#[derive(Clone)]
pub struct Notifier {
    collection: Collection<NotificationDoc>,
    /// The inserts of results stored at the same time share a command.
    inserts: InsertBatcher,
    redis: ConnectionManager,
    key_prefix: String,
    script: Script,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the insert batcher (a task): call from within the runtime.
    pub fn new(db: &Database, redis: ConnectionManager, key_prefix: String) -> Self {
        Self {
            collection: db.collection(NOTIFICATIONS_COLLECTION),
            inserts: InsertBatcher::spawn(db.collection(NOTIFICATIONS_COLLECTION), MAX_BATCH),
            redis,
            key_prefix,
            script: Script::new(APPEND_ONCE),
        }
    }

    /// The index that makes the insert idempotent; safe to call on every start.
    pub async fn ensure_indexes(db: &Database) -> Result<(), shared::mongo::MongoError> {
        shared::mongo::ensure_indexes(
            db,
            NOTIFICATIONS_COLLECTION,
            shared::notifications::indexes(),
        )
        .await
    }

    /// Notifies the execution's user that it ended. Idempotent: a redelivery (or a retry after
    /// a crash between the two writes) finds the stored notification and appends it only if it
    /// is not in the stream yet.
    pub async fn execution_finished(&self, execution: &ExecutionDoc) -> Result<(), NotifyError> {
        if !execution.status.is_terminal() || execution.user_id.is_empty() {
            return Ok(());
        }
        let fresh = NotificationDoc::execution_finished(execution, chrono::Utc::now());
        // Nearly always the first delivery: insert, and read only when the unique index says a
        // notification of this execution exists already (its id must be the one sent).
        let stored = match self.inserts.insert(bson::to_document(&fresh)?).await? {
            Inserted::New => fresh,
            Inserted::Duplicate => self
                .collection
                .find_one(doc! { "execution_id": &execution.id, "kind": EXECUTION_FINISHED })
                .await?
                .ok_or_else(|| NotifyError::Vanished(execution.id.clone()))?,
        };
        let user_id = stored.user_id.clone();
        let data = serde_json::to_string(&Notification::from(stored))?;
        let mut conn = self.redis.clone();
        let appended: i64 = self
            .script
            .key(stream::key(&self.key_prefix, &user_id))
            .key(stream::seen_key(&self.key_prefix, &user_id))
            .arg(&execution.id)
            .arg(stream::MAX_LEN)
            .arg(stream::TTL_SECONDS)
            .arg(data)
            .invoke_async(&mut conn)
            .await?;
        if appended == 1 {
            tracing::debug!(execution_id = %execution.id, "notification sent");
        }
        Ok(())
    }
}
