//! Process life cycle: one shutdown token, set by SIGTERM/SIGINT; readiness flips to "draining"
//! at once, and a second signal exits immediately.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exit code after a second signal: the operator asked twice, so stop without draining.
const FORCED_EXIT_CODE: i32 = 130;

#[derive(Debug, Clone)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    drain_timeout: Duration,
}

impl Lifecycle {
    pub fn new(drain_timeout: Duration) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            draining: Arc::new(AtomicBool::new(false)),
            drain_timeout,
        }
    }

    /// Cancelled when the process should stop; every component watches it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain: readiness turns 503 and every component begins to stop.
    pub fn begin_shutdown(&self, reason: &str) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!(
                reason,
                drain_timeout_s = self.drain_timeout.as_secs(),
                "shutting down"
            );
        }
        self.shutdown.cancel();
    }

    /// Watches SIGTERM and SIGINT for the life of the process.
    pub fn spawn_signal_listener(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let lifecycle = self.clone();
        tokio::spawn(async move {
            let mut received = 0u32;
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                received += 1;
                if received == 1 {
                    lifecycle.begin_shutdown(name);
                } else {
                    tracing::warn!(signal = name, "second signal; exiting without draining");
                    std::process::exit(FORCED_EXIT_CODE);
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_shutdown_marks_draining_and_cancels_the_token() {
        let lifecycle = Lifecycle::new(Duration::from_secs(1));
        let token = lifecycle.shutdown_token();
        assert!(!lifecycle.is_draining());
        lifecycle.begin_shutdown("test");
        assert!(lifecycle.is_draining());
        assert!(token.is_cancelled());
    }
}
