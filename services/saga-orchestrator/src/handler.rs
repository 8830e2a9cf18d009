//! The consumer side: requests, cancels and terminal events move a saga between states.
//!
//! Every handler is idempotent. It reads the saga, picks the transition its state allows and
//! applies it conditionally (the filter names the state it read); a concurrent change (the request
//! and a cancel are on different topics, so handled in parallel) makes the update miss and the
//! handler reads again. The handler that applied a transition publishes the events it wrote;
//! what a failed publish leaves in the outbox the scheduler leader re-publishes.
//!
//! The two transitions every execution takes here (request → `queued`, terminal event →
//! `finished`) announce themselves without the outbox: their events' ids derive from the message
//! that caused them, and the message is acknowledged only after Kafka acknowledged the events.
//! A crash in between redelivers the message, which finds the transition done and publishes the
//! same events again (consumers de-duplicate on the id). That saves a write per transition.

use mongodb::bson::{DateTime, doc};
use shared::events::{
    DeletePodCommand, Event, EventPayload, EventType, ExecutionCancelRequested, ExecutionCancelled,
    ExecutionQueued, ExecutionRequested, derived_event_id,
};
use shared::kafka::{Handler, HandlerError, InboundMessage};
use uuid::Uuid;

use crate::events::{flow_of, progress, saga_event};
use crate::outbox::{self, OutboxError};
use crate::store::{Flow, SagaDoc, SagaState, Step, StoreError, Transition};
use crate::{Orchestrator, metrics};

/// Reads and conditional writes race at most with one concurrent handler per topic; a few rounds
/// settle it, and a retry of the message covers the rest.
const ROUNDS: usize = 4;
/// `user_id` of a request without one (the api always sets it).
const ANONYMOUS: &str = "anonymous";

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("saga {0} kept changing under concurrent updates")]
    Contended(String),
    #[error(transparent)]
    Publish(#[from] OutboxError),
}

/// What a handler's write asks to publish.
enum Announce {
    /// Written to the saga's outbox with the transition.
    Outbox(Vec<Event>),
    /// Not stored: ids derived from the message, published before it is acknowledged.
    Direct(Vec<Event>),
}

impl From<HandleError> for HandlerError {
    fn from(error: HandleError) -> Self {
        let class = match &error {
            HandleError::Store(_) => "saga_store",
            HandleError::Contended(_) => "saga_contended",
            HandleError::Publish(_) => "saga_publish",
        };
        HandlerError::retryable(class, error)
    }
}

pub struct SagaHandler {
    saga: Orchestrator,
}

impl SagaHandler {
    pub fn new(saga: Orchestrator) -> Self {
        Self { saga }
    }

    async fn dispatch(&self, event: &Event) -> Result<(), HandleError> {
        let id = event.aggregate_id.as_str();
        let written = match &event.payload {
            EventPayload::ExecutionRequested(request) => self.requested(event, request).await?,
            EventPayload::ExecutionCancelRequested(cancel) => self.cancel(event, cancel).await?,
            EventPayload::ExecutionCompleted(_)
            | EventPayload::ExecutionFailed(_)
            | EventPayload::ExecutionTimeout(_)
            | EventPayload::ExecutionCancelled(_) => self.terminal(event).await?,
            // Another type on a consumed topic would be a producer bug; nothing to do with it.
            _ => return Ok(()),
        };
        match written {
            // Only the writer of a transition publishes its outbox at once: a handler that
            // changed nothing must not re-send events another worker is publishing right now.
            // If this publish fails, the events stay in the outbox and the scheduler leader
            // re-publishes them, so the message can still be acknowledged.
            Some(Announce::Outbox(events)) => {
                if let Err(error) =
                    outbox::publish(&self.saga.store, &self.saga.producer, id, &events).await
                {
                    tracing::warn!(saga_id = %id, error = %error, "saga events not published yet; the outbox keeps them");
                }
            }
            // Nothing keeps these but the message: a failed publish fails the message, which
            // is retried and publishes them again.
            Some(Announce::Direct(events)) => {
                outbox::publish_kept(&self.saga.producer, &events).await?;
            }
            None => return Ok(()),
        }
        self.saga.wake.notify_one();
        Ok(())
    }

    /// requested → a new `queued` saga; or, for a marker left by an earlier cancel, cancelled at
    /// once. A duplicate request finds the saga and changes nothing.
    async fn requested(
        &self,
        event: &Event,
        request: &ExecutionRequested,
    ) -> Result<Option<Announce>, HandleError> {
        let id = event.aggregate_id.as_str();
        let flow = Flow {
            request_event_id: Some(event.event_id.to_string()),
            ..flow_of(event)
        };
        for _ in 0..ROUNDS {
            // Nearly every request is new: insert first, read only when a saga exists.
            let mut queued = saga_event(
                id,
                &flow,
                Some(event.event_id),
                EventPayload::ExecutionQueued(ExecutionQueued { position: None }),
            );
            queued.event_id = derived_event_id(event.event_id, EventType::ExecutionQueued);
            {
                let saga = SagaDoc {
                    id: id.to_owned(),
                    user_id: Some(
                        event
                            .metadata
                            .user_id
                            .clone()
                            .unwrap_or_else(|| ANONYMOUS.to_owned()),
                    ),
                    state: SagaState::Queued,
                    priority: i32::from(request.priority),
                    // Submission time, so FIFO follows the users' order, not arrival order
                    // across partitions.
                    enqueued_at: Some(DateTime::from_chrono(event.occurred_at)),
                    scheduled_at: None,
                    deadline_at: None,
                    finished_at: None,
                    request: Some(request.clone()),
                    flow: Some(flow.clone()),
                    steps: vec![Step::done("queued")],
                    compensations: Vec::new(),
                    outbox: Vec::new(),
                    outbox_at: None,
                    cancelled_by: None,
                    updated_at: DateTime::now(),
                };
                if self.saga.store.insert(&saga).await? {
                    let entry = crate::queue::Queued {
                        id: saga.id.clone(),
                        user_id: saga.user_id.clone().unwrap_or_default(),
                        priority: saga.priority,
                        enqueued_at: saga.enqueued_at.map_or(0, |at| at.timestamp_millis()),
                    };
                    self.saga.queue.push_inserted(entry, saga);
                    return Ok(Some(Announce::Direct(vec![queued])));
                }
            }
            let Some(saga) = self.saga.store.get(id).await? else {
                continue;
            };
            if saga.request.is_some() {
                // A redelivery (or the api re-announcing the request): the first run may have
                // stopped between its insert and its publish, so the same event goes out again.
                return Ok(
                    (saga.state == SagaState::Queued).then(|| Announce::Direct(vec![queued]))
                );
            }
            // A marker: something ended this execution before its request arrived.
            let mut transition = Transition::new(
                &[SagaState::Cancelled, SagaState::Finished],
                saga.state,
                Step::done("request_after_end"),
            );
            transition.filter = doc! { "request": { "$exists": false } };
            transition.set = doc! {
                "request": crate::store::SagaStore::to_bson(request)?,
                "user_id": event.metadata.user_id.clone().unwrap_or_else(|| ANONYMOUS.to_owned()),
                "priority": i32::from(request.priority),
                "enqueued_at": DateTime::from_chrono(event.occurred_at),
                "flow": crate::store::SagaStore::to_bson(&flow)?,
            };
            if saga.state == SagaState::Cancelled {
                // The cancel was recorded but not announced: the execution still shows `queued`.
                transition.outbox.push(saga_event(
                    id,
                    &flow,
                    Some(event.event_id),
                    EventPayload::ExecutionCancelled(ExecutionCancelled {
                        reason: "cancelled".to_owned(),
                        cancelled_by: saga.cancelled_by.clone(),
                    }),
                ));
            }
            if let Some(events) = self.saga.store.apply(id, transition).await? {
                return Ok(Some(Announce::Outbox(events)));
            }
        }
        Err(HandleError::Contended(id.to_owned()))
    }

    /// cancel: a queued saga never runs; a scheduled one has its executor deleted; an ended one
    /// is left alone; an unknown one gets a marker so its request is cancelled when it comes.
    async fn cancel(
        &self,
        event: &Event,
        cancel: &ExecutionCancelRequested,
    ) -> Result<Option<Announce>, HandleError> {
        let id = event.aggregate_id.as_str();
        for _ in 0..ROUNDS {
            let Some(saga) = self.saga.store.get(id).await? else {
                let marker = doc! {
                    "state": SagaState::Cancelled.as_str(),
                    "cancelled_by": &cancel.requested_by,
                    "flow": crate::store::SagaStore::to_bson(&flow_of(event))?,
                    "steps": [crate::store::SagaStore::to_bson(&Step::done("cancel_before_request"))?],
                    "compensations": [],
                    "outbox": [],
                    "updated_at": DateTime::now(),
                };
                if self.saga.store.insert_marker(id, marker).await? {
                    return Ok(None);
                }
                continue;
            };
            let flow = saga.flow.clone().unwrap_or_else(|| flow_of(event));
            // Built when pushed, so event ids (UUIDv7) follow the publish order.
            let cancelled = || {
                saga_event(
                    id,
                    &flow,
                    Some(event.event_id),
                    EventPayload::ExecutionCancelled(ExecutionCancelled {
                        reason: "cancelled".to_owned(),
                        cancelled_by: Some(cancel.requested_by.clone()),
                    }),
                )
            };
            let mut transition = match saga.state {
                SagaState::Finished | SagaState::Cancelled => return Ok(None),
                SagaState::Queued => {
                    let mut t = Transition::new(
                        &[SagaState::Queued],
                        SagaState::Cancelled,
                        Step::done("cancelled"),
                    );
                    t.outbox.push(cancelled());
                    t
                }
                SagaState::Scheduled | SagaState::Running => {
                    let mut t = Transition::new(
                        SagaState::ACTIVE,
                        SagaState::Cancelled,
                        Step::done("cancelled"),
                    );
                    t.compensations.push(Step::done("delete_executor"));
                    t.outbox
                        .push(delete_pod(id, &flow, Some(event.event_id), "cancelled"));
                    t.outbox.push(cancelled());
                    t.outbox.push(saga_event(
                        id,
                        &flow,
                        Some(event.event_id),
                        EventPayload::SagaCompensated(progress(
                            id,
                            "delete_executor",
                            Some("cancelled".into()),
                        )),
                    ));
                    t
                }
            };
            transition.set =
                doc! { "finished_at": DateTime::now(), "cancelled_by": &cancel.requested_by };
            if let Some(events) = self.saga.store.apply(id, transition).await? {
                ::metrics::counter!(metrics::TERMINAL_TOTAL, "status" => "cancelled").increment(1);
                return Ok(Some(Announce::Outbox(events)));
            }
        }
        Err(HandleError::Contended(id.to_owned()))
    }

    /// A terminal execution event ends the saga and frees its slot. Events this service
    /// published itself (`execution_cancelled`, `execution_failed{executor_lost}`) come back
    /// here and find the saga already ended.
    async fn terminal(&self, event: &Event) -> Result<Option<Announce>, HandleError> {
        let id = event.aggregate_id.as_str();
        let status = terminal_status(&event.payload);
        let flow = flow_of(event);
        let mut completed = saga_event(
            id,
            &flow,
            Some(event.event_id),
            EventPayload::SagaCompleted(progress(id, "finished", Some(status.to_owned()))),
        );
        completed.event_id = derived_event_id(event.event_id, EventType::SagaCompleted);
        for _ in 0..ROUNDS {
            // Nearly every terminal event ends a saga in flight: update first, read only when
            // the update finds nothing to end (or its batch cannot tell, see `apply_lingering`:
            // the read below then finds the saga ended by this very event).
            // From the slot-holding states only, so a match frees a slot for sure; a saga
            // still queued (it holds none) is ended below.
            let transition = ending(&[SagaState::Scheduled, SagaState::Running], status);
            let written_at = std::time::Instant::now();
            if self
                .saga
                .store
                .apply_lingering(id, transition)
                .await?
                .is_some()
            {
                // Only a certain match: the read below cannot tell this write from an earlier
                // run's, which the scheduler's count may already have seen.
                self.saga
                    .freed
                    .record(event.metadata.user_id.clone(), written_at);
                ::metrics::counter!(metrics::TERMINAL_TOTAL, "status" => status).increment(1);
                return Ok(Some(Announce::Direct(vec![completed])));
            }
            let Some(saga) = self.saga.store.get(id).await? else {
                let marker = doc! {
                    "state": SagaState::Finished.as_str(),
                    "outcome": status,
                    "flow": crate::store::SagaStore::to_bson(&flow)?,
                    "steps": [crate::store::SagaStore::to_bson(&Step::done("ended_before_request"))?],
                    "compensations": [],
                    "outbox": [],
                    "finished_at": DateTime::now(),
                    "updated_at": DateTime::now(),
                };
                if self.saga.store.insert_marker(id, marker).await? {
                    return Ok(None);
                }
                continue;
            };
            match saga.state {
                // Ended by an event like this one: maybe this very event, redelivered after a
                // crash before its publish.
                SagaState::Finished
                    if saga.steps.last().is_some_and(|step| step.name == status) =>
                {
                    return Ok(Some(Announce::Direct(vec![completed])));
                }
                SagaState::Finished | SagaState::Cancelled => return Ok(None),
                // Ended before it was ever scheduled (rare: nothing runs for a queued saga).
                SagaState::Queued => {
                    let transition = ending(&[SagaState::Queued], status);
                    if self.saga.store.apply(id, transition).await?.is_some() {
                        ::metrics::counter!(metrics::TERMINAL_TOTAL, "status" => status)
                            .increment(1);
                        return Ok(Some(Announce::Direct(vec![completed])));
                    }
                }
                // It changed between the update and the read: try again.
                _ => {}
            }
        }
        Err(HandleError::Contended(id.to_owned()))
    }
}

/// The transition a terminal execution event makes from `from` to `finished`.
fn ending(from: &'static [SagaState], status: &str) -> Transition {
    let mut transition = Transition::new(from, SagaState::Finished, Step::done(status));
    transition.set = doc! { "finished_at": DateTime::now(), "outcome": status };
    transition
}

pub(crate) fn delete_pod(id: &str, flow: &Flow, cause: Option<Uuid>, reason: &str) -> Event {
    saga_event(
        id,
        flow,
        cause,
        EventPayload::DeletePodCommand(DeletePodCommand {
            saga_id: id.to_owned(),
            reason: reason.to_owned(),
        }),
    )
}

fn terminal_status(payload: &EventPayload) -> &'static str {
    match payload {
        EventPayload::ExecutionCompleted(_) => "completed",
        EventPayload::ExecutionTimeout(_) => "timeout",
        EventPayload::ExecutionCancelled(_) => "cancelled",
        _ => "failed",
    }
}

impl Handler for SagaHandler {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        self.dispatch(&event).await.map_err(HandlerError::from)
    }
}
