//! Copies one of the program's output pipes into its log file as the bytes arrive.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Sender, SyncSender};
use std::thread::JoinHandle;

/// How one stream's copy ended.
#[derive(Debug, Default)]
pub(crate) struct PumpOutcome {
    pub(crate) truncated: bool,
    /// Writing the log failed; the pipe was still drained so the program never blocked on it.
    pub(crate) error: Option<String>,
}

/// Copies `from` to `to` until end of file. Bytes beyond `limit` are read and dropped (a full
/// pipe would stall the program), and the stream is marked truncated. Each chunk is written with
/// one unbuffered `write`, so a tailing reader sees output as soon as the program produced it.
/// `done` is signalled at the end so the caller can bound its wait.
pub(crate) fn spawn<T: Send + 'static>(
    name: &'static str,
    mut from: impl Read + Send + 'static,
    mut to: File,
    limit: u64,
    mut tap: Option<SyncSender<Vec<u8>>>,
    done: Sender<T>,
    message: T,
) -> io::Result<JoinHandle<PumpOutcome>> {
    std::thread::Builder::new()
        .name(format!("pump-{name}"))
        .spawn(move || {
            let mut outcome = PumpOutcome::default();
            let mut written: u64 = 0;
            let mut buf = vec![0_u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        outcome.error = Some(format!("reading {name}: {error}"));
                        break;
                    }
                };
                // Every byte, also past the limit, so an agent's final events are still parsed.
                // A full tap blocks this copy (and so the agent's writes) until the runner's loop
                // parses: dropping a chunk lost the agent's closing result under load. The tap
                // is bounded, so a flood cannot grow memory; a parser gone stops the tapping.
                if let Some(sender) = &tap
                    && sender.send(buf[..n].to_vec()).is_err()
                {
                    tap = None;
                }
                let room = usize::try_from(limit.saturating_sub(written)).unwrap_or(usize::MAX);
                let keep = n.min(room);
                if keep < n {
                    outcome.truncated = true;
                }
                if keep > 0 && outcome.error.is_none() {
                    match to.write_all(&buf[..keep]) {
                        Ok(()) => written += keep as u64,
                        Err(error) => outcome.error = Some(format!("writing {name}: {error}")),
                    }
                }
            }
            if done.send(message).is_err() {
                // The runner stopped waiting for us; nothing is left to tell.
            }
            outcome
        })
}
