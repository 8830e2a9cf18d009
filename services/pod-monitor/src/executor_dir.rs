//! Reading one local executor's directory (layout: `docs/design/execution-pipeline.md`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kiln_runner_protocol::{
    CANCELLED_FILE, RESULT_FILE, RUNNER_PID_FILE, RunnerResult, SPEC_FILE, STARTED_FILE,
    STDERR_FILE, STDOUT_FILE,
};
use shared::events::OutputStream;
use shared::executions::{EXECUTOR_META_FILE, ExecutorMeta};

#[derive(Debug, Clone)]
pub(crate) struct ExecutorDir {
    pub(crate) execution_id: String,
    pub(crate) path: PathBuf,
}

impl ExecutorDir {
    pub(crate) fn new(path: PathBuf) -> Option<Self> {
        let execution_id = path.file_name()?.to_str()?.to_owned();
        Some(Self { execution_id, path })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether k8s-worker finished setting the directory up (its spec is written last).
    pub(crate) fn is_ready(&self) -> bool {
        self.file(SPEC_FILE).exists() && self.file(EXECUTOR_META_FILE).exists()
    }

    pub(crate) fn meta(&self) -> std::io::Result<ExecutorMeta> {
        read_json(&self.file(EXECUTOR_META_FILE))
    }

    pub(crate) fn has_started(&self) -> bool {
        self.file(STARTED_FILE).exists()
    }

    /// Deleted on purpose (k8s-worker's delete writes the marker before killing the runner).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.file(CANCELLED_FILE).exists()
    }

    /// The runner's result, once it has been written (atomically, so never half a file).
    pub(crate) fn result(&self) -> std::io::Result<Option<RunnerResult>> {
        match read_json(&self.file(RESULT_FILE)) {
            Ok(result) => Ok(Some(result)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the runner process is gone (so no result will ever come). A pid that now belongs
    /// to another program counts as gone.
    pub(crate) fn runner_is_gone(&self) -> bool {
        // A missing or half-written pid file means the runner is still being started.
        let Some(pid) = std::fs::read_to_string(self.file(RUNNER_PID_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            return false;
        };
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) => {
                let dir = self.path.to_string_lossy();
                let cmdline = String::from_utf8_lossy(&cmdline);
                let gone = !cmdline.contains(dir.as_ref());
                if gone {
                    tracing::info!(pid, %cmdline, "runner pid now belongs to another process");
                }
                gone
            }
            Err(error) => {
                tracing::info!(pid, %error, "runner process is gone");
                true
            }
        }
    }

    fn log_path(&self, stream: OutputStream) -> PathBuf {
        self.file(match stream {
            OutputStream::Stdout => STDOUT_FILE,
            OutputStream::Stderr => STDERR_FILE,
        })
    }

    /// Up to `max` bytes of the stream's log from `offset` (empty when the log does not exist).
    pub(crate) fn read_output(
        &self,
        stream: OutputStream,
        offset: u64,
        max: usize,
    ) -> std::io::Result<Vec<u8>> {
        let mut file = match File::open(self.log_path(stream)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut buffer = Vec::with_capacity(max.min(64 * 1024));
        file.take(max as u64).read_to_end(&mut buffer)?;
        Ok(buffer)
    }

    /// The whole captured stream (the runner already capped it), as text.
    pub(crate) fn full_output(&self, stream: OutputStream) -> std::io::Result<String> {
        match std::fs::read(self.log_path(stream)) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}
