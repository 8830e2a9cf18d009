//! Sees every `result_stored` from the moment the bench starts, with a consumer that is assigned
//! every partition at its current end. No consumer group is joined, so no join or rebalance can
//! hold results back: with a group, the first results of a run were sometimes seen seconds after
//! they were published, and counted as that slow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use shared::config::KafkaConfig;
use shared::events::{Event, EventPayload};
use tokio_util::sync::CancellationToken;

/// When each execution's `result_stored` was first seen, and how many were seen.
#[derive(Clone, Default)]
pub(crate) struct Stored(Arc<Mutex<HashMap<String, (Instant, u32)>>>);

impl Stored {
    fn record(&self, execution_id: String) {
        let mut stored = self.lock();
        let entry = stored.entry(execution_id).or_insert((Instant::now(), 0));
        entry.1 += 1;
    }

    pub(crate) fn contains(&self, execution_id: &str) -> bool {
        self.lock().contains_key(execution_id)
    }

    /// Waits until every one of `ids` was seen, or `deadline`; whether all were.
    pub(crate) async fn wait_for<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str> + Clone,
        deadline: Instant,
    ) -> bool {
        loop {
            if ids.clone().into_iter().all(|id| self.contains(id)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn snapshot(&self) -> HashMap<String, (Instant, u32)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts reading `topic` from its current end into `stored`, until `shutdown`.
pub(crate) fn watch(
    config: &KafkaConfig,
    topic: &str,
    stored: Stored,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let consumer: StreamConsumer = shared::kafka::base_client_config(config, "kiln-bench")
        // librdkafka wants a group id; with assign() instead of subscribe() it never joins.
        .set("group.id", format!("kiln-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the result consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("reading the result topic's partitions")?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .with_context(|| format!("topic {topic} has no partitions: is Kiln running?"))?;
    // The ends as of now, read before anything is submitted: nothing published later is missed.
    let mut assignment = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .context("reading the result topic's end")?;
        assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                message = consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    if let Ok(event) = Event::from_json(message.payload())
                        && let EventPayload::ResultStored(_) = event.payload
                    {
                        stored.record(event.aggregate_id);
                    }
                }
                Err(error) => eprintln!("reading results: {error}"),
            }
        }
    }))
}
