//! One partition's worker: handles messages in order, retries, dead-letters, stores offsets.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::super::dlq::DlqHeaders;
use super::super::headers::extract_trace_context;
use super::super::{
    EventProducer, FailureKind, Handler, HandlerError, InboundMessage, metrics, retry,
};
use super::context::DrainingContext;
use crate::config::RetryConfig;
use crate::events::dead_letter_topic;

/// Everything the workers of one consumer share.
pub(super) struct WorkerShared<H> {
    pub(super) consumer: Arc<BaseConsumer<DrainingContext>>,
    pub(super) handler: Arc<H>,
    pub(super) producer: EventProducer,
    pub(super) retry: RetryConfig,
    pub(super) group: String,
    /// Cancelled on shutdown: stops backoff waits (the message is then redelivered later).
    pub(super) shutdown: CancellationToken,
    /// Set by a fatal handler error; the consumer returns it after draining.
    pub(super) fatal: Arc<Mutex<Option<String>>>,
}

/// How handling one message ended.
enum Settled {
    /// Handled, or dead-lettered: the offset may be stored.
    Done,
    /// Not settled (stop requested mid-retry, or a fatal error): leave the offset alone so the
    /// message is delivered again.
    Abandoned,
}

pub(super) async fn run_worker<H: Handler>(
    shared: Arc<WorkerShared<H>>,
    mut queue: tokio::sync::mpsc::Receiver<InboundMessage>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = queue.recv() => match next {
                Some(message) => message,
                None => break,
            },
        };
        match settle(&shared, &message, &stop).await {
            Settled::Done => store_offset(&shared, &message),
            Settled::Abandoned => break,
        }
    }
}

fn store_offset<H>(shared: &WorkerShared<H>, message: &InboundMessage) {
    // rd_kafka_offset_store stores offset + 1, the next message to read.
    if let Err(error) =
        shared
            .consumer
            .store_offset(&message.topic, message.partition, message.offset)
    {
        // The partition was revoked meanwhile: its new owner redoes this message (idempotently).
        tracing::warn!(
            topic = %message.topic, partition = message.partition, offset = message.offset,
            %error, "offset not stored; the message will be delivered again"
        );
    }
}

async fn settle<H: Handler>(
    shared: &WorkerShared<H>,
    message: &InboundMessage,
    stop: &CancellationToken,
) -> Settled {
    // A replayed copy must not run a side effect a second time (a second sandbox for one
    // execution) unless its session asked for it; see `docs/design/execution-pipeline.md`.
    if crate::replay::skips_side_effects(message) {
        count_consumed(shared, message, "replay_skipped");
        return Settled::Done;
    }
    let span = tracing::info_span!(
        "kafka.process",
        otel.name = format!("{} process", message.topic),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = %message.topic,
        messaging.kafka.partition = message.partition,
        messaging.kafka.offset = message.offset,
        messaging.consumer.group.name = %shared.group,
        attempt = tracing::field::Empty,
    );
    if let Err(error) = span.set_parent(extract_trace_context(message)) {
        tracing::debug!(?error, "message trace context not applied");
    }
    async {
        let mut attempt: u32 = 1;
        loop {
            tracing::Span::current().record("attempt", attempt);
            let started = Instant::now();
            let result = shared.handler.handle(message).await;
            ::metrics::histogram!(metrics::HANDLER_DURATION, "topic" => message.topic.clone(), "group" => shared.group.clone())
                .record(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(()) => {
                    count_consumed(shared, message, "ok");
                    return Settled::Done;
                }
                Err(error) => error,
            };
            match error.kind {
                FailureKind::Retryable if attempt < shared.retry.max_attempts => {
                    let wait = retry::backoff(&shared.retry, attempt);
                    tracing::warn!(
                        attempt, wait_ms = wait.as_millis() as u64, error.class = %error.class,
                        error.cause_chain = ?error, "handler failed; retrying"
                    );
                    ::metrics::counter!(metrics::HANDLER_RETRIES, "topic" => message.topic.clone(), "group" => shared.group.clone())
                        .increment(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return Settled::Abandoned,
                        () = shared.shutdown.cancelled() => return Settled::Abandoned,
                    }
                    attempt += 1;
                }
                FailureKind::Retryable | FailureKind::Poison => {
                    count_consumed(shared, message, "dead_lettered");
                    return dead_letter(shared, message, &error, attempt, stop).await;
                }
                FailureKind::Fatal => {
                    count_consumed(shared, message, "fatal");
                    tracing::error!(error.class = %error.class, error.cause_chain = ?error, "handler failed fatally; stopping");
                    let mut fatal = shared.fatal.lock().unwrap_or_else(PoisonError::into_inner);
                    fatal.get_or_insert_with(|| error.to_string());
                    shared.shutdown.cancel();
                    return Settled::Abandoned;
                }
            }
        }
    }
    .instrument(span)
    .await
}

fn count_consumed<H>(shared: &WorkerShared<H>, message: &InboundMessage, outcome: &'static str) {
    ::metrics::counter!(metrics::MESSAGES_CONSUMED, "topic" => message.topic.clone(), "group" => shared.group.clone(), "outcome" => outcome)
        .increment(1);
}

/// Publishes the message, unchanged, to the dead-letter topic. The offset may only be stored once
/// the copy is durable, so a failing publish is retried until it succeeds or the worker stops.
async fn dead_letter<H>(
    shared: &WorkerShared<H>,
    message: &InboundMessage,
    error: &HandlerError,
    attempt: u32,
    stop: &CancellationToken,
) -> Settled {
    let dlq = DlqHeaders {
        original_topic: message.topic.clone(),
        original_partition: message.partition,
        original_offset: message.offset,
        original_key: message.key.clone(),
        error_class: error.class.to_string(),
        error_kind: if error.kind == FailureKind::Poison {
            "poison"
        } else {
            "retries_exhausted"
        }
        .into(),
        error_message: crate::errors::display_chain(error),
        attempt,
        failed_at: Utc::now(),
        consumer_group: shared.group.clone(),
    };
    let headers = dlq.apply(&message.headers);
    let topic = dead_letter_topic(shared.producer.topic_prefix());
    let mut publish_attempt: u32 = 1;
    loop {
        match shared
            .producer
            .send(
                &topic,
                message.key.as_deref(),
                message.payload.as_deref(),
                &headers,
            )
            .await
        {
            Ok(_) => {
                ::metrics::counter!(metrics::DEAD_LETTERED, "topic" => message.topic.clone(), "group" => shared.group.clone(), "error_class" => error.class.to_string())
                    .increment(1);
                tracing::warn!(
                    attempt, error.class = %error.class, error.kind = error.kind.as_str(),
                    error.cause_chain = ?error, "message dead-lettered"
                );
                return Settled::Done;
            }
            Err(publish_error) => {
                let wait = retry::backoff(&shared.retry, publish_attempt);
                tracing::error!(
                    error.cause_chain = ?publish_error, wait_ms = wait.as_millis() as u64,
                    "dead-letter publish failed; retrying"
                );
                publish_attempt = publish_attempt.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return Settled::Abandoned,
                    () = shared.shutdown.cancelled() => return Settled::Abandoned,
                }
            }
        }
    }
}
