//! System tests live in `tests/`; they start the workspace's binaries, which
//! `./deploy.sh test` builds first (`cargo build --workspace --bins`).
