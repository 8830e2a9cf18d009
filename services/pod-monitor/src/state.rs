//! What pod-monitor has published for one executor, persisted in its directory (`monitor.json`)
//! so a restarted monitor resumes without gaps and without re-announcing what was acknowledged.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub(crate) const STATE_FILE: &str = "monitor.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MonitorState {
    /// `pod_running` and `execution_started` were acknowledged by the broker.
    pub(crate) running_published: bool,
    /// Bytes of `stdout.log` / `stderr.log` already published as output chunks.
    pub(crate) stdout_offset: u64,
    pub(crate) stderr_offset: u64,
    /// The `seq` of the next output chunk.
    pub(crate) next_seq: u64,
    /// When the terminal event (or, for a cancelled executor, `pod_terminated`) was acknowledged.
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

impl MonitorState {
    pub(crate) fn load(dir: &Path) -> std::io::Result<Self> {
        match std::fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves a torn state.
    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, dir.join(STATE_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_defaults_when_absent() {
        let dir = std::env::temp_dir().join(format!("kiln-monitor-state-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(MonitorState::load(&dir).unwrap(), MonitorState::default());
        let state = MonitorState {
            running_published: true,
            stdout_offset: 12,
            stderr_offset: 3,
            next_seq: 4,
            finished_at: Some(Utc::now()),
        };
        state.save(&dir).unwrap();
        assert_eq!(MonitorState::load(&dir).unwrap(), state);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
