//! The local runtime's watcher: turns executor directories into executor and execution events.
//!
//! The kernel tells it (inotify, `watcher`) when an executor appears in `runtime.work_dir` and
//! when one's program started or ended; it then reads what changed in that executor, publishes
//! it, and only after the broker acknowledged records it in the executor's `monitor.json`. A
//! periodic pass over every live executor publishes their new output (at most every
//! `monitor.output_flush_interval_ms`) and notices runners that died; where inotify is not
//! available that pass, every `monitor.poll_interval_ms`, is all there is. A restart resumes
//! exactly where the acknowledged events end (at-least-once: an event published but not yet
//! recorded is published again, and consumers de-duplicate on `seq` and on the first terminal
//! result).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use futures::StreamExt;
use shared::config::MonitorConfig;
use shared::events::{
    Event, EventMetadata, EventPayload, ExecutionOutput, ExecutionStarted, ExecutorRef,
    OutputStream, PodTerminated, derived_event_id,
};
use shared::executions::ExecutorMeta;
use shared::kafka::EventProducer;
use tokio_util::sync::CancellationToken;

use crate::executor_dir::ExecutorDir;
use crate::outcome::terminal_payload;
use crate::state::MonitorState;
use crate::utf8::complete_prefix_len;
use crate::watcher::{Changes, Watcher};

/// Executors handled at once; each has at most a few publishes in flight.
const CONCURRENCY: usize = 32;
/// Output chunks published per stream per pass, so one chatty program cannot starve the others.
const MAX_CHUNKS_PER_PASS: usize = 16;

pub struct Monitor {
    root: PathBuf,
    producer: EventProducer,
    config: MonitorConfig,
    service: &'static str,
    active: HashMap<String, Tracked>,
    finished: HashMap<String, (PathBuf, chrono::DateTime<Utc>)>,
    /// The work dir's modification time at the last listing, and when that listing was.
    listed: Option<(SystemTime, Instant)>,
    expired_at: Option<Instant>,
    /// Set by [`Monitor::run`]; `None` = polling only.
    watcher: Option<Watcher>,
}

/// The work dir holds every executor kept for `retention_seconds`, thousands under load, and
/// listing it on every poll cost more than watching the live ones. With inotify it is listed
/// only this often, as a fallback. Without, it is listed when its modification time moved
/// (executors are renamed into it), while that time is recent (a second change within one
/// timestamp tick would not move it), and at least this often regardless.
const RELIST_EVERY: Duration = Duration::from_secs(5);
const RECENT_CHANGE: Duration = Duration::from_millis(250);
/// Finished executors are checked for expiry at most this often.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

struct Tracked {
    dir: ExecutorDir,
    state: MonitorState,
    meta: Option<ExecutorMeta>,
    last_flush: Instant,
    /// When the runner was first seen gone without a result. One sighting is not enough: a
    /// process just after exec, or a result still being synced to disk, look the same for a
    /// moment.
    gone_since: Option<Instant>,
}

/// How long a runner must stay gone without a result before its execution is declared lost.
const LOST_AFTER: Duration = Duration::from_secs(2);

impl Monitor {
    pub fn new(
        root: PathBuf,
        producer: EventProducer,
        config: MonitorConfig,
        service: &'static str,
    ) -> Self {
        Self {
            root,
            producer,
            config,
            service,
            active: HashMap::new(),
            finished: HashMap::new(),
            listed: None,
            expired_at: None,
            watcher: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let mut every = Duration::from_millis(self.config.poll_interval_ms);
        match Watcher::start(&self.root) {
            Ok(watcher) => {
                self.watcher = Some(watcher);
                // Only output and dead runners wait for the pass now; half the flush interval
                // keeps output within about one interval of being written.
                every = every.max(Duration::from_millis(
                    self.config.output_flush_interval_ms / 2,
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "inotify unavailable; polling the work dir instead")
            }
        }
        tracing::info!(root = %self.root.display(), every_ms = every.as_millis() as u64, "watching local executors");
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = async {
                match self.watcher.as_mut() {
                    Some(watcher) => watcher.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                changes = changed => match changes {
                    Ok(changes) => self.on_changes(changes).await,
                    Err(error) => {
                        tracing::warn!(%error, "inotify failed; polling the work dir instead");
                        self.watcher = None;
                        tick = tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms));
                    }
                },
                _ = tick.tick() => self.pass().await,
            }
        }
    }

    /// One pass over every executor; public so tests can drive the monitor step by step.
    pub async fn pass(&mut self) {
        self.discover();
        self.advance_where(|_| true).await;
        if self
            .expired_at
            .is_none_or(|at| at.elapsed() >= EXPIRE_EVERY)
        {
            self.expired_at = Some(Instant::now());
            self.expire_finished();
        }
    }

    /// Acts on what the kernel reported: tracks new executors and advances those that changed.
    async fn on_changes(&mut self, mut changes: Changes) {
        if changes.overflowed {
            tracing::info!("inotify queue overflowed; listing the work dir");
            self.listed = None;
            return self.pass().await;
        }
        for name in changes.appeared {
            let Some(dir) = ExecutorDir::new(self.root.join(&name)) else {
                continue;
            };
            // Reported names may be gone already (expired, or a rename away).
            if dir.path.is_dir() && self.track(dir) {
                changes.changed.insert(name);
            }
        }
        self.advance_where(|id| changes.changed.contains(id)).await;
    }

    /// Advances the live executors whose id `select` accepts, side by side.
    async fn advance_where(&mut self, select: impl Fn(&str) -> bool) {
        let ids: Vec<String> = self
            .active
            .keys()
            .filter(|id| select(id))
            .cloned()
            .collect();
        let tracked: Vec<Tracked> = ids.iter().filter_map(|id| self.active.remove(id)).collect();
        let producer = self.producer.clone();
        let config = self.config.clone();
        let service = self.service;
        let updated: Vec<Tracked> = futures::stream::iter(tracked)
            .map(|t| advance(t, &producer, &config, service))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for t in updated {
            match t.state.finished_at {
                Some(at) => {
                    if let Some(watcher) = self.watcher.as_mut() {
                        watcher.unwatch(&t.dir.execution_id);
                    }
                    self.finished
                        .insert(t.dir.execution_id.clone(), (t.dir.path, at));
                }
                None => {
                    self.active.insert(t.dir.execution_id.clone(), t);
                }
            }
        }
    }

    fn listing_due(&self, modified: Option<SystemTime>) -> bool {
        if self.watcher.is_some() {
            return self
                .listed
                .is_none_or(|(_, at)| at.elapsed() >= RELIST_EVERY);
        }
        let (Some((seen, at)), Some(modified)) = (self.listed, modified) else {
            return true;
        };
        modified != seen
            || SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|age| age < RECENT_CHANGE)
            || at.elapsed() >= RELIST_EVERY
    }

    fn discover(&mut self) {
        // Read before listing: a change during the listing makes the next pass list again.
        let modified = std::fs::metadata(&self.root)
            .and_then(|m| m.modified())
            .ok();
        if !self.listing_due(modified) {
            return;
        }
        self.listed = modified.map(|modified| (modified, Instant::now()));
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(root = %self.root.display(), %error, "cannot list executors");
                return;
            }
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(dir) = ExecutorDir::new(entry.path()) {
                self.track(dir);
            }
        }
    }

    /// Starts following an executor not seen before (a finished one is only kept for expiry).
    /// Returns whether it is new and live.
    fn track(&mut self, dir: ExecutorDir) -> bool {
        if self.active.contains_key(&dir.execution_id)
            || self.finished.contains_key(&dir.execution_id)
        {
            return false;
        }
        match MonitorState::load(&dir.path) {
            Ok(state) => match state.finished_at {
                Some(at) => {
                    self.finished
                        .insert(dir.execution_id.clone(), (dir.path, at));
                    false
                }
                None => {
                    if let Some(watcher) = self.watcher.as_mut() {
                        watcher.watch(&dir.execution_id, &dir.path);
                    }
                    self.active.insert(
                        dir.execution_id.clone(),
                        Tracked {
                            dir,
                            state,
                            meta: None,
                            last_flush: Instant::now(),
                            gone_since: None,
                        },
                    );
                    true
                }
            },
            Err(error) => {
                tracing::warn!(execution_id = %dir.execution_id, %error, "unreadable monitor state");
                false
            }
        }
    }

    fn expire_finished(&mut self) {
        let retention = chrono::Duration::seconds(self.config.retention_seconds as i64);
        let now = Utc::now();
        self.finished.retain(|execution_id, (path, at)| {
            if now - *at < retention {
                return true;
            }
            if let Err(error) = std::fs::remove_dir_all(&*path) {
                tracing::warn!(%execution_id, %error, "cannot delete executor state");
            }
            false
        });
    }
}

/// Moves one executor forward: publishes what changed since the last acknowledged state.
async fn advance(
    mut t: Tracked,
    producer: &EventProducer,
    config: &MonitorConfig,
    service: &'static str,
) -> Tracked {
    if !t.dir.is_ready() {
        return t;
    }
    if t.meta.is_none() {
        match t.dir.meta() {
            Ok(meta) => t.meta = Some(meta),
            Err(error) => {
                tracing::warn!(execution_id = %t.dir.execution_id, %error, "unreadable executor meta");
                return t;
            }
        }
    }
    let Some(meta) = t.meta.clone() else { return t };
    let before = t.state.clone();
    // Debug level: this runs for every live executor on every poll (25 ms), which at info
    // level would export a span per poll and executor.
    let span = tracing::debug_span!("executor", execution_id = %meta.execution_id);
    if let Err(error) =
        tracing::Instrument::instrument(step(&mut t, &meta, producer, config, service), span).await
    {
        // Nothing was recorded for the failed publish, so the next pass publishes it again.
        tracing::warn!(
            execution_id = %meta.execution_id,
            error.cause_chain = %shared::errors::display_chain(&error),
            "publish failed; retrying on the next pass"
        );
    }
    if t.state != before
        && let Err(error) = t.state.save(&t.dir.path)
    {
        tracing::error!(execution_id = %meta.execution_id, %error, "monitor state not saved; events may repeat");
    }
    t
}

async fn step(
    t: &mut Tracked,
    meta: &ExecutorMeta,
    producer: &EventProducer,
    config: &MonitorConfig,
    service: &'static str,
) -> Result<(), shared::kafka::KafkaError> {
    let event = |payload| new_event(meta, payload, service);
    let executor = format!("executor-{}", meta.execution_id);
    let result = t.dir.result().unwrap_or_else(|error| {
        tracing::warn!(execution_id = %meta.execution_id, %error, "unreadable runner result; retrying");
        None
    });
    let ending = result.is_some();

    if !t.state.running_published && (t.dir.has_started() || ending) {
        let running = event(EventPayload::PodRunning(ExecutorRef {
            executor: executor.clone(),
            node: None,
        }));
        let started = event(EventPayload::ExecutionStarted(ExecutionStarted {
            executor: executor.clone(),
            started_at: Utc::now(),
        }));
        let (a, b) = tokio::join!(producer.publish(&running), producer.publish(&started));
        a?;
        b?;
        t.state.running_published = true;
    }

    let flush_due =
        t.last_flush.elapsed() >= Duration::from_millis(config.output_flush_interval_ms);
    if flush_due || ending {
        let drained = publish_output(t, meta, producer, config, service, ending).await?;
        t.last_flush = Instant::now();
        if !drained {
            return Ok(()); // more output than one pass takes: finish it before the result
        }
    }

    let cancelled = t.dir.is_cancelled() || result.as_ref().is_some_and(|r| r.cancelled);
    let terminated = |reason: &str, exit_code| {
        event(EventPayload::PodTerminated(PodTerminated {
            executor: executor.clone(),
            exit_code,
            reason: Some(reason.to_owned()),
        }))
    };
    match result {
        Some(result) if cancelled => {
            producer
                .publish(&terminated("cancelled", result.exit_code))
                .await?;
        }
        Some(result) => {
            let stdout = t.dir.full_output(OutputStream::Stdout).unwrap_or_default();
            let stderr = t.dir.full_output(OutputStream::Stderr).unwrap_or_default();
            let payload = terminal_payload(&result, stdout, stderr, meta.timeout_seconds);
            producer.publish(&event(payload)).await?;
            producer
                .publish(&terminated("exited", result.exit_code))
                .await?;
        }
        None if lost(t) => {
            // The runner died without a result (killed, host trouble): say so now rather than
            // leave the execution to the saga's deadline.
            if !cancelled {
                let failed = EventPayload::ExecutionFailed(shared::events::ExecutionFailed {
                    error_type: shared::events::ErrorType::ExecutorLost,
                    message: "the executor stopped without reporting a result".into(),
                    outcome: None,
                });
                producer.publish(&event(failed)).await?;
            }
            producer.publish(&terminated("lost", None)).await?;
        }
        None => return Ok(()),
    }
    t.state.finished_at = Some(Utc::now());
    Ok(())
}

/// Whether the runner has been gone, with no result, for [`LOST_AFTER`].
fn lost(t: &mut Tracked) -> bool {
    if !t.dir.runner_is_gone() || t.dir.result().ok().flatten().is_some() {
        t.gone_since = None;
        return false;
    }
    t.gone_since.get_or_insert_with(Instant::now).elapsed() >= LOST_AFTER
}

/// Publishes new output of both streams. Returns whether everything written so far was published.
async fn publish_output(
    t: &mut Tracked,
    meta: &ExecutorMeta,
    producer: &EventProducer,
    config: &MonitorConfig,
    service: &'static str,
    ending: bool,
) -> Result<bool, shared::kafka::KafkaError> {
    let mut drained = true;
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let mut events = Vec::new();
        let mut offset = offset_of(&t.state, stream);
        let mut seq = t.state.next_seq;
        for _ in 0..MAX_CHUNKS_PER_PASS {
            let bytes = t
                .dir
                .read_output(stream, offset, config.output_chunk_bytes)
                .unwrap_or_default();
            let full_chunk = bytes.len() == config.output_chunk_bytes;
            // Hold back a character cut at the end, unless the program is over and no more bytes
            // can complete it.
            let take = if ending && !full_chunk {
                bytes.len()
            } else {
                complete_prefix_len(&bytes)
            };
            if take == 0 {
                break;
            }
            events.push(new_event(
                meta,
                EventPayload::ExecutionOutput(ExecutionOutput {
                    stream,
                    seq,
                    data: String::from_utf8_lossy(&bytes[..take]).into_owned(),
                }),
                service,
            ));
            offset += take as u64;
            seq += 1;
            if !full_chunk {
                break;
            }
        }
        if events.len() == MAX_CHUNKS_PER_PASS {
            drained = false;
        }
        // Sends are queued in `seq` order on one partition (same key), so they land in order.
        for result in futures::future::join_all(events.iter().map(|e| producer.publish(e))).await {
            result?;
        }
        set_offset(&mut t.state, stream, offset);
        t.state.next_seq = seq;
    }
    Ok(drained)
}

fn offset_of(state: &MonitorState, stream: OutputStream) -> u64 {
    match stream {
        OutputStream::Stdout => state.stdout_offset,
        OutputStream::Stderr => state.stderr_offset,
    }
}

fn set_offset(state: &mut MonitorState, stream: OutputStream, offset: u64) {
    match stream {
        OutputStream::Stdout => state.stdout_offset = offset,
        OutputStream::Stderr => state.stderr_offset = offset,
    }
}

/// An event of this execution's flow: its user, correlation and the command that created it.
pub(crate) fn new_event(
    meta: &ExecutorMeta,
    payload: EventPayload,
    service: &'static str,
) -> Event {
    let mut event = Event::new(
        meta.execution_id.clone(),
        payload,
        EventMetadata::new(service, meta.user_id.clone()),
    );
    event.correlation_id = meta.correlation_id;
    event.causation_id = Some(meta.causation_id);
    // Every event but an output chunk happens once per executor: its id is derived from the
    // create command, so one published again after a restart (before the state recorded it) is
    // the same event, deduplicated downstream, not a second `execution_started` or result.
    if !matches!(event.payload, EventPayload::ExecutionOutput(_)) {
        event.event_id = derived_event_id(meta.causation_id, event.event_type());
    }
    // The executor's trace (its creation), not whatever span polls it.
    event.metadata.traceparent = meta.traceparent.clone();
    event
}
