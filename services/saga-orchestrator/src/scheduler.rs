//! The scheduler: grants concurrency slots on the replica that holds the lease.
//!
//! A pass takes queued sagas by priority (desc), then FIFO (`enqueued_at`, then `_id`), skipping
//! users at `limits.per_user_concurrency`, while fewer than `limits.global_concurrency` sagas
//! hold a slot. The order comes from the in-memory [`crate::queue`], re-read from MongoDB every
//! [`QUEUE_READ_EVERY`] and on taking the lease. Each is moved with a conditional update `queued → scheduled` that also writes
//! its events to the outbox, and the outbox is published right after.
//!
//! The `scheduled` outbox is not emptied after its publish: the saga's next transition replaces
//! it. Until then the re-publisher skips the sagas this leader published ([`Scheduler::published`]),
//! so a long run is not re-announced every sweep; a new leader re-publishes them once.
//!
//! Why state first, publish after: the slot must be taken before an executor can exist, or the
//! caps could be exceeded; and the outbox written in the same update means a failed or lost
//! publish is retried from MongoDB (by this loop) rather than leaving the saga scheduled with no
//! executor coming. k8s-worker's create is idempotent, so a re-published command is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::DateTime;
use shared::events::{CreatePodCommand, Event, EventPayload, ExecutionScheduled};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::{progress, saga_event};
use crate::lease::Lease;
use crate::slots::{Full, Slots};
use crate::store::{SagaDoc, SagaState, Step, StoreError, Transition};
use crate::{Orchestrator, metrics, outbox, sweeper};

/// An outbox older than this was not published by its writer (which publishes at once).
const STALE_OUTBOX: Duration = Duration::from_secs(2);
/// Passes woken by events start at most this often: a burst of finished and queued executions
/// is served by one pass rather than one pass (and its queries) each.
const MIN_PASS_GAP: Duration = Duration::from_millis(20);
/// How often the leader re-reads the queue from MongoDB, for sagas other replicas created.
pub const QUEUE_READ_EVERY: Duration = Duration::from_secs(5);
/// A scheduled saga past its deadline is failed by the next sweep, whose transition replaces the
/// outbox; the published mark outlives the deadline by this much to cover that sweep.
const FORGET_AFTER_DEADLINE: Duration = Duration::from_secs(60);

pub struct Scheduler {
    saga: Orchestrator,
    lease: Lease,
    queue_read_at: std::sync::Mutex<Option<Instant>>,
    /// The slots in use as of the last pass (see [`crate::slots`]); `None` until counted.
    slots: std::sync::Mutex<Option<Slots>>,
    /// Sagas whose `scheduled` outbox this replica published, with when it may forget them:
    /// after the saga's deadline (and a sweep or two), when it has surely moved on.
    published: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Scheduler {
    pub fn new(saga: Orchestrator) -> Self {
        let lease = Lease::new(
            &saga.db,
            Uuid::now_v7().to_string(),
            saga.settings.lease_ttl,
        );
        Self {
            saga,
            lease,
            queue_read_at: std::sync::Mutex::new(None),
            slots: std::sync::Mutex::new(None),
            published: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.saga.settings.schedule_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep: Option<Instant> = None;
        let mut leader = false;
        let mut last_pass = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                () = self.saga.wake.notified() => {
                    tokio::time::sleep_until((last_pass + MIN_PASS_GAP).into()).await;
                }
            }
            last_pass = Instant::now();
            match self.lease.acquire().await {
                Ok(held) => {
                    if held != leader {
                        tracing::info!(
                            owner = self.lease.owner(),
                            leader = held,
                            "scheduler leadership changed"
                        );
                        leader = held;
                        // A new leader reads the whole queue and counts the slots before its
                        // first pass.
                        *self
                            .queue_read_at
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                        *self.slots_lock() = None;
                        ::metrics::gauge!(metrics::LEADER).set(if held { 1.0 } else { 0.0 });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "scheduler lease check failed");
                    continue;
                }
            }
            if !leader {
                // Only the leader schedules; the consumer's entries would only pile up.
                self.saga.queue.clear();
                self.saga.freed.take();
                continue;
            }
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %error, "scheduling pass failed");
            }
            if last_sweep.is_none_or(|at| at.elapsed() >= self.saga.settings.sweep_interval) {
                last_sweep = Some(Instant::now());
                if let Err(error) = sweeper::sweep(&self.saga).await {
                    tracing::warn!(error = %error, "sweep failed");
                }
                if let Err(error) = self.republish().await {
                    tracing::warn!(error = %error, "re-publishing pending saga events failed");
                }
            }
        }
        if leader && let Err(error) = self.lease.release().await {
            tracing::warn!(%error, "releasing the scheduler lease failed; it expires by itself");
        }
        ::metrics::gauge!(metrics::LEADER).set(0.0);
    }

    /// One scheduling pass; returns how many sagas it scheduled.
    pub async fn pass(&self) -> Result<usize, StoreError> {
        let settings = &self.saga.settings;
        self.read_queue_if_due().await?;
        ::metrics::gauge!(metrics::QUEUE_DEPTH).set(self.saga.queue.len() as f64);
        // Taken out for the pass and put back after it: a failed pass leaves nothing, so the
        // next one counts afresh.
        // Endings recorded before a count made now are in it; `release` tells them apart.
        let freed = self.saga.freed.take();
        let held = self.slots_lock().take();
        let why = if held.is_some() { "stale" } else { "lease" };
        let known = held.filter(|slots| !slots.stale()).map(|mut slots| {
            slots.release(&freed);
            slots
        });
        if self.saga.queue.is_empty()
            && let Some(slots) = known
        {
            ::metrics::gauge!(metrics::RUNNING).set(slots.total() as f64);
            *self.slots_lock() = Some(slots);
            return Ok(0);
        }
        ::metrics::counter!(metrics::PASSES_TOTAL).increment(1);
        let (mut slots, mut counted) = match known {
            Some(slots) => (slots, false),
            None => (self.count_slots(why).await?, true),
        };
        let (global_cap, user_cap) = (settings.global_concurrency, settings.per_user_concurrency);
        let mut scheduled = 0;
        for candidate in self.saga.queue.in_order() {
            let mut room = slots.room_for(&candidate.user_id, global_cap, user_cap);
            if room.is_err() && !counted {
                // The bound says full; the real count may have room (executions ended).
                slots = self.count_slots("full").await?;
                counted = true;
                room = slots.room_for(&candidate.user_id, global_cap, user_cap);
            }
            match room {
                Ok(()) => {}
                Err(Full::Global) => break,
                Err(Full::User) => continue,
            }
            // The entry is a candidate only: the saga may have been cancelled or scheduled by
            // another leader since. MongoDB's state (and the conditional update) decides.
            let doc = match self.saga.queue.snapshot(&candidate.id) {
                Some(doc) => doc,
                None => match self.saga.store.get(&candidate.id).await? {
                    Some(doc) if doc.state == SagaState::Queued => Arc::new(doc),
                    _ => {
                        self.saga.queue.remove(&candidate);
                        continue;
                    }
                },
            };
            let written = self.schedule(&doc).await?;
            self.saga.queue.remove(&candidate);
            if let Some((events, forget_at)) = written {
                slots.take(&candidate.user_id);
                scheduled += 1;
                match outbox::publish_kept(&self.saga.producer, &events).await {
                    Ok(()) => {
                        self.published_lock().insert(doc.id.clone(), forget_at);
                    }
                    Err(error) => {
                        tracing::warn!(saga_id = %doc.id, error = %error, "schedule events not published yet; will retry");
                    }
                }
            }
        }
        ::metrics::gauge!(metrics::RUNNING).set(slots.total() as f64);
        *self.slots_lock() = Some(slots);
        Ok(scheduled)
    }

    async fn count_slots(&self, why: &'static str) -> Result<Slots, StoreError> {
        ::metrics::counter!(metrics::SLOT_COUNTS_TOTAL, "why" => why).increment(1);
        Ok(Slots::counted(self.saga.store.active_by_user().await?))
    }

    fn slots_lock(&self) -> std::sync::MutexGuard<'_, Option<Slots>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn read_queue_if_due(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        {
            let mut at = self
                .queue_read_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if at.is_some_and(|at| now.duration_since(at) < QUEUE_READ_EVERY) {
                return Ok(());
            }
            *at = Some(now);
        }
        let queued = self.saga.store.queued().await?;
        self.saga.queue.merge(queued);
        Ok(())
    }

    /// Moves `doc` to `scheduled`; the events to publish and when [`Scheduler::published`] may
    /// forget it.
    async fn schedule(&self, doc: &SagaDoc) -> Result<Option<(Vec<Event>, Instant)>, StoreError> {
        let Some(request) = doc.request.clone() else {
            return Ok(None);
        };
        let id = doc.id.as_str();
        let now = DateTime::now();
        let budget =
            Duration::from_secs(request.limits.timeout_seconds) + self.saga.settings.executor_grace;
        let budget_ms = i64::try_from(budget.as_millis()).unwrap_or(i64::MAX);
        let deadline = DateTime::from_millis(now.timestamp_millis().saturating_add(budget_ms));
        let (flow, cause) = doc.flow_and_cause();
        let mut transition = Transition::new(
            &[SagaState::Queued],
            SagaState::Scheduled,
            Step::done("scheduled"),
        );
        transition.set = mongodb::bson::doc! { "scheduled_at": now, "deadline_at": deadline };
        transition.outbox = vec![
            saga_event(
                id,
                &flow,
                cause,
                EventPayload::SagaStarted(progress(id, "scheduled", None)),
            ),
            saga_event(
                id,
                &flow,
                cause,
                EventPayload::ExecutionScheduled(ExecutionScheduled {
                    saga_id: id.to_owned(),
                }),
            ),
            saga_event(
                id,
                &flow,
                cause,
                EventPayload::CreatePodCommand(CreatePodCommand {
                    saga_id: id.to_owned(),
                    request,
                }),
            ),
        ];
        let applied = self.saga.store.apply(id, transition).await?;
        let forget_at = Instant::now() + budget + FORGET_AFTER_DEADLINE;
        if applied.is_some() {
            ::metrics::counter!(metrics::SCHEDULED_TOTAL).increment(1);
            if let Some(enqueued) = doc.enqueued_at {
                let wait_ms = now
                    .timestamp_millis()
                    .saturating_sub(enqueued.timestamp_millis());
                ::metrics::histogram!(metrics::QUEUE_WAIT).record(wait_ms.max(0) as f64 / 1000.0);
            }
        }
        Ok(applied.map(|events| (events, forget_at)))
    }

    fn published_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes outboxes their writer left behind (crash, Kafka unavailable).
    async fn republish(&self) -> Result<(), StoreError> {
        let stale_ms = i64::try_from(STALE_OUTBOX.as_millis()).unwrap_or(i64::MAX);
        let older_than = DateTime::from_millis(DateTime::now().timestamp_millis() - stale_ms);
        let published: HashSet<String> = {
            let mut published = self.published_lock();
            let now = Instant::now();
            published.retain(|_, forget_at| *forget_at > now);
            published.keys().cloned().collect()
        };
        let mut emptied = Vec::new();
        for pending in self
            .saga
            .store
            .with_pending_outbox(older_than, &published)
            .await?
        {
            if pending.outbox.is_empty() {
                emptied.push(pending.id);
                continue;
            }
            if let Err(error) =
                outbox::flush_pending(&self.saga.store, &self.saga.producer, &pending).await
            {
                tracing::warn!(saga_id = %pending.id, error = %error, "re-publish failed; will retry");
            }
        }
        self.saga.store.clear_pending_marks(emptied).await
    }
}
