//! The `dlq_message_*` events and counters. The document in `dlq_messages` is the record; the
//! events only announce it, so a failed publish is logged and does not undo the write.

use shared::dlq::{self, DlqMessage};
use shared::events::{Event, EventMetadata, EventPayload};
use shared::kafka::EventProducer;

use crate::SERVICE_NAME;

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement<'a> {
    Received,
    Retried { manual: bool },
    Parked { reason: &'a str },
}

/// Publishes the event for `message` (keyed by its DLQ id, so one message's events stay in
/// order) and counts it.
pub async fn announce(producer: &EventProducer, message: &DlqMessage, what: Announcement<'_>) {
    let policy = message.policy.clone();
    let payload = match what {
        Announcement::Received => {
            metrics::counter!(dlq::RECEIVED_METRIC, "policy" => policy, "error_class" => message.error_class.clone())
                .increment(1);
            EventPayload::DlqMessageReceived(message.reference(None))
        }
        Announcement::Retried { manual } => {
            let trigger = if manual { "manual" } else { "schedule" };
            metrics::counter!(dlq::RETRIED_METRIC, "policy" => policy, "trigger" => trigger)
                .increment(1);
            EventPayload::DlqMessageRetried(message.reference(None))
        }
        Announcement::Parked { reason } => {
            metrics::counter!(dlq::PARKED_METRIC, "policy" => policy, "reason" => reason.to_owned())
                .increment(1);
            EventPayload::DlqMessageParked(message.reference(Some(reason.to_owned())))
        }
    };
    let event = Event::new(
        message.id.clone(),
        payload,
        EventMetadata::new(SERVICE_NAME, None),
    );
    if let Err(error) = producer.publish(&event).await {
        tracing::warn!(
            dlq_id = %message.id, event_type = event.event_type().as_str(),
            error.cause_chain = %shared::errors::display_chain(&error),
            "dlq event not published; the document is the record"
        );
    }
}
