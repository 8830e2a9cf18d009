//! W3C trace context in Kafka headers, both ways.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::InboundMessage;

pub const EVENT_ID: &str = "event_id";
pub const EVENT_TYPE: &str = "event_type";

/// Headers to attach to an outgoing message; collected as pairs, turned into `OwnedHeaders` once.
#[derive(Debug, Default, Clone)]
pub struct HeaderList(pub Vec<(String, Vec<u8>)>);

impl HeaderList {
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), value.into()));
    }

    /// Sets `key`, replacing any earlier value of it.
    pub fn set(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.push(key, value);
    }

    /// Adds the trace context of the current tracing span (`traceparent`, `tracestate`).
    pub fn with_current_trace_context(mut self) -> Self {
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut HeaderInjector(&mut self));
        });
        self
    }

    pub fn to_owned_headers(&self) -> OwnedHeaders {
        self.0
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            })
    }
}

struct HeaderInjector<'a>(&'a mut HeaderList);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value.into_bytes());
    }
}

struct HeaderExtractor<'a>(&'a InboundMessage);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header_str(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The trace context the producer of `message` put in its headers (empty when none).
pub fn extract_trace_context(message: &InboundMessage) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(message))
    })
}
