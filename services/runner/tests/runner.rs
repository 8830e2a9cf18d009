//! The runner binary on its own (no sandbox wrapper): failures still produce a result, the
//! deadline kills the whole process group, output is capped byte-exactly, cgroups are cleaned up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_runner_protocol::{CgroupSpec, RunnerResult, RunnerSpec, StatePaths};

fn state_dir(name: &str) -> StatePaths {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("runner-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    StatePaths::new(dir)
}

fn spec(script: &str) -> RunnerSpec {
    RunnerSpec {
        execution_id: "e1".into(),
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        stdin_path: None,
        cwd: "/tmp".into(),
        run_as: None,
        timeout_ms: 10_000,
        kill_grace_ms: 50,
        output_limit_bytes: 1 << 20,
        cgroup: None,
        agent: None,
    }
}

fn run(paths: &StatePaths, spec: Option<&RunnerSpec>) -> RunnerResult {
    if let Some(spec) = spec {
        std::fs::write(paths.spec(), serde_json::to_vec(spec).unwrap()).unwrap();
    }
    let status = Command::new(env!("CARGO_BIN_EXE_kiln-runner"))
        .arg(&paths.dir)
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    serde_json::from_slice(&std::fs::read(paths.result()).unwrap()).unwrap()
}

#[test]
fn a_missing_spec_or_program_still_yields_a_result() {
    let paths = state_dir("nospec");
    let result = run(&paths, None);
    assert!(result.error.unwrap().contains("spec.json"));

    let paths = state_dir("noprogram");
    let mut missing = spec("");
    missing.argv = vec!["/nonexistent/interpreter".into()];
    let result = run(&paths, Some(&missing));
    assert!(result.error.unwrap().contains("/nonexistent/interpreter"));
    assert!(result.exit_code.is_none() && !paths.started().exists());
}

#[test]
fn the_environment_is_only_the_specs() {
    let paths = state_dir("env");
    let result = run(&paths, Some(&spec("env | sort")));
    assert_eq!(result.exit_code, Some(0));
    // bash adds PWD, SHLVL and _ itself; nothing comes from the runner's environment.
    let out = std::fs::read_to_string(paths.stdout()).unwrap();
    assert!(out.contains("PATH=/usr/bin:/bin\n"), "{out}");
    assert!(!out.contains("CARGO"), "{out}");
}

#[test]
fn the_deadline_kills_the_whole_group_and_keeps_partial_output() {
    let paths = state_dir("deadline");
    let mut slow = spec("echo before; (sleep 30; echo child) & sleep 30; echo after");
    slow.timeout_ms = 300;
    let began = Instant::now();
    let result = run(&paths, Some(&slow));
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert!(result.timed_out);
    assert_eq!(result.signal, Some(15), "SIGTERM within the grace");
    assert_eq!(std::fs::read_to_string(paths.stdout()).unwrap(), "before\n");
}

#[test]
fn output_is_capped_byte_exactly_and_the_pipe_drained() {
    let paths = state_dir("cap");
    let mut flood = spec("head -c 5000000 /dev/zero | tr '\\0' 'y'; printf '漢字' >&2; exit 4");
    flood.output_limit_bytes = 4096;
    let result = run(&paths, Some(&flood));
    assert_eq!(result.exit_code, Some(4));
    assert!(result.stdout_truncated && !result.stderr_truncated);
    assert_eq!(std::fs::read(paths.stdout()).unwrap(), vec![b'y'; 4096]);
    assert_eq!(std::fs::read_to_string(paths.stderr()).unwrap(), "漢字");
}

#[test]
fn cgroup_limits_apply_and_the_cgroups_are_removed() {
    let paths = state_dir("cgroup");
    let mut hog =
        spec("cat /proc/self/cgroup; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}");
    hog.cgroup = Some(CgroupSpec {
        name: format!("kiln-runner-test-{}", std::process::id()),
        memory_bytes: Some(32 << 20),
        pids_max: Some(20),
    });
    let result = run(&paths, Some(&hog));
    let out = std::fs::read_to_string(paths.stdout()).unwrap();
    let name = hog.cgroup.as_ref().unwrap().name.clone();
    assert!(
        out.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&name)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(":pids:") && l.ends_with(&name)),
        "{out}"
    );
    assert!(result.oom_killed, "{result:?}");
    assert!(result.peak_memory_kb <= 33 * 1024, "{result:?}");
    assert!(!PathBuf::from("/sys/fs/cgroup/pids").join(&name).exists());
}
