//! The catalogue: one line per event type ties its wire name, payload type, category and meaning
//! together, so the enum of types, the payload enum and `docs/events.md` cannot drift apart.

use serde::{Deserialize, Serialize};

use super::payloads::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Execution,
    Executor,
    Command,
    Result,
    Saga,
    Dlq,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Executor => "executor",
            Self::Command => "command",
            Self::Result => "result",
            Self::Saga => "saga",
            Self::Dlq => "dlq",
        }
    }
}

macro_rules! catalogue {
    ($( $variant:ident ( $payload:ty ) = $name:literal, $category:ident, $producer:literal, $doc:literal; )+) => {
        /// The type of an event; its wire name is also its topic suffix.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EventType { $( $variant, )+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$( EventType::$variant, )+];

            pub fn as_str(self) -> &'static str {
                match self { $( EventType::$variant => $name, )+ }
            }

            pub fn category(self) -> Category {
                match self { $( EventType::$variant => Category::$category, )+ }
            }

            /// The service that publishes this event type.
            pub fn producer(self) -> &'static str {
                match self { $( EventType::$variant => $producer, )+ }
            }

            pub fn description(self) -> &'static str {
                match self { $( EventType::$variant => $doc, )+ }
            }

            /// The payload schema version; bump when a payload changes incompatibly.
            pub fn version(self) -> u16 {
                1
            }

            pub fn parse(name: &str) -> Option<EventType> {
                match name { $( $name => Some(EventType::$variant), )+ _ => None }
            }
        }

        /// The typed payload; serialized next to the envelope as `event_type` + `payload`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "event_type", content = "payload", rename_all = "snake_case")]
        pub enum EventPayload { $( $variant($payload), )+ }

        impl EventPayload {
            pub fn event_type(&self) -> EventType {
                match self { $( EventPayload::$variant(_) => EventType::$variant, )+ }
            }
        }
    };
}

catalogue! {
    ExecutionRequested(ExecutionRequested) = "execution_requested", Execution, "api",
        "A user submitted a script; carries the script, language and resolved limits.";
    ExecutionQueued(ExecutionQueued) = "execution_queued", Execution, "saga-orchestrator",
        "The execution waits for a concurrency slot.";
    ExecutionScheduled(ExecutionScheduled) = "execution_scheduled", Execution, "saga-orchestrator",
        "A slot was granted and the saga asked for an executor.";
    ExecutionStarted(ExecutionStarted) = "execution_started", Execution, "pod-monitor",
        "The user program started inside its executor.";
    ExecutionOutput(ExecutionOutput) = "execution_output", Execution, "pod-monitor",
        "A chunk of live stdout or stderr, with a per-execution sequence number.";
    ExecutionCompleted(ExecutionFinished) = "execution_completed", Execution, "pod-monitor",
        "The program ended by itself (any exit code); carries its output and resource use.";
    ExecutionFailed(ExecutionFailed) = "execution_failed", Execution, "saga-orchestrator",
        "The platform could not run the program; error_type says why.";
    ExecutionTimeout(ExecutionTimedOut) = "execution_timeout", Execution, "pod-monitor",
        "The program hit its wall-time limit; carries the output produced so far.";
    ExecutionCancelled(ExecutionCancelled) = "execution_cancelled", Execution, "saga-orchestrator",
        "The execution was cancelled, queued or running, and its slot released.";
    ExecutionCancelRequested(ExecutionCancelRequested) = "execution_cancel_requested", Execution, "api",
        "A user or admin asked to cancel an execution.";
    PodCreated(ExecutorRef) = "pod_created", Executor, "k8s-worker",
        "An executor (pod or local sandbox) was created for an execution.";
    PodScheduled(ExecutorRef) = "pod_scheduled", Executor, "pod-monitor",
        "The executor was placed on a node.";
    PodRunning(ExecutorRef) = "pod_running", Executor, "pod-monitor",
        "The executor's container is running.";
    PodTerminated(PodTerminated) = "pod_terminated", Executor, "pod-monitor",
        "The executor stopped; carries its exit code and reason.";
    CreatePodCommand(CreatePodCommand) = "create_pod_command", Command, "saga-orchestrator",
        "Asks k8s-worker to create the executor for an execution.";
    DeletePodCommand(DeletePodCommand) = "delete_pod_command", Command, "saga-orchestrator",
        "Asks k8s-worker to delete an execution's executor (cancel or compensation).";
    ResultStored(ResultStored) = "result_stored", Result, "result-processor",
        "The terminal result is durably stored in MongoDB.";
    ResultFailed(ResultFailed) = "result_failed", Result, "result-processor",
        "The terminal result could not be stored.";
    SagaStarted(SagaProgress) = "saga_started", Saga, "saga-orchestrator",
        "An execution saga began.";
    SagaStepCompleted(SagaProgress) = "saga_step_completed", Saga, "saga-orchestrator",
        "One saga step finished.";
    SagaCompleted(SagaProgress) = "saga_completed", Saga, "saga-orchestrator",
        "The saga reached its end.";
    SagaFailed(SagaProgress) = "saga_failed", Saga, "saga-orchestrator",
        "A saga step failed; compensation follows.";
    SagaCompensated(SagaProgress) = "saga_compensated", Saga, "saga-orchestrator",
        "The saga's compensations ran.";
    DlqMessageReceived(DlqMessageRef) = "dlq_message_received", Dlq, "dlq-processor",
        "A dead-lettered message was stored for retry.";
    DlqMessageRetried(DlqMessageRef) = "dlq_message_retried", Dlq, "dlq-processor",
        "A dead-lettered message was re-published to its original topic.";
    DlqMessageParked(DlqMessageRef) = "dlq_message_parked", Dlq, "dlq-processor",
        "A dead-lettered message exhausted its retries and waits for an admin.";
    DlqMessageDiscarded(DlqMessageRef) = "dlq_message_discarded", Dlq, "api",
        "An admin discarded a dead-lettered message, with a reason.";
}

/// The catalogue as the Markdown table kept in `docs/events.md`.
pub fn catalogue_markdown(prefix: &str) -> String {
    let mut out = String::from("| event_type | topic | category | producer | meaning |\n");
    out.push_str("|---|---|---|---|---|\n");
    for t in EventType::ALL {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            t.as_str(),
            super::topic_for(prefix, *t),
            t.category().as_str(),
            t.producer(),
            t.description()
        ));
    }
    out.push_str(&format!(
        "| (raw message) | `{}` | dlq | every consumer | A message whose handling failed for good; headers say where it came from and why. |\n",
        super::dead_letter_topic(prefix)
    ));
    out
}
