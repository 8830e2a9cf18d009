//! The workspace before and after an agent run, and what changed. The walk never follows a
//! symlink and opens only regular files, with `O_NOFOLLOW | O_NONBLOCK`: the agent (untrusted)
//! may have left links to host files or FIFOs, and the runner reading them is root.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use base64::Engine;
use kiln_runner_protocol::agent::{AgentWatch, ChangedFile, ContentEncoding, FileChange};
use nix::fcntl::OFlag;

/// Entries walked at most (a workspace flooded with files is cut short, and flagged).
const MAX_ENTRIES: usize = 100_000;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A regular file: its size, and its bytes when read (snapshots read every file; the
    /// after-walk reads only what it needs).
    File { size: u64, bytes: Option<Vec<u8>> },
    /// Anything else that is not a directory: symlink, FIFO, socket, device.
    Other(&'static str),
}

#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    entries: BTreeMap<String, Entry>,
    truncated: bool,
}

impl Snapshot {
    /// Every entry under `root` with its content (the initial workspace is bounded by the api).
    pub(crate) fn take(root: &Path) -> Snapshot {
        walk(root, true)
    }
}

fn walk(root: &Path, read: bool) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if snapshot.entries.len() >= MAX_ENTRIES {
                snapshot.truncated = true;
                return snapshot;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            // DirEntry::file_type does not follow symlinks.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < MAX_DEPTH {
                    pending.push((entry.path(), format!("{relative}/"), depth + 1));
                } else {
                    snapshot.truncated = true;
                }
            } else if kind.is_file() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                let bytes = if read {
                    read_file(&entry.path(), u64::MAX)
                } else {
                    None
                };
                snapshot
                    .entries
                    .insert(relative, Entry::File { size, bytes });
            } else {
                let other = if kind.is_symlink() {
                    "symlink"
                } else if kind.is_fifo() {
                    "fifo"
                } else if kind.is_socket() {
                    "socket"
                } else {
                    "device"
                };
                snapshot.entries.insert(relative, Entry::Other(other));
            }
        }
    }
    snapshot
}

/// Up to `limit` bytes of a regular file; `None` if it cannot be opened without following a link.
fn read_file(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// What differs between `before` and the workspace at `root` now, sorted by path, with content
/// within the caps of `watch`; `true` when the list was cut.
pub(crate) fn changes(
    before: &Snapshot,
    root: &Path,
    watch: &AgentWatch,
) -> (Vec<ChangedFile>, bool) {
    let after = walk(root, false);
    let mut changed = Vec::new();
    let mut budget = watch.max_changed_total_bytes;
    let mut truncated = after.truncated;
    for (path, entry) in &after.entries {
        let change = match before.entries.get(path) {
            None => FileChange::Created,
            Some(old) if same(old, entry, &root.join(path)) => continue,
            Some(_) => FileChange::Modified,
        };
        if changed.len() >= watch.max_changed_files {
            truncated = true;
            break;
        }
        changed.push(describe(path, change, entry, root, watch, &mut budget));
    }
    for path in before.entries.keys() {
        if after.entries.contains_key(path) || after.truncated {
            continue;
        }
        if changed.len() >= watch.max_changed_files {
            truncated = true;
            break;
        }
        changed.push(ChangedFile {
            path: path.clone(),
            change: FileChange::Deleted,
            size: 0,
            content: None,
            encoding: None,
            content_omitted: false,
            kind: None,
        });
    }
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    (changed, truncated)
}

fn same(old: &Entry, new: &Entry, path: &Path) -> bool {
    match (old, new) {
        (
            Entry::File {
                size: old_size,
                bytes: Some(old_bytes),
            },
            Entry::File { size, .. },
        ) => {
            old_size == size
                && read_file(path, old_size.saturating_add(1)).as_deref() == Some(old_bytes)
        }
        (Entry::Other(a), Entry::Other(b)) => a == b,
        _ => false,
    }
}

fn describe(
    path: &str,
    change: FileChange,
    entry: &Entry,
    root: &Path,
    watch: &AgentWatch,
    budget: &mut u64,
) -> ChangedFile {
    let mut file = ChangedFile {
        path: path.to_owned(),
        change,
        size: 0,
        content: None,
        encoding: None,
        content_omitted: false,
        kind: None,
    };
    match entry {
        Entry::Other(kind) => file.kind = Some((*kind).to_owned()),
        Entry::File { size, .. } => {
            file.size = *size;
            if *size > watch.max_changed_file_bytes || *size > *budget {
                file.content_omitted = true;
                return file;
            }
            let Some(bytes) = read_file(&root.join(path), watch.max_changed_file_bytes) else {
                file.content_omitted = true;
                return file;
            };
            *budget = budget.saturating_sub(bytes.len() as u64);
            file.size = bytes.len() as u64;
            let (content, encoding) = match String::from_utf8(bytes) {
                Ok(text) => (text, ContentEncoding::Utf8),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    ContentEncoding::Base64,
                ),
            };
            file.content = Some(content);
            file.encoding = Some(encoding);
        }
    }
    file
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn watch() -> AgentWatch {
        AgentWatch {
            parser: kiln_runner_protocol::agent::OutputParser::Plain,
            max_tokens: None,
            max_cost: None,
            pass_env: Vec::new(),
            max_changed_file_bytes: 16,
            max_changed_total_bytes: 24,
            max_changed_files: 10,
        }
    }

    fn temp() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kiln-ws-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        dir
    }

    #[test]
    fn created_modified_deleted_and_links_are_reported() {
        let root = temp();
        std::fs::write(root.join("keep.txt"), "same").unwrap();
        std::fs::write(root.join("src/edit.rs"), "old").unwrap();
        std::fs::write(root.join("gone.txt"), "bye").unwrap();
        std::fs::write(root.join("same-size.txt"), "abc").unwrap();
        let before = Snapshot::take(&root);

        std::fs::write(root.join("src/edit.rs"), "new content").unwrap();
        std::fs::write(root.join("same-size.txt"), "xyz").unwrap();
        std::fs::remove_file(root.join("gone.txt")).unwrap();
        std::fs::write(root.join("bin.dat"), [0u8, 159, 146, 150]).unwrap();
        std::fs::write(root.join("big.txt"), "x".repeat(17)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("link")).unwrap();

        let (changes, truncated) = changes(&before, &root, &watch());
        assert!(!truncated);
        let get = |p: &str| changes.iter().find(|c| c.path == p).unwrap();
        assert_eq!(changes.len(), 6, "{changes:#?}");
        assert_eq!(get("src/edit.rs").change, FileChange::Modified);
        assert_eq!(get("src/edit.rs").content.as_deref(), Some("new content"));
        assert_eq!(get("same-size.txt").change, FileChange::Modified);
        assert_eq!(get("gone.txt").change, FileChange::Deleted);
        let bin = get("bin.dat");
        assert_eq!(
            (bin.change, bin.encoding, bin.content.as_deref()),
            (
                FileChange::Created,
                Some(ContentEncoding::Base64),
                Some("AJ+Slg==")
            )
        );
        assert!(get("big.txt").content_omitted && get("big.txt").size == 17);
        let link = get("link");
        assert_eq!(link.kind.as_deref(), Some("symlink"));
        assert!(link.content.is_none());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_content_budget_and_the_entry_cap_hold() {
        let root = temp();
        let before = Snapshot::take(&root);
        for i in 0..12 {
            std::fs::write(root.join(format!("f{i:02}")), "0123456789").unwrap();
        }
        let (changes, truncated) = changes(&before, &root, &watch());
        assert!(truncated);
        assert_eq!(changes.len(), 10);
        // 24 bytes of content: two files of 10, the rest listed without content.
        assert_eq!(changes.iter().filter(|c| c.content.is_some()).count(), 2);
        std::fs::remove_dir_all(root).unwrap();
    }
}
