//! Re-publishes due messages to their original topic, with their original key and headers plus
//! the attempt number, and parks the ones past their age. Safe with several instances: each
//! message is claimed with a conditional update before it is touched.

use std::time::Duration;

use mongodb::bson::{self, Bson, doc};
use shared::config::DlqConfig;
use shared::dlq::{DlqMessage, DlqStatus, HistoryAction, HistoryEntry};
use shared::events::dead_letter_topic;
use shared::kafka::EventProducer;
use tokio_util::sync::CancellationToken;

use crate::announce::{Announcement, announce};
use crate::receive::{PARKED_MALFORMED, PARKED_MAX_AGE, next_attempt_at, policy_of};
use crate::store::{Claimed, ProcessorStore};

#[derive(Debug, Clone)]
pub struct Scheduler {
    pub store: ProcessorStore,
    pub producer: EventProducer,
    pub config: DlqConfig,
}

impl Scheduler {
    /// Scans for due messages every `dlq.scan_interval_ms` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let interval = Duration::from_millis(self.config.scan_interval_ms);
        loop {
            if let Err(error) = self.drain_due(&shutdown).await {
                tracing::warn!(error.cause_chain = %shared::errors::display_chain(&error), "dlq scan failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Handles every message due now, one claim at a time.
    pub async fn drain_due(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<(), mongodb::error::Error> {
        let lease = chrono::Duration::seconds(
            i64::try_from(self.config.claim_lease_seconds).unwrap_or(i64::MAX),
        );
        while !shutdown.is_cancelled() {
            let Some(claimed) = self.store.claim_due(lease).await? else {
                return Ok(());
            };
            self.handle(&claimed).await?;
        }
        Ok(())
    }

    async fn handle(&self, claimed: &Claimed) -> Result<(), mongodb::error::Error> {
        let message = &claimed.message;
        let policy = policy_of(&self.config, message);
        // A message that came without dead-letter headers has no origin to go back to; sending
        // it to the dead-letter topic would only store it again.
        let park_reason =
            if message.original_topic == dead_letter_topic(self.producer.topic_prefix()) {
                Some(PARKED_MALFORMED)
            } else if message
                .expires_at
                .is_some_and(|at| at <= bson::DateTime::now())
            {
                Some(PARKED_MAX_AGE)
            } else {
                None
            };
        if let Some(reason) = park_reason {
            let mut entry = HistoryEntry::new(HistoryAction::Parked, message.attempts);
            entry.reason = Some(reason.into());
            let set = doc! { "status": DlqStatus::Parked.as_str(), "next_attempt_at": Bson::Null };
            if self.store.finish_claim(claimed, set, Some(&entry)).await? {
                tracing::warn!(dlq_id = %message.id, attempts = message.attempts, reason, "dead-lettered message parked");
                announce(&self.producer, message, Announcement::Parked { reason }).await;
            }
            return Ok(());
        }
        let attempt = message.attempts.saturating_add(1);
        let manual = message
            .history
            .last()
            .is_some_and(|e| e.action == HistoryAction::RetryRequested);
        let sent = self
            .producer
            .send(
                &message.original_topic,
                message.key.as_ref().map(|k| k.bytes.as_slice()),
                message.payload.as_ref().map(|p| p.bytes.as_slice()),
                &message.republish_headers(attempt),
            )
            .await;
        match sent {
            Ok(delivered) => {
                let entry = HistoryEntry::new(HistoryAction::Retried, attempt);
                let set = doc! {
                    "status": DlqStatus::Retried.as_str(),
                    "attempts": attempt,
                    "next_attempt_at": Bson::Null,
                };
                // Not recorded means the copy already failed again (or the claim expired and was
                // taken over): the newer write wins and nothing is announced twice.
                if self.store.finish_claim(claimed, set, Some(&entry)).await? {
                    tracing::info!(
                        dlq_id = %message.id, attempt, topic = %message.original_topic,
                        partition = delivered.partition, offset = delivered.offset,
                        "dead-lettered message re-published"
                    );
                    let retried = DlqMessage {
                        attempts: attempt,
                        ..message.clone()
                    };
                    announce(&self.producer, &retried, Announcement::Retried { manual }).await;
                }
            }
            Err(error) => {
                // The attempt did not happen: it is not counted, and the message waits a first
                // backoff before the next try.
                tracing::warn!(
                    dlq_id = %message.id, error.cause_chain = %shared::errors::display_chain(&error),
                    "re-publish failed; will try again"
                );
                let set = doc! {
                    "status": DlqStatus::Pending.as_str(),
                    "next_attempt_at": next_attempt_at(policy, 1),
                };
                self.store.finish_claim(claimed, set, None).await?;
            }
        }
        Ok(())
    }

    /// Keeps the per-status gauge current until `shutdown`.
    pub async fn run_gauge(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let interval = Duration::from_secs(self.config.gauge_interval_seconds);
        loop {
            match self.store.shared.count_by_status().await {
                Ok(counts) => {
                    for (status, count) in counts {
                        metrics::gauge!(shared::dlq::MESSAGES_GAUGE, "status" => status.as_str())
                            .set(count as f64);
                    }
                }
                Err(error) => tracing::debug!(%error, "dlq gauge not refreshed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
