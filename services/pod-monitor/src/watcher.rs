//! What changed in the work dir, from the kernel (inotify) rather than from listing it.
//!
//! Polling found a new executor only by listing the work dir, which holds every executor of the
//! last `monitor.retention_seconds` (thousands under load), and saw a started program or a result
//! only on its next poll. The watcher reports an executor renamed into the work dir by name, and
//! a file created, renamed or closed after writing in a watched executor's directory (the
//! runner's `started` marker and its atomically renamed result), so the monitor acts on them at
//! once. Output appended to the logs is not reported (it would wake the monitor on every write);
//! live output stays on the monitor's flush interval. The monitor keeps a slow periodic listing
//! and pass as the fallback for anything the kernel could not report (a full event queue).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;

use futures::{FutureExt as _, StreamExt as _};
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};

use crate::state::STATE_FILE;

/// Bytes read from the inotify descriptor at once; each event is 16 bytes plus its name.
const BUFFER_BYTES: usize = 64 * 1024;

/// What a batch of kernel events said.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Directories that appeared in the work dir (new executors), by name.
    pub(crate) appeared: Vec<String>,
    /// Watched executors with a new or completed file.
    pub(crate) changed: HashSet<String>,
    /// The kernel's queue overflowed: events were lost, so everything must be looked at again.
    pub(crate) overflowed: bool,
}

pub(crate) struct Watcher {
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    root: WatchDescriptor,
    by_descriptor: HashMap<WatchDescriptor, String>,
    by_execution: HashMap<String, WatchDescriptor>,
}

impl Watcher {
    /// Watches `root` for executors renamed (or created) into it.
    pub(crate) fn start(root: &Path) -> std::io::Result<Self> {
        let inotify = Inotify::init()?;
        let mut watches = inotify.watches();
        let root = watches.add(
            root,
            WatchMask::MOVED_TO | WatchMask::CREATE | WatchMask::ONLYDIR,
        )?;
        Ok(Self {
            stream: inotify.into_event_stream(vec![0; BUFFER_BYTES])?,
            watches,
            root,
            by_descriptor: HashMap::new(),
            by_execution: HashMap::new(),
        })
    }

    /// Reports changes in one executor's directory until [`Watcher::unwatch`]. A directory that
    /// cannot be watched (gone already, or the user's watch limit reached) is left to the
    /// monitor's periodic pass.
    pub(crate) fn watch(&mut self, execution_id: &str, dir: &Path) {
        if self.by_execution.contains_key(execution_id) {
            return;
        }
        let mask =
            WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::ONLYDIR;
        match self.watches.add(dir, mask) {
            Ok(descriptor) => {
                self.by_descriptor
                    .insert(descriptor.clone(), execution_id.to_owned());
                self.by_execution
                    .insert(execution_id.to_owned(), descriptor);
            }
            Err(error) => {
                tracing::debug!(%execution_id, %error, "executor not watched; polled instead")
            }
        }
    }

    pub(crate) fn unwatch(&mut self, execution_id: &str) {
        let Some(descriptor) = self.by_execution.remove(execution_id) else {
            return;
        };
        self.by_descriptor.remove(&descriptor);
        // Fails only when the kernel dropped the watch already (the directory is gone).
        if let Err(error) = self.watches.remove(descriptor) {
            tracing::debug!(%execution_id, %error, "executor watch already gone");
        }
    }

    /// Waits for the next change, then takes every event already queued with it.
    pub(crate) async fn next(&mut self) -> std::io::Result<Changes> {
        let mut changes = Changes::default();
        let mut event = self.stream.next().await;
        loop {
            match event {
                Some(Ok(event)) => self.note(&mut changes, event.wd, event.mask, event.name),
                Some(Err(error)) => return Err(error),
                None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            }
            match self.stream.next().now_or_never() {
                Some(next) => event = next,
                None => return Ok(changes),
            }
        }
    }

    fn note(
        &mut self,
        changes: &mut Changes,
        descriptor: WatchDescriptor,
        mask: EventMask,
        name: Option<OsString>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            changes.overflowed = true;
            return;
        }
        let name = name.and_then(|name| name.into_string().ok());
        if descriptor == self.root {
            if let Some(name) = name
                && mask.contains(EventMask::ISDIR)
            {
                changes.appeared.push(name);
            }
            return;
        }
        let Some(execution_id) = self.by_descriptor.get(&descriptor) else {
            return; // unwatched since the event was queued
        };
        if mask.contains(EventMask::IGNORED) {
            // The kernel removed the watch (the directory was deleted).
            let execution_id = execution_id.clone();
            self.by_descriptor.remove(&descriptor);
            self.by_execution.remove(&execution_id);
            return;
        }
        // The monitor's own state file: its writes are not news to it.
        if name.is_some_and(|name| name.starts_with(STATE_FILE)) {
            return;
        }
        changes.changed.insert(execution_id.clone());
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.by_execution.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_root() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("kiln-watcher-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    #[tokio::test]
    async fn reports_renamed_executors_their_files_and_not_the_monitors_own_writes() {
        let root = temp_root();
        let staging = temp_root();
        let mut watcher = Watcher::start(&root).unwrap();

        std::fs::create_dir(staging.join("exec-1")).unwrap();
        std::fs::rename(staging.join("exec-1"), root.join("exec-1")).unwrap();
        std::fs::write(root.join("not-a-dir"), b"x").unwrap();
        let changes = watcher.next().await.unwrap();
        assert_eq!(changes.appeared, vec!["exec-1".to_owned()]);
        assert!(changes.changed.is_empty() && !changes.overflowed);

        let dir = root.join("exec-1");
        watcher.watch("exec-1", &dir);
        // The monitor's own state writes are not news; a new executor is.
        std::fs::write(dir.join(format!("{STATE_FILE}.tmp")), b"{}").unwrap();
        std::fs::rename(dir.join(format!("{STATE_FILE}.tmp")), dir.join(STATE_FILE)).unwrap();
        std::fs::create_dir(root.join("exec-9")).unwrap();
        let changes = watcher.next().await.unwrap();
        assert_eq!(changes.appeared, vec!["exec-9".to_owned()]);
        assert!(changes.changed.is_empty(), "{changes:?}");

        std::fs::write(dir.join("started"), b"{}").unwrap();
        let changes = watcher.next().await.unwrap();
        assert_eq!(changes.changed, HashSet::from(["exec-1".to_owned()]));

        std::fs::write(dir.join("result.json.tmp"), b"{}").unwrap();
        std::fs::rename(dir.join("result.json.tmp"), dir.join("result.json")).unwrap();
        let changes = watcher.next().await.unwrap();
        assert_eq!(changes.changed, HashSet::from(["exec-1".to_owned()]));

        watcher.unwatch("exec-1");
        assert_eq!(watcher.watched(), 0);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&staging).unwrap();
    }

    #[tokio::test]
    async fn forgets_an_executor_whose_directory_was_deleted() {
        let root = temp_root();
        let mut watcher = Watcher::start(&root).unwrap();
        let dir = root.join("exec-2");
        std::fs::create_dir(&dir).unwrap();
        let changes = watcher.next().await.unwrap();
        assert_eq!(changes.appeared, vec!["exec-2".to_owned()]);
        watcher.watch("exec-2", &dir);
        assert_eq!(watcher.watched(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
        let forgotten = async {
            while watcher.watched() > 0 {
                watcher.next().await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), forgotten)
            .await
            .expect("the kernel's IGNORED event for the deleted directory");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
