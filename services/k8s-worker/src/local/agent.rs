//! Agent executions in the local runtime: the provider's command, its environment (the provider's
//! allow-list only) and secrets (from the secrets file, handed to the runner process, never
//! written next to the execution), and the workspace files, written without following a link.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kiln_runner_protocol::agent::{AgentWatch, Usd};
use nix::fcntl::OFlag;
use shared::agents::{AgentRequest, check_workspace, workspace_path};
use shared::config::{AgentsConfig, ProviderConfig, is_env_name};

use super::sandbox::{SANDBOX_GID, SANDBOX_UID, program_env};
use crate::runtime::RuntimeError;

/// Where a provider binary that lives in a hidden directory (e.g. the repository's `target/`)
/// is mounted read-only inside the sandbox.
const AGENT_BIN_DIR: &str = "/tmp/.kiln-agent";

/// The providers this worker can start, and where their secrets come from.
#[derive(Debug, Clone, Default)]
pub struct Agents {
    config: AgentsConfig,
    base: PathBuf,
}

/// Everything the sandbox needs to run one agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentProgram {
    /// The binary on the host.
    pub(crate) binary: PathBuf,
    /// argv after the binary.
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) network: bool,
    pub(crate) watch: AgentWatch,
}

impl Agents {
    /// `base` resolves relative provider binaries and the secrets file (the services' directory).
    pub fn new(config: &AgentsConfig, base: &Path) -> Agents {
        Agents {
            config: config.clone(),
            base: base.to_path_buf(),
        }
    }

    pub(crate) fn max_file_bytes(&self) -> u64 {
        self.config.max_file_bytes
    }

    fn provider(&self, name: &str) -> Result<&ProviderConfig, RuntimeError> {
        self.config
            .providers
            .get(name)
            .filter(|p| p.is_available(&self.base))
            .ok_or_else(|| {
                RuntimeError::Invalid(format!("agent provider {name:?} is not available here"))
            })
    }

    /// The program for `request`; checks the workspace again (the api did, but the worker is the
    /// one writing files).
    pub(crate) fn program(&self, request: &AgentRequest) -> Result<AgentProgram, RuntimeError> {
        let provider = self.provider(&request.provider)?;
        check_workspace(&request.files).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        if request.files.len() > self.config.max_files {
            return Err(RuntimeError::Invalid(format!(
                "more than {} workspace files",
                self.config.max_files
            )));
        }
        Ok(AgentProgram {
            binary: provider.binary_path(&self.base),
            args: provider.argv(&request.model, &request.prompt),
            env: program_env(&provider.env),
            network: provider.network,
            watch: AgentWatch {
                parser: provider.parser,
                max_tokens: request.max_tokens,
                max_cost: request.max_cost_usd.filter(|c| *c > Usd::default()),
                pass_env: provider.secrets.clone(),
                max_changed_file_bytes: self.config.max_changed_file_bytes,
                max_changed_total_bytes: self.config.max_changed_total_bytes,
                max_changed_files: self.config.max_changed_files,
            },
        })
    }

    /// The provider's secrets, read from the secrets file now (so a rotated key applies to the
    /// next run). Missing keys are left out: the agent reports its own authentication error.
    pub(crate) fn secrets(&self, provider: &str) -> Result<Vec<(String, String)>, RuntimeError> {
        let wanted = &self.provider(provider)?.secrets;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.base.join(&self.config.secrets_file);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(provider, file = %path.display(), "no secrets file; the agent runs without its keys");
                return Ok(Vec::new());
            }
            Err(error) => {
                return Err(RuntimeError::io(format!("reading {}", path.display()))(
                    error,
                ));
            }
        };
        let all = parse_env_file(&text);
        Ok(wanted
            .iter()
            .filter_map(|name| all.get(name).map(|value| (name.clone(), value.clone())))
            .collect())
    }

    /// The argv inside the sandbox: a binary hidden by the sandbox's masks is bind-mounted
    /// read-only under [`AGENT_BIN_DIR`]; returns the argv and the binds.
    pub(crate) fn command(
        program: &AgentProgram,
        hidden: impl Fn(&Path) -> bool,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let host = program.binary.to_string_lossy().into_owned();
        let (inside, binds) = if hidden(&program.binary) {
            let name = program
                .binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "agent".into());
            let inside = format!("{AGENT_BIN_DIR}/{name}");
            (inside.clone(), vec![(host, inside)])
        } else {
            (host, Vec::new())
        };
        let argv = std::iter::once(inside)
            .chain(program.args.iter().cloned())
            .collect();
        (argv, binds)
    }
}

/// `KEY=value` lines; blank lines, `#` comments and malformed names are skipped, one pair of
/// surrounding quotes is removed, `export ` is accepted.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .filter(|(k, _)| is_env_name(k.trim()))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(v);
            (k.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

/// Writes the workspace into `work` (fresh, ours): each directory created one component at a
/// time and refused if it is anything but a real directory, each file created new with
/// `O_NOFOLLOW`, all owned by the sandbox user. A path that would escape is an error.
pub(crate) fn write_workspace(
    work: &Path,
    request: &AgentRequest,
    max_file_bytes: u64,
) -> Result<(), RuntimeError> {
    for file in &request.files {
        let components =
            workspace_path(&file.path).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let bytes = file
            .bytes()
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        if bytes.len() as u64 > max_file_bytes {
            return Err(RuntimeError::Invalid(format!(
                "{} is larger than {max_file_bytes} bytes",
                file.path
            )));
        }
        let Some((name, dirs)) = components.split_last() else {
            continue;
        };
        let mut dir = work.to_path_buf();
        for component in dirs {
            dir.push(component);
            match std::fs::create_dir(&dir) {
                Ok(()) => own(&dir)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RuntimeError::io(format!("creating {}", dir.display()))(e)),
            }
            let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_dir());
            if !is_dir {
                return Err(RuntimeError::Invalid(format!(
                    "{} crosses a non-directory",
                    file.path
                )));
            }
        }
        let path = dir.join(name);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(|e| RuntimeError::Invalid(format!("creating {}: {e}", file.path)))?;
        out.write_all(&bytes)
            .map_err(RuntimeError::io(format!("writing {}", path.display())))?;
        own(&path)?;
    }
    Ok(())
}

fn own(path: &Path) -> Result<(), RuntimeError> {
    std::os::unix::fs::chown(path, Some(SANDBOX_UID), Some(SANDBOX_GID))
        .map_err(RuntimeError::io(format!("chown {}", path.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use shared::agents::{ContentEncoding, WorkspaceFile};

    use super::*;

    #[test]
    fn env_files_are_read_like_a_shell_would() {
        let env = parse_env_file(
            "# keys\nA=1\nexport B=\"two words\"\n C = 'x' \nbad-name=3\nnovalue\n\nD=a=b\n",
        );
        assert_eq!(env.get("A").unwrap(), "1");
        assert_eq!(env.get("B").unwrap(), "two words");
        assert_eq!(env.get("C").unwrap(), "x");
        assert_eq!(env.get("D").unwrap(), "a=b");
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn hidden_binaries_are_bound_in_read_only() {
        let program = AgentProgram {
            binary: "/repo/target/debug/kiln-fake-agent".into(),
            args: vec!["say hi".into()],
            env: BTreeMap::new(),
            network: false,
            watch: AgentWatch {
                parser: shared::agents::OutputParser::Jsonl,
                max_tokens: None,
                max_cost: None,
                pass_env: Vec::new(),
                max_changed_file_bytes: 1,
                max_changed_total_bytes: 1,
                max_changed_files: 1,
            },
        };
        let (argv, binds) = Agents::command(&program, |p| p.starts_with("/repo"));
        assert_eq!(argv, ["/tmp/.kiln-agent/kiln-fake-agent", "say hi"]);
        assert_eq!(binds[0].0, "/repo/target/debug/kiln-fake-agent");
        let (argv, binds) = Agents::command(&program, |_| false);
        assert_eq!(argv[0], "/repo/target/debug/kiln-fake-agent");
        assert!(binds.is_empty());
    }

    #[test]
    fn an_agent_sandbox_keeps_the_runners_environment_and_only_then_the_network() {
        use super::super::sandbox::{Extras, Sandbox};
        let sandbox = Sandbox::new("/usr/bin/bwrap".into(), &[], &[]);
        let limits = shared::events::ExecutionLimits {
            timeout_seconds: 5,
            memory_mb: 64,
            max_processes: 8,
            max_output_bytes: 1024,
            max_file_bytes: 1024,
        };
        let env = BTreeMap::from([("K".to_owned(), "v".to_owned())]);
        let script = sandbox.argv(
            Path::new("/w"),
            &env,
            &limits,
            &["/bin/true".into()],
            &Extras::default(),
        );
        assert!(
            script.contains(&"--clearenv".to_owned()) && script.contains(&"--setenv".to_owned())
        );
        assert!(!script.contains(&"--share-net".to_owned()));
        let extras = Extras {
            share_net: true,
            inherit_env: true,
            ro_binds: vec![("/repo/bin/a".into(), "/tmp/.kiln-agent/a".into())],
        };
        let agent = sandbox.argv(
            Path::new("/w"),
            &BTreeMap::new(),
            &limits,
            &["/tmp/.kiln-agent/a".into()],
            &extras,
        );
        assert!(
            !agent.contains(&"--clearenv".to_owned()) && !agent.contains(&"--setenv".to_owned())
        );
        assert!(agent.contains(&"--share-net".to_owned()));
        let bind = agent
            .windows(3)
            .any(|w| w == ["--ro-bind", "/repo/bin/a", "/tmp/.kiln-agent/a"]);
        assert!(bind, "{agent:?}");
    }

    #[test]
    fn workspace_files_never_leave_the_work_directory() {
        let root = std::env::temp_dir().join(format!("kiln-agent-ws-{}", uuid::Uuid::now_v7()));
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        std::os::unix::fs::symlink(&root, work.join("up")).unwrap();
        let request = |path: &str| AgentRequest {
            provider: "fake".into(),
            model: "m".into(),
            prompt: "p".into(),
            files: vec![WorkspaceFile {
                path: path.into(),
                content: "x".into(),
                encoding: ContentEncoding::Utf8,
            }],
            max_tokens: None,
            max_cost_usd: None,
        };
        // Not root in unit tests: chown fails after a successful write, so only errors that come
        // before it are asserted, plus that nothing lands outside.
        for bad in ["../escape", "/abs", "up/escape", "up"] {
            let result = write_workspace(&work, &request(bad), 10);
            assert!(result.is_err(), "{bad}");
        }
        assert!(!root.join("escape").exists());
        assert!(write_workspace(&work, &request("big"), 0).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }
}
