//! The consumer of `create_pod_command` and `delete_pod_command`.

use std::sync::Arc;

use shared::events::{
    CreatePodCommand, DeletePodCommand, ErrorType, Event, EventPayload, ExecutionFailed,
};
use shared::kafka::{EventProducer, Handler, HandlerError, InboundMessage};

use crate::SERVICE_NAME;
use crate::runtime::{ExecutorMeta, ExecutorRuntime, ExecutorSpec, RuntimeError};

pub struct Worker<R> {
    runtime: Arc<R>,
    producer: EventProducer,
}

impl<R: ExecutorRuntime> Worker<R> {
    pub fn new(runtime: Arc<R>, producer: EventProducer) -> Self {
        Self { runtime, producer }
    }

    async fn publish(&self, event: Event) -> Result<(), HandlerError> {
        self.producer
            .publish(&event)
            .await
            .map(|_| ())
            .map_err(|e| HandlerError::retryable("publish_failed", e))
    }

    async fn create(&self, event: &Event, command: &CreatePodCommand) -> Result<(), HandlerError> {
        let request = &command.request;
        let spec = ExecutorSpec {
            execution_id: event.aggregate_id.clone(),
            lang: request.lang.clone(),
            lang_version: request.lang_version.clone(),
            script: request.script.clone(),
            stdin: request.stdin.clone(),
            limits: request.limits.clone(),
            meta: ExecutorMeta {
                user_id: event.metadata.user_id.clone(),
                correlation_id: event.correlation_id,
                causation_id: event.event_id,
                traceparent: shared::telemetry::current_traceparent(),
            },
            agent: request.agent.clone(),
        };
        match self.runtime.create(&spec).await {
            Ok(executor) => {
                tracing::info!(execution_id = %spec.execution_id, executor = %executor.executor, "executor created");
                self.publish(event.follow(EventPayload::PodCreated(executor), SERVICE_NAME))
                    .await
            }
            Err(error) if error.is_permanent() => {
                tracing::warn!(execution_id = %spec.execution_id, %error, "executor cannot be created");
                let failed = ExecutionFailed {
                    error_type: ErrorType::SystemError,
                    message: error.to_string(),
                    outcome: None,
                };
                self.publish(event.follow(EventPayload::ExecutionFailed(failed), SERVICE_NAME))
                    .await
            }
            Err(error) => Err(retryable("executor_create_failed", error)),
        }
    }

    async fn delete(&self, event: &Event, command: &DeletePodCommand) -> Result<(), HandlerError> {
        self.runtime
            .delete(&event.aggregate_id, &command.reason)
            .await
            .map_err(|error| retryable("executor_delete_failed", error))?;
        tracing::info!(execution_id = %event.aggregate_id, reason = %command.reason, "executor deleted");
        Ok(())
    }
}

fn retryable(class: &'static str, error: RuntimeError) -> HandlerError {
    HandlerError::retryable(class, error)
}

impl<R: ExecutorRuntime> Handler for Worker<R> {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        let event = message.decode_event()?;
        match &event.payload {
            EventPayload::CreatePodCommand(command) => self.create(&event, command).await,
            EventPayload::DeletePodCommand(command) => self.delete(&event, command).await,
            // Only the two command topics are subscribed; anything else is not ours.
            _ => Ok(()),
        }
    }
}
