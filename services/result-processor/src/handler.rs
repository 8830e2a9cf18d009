//! One handler for every consumed topic: project the status, store the terminal result once,
//! append to the execution's Redis stream, publish `result_stored`.

use std::collections::HashMap;
use std::sync::Mutex;

use mongodb::bson::{DateTime, doc};
use serde_json::json;
use shared::events::{Event, EventPayload, EventType, ExecutionStatus, ResultFailed, ResultStored};
use shared::executions::{ExecutionDoc, ExecutionView, status_name, stream};
use shared::kafka::{Handler, HandlerError, InboundMessage, KafkaError};
use uuid::Uuid;

use crate::store::StoreError;
use crate::stream::{Dedupe, RESULT_FIELD};
use crate::{Processor, SERVICE_NAME, metrics};

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis stream append failed")]
    Redis(#[from] redis::RedisError),
    #[error("publishing result_stored failed")]
    Publish(#[from] KafkaError),
    #[error("encoding a stream entry failed")]
    Json(#[from] serde_json::Error),
    #[error("execution {0} does not exist (yet)")]
    Missing(String),
    #[error("execution {0} is not terminal after its terminal update")]
    NotStored(String),
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
}

impl From<ProcessError> for HandlerError {
    fn from(error: ProcessError) -> Self {
        let class = match &error {
            ProcessError::Store(_) => "execution_store",
            ProcessError::Redis(_) => "redis_stream",
            ProcessError::Publish(_) => "result_publish",
            ProcessError::Json(_) => "encode",
            ProcessError::Missing(_) => "execution_missing",
            ProcessError::NotStored(_) => "result_not_stored",
            ProcessError::Notify(_) => "notification",
        };
        HandlerError::retryable(class, error)
    }
}

pub struct ResultHandler {
    processor: Processor,
    /// Attempts per terminal event whose execution is missing, to publish `result_failed` on the
    /// attempt the consumer loop gives up after (it dead-letters the message then).
    missing_attempts: Mutex<HashMap<Uuid, u32>>,
}

impl ResultHandler {
    pub fn new(processor: Processor) -> Self {
        Self {
            processor,
            missing_attempts: Mutex::new(HashMap::new()),
        }
    }

    async fn dispatch(&self, event: &Event) -> Result<(), ProcessError> {
        let id = event.aggregate_id.as_str();
        let store = &self.processor.store;
        match &event.payload {
            EventPayload::ExecutionQueued(_) => {
                self.status_entry(
                    id,
                    ExecutionStatus::Queued,
                    event.event_type(),
                    event.occurred_at,
                )
                .await
            }
            // The stream entry first: the projection may linger (see `store`), and the entry
            // must not wait for it, or it could land after the result on the stream.
            EventPayload::ExecutionScheduled(_) => {
                self.status_entry(
                    id,
                    ExecutionStatus::Scheduled,
                    event.event_type(),
                    event.occurred_at,
                )
                .await?;
                let at = DateTime::from_chrono(event.occurred_at);
                store
                    .advance(id, ExecutionStatus::Scheduled, doc! { "scheduled_at": at })
                    .await?;
                Ok(())
            }
            EventPayload::ExecutionStarted(started) => {
                self.status_entry(
                    id,
                    ExecutionStatus::Running,
                    event.event_type(),
                    started.started_at,
                )
                .await?;
                store
                    .started(id, DateTime::from_chrono(started.started_at))
                    .await?;
                Ok(())
            }
            EventPayload::ExecutionOutput(output) => {
                let stream_name = match output.stream {
                    shared::events::OutputStream::Stdout => "output:stdout",
                    shared::events::OutputStream::Stderr => "output:stderr",
                };
                let data = serde_json::to_string(output)?;
                self.processor
                    .stream
                    .append(
                        id,
                        Dedupe::Seq(stream_name, output.seq),
                        &[(stream::OUTPUT, data)],
                    )
                    .await?;
                Ok(())
            }
            EventPayload::ExecutionCompleted(_) => {
                self.terminal(event, ExecutionStatus::Completed).await
            }
            EventPayload::ExecutionFailed(_) => self.terminal(event, ExecutionStatus::Failed).await,
            EventPayload::ExecutionTimeout(_) => {
                self.terminal(event, ExecutionStatus::Timeout).await
            }
            EventPayload::ExecutionCancelled(_) => {
                self.terminal(event, ExecutionStatus::Cancelled).await
            }
            _ => Ok(()),
        }
    }

    async fn status_entry(
        &self,
        id: &str,
        status: ExecutionStatus,
        event_type: EventType,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ProcessError> {
        let data = json!({ "status": status, "event_type": event_type, "at": at }).to_string();
        let field = format!("status:{}", status_name(status));
        self.processor
            .stream
            .append(id, Dedupe::Once(&field), &[(stream::STATUS, data)])
            .await?;
        Ok(())
    }

    async fn terminal(&self, event: &Event, status: ExecutionStatus) -> Result<(), ProcessError> {
        let id = event.aggregate_id.as_str();
        let processor = &self.processor;
        processor.store.store_terminal(id, event, status).await?;
        let Some(doc) = processor.store.get(id).await? else {
            return Err(self.missing(event).await);
        };
        self.forget_missing(event.event_id);
        if !doc.status.is_terminal() {
            return Err(ProcessError::NotStored(id.to_owned()));
        }
        let ours = doc.result_event_id.as_deref() == Some(event.event_id.to_string().as_str());
        if !ours {
            ::metrics::counter!(metrics::DUPLICATES_IGNORED, "event_type" => event.event_type().as_str())
                .increment(1);
            tracing::debug!(execution_id = %id, stored = status_name(doc.status), "result already stored; ignoring");
        }
        // Also for a duplicate: a crash between the MongoDB write and this append would otherwise
        // leave the stream without its result forever. The append is de-duplicated.
        self.result_entries(&doc).await?;
        if ours && !processor.stream.result_published(id).await? {
            // Counted here, once per stored result (a redelivered event finds it published).
            ::metrics::counter!(metrics::RESULTS_STORED, "status" => status_name(status), "lang" => doc.lang.clone())
                .increment(1);
            if let (Some(request), Some(report)) = (&doc.agent, &doc.agent_result) {
                // The provider is the agent execution's `lang_version`.
                shared::agents::record_usage(&doc.lang_version, report);
                let day = shared::agents::budget_day(doc.created_at.to_chrono());
                processor
                    .spend
                    .settle(
                        &doc.id,
                        &doc.user_id,
                        &day,
                        request.max_cost_usd,
                        report.cost_usd,
                    )
                    .await?;
            }
            if let Some(finished) = doc.finished_at {
                let ms = finished.timestamp_millis() - doc.created_at.timestamp_millis();
                ::metrics::histogram!(metrics::END_TO_END_LATENCY)
                    .record(ms.max(0) as f64 / 1000.0);
            }
            // The same id on every run for this result: a redelivery that overtakes the first
            // run's in-flight publish (a broker restart, a rebalance) is then deduplicated.
            let stored = event.follow_once(
                EventPayload::ResultStored(ResultStored { status: doc.status }),
                SERVICE_NAME,
            );
            processor.producer.publish(&stored).await?;
            processor.stream.mark_result_published(id).await?;
        }
        // Last, off the result's path: the user's notification is insert-once, so a redelivery
        // after a crash before it (the result published or not) still stores it exactly once.
        processor.notifier.execution_finished(&doc).await?;
        Ok(())
    }

    /// The terminal `status` entry and the `result` entry, appended together, once.
    async fn result_entries(&self, doc: &ExecutionDoc) -> Result<(), ProcessError> {
        let event_type = match doc.status {
            ExecutionStatus::Completed => EventType::ExecutionCompleted,
            ExecutionStatus::Timeout => EventType::ExecutionTimeout,
            ExecutionStatus::Cancelled => EventType::ExecutionCancelled,
            _ => EventType::ExecutionFailed,
        };
        let at = doc.finished_at.map(DateTime::to_chrono);
        let status =
            json!({ "status": doc.status, "event_type": event_type, "at": at }).to_string();
        let view = serde_json::to_string(&ExecutionView::from(doc))?;
        self.processor
            .stream
            .append(
                &doc.id,
                Dedupe::Once(RESULT_FIELD),
                &[(stream::STATUS, status), (stream::RESULT, view)],
            )
            .await?;
        Ok(())
    }

    /// The execution is missing: the api inserts before it publishes, so this is lag, and the
    /// message is retried. On the last attempt `result_failed` goes out before the consumer loop
    /// dead-letters the message.
    async fn missing(&self, event: &Event) -> ProcessError {
        let attempt = {
            let mut attempts = self
                .missing_attempts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = attempts.entry(event.event_id).or_insert(0);
            *n += 1;
            *n
        };
        if attempt >= self.processor.max_attempts {
            self.forget_missing(event.event_id);
            let failed = event.follow(
                EventPayload::ResultFailed(ResultFailed {
                    message: format!(
                        "execution {} not found; result not stored",
                        event.aggregate_id
                    ),
                }),
                SERVICE_NAME,
            );
            ::metrics::counter!(metrics::RESULTS_FAILED).increment(1);
            if let Err(error) = self.processor.producer.publish(&failed).await {
                tracing::error!(%error, execution_id = %event.aggregate_id, "result_failed not published");
            }
        }
        ProcessError::Missing(event.aggregate_id.clone())
    }

    fn forget_missing(&self, event_id: Uuid) {
        self.missing_attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&event_id);
    }
}

impl Handler for ResultHandler {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        self.dispatch(&event).await.map_err(HandlerError::from)
    }
}
