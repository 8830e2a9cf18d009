//! `kiln-runner <state_dir>`: runs the program described by `<state_dir>/spec.json`, streams its
//! output into the state directory and writes `result.json` when everything has ended. It is the
//! same program outside a local sandbox and as a Kubernetes container's entrypoint: the spec is
//! the whole interface, and the runner knows nothing about what confines the program.

#![forbid(unsafe_code)]

mod agent;
mod cgroup;
mod container;
mod pump;
mod run;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use kiln_runner_protocol::{RESULT_FILE, StatePaths};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if let [flag, spec_dir, state_dir] = std::env::args_os().skip(1).collect::<Vec<_>>().as_slice()
        && flag == kiln_runner_protocol::pod::CONTAINER_FLAG
    {
        return container::main(Path::new(spec_dir), Path::new(state_dir));
    }
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: kiln-runner <state_dir>");
        return ExitCode::from(2);
    };
    let paths = StatePaths::new(dir);
    let result = run::run(&paths);
    if let Some(error) = &result.error {
        eprintln!("kiln-runner: {error}");
    }
    match write_atomically(&paths.result(), &result) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kiln-runner: writing {RESULT_FILE}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes JSON to a temporary file and renames it into place, so a reader polling for `path`
/// never sees a partial file.
pub(crate) fn write_atomically(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, value)?;
    file.write_all(b"\n")?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}
