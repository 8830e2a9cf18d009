//! Builds the events a saga publishes, in its execution's flow (correlation and causation).

use shared::events::{Event, EventMetadata, EventPayload, SagaProgress};
use uuid::Uuid;

use crate::SERVICE_NAME;
use crate::store::Flow;

/// The saga's name in `saga_*` events.
pub const SAGA_NAME: &str = "execution";

/// A new event for `saga_id` caused by `cause`, in `flow`'s correlation.
pub fn saga_event(saga_id: &str, flow: &Flow, cause: Option<Uuid>, payload: EventPayload) -> Event {
    let mut event = Event::new(
        saga_id,
        payload,
        EventMetadata::new(SERVICE_NAME, flow.user_id.clone()),
    );
    if let Ok(correlation) = Uuid::parse_str(&flow.correlation_id) {
        event.correlation_id = correlation;
    }
    if event.metadata.traceparent.is_none() {
        event.metadata.traceparent = flow.traceparent.clone();
    }
    event.causation_id = cause;
    event
}

/// The flow an incoming event starts or continues.
pub fn flow_of(event: &Event) -> Flow {
    Flow {
        correlation_id: event.correlation_id.to_string(),
        request_event_id: None,
        user_id: event.metadata.user_id.clone(),
        traceparent: event.metadata.traceparent.clone(),
    }
}

pub fn progress(saga_id: &str, step: &str, message: Option<String>) -> SagaProgress {
    SagaProgress {
        saga_id: saga_id.to_owned(),
        saga_name: SAGA_NAME.to_owned(),
        step: Some(step.to_owned()),
        message,
    }
}
