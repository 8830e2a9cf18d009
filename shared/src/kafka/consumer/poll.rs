//! The poll thread: feeds partition workers, pauses full partitions, drains on shutdown.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::super::{
    EventProducer, Handler, InboundMessage, KafkaError, base_client_config, metrics,
};
use super::ConsumerSettings;
use super::context::{DrainingContext, PartitionKey, Partitions, Worker, drain_workers};
use super::worker::{WorkerShared, run_worker};
use crate::config::KafkaConfig;

/// Short enough that shutdown and stalled partitions are noticed quickly, long enough not to spin.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// With `fetch_wait`, a fetch returns early only once this much is waiting.
const FETCH_MIN_BYTES_WHEN_WAITING: &str = "1048576";

pub(super) fn poll_loop<H: Handler>(
    cfg: KafkaConfig,
    settings: ConsumerSettings,
    handler: Arc<H>,
    producer: EventProducer,
    shutdown: CancellationToken,
    fatal: Arc<Mutex<Option<String>>>,
    runtime: tokio::runtime::Handle,
) -> Result<(), KafkaError> {
    let partitions = Arc::new(Mutex::new(Partitions::default()));
    let context = DrainingContext {
        partitions: Arc::clone(&partitions),
        runtime: runtime.clone(),
        revoke_drain_timeout: Duration::from_millis(cfg.revoke_drain_timeout_ms),
        group: settings.group_id.clone(),
    };
    let mut client = base_client_config(&cfg, &settings.client_id);
    if let Some(wait) = settings.fetch_wait {
        client
            .set("fetch.wait.max.ms", wait.as_millis().to_string())
            .set("fetch.min.bytes", FETCH_MIN_BYTES_WHEN_WAITING);
    }
    let consumer: BaseConsumer<DrainingContext> = client
        .set("group.id", &settings.group_id)
        // At-least-once: librdkafka commits in the background, but only offsets our workers
        // stored after their side effect was durable.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout_ms / 4).to_string(),
        )
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "false")
        // Feeds DrainingContext::stats, which publishes the consumer lag gauge.
        .set("statistics.interval.ms", super::context::STATS_INTERVAL_MS)
        .create_with_context(context)
        .map_err(KafkaError::Client)?;
    let consumer = Arc::new(consumer);
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| KafkaError::Subscribe {
            group: settings.group_id.clone(),
            source,
        })?;
    tracing::info!(group = %settings.group_id, topics = ?settings.topics, "consumer subscribed");

    let shared = Arc::new(WorkerShared {
        consumer: Arc::clone(&consumer),
        handler,
        producer,
        retry: cfg.retry.clone(),
        group: settings.group_id.clone(),
        shutdown: shutdown.clone(),
        fatal,
    });
    let feeder = Feeder {
        consumer: &consumer,
        partitions: &partitions,
        shared: &shared,
        runtime: &runtime,
        capacity: cfg.partition_queue_capacity,
    };

    let mut outcome = Ok(());
    while !shutdown.is_cancelled() {
        feeder.retry_stalled();
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Ok(message)) => feeder.dispatch(InboundMessage::from_borrowed(&message)),
            Some(Err(error)) if is_fatal(&error) => {
                tracing::error!(group = %settings.group_id, %error, "fatal consumer error");
                outcome = Err(KafkaError::Fatal {
                    group: settings.group_id.clone(),
                    source: error,
                });
                break;
            }
            // Broker disconnects and similar are transient; librdkafka reconnects by itself.
            Some(Err(error)) => {
                tracing::warn!(group = %settings.group_id, %error, "consumer error")
            }
        }
    }

    let workers: Vec<Worker> = {
        let mut state = partitions.lock().unwrap_or_else(PoisonError::into_inner);
        state.stalled.clear();
        state.workers.drain().map(|(_, worker)| worker).collect()
    };
    tracing::info!(group = %settings.group_id, workers = workers.len(), "draining consumer");
    drain_workers(&runtime, workers, settings.drain_timeout);
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(group = %settings.group_id, %error, "final commit had nothing to commit or failed");
    }
    consumer.unsubscribe();
    tracing::info!(group = %settings.group_id, "consumer stopped");
    outcome
}

fn is_fatal(error: &RdKafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
    )
}

struct Feeder<'a, H> {
    consumer: &'a BaseConsumer<DrainingContext>,
    partitions: &'a Mutex<Partitions>,
    shared: &'a Arc<WorkerShared<H>>,
    runtime: &'a tokio::runtime::Handle,
    capacity: usize,
}

impl<H: Handler> Feeder<'_, H> {
    fn dispatch(&self, message: InboundMessage) {
        let key: PartitionKey = (message.topic.clone(), message.partition);
        let mut state = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let worker = state
            .workers
            .entry(key.clone())
            .or_insert_with(|| self.spawn_worker());
        match worker.queue.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                // Keep polling (heartbeats, rebalances) but fetch nothing more for this partition
                // until its worker catches up; librdkafka refetches from here on resume.
                self.set_paused(&key, true);
                state.stalled.insert(key, message);
            }
            Err(TrySendError::Closed(message)) => {
                // The worker abandoned a message (shutdown or a fatal error). Nothing after it
                // may be committed, so stop fetching this partition; everything from the
                // abandoned message on is delivered again after a restart or rebalance.
                tracing::warn!(
                    topic = %message.topic, partition = message.partition, offset = message.offset,
                    "partition worker stopped; pausing the partition"
                );
                self.set_paused(&key, true);
            }
        }
    }

    fn retry_stalled(&self) {
        let mut state = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.stalled.is_empty() {
            return;
        }
        let stalled: Vec<PartitionKey> = state.stalled.keys().cloned().collect();
        for key in stalled {
            let Some(message) = state.stalled.remove(&key) else {
                continue;
            };
            let Some(worker) = state.workers.get(&key) else {
                continue;
            };
            match worker.queue.try_send(message) {
                Ok(()) => self.set_paused(&key, false),
                Err(TrySendError::Full(message) | TrySendError::Closed(message)) => {
                    state.stalled.insert(key, message);
                }
            }
        }
    }

    fn spawn_worker(&self) -> Worker {
        let (queue, receiver) = tokio::sync::mpsc::channel(self.capacity);
        let stop = CancellationToken::new();
        let task = self
            .runtime
            .spawn(run_worker(Arc::clone(self.shared), receiver, stop.clone()));
        Worker { queue, stop, task }
    }

    fn set_paused(&self, (topic, partition): &PartitionKey, paused: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, *partition);
        let result = if paused {
            ::metrics::counter!(metrics::PARTITIONS_PAUSED, "topic" => topic.clone()).increment(1);
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(error) = result {
            tracing::warn!(%topic, partition, paused, %error, "pause/resume failed");
        }
    }
}
