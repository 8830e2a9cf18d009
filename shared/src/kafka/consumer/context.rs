//! The librdkafka consumer context: drains revoked partitions before they are handed over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::Statistics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::super::{InboundMessage, metrics};

pub(super) type PartitionKey = (String, i32);

/// The worker task of one assigned partition.
pub(super) struct Worker {
    pub(super) queue: tokio::sync::mpsc::Sender<InboundMessage>,
    /// Tells the worker to stop after its in-flight message.
    pub(super) stop: CancellationToken,
    pub(super) task: JoinHandle<()>,
}

/// Workers plus messages held back from full queues, shared by the poll thread and the rebalance
/// callback (which librdkafka runs on the poll thread, inside `poll`).
#[derive(Default)]
pub(super) struct Partitions {
    pub(super) workers: HashMap<PartitionKey, Worker>,
    pub(super) stalled: HashMap<PartitionKey, InboundMessage>,
}

pub(super) struct DrainingContext {
    pub(super) partitions: Arc<Mutex<Partitions>>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) revoke_drain_timeout: Duration,
    pub(super) group: String,
}

/// How often librdkafka reports statistics, i.e. how fresh the lag gauge is.
pub(super) const STATS_INTERVAL_MS: &str = "5000";

impl ClientContext for DrainingContext {
    /// Publishes the lag of this member's assigned partitions, summed per topic: what the
    /// autoscaler and the lag alert read. Unassigned partitions and unknown lags (-1) count 0.
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            let lag: i64 = topic
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.desired && p.consumer_lag >= 0)
                .map(|p| p.consumer_lag)
                .sum();
            ::metrics::gauge!(metrics::CONSUMER_LAG, "topic" => name.clone(), "group" => self.group.clone())
                .set(lag as f64);
        }
    }
}

impl ConsumerContext for DrainingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        ::metrics::counter!(metrics::REBALANCES, "group" => self.group.clone(), "kind" => "revoke")
            .increment(1);
        let keys: Vec<PartitionKey> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let workers = {
            let mut partitions = self
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            keys.iter()
                .filter_map(|key| {
                    partitions.stalled.remove(key);
                    partitions.workers.remove(key)
                })
                .collect::<Vec<_>>()
        };
        if !workers.is_empty() {
            tracing::info!(group = %self.group, partitions = workers.len(), "draining revoked partitions");
            drain_workers(&self.runtime, workers, self.revoke_drain_timeout);
        }
        // The offsets the drained workers stored must reach the broker before the partitions move
        // to another member, or that member would redo their work.
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(group = %self.group, %error, "commit on revoke had nothing to commit or failed");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            ::metrics::counter!(metrics::REBALANCES, "group" => self.group.clone(), "kind" => "assign")
                .increment(1);
            tracing::info!(group = %self.group, partitions = assigned.count(), "partitions assigned");
        }
    }
}

/// Stops `workers` after their in-flight message and waits for them, at most `deadline`.
/// Workers still busy at the deadline are aborted; their message was not committed, so it will be
/// delivered again.
///
/// Runs on the poll thread (never on a runtime worker), so blocking on the runtime is allowed.
pub(super) fn drain_workers(
    runtime: &tokio::runtime::Handle,
    workers: Vec<Worker>,
    deadline: Duration,
) {
    for worker in &workers {
        worker.stop.cancel();
    }
    let (tasks, aborts): (Vec<_>, Vec<_>) = workers
        .into_iter()
        .map(|w| {
            let abort = w.task.abort_handle();
            (w.task, abort)
        })
        .unzip();
    let joined = runtime.block_on(tokio::time::timeout(
        deadline,
        futures::future::join_all(tasks),
    ));
    if joined.is_err() {
        tracing::warn!(
            deadline_ms = deadline.as_millis() as u64,
            "in-flight messages did not finish before the drain deadline; they will be redelivered"
        );
        for abort in aborts {
            abort.abort();
        }
    }
}
