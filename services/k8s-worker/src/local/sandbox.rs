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
/// Where the program's work directory appears (the sandbox's root is its own, so it can be made).
const WORK_MOUNT: &str = "/work";
/// The host directories the program sees, read-only; nothing else of the host's filesystem is
/// there (no `/root`, `/home`, `/run`, `/var`, repository or work root), so nothing needs masking.
/// Binding a few directories instead of all of `/` and masking what must not be seen also makes
/// a sandbox start ~30 % cheaper: bwrap re-reads the mount table for every read-only mount, and
/// the host's `/` carries all its submounts.
const SYSTEM: [&str; 2] = ["/usr", "/etc"];
/// Symlinks into `/usr` on a merged-`/usr` host (recreated as such), directories elsewhere.
const USR_ALIASES: [&str; 4] = ["/bin", "/sbin", "/lib", "/lib64"];
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

/// One piece of the host the sandbox shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    /// A directory bound read-only at the same path.
    Dir(PathBuf),
    /// A symlink recreated inside (`path` -> `target`).
    Link { path: PathBuf, target: PathBuf },
}

#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    bwrap: PathBuf,
    shown: Vec<Shown>,
    /// Our own directories inside a shown one, hidden behind an empty read-only tmpfs.
    masks: Vec<PathBuf>,
}

impl Sandbox {
    /// `private` are host directories of our own that must not be seen (the repository, the
    /// work root); `needed` are programs the sandbox must run (interpreters): one outside the
    /// system directories is shown with its installation (the directory above its `bin/`).
    pub(crate) fn new(bwrap: PathBuf, private: &[PathBuf], needed: &[PathBuf]) -> Sandbox {
        let mut shown: Vec<Shown> = Vec::new();
        for alias in USR_ALIASES.iter().map(Path::new) {
            match std::fs::read_link(alias) {
                Ok(target) => shown.push(Shown::Link {
                    path: alias.to_path_buf(),
                    target,
                }),
                Err(_) if alias.is_dir() => shown.push(Shown::Dir(alias.to_path_buf())),
                Err(_) => {} // absent
            }
        }
        shown.extend(
            SYSTEM
                .iter()
                .map(PathBuf::from)
                .filter(|dir| dir.is_dir())
                .map(Shown::Dir),
        );
        for program in needed {
            let Ok(program) = program.canonicalize() else {
                continue; // not installed: the language is not offered anyway
            };
            if !visible(&shown, &program)
                && let Some(installation) = installation_of(&program)
            {
                shown.retain(|s| !matches!(s, Shown::Dir(d) if d.starts_with(&installation)));
                shown.push(Shown::Dir(installation));
            }
        }
        let masks = private
            .iter()
            .filter_map(|path| path.canonicalize().ok())
            .filter(|path| path.is_dir() && visible(&shown, path))
            .collect();
        Sandbox {
            bwrap,
            shown,
            masks,
        }
    }

    /// Where the program's work directory appears inside the sandbox.
    pub(crate) fn work_mount(&self) -> &'static str {
        WORK_MOUNT
    }

    /// Whether `path` cannot be seen from inside the sandbox.
    pub(crate) fn hides(&self, path: &Path) -> bool {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        !visible(&self.shown, &path) || self.masks.iter().any(|mask| path.starts_with(mask))
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
        for shown in &self.shown {
            match shown {
                Shown::Dir(dir) => {
                    let dir = dir.to_string_lossy().into_owned();
                    argv.extend(["--ro-bind".into(), dir.clone(), dir]);
                }
                Shown::Link { path, target } => argv.extend([
                    "--symlink".into(),
                    target.to_string_lossy().into_owned(),
                    path.to_string_lossy().into_owned(),
                ]),
            }
        }
        for mask in &self.masks {
            let mask = mask.to_string_lossy().into_owned();
            argv.extend(["--tmpfs".into(), mask.clone(), "--remount-ro".into(), mask]);
        }
        for (host, inside) in &extras.ro_binds {
            argv.extend(["--ro-bind".into(), host.clone(), inside.clone()]);
        }
        argv.extend([
            "--bind".into(),
            work.to_string_lossy().into_owned(),
            WORK_MOUNT.into(),
            // Last of the mounts: the sandbox's own root (mount points and symlinks) read-only.
            "--remount-ro".into(),
            "/".into(),
            "--chdir".into(),
            WORK_MOUNT.into(),
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

/// Whether `path` lies in (or is) something the sandbox shows.
fn visible(shown: &[Shown], path: &Path) -> bool {
    shown.iter().any(|s| match s {
        Shown::Dir(dir) => path.starts_with(dir),
        Shown::Link { path: link, .. } => path.starts_with(link),
    })
}

/// The directory a program is installed in: the one above its `bin/` (so its libraries come
/// along, as for `~/.pyenv/versions/3.11.7/bin/python3`), else its own directory.
fn installation_of(program: &Path) -> Option<PathBuf> {
    let dir = program.parent()?;
    let installation = match dir.file_name() {
        Some(name) if name == "bin" => dir.parent()?,
        _ => dir,
    };
    (installation != Path::new("/")).then(|| installation.to_path_buf())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits() -> ExecutionLimits {
        ExecutionLimits {
            timeout_seconds: 5,
            memory_mb: 64,
            max_processes: 8,
            max_output_bytes: 1024,
            max_file_bytes: 1024,
        }
    }

    #[test]
    fn only_the_system_directories_and_needed_installations_are_shown() {
        let base = std::env::temp_dir().join(format!("kiln-sandbox-{}", uuid::Uuid::now_v7()));
        let interpreter = base.join("versions/3.11/bin/python3");
        let private = base.join("versions/3.11/secrets");
        std::fs::create_dir_all(interpreter.parent().unwrap()).unwrap();
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(&interpreter, b"").unwrap();
        let elsewhere = base.join("repo");
        std::fs::create_dir_all(&elsewhere).unwrap();

        let sandbox = Sandbox::new(
            "/usr/bin/bwrap".into(),
            &[private.clone(), elsewhere.clone()],
            &[
                interpreter.clone(),
                "/usr/bin/env".into(),
                "/no/such/lang".into(),
            ],
        );
        let argv = sandbox.argv(
            Path::new("/w"),
            &BTreeMap::new(),
            &limits(),
            &["/bin/true".into()],
            &Extras::default(),
        );
        let joined = argv.join(" ");
        let installation = base.join("versions/3.11").display().to_string();
        assert!(!joined.contains("--ro-bind / /"), "{joined}");
        assert!(
            joined.contains("--ro-bind /usr /usr --ro-bind /etc /etc"),
            "{joined}"
        );
        assert!(
            joined.contains(&format!("--ro-bind {installation} {installation}")),
            "{joined}"
        );
        // Our own directory inside a shown installation is masked; one outside is simply absent.
        let private = private.display().to_string();
        assert!(
            joined.contains(&format!("--tmpfs {private} --remount-ro {private}")),
            "{joined}"
        );
        assert!(
            !joined.contains(&elsewhere.display().to_string()),
            "{joined}"
        );
        assert!(!joined.contains("/no/such"), "{joined}");
        // The root is made read-only after the last mount point was made in it.
        assert!(
            joined.contains("--bind /w /work --remount-ro / --chdir /work"),
            "{joined}"
        );

        assert!(sandbox.hides(&elsewhere));
        assert!(sandbox.hides(Path::new(&private)));
        assert!(sandbox.hides(Path::new("/root")));
        assert!(!sandbox.hides(&interpreter));
        assert!(!sandbox.hides(Path::new("/usr/bin/env")));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_installation_is_the_directory_above_bin() {
        assert_eq!(
            installation_of(Path::new("/opt/py/bin/python3")),
            Some(PathBuf::from("/opt/py"))
        );
        assert_eq!(
            installation_of(Path::new("/opt/tool/tool")),
            Some(PathBuf::from("/opt/tool"))
        );
        assert_eq!(installation_of(Path::new("/bin/true")), None);
    }
}
