//! The Kubernetes executor contract, shared by the pod's author (k8s-worker), its entrypoint
//! (`kiln-runner --container`) and its reader (pod-monitor): where things are mounted, how the
//! program's output travels through the container log, where the result goes, and the labels and
//! annotations that find and describe an executor pod.
//!
//! The container log is the only channel that needs no extra permission, but the kubelet splits
//! long lines, interleaves stdout and stderr, and the runner's own diagnostics share it. So each
//! chunk of output becomes one line `@kiln1 o <base64>` (or `e` for stderr): any bytes survive,
//! no line exceeds the runtime's 16 KiB split, and everything else in the log is ignored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::RunnerResult;

/// The executor container, and the image path of its entrypoint.
pub const CONTAINER_NAME: &str = "executor";
pub const RUNNER_PATH: &str = "/usr/local/bin/kiln-runner";
/// The runner's flag for container mode: `kiln-runner --container <spec_dir> <state_dir>`.
pub const CONTAINER_FLAG: &str = "--container";
/// The ConfigMap (spec, script, stdin), read-only.
pub const SPEC_MOUNT: &str = "/etc/kiln";
/// The runner's writable state (its logs and result); the program's cwd is `work/` inside it.
pub const STATE_MOUNT: &str = "/kiln";
pub const TMP_MOUNT: &str = "/tmp";
/// Where the kubelet reads the container's termination message (the default path).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The kubelet keeps at most this much of a termination message.
pub const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Raw bytes per frame: base64 makes 8 KiB into 10.7 KiB, below the CRI's 16 KiB line split.
pub const FRAME_MAX_BYTES: usize = 8 * 1024;
const FRAME_PREFIX: &str = "@kiln1 ";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "kiln";
pub const COMPONENT: &str = "executor";
pub const LABEL_EXECUTION_ID: &str = "kiln.dev/execution-id";
pub const LABEL_USER_ID: &str = "kiln.dev/user-id";
pub const LABEL_LANGUAGE: &str = "kiln.dev/language";
/// Selects every executor pod (and nothing else) in the executor namespace.
pub const EXECUTOR_SELECTOR: &str =
    "app.kubernetes.io/managed-by=kiln,app.kubernetes.io/component=executor";
/// `shared::executions::ExecutorMeta` as JSON: the execution's user and place in its flow.
pub const ANNOTATION_META: &str = "kiln.dev/executor-meta";
/// pod-monitor's progress (what it has published), so a restarted monitor neither repeats nor
/// skips anything.
pub const ANNOTATION_MONITOR: &str = "kiln.dev/monitor";
/// Set by k8s-worker just before it deletes a pod on purpose (the cancel reason).
pub const ANNOTATION_CANCELLED: &str = "kiln.dev/cancelled";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStream {
    Stdout,
    Stderr,
}

impl FrameStream {
    fn tag(self) -> char {
        match self {
            FrameStream::Stdout => 'o',
            FrameStream::Stderr => 'e',
        }
    }
}

/// One log line carrying `bytes` (at most [`FRAME_MAX_BYTES`] are expected; more still decode).
pub fn encode_frame(stream: FrameStream, bytes: &[u8]) -> String {
    format!(
        "{FRAME_PREFIX}{} {}\n",
        stream.tag(),
        STANDARD.encode(bytes)
    )
}

/// The frames of a container log in order; other lines (runner diagnostics, a line torn by log
/// rotation) are skipped.
pub fn decode_frames(log: &str) -> impl Iterator<Item = (FrameStream, Vec<u8>)> + '_ {
    log.lines().filter_map(decode_line)
}

/// One line (without its newline) as a frame, if it is one.
pub fn decode_line(line: &str) -> Option<(FrameStream, Vec<u8>)> {
    let rest = line.trim_end_matches('\r').strip_prefix(FRAME_PREFIX)?;
    let (tag, data) = rest.split_once(' ')?;
    let stream = match tag {
        "o" => FrameStream::Stdout,
        "e" => FrameStream::Stderr,
        _ => return None,
    };
    STANDARD.decode(data).ok().map(|bytes| (stream, bytes))
}

/// The result as the termination message: JSON that always fits the kubelet's limit (a long
/// runner error is shortened; nothing else in a result is unbounded).
pub fn termination_message(result: &RunnerResult) -> String {
    let mut result = result.clone();
    loop {
        let json = serde_json::to_string(&result).unwrap_or_default();
        if json.len() <= TERMINATION_MESSAGE_MAX {
            return json;
        }
        let Some(error) = result.error.as_mut() else {
            return json;
        };
        let excess = json.len() - TERMINATION_MESSAGE_MAX;
        let mut keep = error.len().saturating_sub(excess + 3);
        while !error.is_char_boundary(keep) {
            keep -= 1;
        }
        error.truncate(keep);
        error.push_str("...");
    }
}

/// A label value from arbitrary text: at most 63 of `[A-Za-z0-9._-]`, starting and ending with an
/// alphanumeric (empty when nothing is left).
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn any_bytes_survive_the_log() {
        let nasty: Vec<u8> = (0..=255)
            .chain(b"\n\r\n@kiln1 o AAAA\n".iter().copied())
            .collect();
        let mut log = String::from("kiln-runner: a diagnostic line\n");
        log.push_str(&encode_frame(FrameStream::Stdout, &nasty));
        log.push_str("@kiln1 x garbage\n@kiln1 o !!notbase64\n");
        log.push_str(&encode_frame(FrameStream::Stderr, b""));
        log.push_str(&encode_frame(FrameStream::Stderr, "é\u{0}".as_bytes()));
        let frames: Vec<_> = decode_frames(&log).collect();
        assert_eq!(
            frames,
            vec![
                (FrameStream::Stdout, nasty),
                (FrameStream::Stderr, vec![]),
                (FrameStream::Stderr, "é\u{0}".as_bytes().to_vec()),
            ]
        );
        let longest = encode_frame(FrameStream::Stdout, &[0xff; FRAME_MAX_BYTES]);
        assert!(longest.len() < 16 * 1024);
    }

    #[test]
    fn the_termination_message_always_fits() {
        let result = RunnerResult {
            exit_code: Some(3),
            error: Some("é".repeat(10_000)),
            ..RunnerResult::default()
        };
        let message = termination_message(&result);
        assert!(message.len() <= TERMINATION_MESSAGE_MAX);
        let back: RunnerResult = serde_json::from_str(&message).unwrap();
        assert_eq!(back.exit_code, Some(3));
        assert!(back.error.unwrap().ends_with("..."));
        let small = RunnerResult::default();
        assert_eq!(
            serde_json::from_str::<RunnerResult>(&termination_message(&small)).unwrap(),
            small
        );
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("user@example.com"), "user_example.com");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_value("@@"), "");
    }
}
