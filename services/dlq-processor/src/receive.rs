//! The dead-letter topic's consumer: stores each failed message once, or, for a re-published copy
//! that failed again (it carries `x-kiln-dlq-id`), schedules its next attempt or parks it.

use chrono::{DateTime, Duration, Utc};
use mongodb::bson::{self, Bson, doc};
use shared::config::{DlqConfig, DlqPolicy};
use shared::dlq::{
    self, DlqMessage, DlqStatus, HistoryAction, HistoryEntry, StoredHeader, binary, source_id,
};
use shared::events::EventType;
use shared::kafka::dlq::{DlqHeaders, ERROR_MESSAGE};
use shared::kafka::headers::EVENT_TYPE;
use shared::kafka::retry::backoff;
use shared::kafka::{EventProducer, Handler, HandlerError, InboundMessage};

use crate::announce::{Announcement, announce};
use crate::store::{Inserted, ProcessorStore};

/// Optimistic writes give up after this many lost races (each race means another writer made
/// progress, so this is never reached in practice).
const MAX_RACES: usize = 8;

/// Why a message is parked.
pub const PARKED_MAX_ATTEMPTS: &str = "max_attempts";
pub const PARKED_MAX_AGE: &str = "max_age";
/// A message on the dead-letter topic without the dead-letter headers cannot be re-published
/// anywhere; it is stored parked so an admin sees it.
pub const PARKED_MALFORMED: &str = "malformed_dead_letter";

#[derive(Debug, Clone)]
pub struct DeadLetterHandler {
    pub store: ProcessorStore,
    pub producer: EventProducer,
    pub config: DlqConfig,
    pub topic_prefix: String,
}

fn mongo(error: mongodb::error::Error) -> HandlerError {
    // Retried by the consumer loop without limit (see `Processor::run_consumer`): a MongoDB
    // outage must not push the dead-letter topic's messages back into it.
    HandlerError::retryable("mongo_unavailable", error)
}

/// The wait before attempt `attempt` (1-based) under `policy`, from now.
pub fn next_attempt_at(policy: &DlqPolicy, attempt: u32) -> bson::DateTime {
    let wait = backoff(&policy.backoff(), attempt);
    let wait = Duration::from_std(wait).unwrap_or(Duration::MAX);
    bson::DateTime::from_chrono(Utc::now() + wait)
}

impl Handler for DeadLetterHandler {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let source = source_id(&message.topic, message.partition, message.offset);
        let headers = DlqHeaders::parse(message);
        if let (Ok(headers), Some(id)) = (&headers, message.header_str(dlq::ID_HEADER))
            && self.failed_again(id, headers, message, &source).await?
        {
            return Ok(());
        }
        let stored = match headers {
            Ok(headers) => self.new_document(&headers, message, &source),
            Err(error) => self.malformed(message, &source, &error.to_string()),
        };
        match self.store.insert(&stored).await.map_err(mongo)? {
            Inserted::New => {
                tracing::info!(
                    dlq_id = %stored.id, original_topic = %stored.original_topic,
                    error.class = %stored.error_class, status = stored.status.as_str(),
                    "dead-lettered message stored"
                );
                announce(&self.producer, &stored, Announcement::Received).await;
                if stored.status == DlqStatus::Parked {
                    announce(
                        &self.producer,
                        &stored,
                        Announcement::Parked {
                            reason: PARKED_MALFORMED,
                        },
                    )
                    .await;
                }
            }
            Inserted::Duplicate => {
                tracing::debug!(original_topic = %stored.original_topic, "dead-lettered message already stored");
            }
        }
        Ok(())
    }
}

impl DeadLetterHandler {
    /// The original message's event type: its `event_type` header, else its topic's name.
    fn event_type(&self, message: &InboundMessage, original_topic: &str) -> Option<EventType> {
        message
            .header_str(EVENT_TYPE)
            .and_then(EventType::parse)
            .or_else(|| {
                original_topic
                    .strip_prefix(&self.topic_prefix)
                    .and_then(EventType::parse)
            })
    }

    /// The retry policy of a stored message.
    pub fn policy(&self, message: &DlqMessage) -> &DlqPolicy {
        policy_of(&self.config, message)
    }

    fn new_document(
        &self,
        headers: &DlqHeaders,
        message: &InboundMessage,
        source: &str,
    ) -> DlqMessage {
        let event_type = self.event_type(message, &headers.original_topic);
        let (policy_name, policy) = self.config.policy_for(event_type.map(EventType::category));
        let max_age = Duration::seconds(i64::try_from(policy.max_age_seconds).unwrap_or(i64::MAX));
        let mut entry = HistoryEntry::new(HistoryAction::Failed, 0);
        entry.error_class = Some(headers.error_class.clone());
        entry.error_message = Some(headers.error_message.clone());
        let now = bson::DateTime::now();
        DlqMessage {
            id: uuid::Uuid::now_v7().to_string(),
            status: DlqStatus::Pending,
            original_topic: headers.original_topic.clone(),
            original_partition: headers.original_partition,
            original_offset: headers.original_offset,
            key: message.key.as_deref().map(binary),
            payload: message.payload.as_deref().map(binary),
            headers: stored_headers(message),
            event_type: event_type.map(|t| t.as_str().to_owned()),
            policy: policy_name.to_owned(),
            consumer_group: headers.consumer_group.clone(),
            error_class: headers.error_class.clone(),
            error_kind: headers.error_kind.clone(),
            error_message: headers.error_message.clone(),
            first_failed_at: bson::DateTime::from_chrono(headers.failed_at),
            received_at: now,
            updated_at: now,
            attempts: 0,
            next_attempt_at: Some(next_attempt_at(policy, 1)),
            expires_at: Some(bson::DateTime::from_chrono(
                headers
                    .failed_at
                    .checked_add_signed(max_age)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            )),
            claim: None,
            discard_reason: None,
            sources: vec![source.to_owned()],
            history: vec![entry],
            version: 0,
        }
    }

    /// Stored under its place on the dead-letter topic, parked.
    fn malformed(&self, message: &InboundMessage, source: &str, why: &str) -> DlqMessage {
        let now = Utc::now();
        let headers = DlqHeaders {
            original_topic: message.topic.clone(),
            original_partition: message.partition,
            original_offset: message.offset,
            original_key: message.key.clone(),
            error_class: PARKED_MALFORMED.into(),
            error_kind: "poison".into(),
            error_message: message
                .header_str(ERROR_MESSAGE)
                .map_or_else(|| why.to_owned(), str::to_owned),
            attempt: 0,
            failed_at: now,
            consumer_group: String::new(),
        };
        let mut stored = self.new_document(&headers, message, source);
        stored.status = DlqStatus::Parked;
        stored.next_attempt_at = None;
        let mut entry = HistoryEntry::new(HistoryAction::Parked, 0);
        entry.reason = Some(format!("{PARKED_MALFORMED}: {why}"));
        stored.history.push(entry);
        stored
    }

    /// Applies a new failure of a re-published copy to its document. `false` when there is no
    /// such document (it is then stored as a new one).
    async fn failed_again(
        &self,
        id: &str,
        headers: &DlqHeaders,
        message: &InboundMessage,
        source: &str,
    ) -> Result<bool, HandlerError> {
        let attempt: u32 = message
            .header_str(dlq::ATTEMPT_HEADER)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        for _ in 0..MAX_RACES {
            let Some(current) = self.store.shared.get(id).await.map_err(mongo)? else {
                return Ok(false);
            };
            if current.sources.iter().any(|s| s == source) {
                return Ok(true);
            }
            let mut failed = HistoryEntry::new(HistoryAction::Failed, attempt);
            failed.error_class = Some(headers.error_class.clone());
            failed.error_message = Some(headers.error_message.clone());
            let mut entries = Vec::with_capacity(2);
            // The copy can fail before its re-publish is recorded (the scheduler still holds the
            // claim); the re-publish is then recorded and announced here, and the scheduler's
            // own record, which needs the claim, does not apply.
            let unrecorded = current.status == DlqStatus::Retrying && attempt > current.attempts;
            if unrecorded {
                entries.push(HistoryEntry::new(HistoryAction::Retried, attempt));
            }
            entries.push(failed);
            let mut set = doc! {
                "error_class": &headers.error_class,
                "error_kind": &headers.error_kind,
                "error_message": &headers.error_message,
                "updated_at": bson::DateTime::now(),
            };
            // Only a message that is out with a re-publish moves on; if an admin acted in the
            // meantime (retry now, discard) their decision stands and the failure is history.
            let decision = if matches!(current.status, DlqStatus::Retrying | DlqStatus::Retried) {
                let policy = self.policy(&current);
                let attempts = current.attempts.max(attempt);
                set.insert("attempts", attempts);
                set.insert("claim", Bson::Null);
                let expired = current
                    .expires_at
                    .is_some_and(|at| at <= bson::DateTime::now());
                if attempts >= policy.max_attempts || expired {
                    let reason = if expired {
                        PARKED_MAX_AGE
                    } else {
                        PARKED_MAX_ATTEMPTS
                    };
                    set.insert("status", DlqStatus::Parked.as_str());
                    set.insert("next_attempt_at", Bson::Null);
                    Some(reason)
                } else {
                    set.insert("status", DlqStatus::Pending.as_str());
                    set.insert("next_attempt_at", next_attempt_at(policy, attempts + 1));
                    None
                }
            } else {
                None
            };
            if !self
                .store
                .update_if_version(id, current.version, set, &entries, source)
                .await
                .map_err(mongo)?
            {
                continue;
            }
            tracing::info!(dlq_id = id, attempt, error.class = %headers.error_class, "re-published message failed again");
            let Some(updated) = self.store.shared.get(id).await.map_err(mongo)? else {
                return Ok(true);
            };
            if unrecorded {
                let manual = current
                    .history
                    .last()
                    .is_some_and(|e| e.action == HistoryAction::RetryRequested);
                announce(&self.producer, &updated, Announcement::Retried { manual }).await;
            }
            if let Some(reason) = decision {
                tracing::warn!(
                    dlq_id = id,
                    reason,
                    attempts = updated.attempts,
                    "dead-lettered message parked"
                );
                announce(&self.producer, &updated, Announcement::Parked { reason }).await;
            }
            return Ok(true);
        }
        Err(HandlerError::retryable(
            "dlq_write_contended",
            format!("dlq message {id} kept changing"),
        ))
    }
}

/// The policy a stored message is retried under (from its event type's category).
pub fn policy_of<'a>(config: &'a DlqConfig, message: &DlqMessage) -> &'a DlqPolicy {
    config
        .policy_for(
            message
                .event_type
                .as_deref()
                .and_then(EventType::parse)
                .map(EventType::category),
        )
        .1
}

fn stored_headers(message: &InboundMessage) -> Vec<StoredHeader> {
    message
        .headers
        .iter()
        .map(|(name, value)| StoredHeader {
            name: name.clone(),
            value: binary(value),
        })
        .collect()
}
