//! What an executor pod's status means for its execution (pure, so every case is tested against
//! recorded pod JSON in `tests/fixtures/pods/`).

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kiln_runner_protocol::RunnerResult;
use kiln_runner_protocol::pod::{ANNOTATION_CANCELLED, CONTAINER_NAME};
use shared::events::{
    ErrorType, EventPayload, ExecutionFailed, ExecutionOutcome, ExecutionTimedOut,
};

/// Waiting reasons that mean the image will not arrive by itself.
const IMAGE_PULL_REASONS: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
/// Waiting reasons that cannot recover at all: fail without waiting for the grace.
const IMAGE_FATAL_REASONS: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];

/// Where a pod stands, as far as events are concerned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observed {
    /// Not on a node yet, or waiting within the image-pull grace.
    Pending,
    Scheduled {
        node: String,
    },
    Running {
        node: String,
    },
    /// Being deleted and not yet terminal: wait for the container to stop.
    Terminating,
    Finished(Finish),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finish {
    /// The runner reported how the program ended.
    Result(Box<RunnerResult>),
    /// `activeDeadlineSeconds` passed: the pod was killed, only the output so far exists.
    DeadlineExceeded,
    /// OOMKilled (the container's memory limit) or Evicted (node pressure).
    ResourceLimit {
        reason: &'static str,
        message: String,
    },
    /// The image cannot be pulled.
    ImagePull(String),
    /// Gone without a result: deleted by someone else, killed, or failed before the runner ran.
    Lost(String),
    /// k8s-worker deleted it on purpose (the execution was cancelled).
    Cancelled,
}

/// Reads `pod` at `now`; an image pull failing for `image_pull_grace` is final.
pub(crate) fn assess(
    pod: &Pod,
    now: DateTime<Utc>,
    image_pull_grace: chrono::Duration,
) -> Observed {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let reason = status.reason.as_deref().unwrap_or("");
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER_NAME);
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    let cancelled = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_CANCELLED));
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let terminal_phase = matches!(phase, "Succeeded" | "Failed");

    if phase == "Failed" && reason == "DeadlineExceeded" {
        return Observed::Finished(Finish::DeadlineExceeded);
    }
    if phase == "Failed" && reason == "Evicted" {
        return Observed::Finished(Finish::ResourceLimit {
            reason: "evicted",
            message: format!(
                "evicted: {}",
                status
                    .message
                    .as_deref()
                    .unwrap_or("node resource pressure")
            ),
        });
    }
    if let Some(terminated) = &state.terminated {
        if terminated.reason.as_deref() == Some("OOMKilled") {
            return Observed::Finished(Finish::ResourceLimit {
                reason: "oom_killed",
                message: "memory limit exceeded (OOMKilled)".into(),
            });
        }
        if cancelled {
            return Observed::Finished(Finish::Cancelled);
        }
        return Observed::Finished(match runner_result(terminated) {
            Some(result) if result.cancelled => {
                Finish::Lost("the pod was deleted before the program finished".into())
            }
            Some(result) => Finish::Result(Box::new(result)),
            None => Finish::Lost(format!(
                "the executor container ended ({}, exit code {}) without a result",
                terminated.reason.as_deref().unwrap_or("no reason"),
                terminated.exit_code
            )),
        });
    }
    if terminal_phase {
        if cancelled {
            return Observed::Finished(Finish::Cancelled);
        }
        return Observed::Finished(Finish::Lost(format!(
            "the pod ended ({phase}{}) without a result",
            if reason.is_empty() {
                String::new()
            } else {
                format!(", {reason}")
            }
        )));
    }
    if deleting {
        return Observed::Terminating;
    }
    if let Some(waiting) = &state.waiting {
        let why = waiting.reason.as_deref().unwrap_or("");
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(chrono::Duration::zero(), |t| {
                chrono::Duration::milliseconds(now.timestamp_millis() - t.0.as_millisecond())
            });
        let fatal = IMAGE_FATAL_REASONS.contains(&why);
        if fatal || (IMAGE_PULL_REASONS.contains(&why) && age >= image_pull_grace) {
            let image = container.map(|c| c.image.clone()).unwrap_or_default();
            return Observed::Finished(Finish::ImagePull(format!(
                "the executor image {image} cannot be pulled ({why}): {}",
                waiting.message.as_deref().unwrap_or("no details")
            )));
        }
    }
    match (phase, node) {
        ("Running", Some(node)) if state.running.is_some() => Observed::Running { node },
        (_, Some(node)) => Observed::Scheduled { node },
        _ => Observed::Pending,
    }
}

fn runner_result(terminated: &ContainerStateTerminated) -> Option<RunnerResult> {
    serde_json::from_str(terminated.message.as_deref()?).ok()
}

/// The pod's reason in `pod_terminated`.
pub(crate) fn terminated_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Result(_) => "exited",
        Finish::DeadlineExceeded => "deadline_exceeded",
        Finish::ResourceLimit { reason, .. } => reason,
        Finish::ImagePull(_) => "image_pull_failed",
        Finish::Lost(_) => "lost",
        Finish::Cancelled => "cancelled",
    }
}

/// The execution's terminal event for `finish`, with the output captured from the log; `None`
/// for a cancelled execution (the saga already ended it).
pub(crate) fn terminal_payload(
    finish: &Finish,
    stdout: String,
    stderr: String,
    timeout_seconds: u64,
) -> Option<EventPayload> {
    let partial = |stdout, stderr| ExecutionOutcome {
        stdout,
        stderr,
        ..ExecutionOutcome::default()
    };
    let failed = |error_type, message: &str, outcome| {
        EventPayload::ExecutionFailed(ExecutionFailed {
            error_type,
            message: message.to_owned(),
            outcome,
        })
    };
    Some(match finish {
        Finish::Result(result) => {
            crate::outcome::terminal_payload(result, stdout, stderr, timeout_seconds)
        }
        Finish::DeadlineExceeded => EventPayload::ExecutionTimeout(ExecutionTimedOut {
            timeout_seconds,
            outcome: partial(stdout, stderr),
        }),
        Finish::ResourceLimit { message, .. } => failed(
            ErrorType::ResourceLimit,
            message,
            Some(partial(stdout, stderr)),
        ),
        Finish::ImagePull(message) => failed(ErrorType::SystemError, message, None),
        Finish::Lost(message) => failed(
            ErrorType::ExecutorLost,
            message,
            Some(partial(stdout, stderr)),
        ),
        Finish::Cancelled => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn fixture(name: &str) -> Pod {
        let path = format!(
            "{}/tests/fixtures/pods/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// Fixtures were created at 2026-01-01T00:00:00Z.
    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::seconds(seconds)
    }

    fn observe(name: &str) -> Observed {
        assess(&fixture(name), at(30), chrono::Duration::seconds(60))
    }

    fn finish(name: &str) -> Finish {
        match observe(name) {
            Observed::Finished(finish) => finish,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn payload(name: &str) -> EventPayload {
        terminal_payload(&finish(name), "so far".into(), "err".into(), 5).unwrap()
    }

    #[test]
    fn phases_before_the_end() {
        assert_eq!(observe("pending"), Observed::Pending);
        assert_eq!(
            observe("scheduled"),
            Observed::Scheduled {
                node: "node-a".into()
            }
        );
        assert_eq!(
            observe("running"),
            Observed::Running {
                node: "node-a".into()
            }
        );
    }

    #[test]
    fn success_and_non_zero_exit_complete_with_the_runner_result() {
        let EventPayload::ExecutionCompleted(done) = payload("succeeded") else {
            panic!()
        };
        assert_eq!(done.outcome.exit_code, Some(0));
        assert_eq!(done.outcome.resource_usage.wall_ms, 41);
        assert_eq!(done.outcome.stdout, "so far");
        let EventPayload::ExecutionCompleted(done) = payload("exit-nonzero") else {
            panic!()
        };
        assert_eq!(done.outcome.exit_code, Some(3));
    }

    #[test]
    fn the_runner_timeout_and_the_pod_deadline_are_timeouts_with_the_output_so_far() {
        let EventPayload::ExecutionTimeout(t) = payload("runner-timeout") else {
            panic!()
        };
        assert_eq!(
            (t.timeout_seconds, t.outcome.stdout.as_str()),
            (5, "so far")
        );
        assert_eq!(finish("deadline-exceeded"), Finish::DeadlineExceeded);
        let EventPayload::ExecutionTimeout(t) = payload("deadline-exceeded") else {
            panic!()
        };
        assert_eq!(t.outcome.stdout, "so far");
    }

    #[test]
    fn oom_and_eviction_are_resource_limit_failures() {
        for (name, reason) in [("oom-killed", "oom_killed"), ("evicted", "evicted")] {
            let f = finish(name);
            assert_eq!(terminated_reason(&f), reason);
            let EventPayload::ExecutionFailed(failed) = payload(name) else {
                panic!()
            };
            assert_eq!(failed.error_type, ErrorType::ResourceLimit, "{name}");
            assert_eq!(failed.outcome.unwrap().stdout, "so far");
        }
    }

    #[test]
    fn an_image_pull_failure_is_a_system_error_only_after_the_grace() {
        let pod = fixture("image-pull-backoff");
        let grace = chrono::Duration::seconds(60);
        assert_eq!(
            assess(&pod, at(59), grace),
            Observed::Scheduled {
                node: "node-a".into()
            }
        );
        let Observed::Finished(f) = assess(&pod, at(60), grace) else {
            panic!()
        };
        let EventPayload::ExecutionFailed(failed) =
            terminal_payload(&f, String::new(), String::new(), 5).unwrap()
        else {
            panic!()
        };
        assert_eq!(failed.error_type, ErrorType::SystemError);
        assert!(
            failed.message.contains("ImagePullBackOff"),
            "{}",
            failed.message
        );
        assert!(failed.message.contains("kiln/executor-python:3.11"));
    }

    #[test]
    fn cancelled_and_lost_pods() {
        let mut pod = fixture("running");
        pod.metadata.deletion_timestamp = pod.metadata.creation_timestamp.clone();
        assert_eq!(
            assess(&pod, at(1), chrono::Duration::seconds(60)),
            Observed::Terminating
        );
        let mut cancelled = fixture("exit-nonzero");
        cancelled
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_CANCELLED.into(), "user".into());
        let Observed::Finished(f) = assess(&cancelled, at(1), chrono::Duration::seconds(60)) else {
            panic!()
        };
        assert_eq!(f, Finish::Cancelled);
        assert!(terminal_payload(&f, String::new(), String::new(), 5).is_none());
        let EventPayload::ExecutionFailed(failed) = payload("failed-no-result") else {
            panic!()
        };
        assert_eq!(failed.error_type, ErrorType::ExecutorLost);
    }
}
