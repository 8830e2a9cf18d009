//! The scheduler's leader lease: one document `{_id: "scheduler", owner, expires_at}` in `locks`.
//!
//! Taking or renewing it is one conditional upsert: it matches only if this replica owns the
//! lease or it has expired. When another replica holds a live lease the filter misses, the upsert
//! tries to insert a second `_id: "scheduler"` and the unique `_id` index refuses it.
//!
//! The holder renews only once a third of the lease has passed, not on every scheduling pass:
//! a pass runs on every queued or finished execution, and a write per pass would cost the
//! database more than the scheduling itself. Two thirds of the lease are always left when the
//! holder acts on it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};

use crate::store::{LOCKS_COLLECTION, is_duplicate_key};

pub const SCHEDULER_LOCK: &str = "scheduler";

#[derive(Debug, Clone)]
pub struct Lease {
    locks: Collection<Document>,
    owner: String,
    ttl: Duration,
    /// When this replica last took or renewed the lease (measured before the write).
    renewed_at: Arc<Mutex<Option<Instant>>>,
}

impl Lease {
    pub fn new(db: &Database, owner: String, ttl: Duration) -> Self {
        Self {
            locks: db.collection(LOCKS_COLLECTION),
            owner,
            ttl,
            renewed_at: Arc::new(Mutex::new(None)),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes or renews the lease; `Ok(false)` while another replica holds it.
    pub async fn acquire(&self) -> Result<bool, mongodb::error::Error> {
        let started = Instant::now();
        if self
            .renewed()
            .is_some_and(|at| started.duration_since(at) < self.ttl / 3)
        {
            return Ok(true);
        }
        self.set_renewed(None);
        let now = DateTime::now();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = DateTime::from_millis(now.timestamp_millis().saturating_add(ttl_ms));
        let result = self
            .locks
            .update_one(
                doc! {
                    "_id": SCHEDULER_LOCK,
                    "$or": [ { "owner": &self.owner }, { "expires_at": { "$lt": now } } ],
                },
                doc! { "$set": { "owner": &self.owner, "expires_at": expires_at } },
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => {
                self.set_renewed(Some(started));
                Ok(true)
            }
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn renewed(&self) -> Option<Instant> {
        *self
            .renewed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_renewed(&self, at: Option<Instant>) {
        *self
            .renewed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Gives the lease up (on shutdown), so another replica takes over at once rather than after
    /// the lease expires.
    pub async fn release(&self) -> Result<(), mongodb::error::Error> {
        self.set_renewed(None);
        self.locks
            .delete_one(doc! { "_id": SCHEDULER_LOCK, "owner": &self.owner })
            .await
            .map(|_| ())
    }
}
