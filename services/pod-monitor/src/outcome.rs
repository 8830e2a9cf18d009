//! How a runner's result becomes the execution's terminal event (pure, so every case is tested).

use kiln_runner_protocol::RunnerResult;
use shared::events::{
    ErrorType, EventPayload, ExecutionFailed, ExecutionFinished, ExecutionOutcome,
    ExecutionTimedOut, ResourceUsage,
};

/// Exit code reported for a program killed by a signal, as shells do (128 + signal).
const SIGNAL_EXIT_BASE: i32 = 128;

/// The terminal payload for `result`, with the captured output.
pub(crate) fn terminal_payload(
    result: &RunnerResult,
    stdout: String,
    stderr: String,
    timeout_seconds: u64,
) -> EventPayload {
    let outcome = ExecutionOutcome {
        stdout,
        stderr,
        stdout_truncated: result.stdout_truncated,
        stderr_truncated: result.stderr_truncated,
        exit_code: result
            .exit_code
            .or(result.signal.map(|signal| SIGNAL_EXIT_BASE + signal)),
        resource_usage: ResourceUsage {
            wall_ms: result.wall_ms,
            cpu_ms: result.cpu_ms,
            peak_memory_kb: result.peak_memory_kb,
        },
        agent: result.agent.clone(),
    };
    if let Some(error) = &result.error {
        return failed(
            ErrorType::SystemError,
            format!("the runner failed: {error}"),
            outcome,
        );
    }
    if result.oom_killed {
        return failed(
            ErrorType::ResourceLimit,
            "memory limit exceeded".into(),
            outcome,
        );
    }
    if let Some(why) = result
        .agent
        .as_ref()
        .and_then(|a| a.budget_exceeded.clone())
    {
        return failed(ErrorType::BudgetExceeded, why, outcome);
    }
    if result.timed_out {
        return EventPayload::ExecutionTimeout(ExecutionTimedOut {
            timeout_seconds,
            outcome,
        });
    }
    if result.pids_limited && outcome.exit_code != Some(0) {
        return failed(
            ErrorType::ResourceLimit,
            "process limit reached".into(),
            outcome,
        );
    }
    EventPayload::ExecutionCompleted(ExecutionFinished { outcome })
}

fn failed(error_type: ErrorType, message: String, outcome: ExecutionOutcome) -> EventPayload {
    EventPayload::ExecutionFailed(ExecutionFailed {
        error_type,
        message,
        outcome: Some(outcome),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> RunnerResult {
        RunnerResult {
            exit_code: Some(0),
            wall_ms: 12,
            cpu_ms: 3,
            peak_memory_kb: 2048,
            ..RunnerResult::default()
        }
    }

    fn run(result: &RunnerResult) -> EventPayload {
        terminal_payload(result, "out".into(), "err".into(), 5)
    }

    #[test]
    fn any_exit_code_is_a_completed_execution() {
        for code in [0, 1, 42] {
            let mut r = result();
            r.exit_code = Some(code);
            let EventPayload::ExecutionCompleted(done) = run(&r) else {
                panic!("{code}")
            };
            assert_eq!(done.outcome.exit_code, Some(code));
            assert_eq!(done.outcome.stdout, "out");
            assert_eq!(done.outcome.resource_usage.peak_memory_kb, 2048);
        }
    }

    #[test]
    fn a_signal_becomes_128_plus_the_signal() {
        let mut r = result();
        r.exit_code = None;
        r.signal = Some(11);
        let EventPayload::ExecutionCompleted(done) = run(&r) else {
            panic!()
        };
        assert_eq!(done.outcome.exit_code, Some(139));
    }

    #[test]
    fn a_timeout_keeps_the_partial_output() {
        let mut r = result();
        r.timed_out = true;
        r.exit_code = None;
        r.signal = Some(9);
        let EventPayload::ExecutionTimeout(t) = run(&r) else {
            panic!()
        };
        assert_eq!(t.timeout_seconds, 5);
        assert_eq!(t.outcome.stdout, "out");
    }

    #[test]
    fn out_of_memory_is_a_resource_limit_failure() {
        let mut r = result();
        r.oom_killed = true;
        r.signal = Some(9);
        let EventPayload::ExecutionFailed(f) = run(&r) else {
            panic!()
        };
        assert_eq!(f.error_type, ErrorType::ResourceLimit);
        assert!(f.message.contains("memory"));
    }

    #[test]
    fn a_fork_bomb_that_fails_is_a_resource_limit_failure() {
        let mut r = result();
        r.pids_limited = true;
        r.exit_code = Some(1);
        let EventPayload::ExecutionFailed(f) = run(&r) else {
            panic!()
        };
        assert_eq!(f.error_type, ErrorType::ResourceLimit);
        // A program that hit the limit but handled it and succeeded just completed.
        r.exit_code = Some(0);
        assert!(matches!(run(&r), EventPayload::ExecutionCompleted(_)));
    }

    #[test]
    fn an_agent_stopped_at_its_budget_failed_and_keeps_its_report() {
        let mut r = result();
        r.signal = Some(15);
        r.agent = Some(kiln_runner_protocol::agent::AgentReport {
            final_text: "half done".into(),
            budget_exceeded: Some("cost budget exceeded".into()),
            ..Default::default()
        });
        let EventPayload::ExecutionFailed(f) = run(&r) else {
            panic!()
        };
        assert_eq!(f.error_type, ErrorType::BudgetExceeded);
        assert_eq!(f.message, "cost budget exceeded");
        let agent = f.outcome.and_then(|o| o.agent).unwrap();
        assert_eq!(agent.final_text, "half done");
    }

    #[test]
    fn a_runner_failure_is_a_system_error() {
        let mut r = result();
        r.error = Some("spawn failed".into());
        let EventPayload::ExecutionFailed(f) = run(&r) else {
            panic!()
        };
        assert_eq!(f.error_type, ErrorType::SystemError);
        assert!(f.message.contains("spawn failed"));
    }
}
