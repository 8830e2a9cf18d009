//! The idempotent producer every service publishes with.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::Instrument;

use super::headers::{self, HeaderList};
use super::{KafkaError, base_client_config, metrics};
use crate::config::KafkaConfig;
use crate::events::{Event, topic_for};

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Cheap to clone; all clones share one librdkafka producer.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
    topic_prefix: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic_prefix", &self.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl EventProducer {
    pub fn new(cfg: &KafkaConfig, client_id: &str) -> Result<Self, KafkaError> {
        let inner: FutureProducer = base_client_config(cfg, client_id)
            // Idempotence gives acks=all and in-order, de-duplicated retries per partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "2")
            .set("message.max.bytes", cfg.max_message_bytes.to_string())
            .set("delivery.timeout.ms", cfg.delivery_timeout_ms.to_string())
            .create()
            .map_err(KafkaError::Client)?;
        Ok(Self {
            inner,
            topic_prefix: cfg.topic_prefix.clone(),
            delivery_timeout: Duration::from_millis(u64::from(cfg.delivery_timeout_ms)),
        })
    }

    pub fn topic_prefix(&self) -> &str {
        &self.topic_prefix
    }

    /// Publishes `event` to its topic, keyed by its aggregate id (per-execution order), and waits
    /// for the broker's acknowledgement. The current trace context travels in the headers.
    pub async fn publish(&self, event: &Event) -> Result<Delivered, KafkaError> {
        let topic = topic_for(&self.topic_prefix, event.event_type());
        let span = tracing::info_span!(
            "kafka.publish",
            otel.name = format!("{topic} publish"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = %topic,
            event_id = %event.event_id,
            event_type = event.event_type().as_str(),
        );
        // In the trace the event was created in: the same as the current one on the direct path,
        // and the execution's trace for events published later from stored state.
        if let Some(cx) = event
            .metadata
            .traceparent
            .as_deref()
            .and_then(crate::telemetry::context_from_traceparent)
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            if let Err(error) = span.set_parent(cx) {
                tracing::debug!(%error, "publish span keeps its own parent");
            }
        }
        async {
            let payload = event.to_json().map_err(|source| KafkaError::Encode {
                event_id: event.event_id,
                source,
            })?;
            let mut headers = HeaderList::default();
            headers.push(headers::EVENT_ID, event.event_id.to_string());
            headers.push(headers::EVENT_TYPE, event.event_type().as_str());
            let headers = headers.with_current_trace_context();
            self.send(
                &topic,
                Some(event.aggregate_id.as_bytes()),
                Some(&payload),
                &headers,
            )
            .await
        }
        .instrument(span)
        .await
    }

    /// Sends raw bytes (used for the dead-letter topic and replays) and awaits delivery.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &HeaderList,
    ) -> Result<Delivered, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.to_owned_headers());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        let result = self.inner.send(record, self.delivery_timeout).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        ::metrics::counter!(metrics::MESSAGES_PUBLISHED, "topic" => topic.to_owned(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(delivery) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((source, _)) => Err(KafkaError::Delivery {
                topic: topic.to_owned(),
                source,
            }),
        }
    }

    /// Whether the cluster answers a metadata request in time (used by readiness checks). Asks
    /// about one topic only: metadata for every topic grows with the cluster.
    pub async fn check_connected(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        let topic = crate::events::dead_letter_topic(&self.topic_prefix);
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .map_err(KafkaError::Metadata)
        })
        .await
        .map_err(KafkaError::PollThread)?
    }

    /// Waits for queued messages to be delivered; called during shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.inner.flush(timeout) {
            tracing::warn!(%error, "producer flush did not complete");
        }
    }
}
