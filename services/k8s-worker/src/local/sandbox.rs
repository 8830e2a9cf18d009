//! The bubblewrap command line that confines one program.
//!
//! bwrap runs as the unprivileged host user 65534 (the runner drops to it before exec), so inside
//! its user namespace the program is 65534 mapped to 65534: host files owned by root stay root's
//! (with root as the mapped user, every root-owned file would be the program's own, `/root` and
//! `/etc/shadow` included).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use shared::events::ExecutionLimits;

use crate::runtime::RuntimeError;

/// The host (and sandbox) user the program runs as: `nobody`.
pub(crate) const SANDBOX_UID: u32 = 65534;
pub(crate) const SANDBOX_GID: u32 = 65534;
/// Where the program's work directory appears. `/work` when the host has it (bwrap cannot create
/// a mount point on the read-only root); otherwise inside the sandbox's own `/tmp`.
const WORK_MOUNTS: [&str; 2] = ["/work", "/tmp/work"];
/// Host directories that are world-readable by convention yet hold other users' or services'
/// data; each one that exists is hidden behind an empty read-only tmpfs.
const HIDDEN: [&str; 12] = [
    "/root",
    "/home",
    "/run",
    "/var/run",
    "/var/tmp",
    "/var/log",
    "/var/backups",
    "/var/mail",
    "/var/spool",
    "/srv",
    "/mnt",
    "/media",
];
const PRLIMIT: &str = "/usr/bin/prlimit";
const OPEN_FILES: u32 = 256;

/// What an agent's sandbox adds to a script's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    /// Keep the host's network (the provider's config asked for it).
    pub(crate) share_net: bool,
    /// Keep the environment bwrap is started with (the runner's: the spec's env plus secrets)
    /// instead of `--setenv`, so secrets never appear on a command line.
    pub(crate) inherit_env: bool,
    /// `(host, inside)` read-only binds, e.g. a provider binary from a hidden directory.
    pub(crate) ro_binds: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    bwrap: PathBuf,
    masks: Vec<PathBuf>,
    work_mount: &'static str,
}

impl Sandbox {
    /// `private` are host directories of our own to hide as well (the repository, the work root);
    /// `needed` are paths the sandbox must still reach (interpreters), never hidden.
    pub(crate) fn new(bwrap: PathBuf, private: &[PathBuf], needed: &[PathBuf]) -> Sandbox {
        let mut masks: Vec<PathBuf> = Vec::new();
        let candidates = HIDDEN
            .iter()
            .map(PathBuf::from)
            .chain(private.iter().cloned());
        for path in candidates {
            let Ok(path) = path.canonicalize() else {
                continue; // absent: nothing to hide
            };
            let hides_needed = needed.iter().any(|n| n.starts_with(&path));
            let covered = masks.iter().any(|m| path.starts_with(m));
            if path != Path::new("/") && path.is_dir() && !hides_needed && !covered {
                masks.retain(|m| !m.starts_with(&path));
                masks.push(path);
            }
        }
        let work_mount = if Path::new(WORK_MOUNTS[0]).is_dir() {
            WORK_MOUNTS[0]
        } else {
            WORK_MOUNTS[1]
        };
        Sandbox {
            bwrap,
            masks,
            work_mount,
        }
    }

    /// Where the program's work directory appears inside the sandbox.
    pub(crate) fn work_mount(&self) -> &'static str {
        self.work_mount
    }

    /// Whether `path` lies in a directory the sandbox hides.
    pub(crate) fn hides(&self, path: &Path) -> bool {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.masks.iter().any(|mask| path.starts_with(mask))
    }

    /// The full argv: bwrap, then prlimit, then the program. `command` is the language's argv
    /// with `{file}` already substituted.
    pub(crate) fn argv(
        &self,
        work: &Path,
        env: &BTreeMap<String, String>,
        limits: &ExecutionLimits,
        command: &[String],
        extras: &Extras,
    ) -> Vec<String> {
        let mut argv: Vec<String> = [
            &self.bwrap.to_string_lossy(),
            "--unshare-all", // network (only lo), pid, ipc, uts, cgroup namespaces
            "--unshare-user",
            "--uid",
            &SANDBOX_UID.to_string(),
            "--gid",
            &SANDBOX_GID.to_string(),
            "--hostname",
            "kiln",
            "--die-with-parent", // the runner's death ends the sandbox
            "--new-session",     // no TIOCSTI into a terminal
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc", // this pid namespace only: no other process's environ or cmdline
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if !extras.inherit_env {
            argv.push("--clearenv".into());
        }
        if extras.share_net {
            argv.push("--share-net".into());
        }
        for mask in &self.masks {
            let mask = mask.to_string_lossy().into_owned();
            argv.extend(["--tmpfs".into(), mask.clone(), "--remount-ro".into(), mask]);
        }
        for (host, inside) in &extras.ro_binds {
            argv.extend(["--ro-bind".into(), host.clone(), inside.clone()]);
        }
        // Last, so it lands on top of any mask above it (the repository may contain /work).
        argv.extend([
            "--bind".into(),
            work.to_string_lossy().into_owned(),
            self.work_mount.into(),
            "--chdir".into(),
            self.work_mount.into(),
        ]);
        for (key, value) in env {
            argv.extend(["--setenv".into(), key.clone(), value.clone()]);
        }
        argv.extend([
            "--".into(),
            PRLIMIT.into(),
            // CPU seconds: a hard stop a second after the runner's own wall-clock deadline.
            format!("--cpu={}", limits.timeout_seconds.saturating_add(1)),
            format!("--fsize={}", limits.max_file_bytes),
            format!("--nofile={OPEN_FILES}"),
            "--core=0".into(),
            "--".into(),
        ]);
        argv.extend(command.iter().cloned());
        argv
    }

    /// Runs `/bin/true` in a sandbox built like a real one, as the sandbox user, so a host where
    /// bubblewrap or user namespaces do not work fails at start rather than on every execution.
    pub(crate) async fn probe(&self, work: &Path) -> Result<(), RuntimeError> {
        let limits = ExecutionLimits {
            timeout_seconds: 5,
            memory_mb: 64,
            max_processes: 8,
            max_output_bytes: 1024,
            max_file_bytes: 1024,
        };
        let argv = self.argv(
            work,
            &BTreeMap::new(),
            &limits,
            &["/bin/true".into()],
            &Extras::default(),
        );
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| RuntimeError::Unavailable("empty argv".into()))?;
        let output = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .current_dir("/")
            .uid(SANDBOX_UID)
            .gid(SANDBOX_GID)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("running {program}: {e}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Unavailable(format!(
                "{program} as uid {SANDBOX_UID} ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

/// The program's environment: a fixed base, then the language's own variables.
pub(crate) fn program_env(language: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("LANG", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.extend(language.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}
