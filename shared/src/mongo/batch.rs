//! Group commit for small writes: many callers, one MongoDB command.
//!
//! Consumers handle partitions in parallel and each waits for its own write before it stores
//! its offset. Sent one by one, those writes cost a round trip and a server-side command each;
//! under load the server's per-command overhead, not the data, becomes the limit. A batcher
//! collects whatever writes are waiting while the previous command is in flight and sends them
//! as one `insert`/`update` command, then answers each caller with its own outcome. An idle
//! batcher sends a lone write at once, so batching adds no latency at low load.
//!
//! A writer off the latency path (an outbox mark, a status on its way to being superseded) can
//! ask the batcher to *linger*: hold a batch that long for more writes to join it. At a steady
//! rate that turns one command per write into one per linger period. A write on the latency path
//! submitted to a lingering batcher ([`UpdateBatcher::update_now`]) ends the wait: the batch
//! goes at once, with the lingering writes ahead of it, so their order is kept.
//!
//! Durability is unchanged: a caller's future resolves only after the server acknowledged the
//! command that carried its write.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};
use tokio::sync::{mpsc, oneshot};

use super::DUPLICATE_KEY;

/// Writes queued at most; a caller waits for room beyond it (backpressure).
const QUEUE: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("the batched command failed: {0}")]
    Command(String),
    #[error("write rejected (code {code}): {message}")]
    Write { code: i32, message: String },
    #[error("the batcher has stopped")]
    Stopped,
}

/// What happened to one inserted document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// A document with the same unique key exists: for idempotent writers, already done.
    Duplicate,
}

/// One update statement, as in MongoDB's `update` command.
#[derive(Debug, Clone)]
pub struct UpdateStatement {
    pub filter: Document,
    pub update: Document,
    pub upsert: bool,
}

/// How many documents one update statement matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched(pub bool);

type Reply<T> = oneshot::Sender<Result<T, BatchError>>;

/// A queued write: the item, whether it may wait for company, and where its outcome goes.
type Queued<I, T> = (I, Pace, Reply<T>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// May wait out the batcher's linger.
    Lingering,
    /// Sent with the next command: ends a lingering batch's wait.
    Now,
}

/// Batches `insert_one`s into `insert_many` (unordered: one bad document fails only itself).
#[derive(Debug, Clone)]
pub struct InsertBatcher {
    queue: mpsc::Sender<Queued<Document, Inserted>>,
}

impl InsertBatcher {
    /// Starts the batcher's task; it ends when the last clone is dropped.
    pub fn spawn(collection: Collection<Document>, max_batch: usize) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(
            receiver,
            max_batch.max(1),
            Duration::ZERO,
            move |docs| {
                let collection = collection.clone();
                async move { insert_batch(&collection, docs).await }
            },
        ));
        Self { queue }
    }

    pub async fn insert(&self, document: Document) -> Result<Inserted, BatchError> {
        submit(&self.queue, document, Pace::Now).await
    }
}

/// Batches single-document updates into one `update` command. Statements on one collection
/// are applied in the order they were submitted (the command is ordered), so two updates of one
/// document keep their order; a failed statement fails itself and those after it in its batch.
#[derive(Debug, Clone)]
pub struct UpdateBatcher {
    queue: mpsc::Sender<Queued<UpdateStatement, Matched>>,
}

impl UpdateBatcher {
    pub fn spawn(db: Database, collection: &str, max_batch: usize) -> Self {
        Self::spawn_lingering(db, collection, max_batch, Duration::ZERO)
    }

    /// Like [`UpdateBatcher::spawn`], holding each batch up to `linger` for more updates.
    pub fn spawn_lingering(
        db: Database,
        collection: &str,
        max_batch: usize,
        linger: Duration,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let collection = collection.to_owned();
        tokio::spawn(run(receiver, max_batch.max(1), linger, move |statements| {
            let db = db.clone();
            let collection = collection.clone();
            async move { update_batch(&db, &collection, statements).await }
        }));
        Self { queue }
    }

    /// Applies `update` to the document matching `filter`; `Matched(false)` if none did. On a
    /// lingering batcher it may wait out the linger.
    pub async fn update_one(
        &self,
        filter: Document,
        update: Document,
    ) -> Result<Matched, BatchError> {
        submit(&self.queue, single(filter, update), Pace::Lingering).await
    }

    /// Like [`UpdateBatcher::update_one`], without lingering: the batch it joins goes at once,
    /// after the writes submitted before it.
    pub async fn update_now(
        &self,
        filter: Document,
        update: Document,
    ) -> Result<Matched, BatchError> {
        submit(&self.queue, single(filter, update), Pace::Now).await
    }

    pub async fn submit(&self, statement: UpdateStatement) -> Result<Matched, BatchError> {
        submit(&self.queue, statement, Pace::Lingering).await
    }
}

fn single(filter: Document, update: Document) -> UpdateStatement {
    UpdateStatement {
        filter,
        update,
        upsert: false,
    }
}

async fn submit<I, T>(
    queue: &mpsc::Sender<Queued<I, T>>,
    item: I,
    pace: Pace,
) -> Result<T, BatchError> {
    let (reply, answer) = oneshot::channel();
    queue
        .send((item, pace, reply))
        .await
        .map_err(|_| BatchError::Stopped)?;
    answer.await.map_err(|_| BatchError::Stopped)?
}

/// Takes what is waiting (up to `max_batch`, after lingering for more unless a write is due
/// now), sends it as one command, answers, repeats.
async fn run<I, T, F, Fut>(
    mut receiver: mpsc::Receiver<Queued<I, T>>,
    max_batch: usize,
    linger: Duration,
    send: F,
) where
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = Vec<Result<T, BatchError>>>,
{
    let mut waiting = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut waiting, max_batch).await > 0 {
        if !linger.is_zero() {
            linger_for_more(&mut receiver, &mut waiting, max_batch, linger).await;
        }
        let mut items = Vec::with_capacity(waiting.len());
        let mut replies = Vec::with_capacity(waiting.len());
        for (item, _, reply) in waiting.drain(..) {
            items.push(item);
            replies.push(reply);
        }
        let outcomes = send(items).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // An error here means the caller gave up (its task was cancelled): nobody to tell.
            if reply.send(outcome).is_err() {
                tracing::trace!("a batched write's caller went away before its answer");
            }
        }
    }
}

/// Adds writes to `waiting` until the linger is over, the batch is full, or a write is due now.
async fn linger_for_more<I, T>(
    receiver: &mut mpsc::Receiver<Queued<I, T>>,
    waiting: &mut Vec<Queued<I, T>>,
    max_batch: usize,
    linger: Duration,
) {
    let due_now =
        |waiting: &Vec<Queued<I, T>>| waiting.iter().any(|(_, pace, _)| *pace == Pace::Now);
    let deadline = tokio::time::sleep(linger);
    tokio::pin!(deadline);
    while waiting.len() < max_batch && !due_now(waiting) {
        tokio::select! {
            () = &mut deadline => return,
            received = receiver.recv() => match received {
                Some(item) => waiting.push(item),
                None => return,
            },
        }
    }
}

async fn insert_batch(
    collection: &Collection<Document>,
    docs: Vec<Document>,
) -> Vec<Result<Inserted, BatchError>> {
    let count = docs.len();
    let mut outcomes = vec![Ok(Inserted::New); count];
    if let Err(error) = collection.insert_many(docs).ordered(false).await {
        match error.kind.as_ref() {
            mongodb::error::ErrorKind::InsertMany(failure)
                if failure.write_concern_error.is_none() =>
            {
                for write in failure.write_errors.iter().flatten() {
                    if let Some(slot) = outcomes.get_mut(write.index) {
                        *slot = if write.code == DUPLICATE_KEY {
                            Ok(Inserted::Duplicate)
                        } else {
                            Err(BatchError::Write {
                                code: write.code,
                                message: write.message.clone(),
                            })
                        };
                    }
                }
            }
            _ => outcomes = vec![Err(BatchError::Command(error.to_string())); count],
        }
    }
    outcomes
}

async fn update_batch(
    db: &Database,
    collection: &str,
    statements: Vec<UpdateStatement>,
) -> Vec<Result<Matched, BatchError>> {
    let count = statements.len();
    let updates: Vec<Bson> = statements
        .into_iter()
        .map(|s| Bson::Document(doc! { "q": s.filter, "u": s.update, "upsert": s.upsert }))
        .collect();
    let command = doc! { "update": collection, "updates": updates, "ordered": true };
    let reply = match db.run_command(command).await {
        Ok(reply) => reply,
        Err(error) => return vec![Err(BatchError::Command(error.to_string())); count],
    };
    update_outcomes(&reply, count)
}

/// Per-statement outcomes from an ordered `update` reply. The reply counts matches for the whole
/// batch only, so a statement is known to have matched only when every statement did; otherwise
/// each is reported as unmatched, and callers that need certainty read the document back.
fn update_outcomes(reply: &Document, count: usize) -> Vec<Result<Matched, BatchError>> {
    // `n` counts matched and upserted documents alike.
    let matched = reply.get_i32("n").unwrap_or_default();
    let all = usize::try_from(matched).is_ok_and(|n| n >= count);
    let mut outcomes = vec![Ok(Matched(all)); count];
    if let Ok(errors) = reply.get_array("writeErrors") {
        let first = errors
            .iter()
            .filter_map(Bson::as_document)
            .filter_map(|e| Some((usize::try_from(e.get_i32("index").ok()?).ok()?, e)))
            .min_by_key(|(index, _)| *index);
        if let Some((index, error)) = first {
            let failure = BatchError::Write {
                code: error.get_i32("code").unwrap_or_default(),
                message: error.get_str("errmsg").unwrap_or_default().to_owned(),
            };
            // Ordered: the failed statement and every one after it did not run.
            for slot in outcomes.iter_mut().skip(index) {
                *slot = Err(failure.clone());
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_match_marks_every_statement_matched() {
        let outcomes = update_outcomes(&doc! { "n": 3, "nModified": 3, "ok": 1.0 }, 3);
        assert!(outcomes.iter().all(|o| matches!(o, Ok(Matched(true)))));
    }

    #[test]
    fn a_partial_match_is_reported_as_unknown_for_all() {
        let outcomes = update_outcomes(&doc! { "n": 2, "ok": 1.0 }, 3);
        assert!(outcomes.iter().all(|o| matches!(o, Ok(Matched(false)))));
    }

    #[test]
    fn a_write_error_fails_its_statement_and_the_rest() {
        let reply = doc! {
            "n": 1,
            "ok": 1.0,
            "writeErrors": [ { "index": 1, "code": 66, "errmsg": "immutable" } ],
        };
        let outcomes = update_outcomes(&reply, 3);
        assert!(outcomes[0].is_ok());
        assert!(matches!(
            &outcomes[1],
            Err(BatchError::Write { code: 66, .. })
        ));
        assert!(matches!(
            &outcomes[2],
            Err(BatchError::Write { code: 66, .. })
        ));
    }
}
