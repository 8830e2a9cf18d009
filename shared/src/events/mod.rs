//! The event envelope and catalogue: every Kafka message Kiln produces is an [`Event`] serialized as
//! JSON, on the topic `{kafka.topic_prefix}{event_type}`, keyed by its `aggregate_id`.

mod catalogue;
mod envelope;
mod payloads;

pub use catalogue::{Category, EventPayload, EventType, catalogue_markdown};
pub use envelope::{DecodeError, Event, EventMetadata, derived_event_id};
pub use payloads::*;

/// The dead-letter topic's name without prefix; it holds raw failed messages, not envelopes.
pub const DEAD_LETTER_TOPIC: &str = "dead_letter_queue";

/// The topic an event type is published to.
pub fn topic_for(prefix: &str, event_type: EventType) -> String {
    format!("{prefix}{}", event_type.as_str())
}

pub fn dead_letter_topic(prefix: &str) -> String {
    format!("{prefix}{DEAD_LETTER_TOPIC}")
}

/// Every topic Kiln uses under `prefix`: one per event type, then the dead-letter topic.
pub fn all_topics(prefix: &str) -> Vec<String> {
    EventType::ALL
        .iter()
        .map(|t| topic_for(prefix, *t))
        .chain(std::iter::once(dead_letter_topic(prefix)))
        .collect()
}

#[cfg(test)]
mod tests;
