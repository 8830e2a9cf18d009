//! Container mode, the entrypoint of a Kubernetes executor pod:
//! `kiln-runner --container <spec_dir> <state_dir>`.
//!
//! The run itself is the local mode's, unchanged, in `<state_dir>` (an `emptyDir`); around it this
//! mode copies the spec in from the read-only ConfigMap, forwards the output files to the container
//! log as frames (see `kiln_runner_protocol::pod`) while they grow, turns the pod's SIGTERM (a
//! delete) into the `cancelled` file, and writes the result to the termination message.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_runner_protocol::pod::{FRAME_MAX_BYTES, FrameStream, TERMINATION_LOG, encode_frame};
use kiln_runner_protocol::{RunnerResult, SPEC_FILE, StatePaths};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// How often the forwarder looks for new output.
const FORWARD_POLL: Duration = Duration::from_millis(20);
/// Where to write the termination message instead of [`TERMINATION_LOG`].
const TERMINATION_LOG_ENV: &str = "KILN_TERMINATION_LOG";

pub(crate) fn main(spec_dir: &Path, state_dir: &Path) -> ExitCode {
    let paths = StatePaths::new(state_dir);
    // Blocked here, before any thread exists, so every thread inherits it and only the waiter
    // below receives it (std clears the mask for the program it spawns).
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if let Err(error) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&term), None) {
        eprintln!("kiln-runner: blocking SIGTERM: {error}");
    }
    let result = match prepare(spec_dir, &paths) {
        Ok(()) => {
            watch_sigterm(term, paths.cancelled());
            let stop = Arc::new(AtomicBool::new(false));
            let forwarder = spawn_forwarder(paths.clone(), Arc::clone(&stop));
            let result = crate::run::run(&paths);
            stop.store(true, Ordering::Release);
            if forwarder.map(|f| f.join()).is_err() {
                eprintln!("kiln-runner: the output forwarder did not start");
            }
            result
        }
        Err(error) => RunnerResult {
            error: Some(format!("preparing the container: {error}")),
            finished_at: Some(chrono::Utc::now()),
            ..RunnerResult::default()
        },
    };
    if let Some(error) = &result.error {
        eprintln!("kiln-runner: {error}");
    }
    let message = kiln_runner_protocol::pod::termination_message(&result);
    // Overridable only so the mode can be tested outside a pod.
    let target =
        std::env::var_os(TERMINATION_LOG_ENV).map_or(PathBuf::from(TERMINATION_LOG), PathBuf::from);
    match std::fs::write(&target, message) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kiln-runner: writing {}: {error}", target.display());
            ExitCode::FAILURE
        }
    }
}

/// The spec comes from the read-only ConfigMap; the run needs it, and a `work/` cwd, in the state dir.
fn prepare(spec_dir: &Path, paths: &StatePaths) -> io::Result<()> {
    std::fs::copy(spec_dir.join(SPEC_FILE), paths.spec())?;
    std::fs::create_dir_all(paths.work())
}

/// A SIGTERM (the pod is being deleted) cancels the run the way the local runtime does.
fn watch_sigterm(term: SigSet, cancelled: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            if term.wait().is_ok()
                && let Err(error) = std::fs::write(&cancelled, b"SIGTERM")
            {
                eprintln!("kiln-runner: marking the run cancelled: {error}");
            }
        });
    if let Err(error) = spawned {
        eprintln!("kiln-runner: SIGTERM watcher: {error}");
    }
}

fn spawn_forwarder(
    paths: StatePaths,
    stop: Arc<AtomicBool>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            let mut streams = [
                Tail::new(paths.stdout(), FrameStream::Stdout),
                Tail::new(paths.stderr(), FrameStream::Stderr),
            ];
            let stdout = io::stdout();
            loop {
                // Read before draining: once `stop` is seen, one more full drain follows.
                let stopping = stop.load(Ordering::Acquire);
                let mut out = stdout.lock();
                let mut moved = 0;
                for tail in &mut streams {
                    match tail.forward(&mut out) {
                        Ok(n) => moved += n,
                        Err(error) => eprintln!("kiln-runner: forwarding output: {error}"),
                    }
                }
                drop(out);
                if stopping && moved == 0 {
                    return;
                }
                if moved == 0 {
                    std::thread::sleep(FORWARD_POLL);
                }
            }
        })
}

/// One output file, forwarded from where the last call stopped.
struct Tail {
    path: PathBuf,
    stream: FrameStream,
    file: Option<File>,
    offset: u64,
}

impl Tail {
    fn new(path: PathBuf, stream: FrameStream) -> Tail {
        Tail {
            path,
            stream,
            file: None,
            offset: 0,
        }
    }

    /// Writes every complete chunk available now as frames; returns the bytes forwarded.
    fn forward(&mut self, out: &mut impl Write) -> io::Result<usize> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(error) => return Err(error),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0_u8; FRAME_MAX_BYTES];
        let mut total = 0;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(encode_frame(self.stream, &buf[..n]).as_bytes())?;
            self.offset += n as u64;
            total += n;
        }
        out.flush()?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kiln_runner_protocol::pod::decode_frames;

    #[test]
    fn a_tail_forwards_growth_in_frames_of_any_bytes() {
        let dir = std::env::temp_dir().join(format!("kiln-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stdout.log");
        let mut tail = Tail::new(path.clone(), FrameStream::Stdout);
        let mut out = Vec::new();
        assert_eq!(tail.forward(&mut out).unwrap(), 0, "no file yet");
        let first: Vec<u8> = (0..FRAME_MAX_BYTES * 2 + 5)
            .map(|i| (i % 256) as u8)
            .collect();
        std::fs::write(&path, &first).unwrap();
        assert_eq!(tail.forward(&mut out).unwrap(), first.len());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"\nmore\r\n").unwrap();
        assert_eq!(tail.forward(&mut out).unwrap(), 7);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 4, "8 KiB frames");
        let bytes: Vec<u8> = decode_frames(&text).flat_map(|(_, b)| b).collect();
        assert_eq!(bytes, [first, b"\nmore\r\n".to_vec()].concat());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
