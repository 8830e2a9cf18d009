//! The envelope shared by every event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EventPayload, EventType};

/// Who produced an event and on whose behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub service: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// W3C trace context of the span the event was created in: work that continues the flow
    /// later, outside that span, publishes in the same trace (see `shared::telemetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl EventMetadata {
    pub fn new(service: impl Into<String>, user_id: Option<String>) -> Self {
        Self {
            service: service.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            user_id,
            traceparent: crate::telemetry::current_traceparent(),
        }
    }
}

/// One event. `event_type` and `payload` are the two JSON fields produced by the flattened
/// [`EventPayload`], so the type on the wire always matches the payload's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Uuid,
    pub event_version: u16,
    pub occurred_at: DateTime<Utc>,
    /// The execution id for execution events; also the Kafka partition key.
    pub aggregate_id: String,
    /// Shared by every event of one flow (e.g. one execution's life).
    pub correlation_id: Uuid,
    /// The event that caused this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub metadata: EventMetadata,
    #[serde(flatten)]
    pub payload: EventPayload,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no payload")]
    Empty,
    #[error("payload is not a valid event: {0}")]
    Json(#[from] serde_json::Error),
}

impl Event {
    /// A new event that starts a flow: its correlation id is its own id.
    pub fn new(
        aggregate_id: impl Into<String>,
        payload: EventPayload,
        metadata: EventMetadata,
    ) -> Self {
        let event_id = Uuid::now_v7();

        Self {
            event_id,
            event_version: payload.event_type().version(),
            occurred_at: Utc::now(),
            aggregate_id: aggregate_id.into(),
            correlation_id: event_id,
            causation_id: None,
            metadata,
            payload,
        }
    }

    /// A new event caused by `self`, in the same flow and for the same aggregate.
    pub fn follow(&self, payload: EventPayload, service: &str) -> Event {
        let mut next = Event::new(
            self.aggregate_id.clone(),
            payload,
            EventMetadata::new(service, self.metadata.user_id.clone()),
        );
        next.correlation_id = self.correlation_id;
        next.causation_id = Some(self.event_id);
        if next.metadata.traceparent.is_none() {
            next.metadata.traceparent = self.metadata.traceparent.clone();
        }
        next
    }

    /// Like [`Event::follow`], but the new event's id is derived from `self`'s id and the new
    /// type (a version-8 UUID): a handler that runs again for the same event (a redelivery after
    /// a crash or a rebalance, while its first run's publish was still in flight) publishes the
    /// same event again, which consumers deduplicate, instead of a second one.
    pub fn follow_once(&self, payload: EventPayload, service: &str) -> Event {
        let mut next = self.follow(payload, service);
        next.event_id = derived_event_id(self.event_id, next.event_type());
        next
    }

    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn from_json(bytes: Option<&[u8]>) -> Result<Self, DecodeError> {
        match bytes {
            None | Some([]) => Err(DecodeError::Empty),
            Some(bytes) => Ok(serde_json::from_slice(bytes)?),
        }
    }
}

/// The id of the one event of `event_type` that `cause` leads to: `cause` XORed with a fixed
/// 128-bit FNV-1a hash of the type's name, marked as version 8. Publishing that event again (a
/// retry after a crash) under this id lets consumers deduplicate it.
pub fn derived_event_id(cause: Uuid, event_type: EventType) -> Uuid {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in event_type.as_str().bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    // The cause's first 48 bits (a UUIDv7's millisecond timestamp) are kept, so a derived id
    // sorts with the ids of its cause's time rather than at random.
    let time_bits = u128::from(u64::MAX >> 16) << 80;
    let mixed = (cause.as_u128() & time_bits) | ((cause.as_u128() ^ hash) & !time_bits);
    uuid::Builder::from_custom_bytes(mixed.to_be_bytes()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExecutionStatus, ResultStored};

    #[test]
    fn a_follower_once_has_the_same_id_every_time_and_differs_per_cause() {
        let payload = || {
            EventPayload::ResultStored(ResultStored {
                status: ExecutionStatus::Completed,
            })
        };
        let metadata = || EventMetadata::new("test", None);
        let cause = Event::new("x", payload(), metadata());
        let other = Event::new("x", payload(), metadata());
        let first = cause.follow_once(payload(), "test");
        let again = cause.follow_once(payload(), "test");
        assert_eq!(first.event_id, again.event_id);
        assert_eq!(first.event_id.get_version_num(), 8);
        assert_eq!(first.causation_id, Some(cause.event_id));
        assert_ne!(first.event_id, cause.event_id);
        assert_eq!(
            first.event_id.as_bytes()[..6],
            cause.event_id.as_bytes()[..6],
            "sorts at its cause's time"
        );
        assert_ne!(
            first.event_id,
            derived_event_id(cause.event_id, EventType::ExecutionQueued)
        );
        assert_ne!(
            first.event_id,
            other.follow_once(payload(), "test").event_id
        );
    }
}
