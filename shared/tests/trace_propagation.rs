//! Trace context crosses a Kafka hop: the consumer's span is a child of the producer's span.
//! Its own test binary, because it installs the process-wide subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Collector, queued_event, test_config, wait_until};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use shared::events::{EventType, topic_for};
use shared::kafka::{ConsumerSettings, EventProducer, ensure_topics, run_consumer};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_span_is_a_child_of_the_producer_span() {
    let config = test_config();
    let exporter = InMemorySpanExporter::default();
    let telemetry = shared::telemetry::init_with_exporter(
        &config.telemetry,
        "trace-test",
        Some(exporter.clone()),
    )
    .unwrap();
    ensure_topics(&config.kafka).await.unwrap();
    let topic = topic_for(&config.kafka.topic_prefix, EventType::ExecutionQueued);
    let producer = EventProducer::new(&config.kafka, "trace-test").unwrap();

    let event = queued_event("exec-traced");
    producer
        .publish(&event)
        .instrument(tracing::info_span!("submit"))
        .await
        .unwrap();

    let collected = Collector::default();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        config.kafka.clone(),
        ConsumerSettings {
            group_id: format!("{}trace", config.kafka.topic_prefix),
            topics: vec![topic.clone()],
            client_id: "trace-test".into(),
            drain_timeout: Duration::from_secs(5),
            fetch_wait: None,
        },
        Arc::new(collected.clone()),
        producer.clone(),
        shutdown.clone(),
    ));
    assert!(wait_until(Duration::from_secs(30), || collected.len() >= 1).await);
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
    telemetry.force_flush();

    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name} in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let submit = find("submit");
    let publish = find(&format!("{topic} publish"));
    let process = find(&format!("{topic} process"));

    let trace_id = submit.span_context.trace_id();
    assert_ne!(trace_id, TraceId::INVALID);
    assert_eq!(publish.parent_span_id, submit.span_context.span_id());
    assert_eq!(
        process.span_context.trace_id(),
        trace_id,
        "one trace across the hop"
    );
    assert_eq!(process.parent_span_id, publish.span_context.span_id());
    assert_ne!(process.parent_span_id, SpanId::INVALID);
    assert_eq!(process.span_kind, opentelemetry::trace::SpanKind::Consumer);
    assert_eq!(publish.span_kind, opentelemetry::trace::SpanKind::Producer);

    // The header the consumer saw carries the publish span's id.
    let header = collected.messages()[0]
        .header_str("traceparent")
        .unwrap()
        .to_owned();
    assert!(
        header.contains(&publish.span_context.span_id().to_string()),
        "{header}"
    );
}
