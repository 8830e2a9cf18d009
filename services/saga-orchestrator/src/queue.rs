//! The scheduling order of queued sagas, kept in memory by the replica that schedules.
//!
//! Asking MongoDB for "queued, by priority then age" on every pass re-reads and re-sorts the
//! whole queue to grant a slot or two; with a backlog of hundreds that query costs more than
//! everything else an execution does. So the order lives here instead: the consumer adds each
//! saga it creates, and the scheduler re-reads the queue from MongoDB now and then (and when it
//! becomes leader) to learn about sagas created by other replicas. MongoDB stays the truth: an
//! entry is only a candidate, and the scheduler's conditional update `queued → scheduled`
//! decides. Entries whose saga has moved on (cancelled, scheduled elsewhere) are dropped when
//! the scheduler meets them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::SagaDoc;

/// Position in the queue: priority (high first), submission time, then id (a stable tie-break).
pub type QueueKey = (Reverse<i32>, i64, String);

/// One queued saga, as the scheduler needs it to choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: String,
    pub user_id: String,
    pub priority: i32,
    /// Submission time, ms since the epoch.
    pub enqueued_at: i64,
}

impl Queued {
    fn key(&self) -> QueueKey {
        (Reverse(self.priority), self.enqueued_at, self.id.clone())
    }
}

/// Sagas kept whole beside their entries at the most (each holds its script).
const MAX_SNAPSHOTS: usize = 1024;

#[derive(Debug, Default)]
pub struct ReadyQueue {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<QueueKey, Queued>,
    /// The saga as this replica inserted it, so scheduling it needs no read. Only a copy: the
    /// scheduler's conditional update still decides whether it is queued.
    snapshots: HashMap<String, Arc<SagaDoc>>,
}

impl ReadyQueue {
    pub fn push(&self, saga: Queued) {
        let mut inner = self.lock();
        inner.entries.insert(saga.key(), saga);
    }

    /// Adds a saga this replica just inserted, with the document it inserted.
    pub fn push_inserted(&self, saga: Queued, doc: SagaDoc) {
        let mut inner = self.lock();
        if inner.snapshots.len() < MAX_SNAPSHOTS {
            inner.snapshots.insert(saga.id.clone(), Arc::new(doc));
        }
        inner.entries.insert(saga.key(), saga);
    }

    /// The inserted document of a queued saga, when this replica has it.
    pub fn snapshot(&self, id: &str) -> Option<Arc<SagaDoc>> {
        self.lock().snapshots.get(id).cloned()
    }

    /// Adds what a read of MongoDB found (entries already here stay: a saga inserted while the
    /// read ran must not be lost).
    pub fn merge(&self, sagas: impl IntoIterator<Item = Queued>) {
        let mut inner = self.lock();
        for saga in sagas {
            inner.entries.insert(saga.key(), saga);
        }
    }

    pub fn remove(&self, saga: &Queued) {
        let mut inner = self.lock();
        inner.entries.remove(&saga.key());
        inner.snapshots.remove(&saga.id);
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.snapshots.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Every entry in scheduling order (a copy: the scheduler awaits between candidates).
    pub fn in_order(&self) -> Vec<Queued> {
        self.lock().entries.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga(id: &str, priority: i32, enqueued_at: i64) -> Queued {
        Queued {
            id: id.into(),
            user_id: "u".into(),
            priority,
            enqueued_at,
        }
    }

    #[test]
    fn higher_priority_first_then_oldest_first() {
        let queue = ReadyQueue::default();
        queue.push(saga("a", 0, 1));
        queue.push(saga("b", 5, 3));
        queue.push(saga("c", 5, 2));
        queue.push(saga("d", 0, 0));
        let order: Vec<String> = queue.in_order().into_iter().map(|s| s.id).collect();
        assert_eq!(order, ["c", "b", "d", "a"]);
    }

    #[test]
    fn merging_keeps_entries_and_does_not_duplicate() {
        let queue = ReadyQueue::default();
        queue.push(saga("a", 0, 1));
        queue.merge([saga("a", 0, 1), saga("b", 0, 2)]);
        assert_eq!(queue.len(), 2);
        queue.remove(&saga("a", 0, 1));
        assert_eq!(queue.in_order(), [saga("b", 0, 2)]);
    }

    #[test]
    fn a_snapshot_lives_as_long_as_its_entry() {
        let queue = ReadyQueue::default();
        let doc: SagaDoc = mongodb::bson::from_document(mongodb::bson::doc! {
            "_id": "a", "state": "queued", "updated_at": mongodb::bson::DateTime::now(),
        })
        .unwrap();
        queue.push_inserted(saga("a", 0, 1), doc);
        assert_eq!(
            queue.snapshot("a").map(|doc| doc.id.clone()).as_deref(),
            Some("a")
        );
        queue.remove(&saga("a", 0, 1));
        assert!(queue.snapshot("a").is_none());
        assert!(queue.is_empty());
    }
}
