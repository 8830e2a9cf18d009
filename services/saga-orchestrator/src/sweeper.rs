//! The sweeper: a saga holding a slot past its deadline (timeout + executor grace) lost its
//! executor (or its terminal event). It is failed with `executor_lost`, the executor deleted, and
//! the slot released, so nothing waits forever.

use mongodb::bson::{DateTime, doc};
use shared::events::{ErrorType, Event, EventPayload, ExecutionFailed};

use crate::events::{progress, saga_event};
use crate::handler::delete_pod;
use crate::outbox;
use crate::store::{SagaDoc, SagaState, Step, StoreError, Transition};
use crate::{Orchestrator, metrics};

pub const EXECUTOR_LOST_REASON: &str = "executor_lost";

/// Fails every overdue saga; returns how many it failed.
pub async fn sweep(saga: &Orchestrator) -> Result<usize, StoreError> {
    let now = DateTime::now();
    let mut failed = 0;
    for doc in saga.store.overdue(now).await? {
        if let Some(events) = fail_lost(saga, &doc, now).await? {
            failed += 1;
            if let Err(error) = outbox::publish(&saga.store, &saga.producer, &doc.id, &events).await
            {
                tracing::warn!(saga_id = %doc.id, error = %error, "sweeper events not published yet; will retry");
            }
        }
    }
    Ok(failed)
}

async fn fail_lost(
    saga: &Orchestrator,
    doc: &SagaDoc,
    now: DateTime,
) -> Result<Option<Vec<Event>>, StoreError> {
    let id = doc.id.as_str();
    let (flow, cause) = doc.flow_and_cause();
    let message = "no terminal event before the execution's deadline (timeout + executor grace)";
    let mut transition = Transition::new(
        SagaState::ACTIVE,
        SagaState::Finished,
        Step::failed(EXECUTOR_LOST_REASON, message),
    );
    transition.filter = doc! { "deadline_at": { "$lt": now } };
    transition.set = doc! { "finished_at": now, "outcome": "failed" };
    transition.compensations.push(Step::done("delete_executor"));
    transition
        .outbox
        .push(delete_pod(id, &flow, cause, EXECUTOR_LOST_REASON));
    transition.outbox.push(saga_event(
        id,
        &flow,
        cause,
        EventPayload::ExecutionFailed(ExecutionFailed {
            error_type: ErrorType::ExecutorLost,
            message: message.to_owned(),
            outcome: None,
        }),
    ));
    transition.outbox.push(saga_event(
        id,
        &flow,
        cause,
        EventPayload::SagaCompensated(progress(
            id,
            "delete_executor",
            Some(EXECUTOR_LOST_REASON.into()),
        )),
    ));
    let applied = saga.store.apply(id, transition).await?;
    if applied.is_some() {
        ::metrics::counter!(metrics::TERMINAL_TOTAL, "status" => "failed").increment(1);
        tracing::warn!(saga_id = %id, "executor lost; execution failed");
    }
    Ok(applied)
}
