//! cgroup v1 limits for one program. The runner creates a child of its own cgroup in each
//! controller (so limits of an enclosing cgroup still apply), enters it just long enough to spawn
//! the program (every descendant inherits it, with no `pre_exec` and no unsafe code), then moves
//! itself back out so its own threads never count against the program's pids limit.
//!
//! Where `cpuacct` is mounted, a third group counts the program's CPU time: the sandbox's
//! processes live in their own pid namespace, whose init is never waited for by the runner, so
//! `getrusage(RUSAGE_CHILDREN)` saw bubblewrap's few milliseconds and not the program's.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kiln_runner_protocol::CgroupSpec;

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("cgroup name {0:?} must be one plain path component")]
    BadName(String),
    #[error("controller {0} is not mounted at {ROOT}/{0}")]
    NotMounted(&'static str),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One controller's cgroup for the program, and the runner's original cgroup to return to.
#[derive(Debug)]
struct Group {
    dir: PathBuf,
    origin: PathBuf,
}

/// The program's cgroups; empty when the spec asks for none.
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    memory: Option<Group>,
    pids: Option<Group>,
    cpuacct: Option<Group>,
}

/// What the cgroups observed, read before they are removed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CgroupStats {
    pub(crate) peak_memory_kb: Option<u64>,
    /// CPU time of every process that ran in the program's cgroup.
    pub(crate) cpu_ms: Option<u64>,
    pub(crate) oom_kills: u64,
    pub(crate) memory_failcnt: u64,
    pub(crate) pids_limited: bool,
}

impl Cgroups {
    /// Creates the cgroups, sets their limits and moves the runner into them.
    pub(crate) fn enter(spec: &CgroupSpec) -> Result<Cgroups, CgroupError> {
        let name = spec.name.as_str();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::BadName(spec.name.clone()));
        }
        let mut groups = Cgroups::default();
        if let Some(bytes) = spec.memory_bytes {
            let group = Group::create("memory", name)?;
            group.write("memory.limit_in_bytes", bytes)?;
            // Without a memsw limit the program could spill into swap past its limit.
            if group.dir.join("memory.memsw.limit_in_bytes").exists() {
                group.write("memory.memsw.limit_in_bytes", bytes)?;
            }
            groups.memory = Some(group);
        }
        if let Some(max) = spec.pids_max {
            let group = Group::create("pids", name)?;
            group.write("pids.max", max)?;
            groups.pids = Some(group);
        }
        if groups.memory.is_some() || groups.pids.is_some() {
            groups.cpuacct = match Group::create("cpuacct", name) {
                Ok(group) => Some(group),
                // Accounting only: without the controller, CPU time comes from getrusage.
                Err(CgroupError::NotMounted(_)) => None,
                Err(error) => return Err(error),
            };
        }
        for group in groups.all() {
            group.write("cgroup.procs", std::process::id())?;
        }
        Ok(groups)
    }

    fn all(&self) -> impl Iterator<Item = &Group> {
        self.memory
            .iter()
            .chain(self.pids.iter())
            .chain(self.cpuacct.iter())
    }

    /// Moves the runner back to where it came from (the program stays).
    pub(crate) fn leave(&self) -> Result<(), CgroupError> {
        for group in self.all() {
            let procs = group.origin.join("cgroup.procs");
            fs::write(&procs, std::process::id().to_string())
                .map_err(io_err("moving the runner back to", &procs))?;
        }
        Ok(())
    }

    /// Pids still in the program's cgroups (stragglers that outlived the program's leader).
    pub(crate) fn remaining_pids(&self) -> Vec<i32> {
        let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let mut pids = Vec::new();
        for group in self.all() {
            let text = fs::read_to_string(group.dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(
                text.lines()
                    .filter_map(|line| line.trim().parse::<i32>().ok())
                    .filter(|pid| *pid != own),
            );
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub(crate) fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        if let Some(memory) = &self.memory {
            stats.peak_memory_kb = memory
                .read_u64("memory.max_usage_in_bytes")
                .map(|bytes| bytes / 1024);
            stats.memory_failcnt = memory.read_u64("memory.failcnt").unwrap_or(0);
            stats.oom_kills = memory
                .read_key("memory.oom_control", "oom_kill")
                .unwrap_or(0);
        }
        if let Some(pids) = &self.pids {
            stats.pids_limited = pids.read_key("pids.events", "max").unwrap_or(0) > 0;
        }
        if let Some(cpuacct) = &self.cpuacct {
            stats.cpu_ms = cpuacct.read_u64("cpuacct.usage").map(|ns| ns / 1_000_000);
        }
        stats
    }

    /// Removes the cgroups; they must be empty by now. Failures are reported, not fatal.
    pub(crate) fn remove(self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for group in self.all() {
            if let Err(error) = fs::remove_dir(&group.dir).map_err(io_err("removing", &group.dir)) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Group {
    fn create(controller: &'static str, name: &str) -> Result<Group, CgroupError> {
        let mount = Path::new(ROOT).join(controller);
        if !mount.join("cgroup.procs").exists() {
            return Err(CgroupError::NotMounted(controller));
        }
        let origin = mount.join(own_cgroup(controller)?.trim_start_matches('/'));
        let dir = origin.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            // A runner restarted on the same state directory reuses its cgroup.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_err("creating", &dir)(error)),
        }
        Ok(Group { dir, origin })
    }

    fn write(&self, file: &str, value: impl ToString) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        fs::write(&path, value.to_string()).map_err(io_err("writing", &path))
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The value of `key` in a flat-keyed file such as `memory.oom_control` or `pids.events`.
    fn read_key(&self, file: &str, key: &str) -> Option<u64> {
        let text = fs::read_to_string(self.dir.join(file)).ok()?;
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }
}

/// The runner's cgroup path in `controller`, from `/proc/self/cgroup`.
fn own_cgroup(controller: &'static str) -> Result<String, CgroupError> {
    let path = Path::new("/proc/self/cgroup");
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, cgroup) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| cgroup.to_owned())
        })
        .ok_or(CgroupError::NotMounted(controller))
}
