//! The scheduler: grants concurrency slots on the replica that holds the lease.
//!
//! A pass takes queued sagas by priority (desc), then FIFO (`enqueued_at`, then `_id`), skipping
//! users at `limits.per_user_concurrency`, while fewer than `limits.global_concurrency` sagas
//! hold a slot. Each is moved with a conditional update `queued → scheduled` that also writes
//! its events to the outbox, and the outbox is published right after.
//!
//! Why state first, publish after: the slot must be taken before an executor can exist, or the
//! caps could be exceeded; and the outbox written in the same update means a failed or lost
//! publish is retried from MongoDB (by this loop) rather than leaving the saga scheduled with no
//! executor coming. k8s-worker's create is idempotent, so a re-published command is harmless.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::DateTime;
use shared::events::{CreatePodCommand, Event, EventPayload, ExecutionScheduled};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::{progress, saga_event};
use crate::lease::Lease;
use crate::store::{SagaDoc, SagaState, Step, StoreError, Transition};
use crate::{Orchestrator, metrics, outbox, sweeper};

/// An outbox older than this was not published by its writer (which publishes at once).
const STALE_OUTBOX: Duration = Duration::from_secs(2);
/// Passes woken by events start at most this often: a burst of finished and queued executions
/// is served by one pass rather than one pass (and its queries) each.
const MIN_PASS_GAP: Duration = Duration::from_millis(10);
/// The queue-depth gauge costs a count over the queue; it is refreshed at most this often.
const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(1);

pub struct Scheduler {
    saga: Orchestrator,
    lease: Lease,
    depth_measured_at: std::sync::Mutex<Option<Instant>>,
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
            depth_measured_at: std::sync::Mutex::new(None),
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
                        ::metrics::gauge!(metrics::LEADER).set(if held { 1.0 } else { 0.0 });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "scheduler lease check failed");
                    continue;
                }
            }
            if !leader {
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
        let mut active = self.saga.store.active_by_user().await?;
        let mut in_use: usize = active.values().sum();
        ::metrics::gauge!(metrics::RUNNING).set(in_use as f64);
        self.measure_queue_depth().await?;
        if in_use >= settings.global_concurrency {
            return Ok(0);
        }
        let full: Vec<String> = active
            .iter()
            .filter(|(_, n)| **n >= settings.per_user_concurrency)
            .map(|(user, _)| user.clone())
            .collect();
        let mut queued = self.saga.store.queued_in_order(full).await?;
        let mut scheduled = 0;
        while in_use < settings.global_concurrency {
            let Some(doc) = queued.try_next().await? else {
                break;
            };
            let user = doc.user_id.clone().unwrap_or_default();
            let used = active.entry(user).or_insert(0);
            if *used >= settings.per_user_concurrency {
                continue;
            }
            if let Some(events) = self.schedule(&doc).await? {
                *used += 1;
                in_use += 1;
                scheduled += 1;
                if let Err(error) =
                    outbox::publish(&self.saga.store, &self.saga.producer, &doc.id, &events).await
                {
                    tracing::warn!(saga_id = %doc.id, error = %error, "schedule events not published yet; will retry");
                }
            }
        }
        if scheduled > 0 {
            ::metrics::gauge!(metrics::RUNNING).set(in_use as f64);
        }
        Ok(scheduled)
    }

    async fn measure_queue_depth(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        {
            let mut at = self
                .depth_measured_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if at.is_some_and(|at| now.duration_since(at) < QUEUE_DEPTH_EVERY) {
                return Ok(());
            }
            *at = Some(now);
        }
        let depth = self.saga.store.count_in(SagaState::Queued).await?;
        ::metrics::gauge!(metrics::QUEUE_DEPTH).set(depth as f64);
        Ok(())
    }

    async fn schedule(&self, doc: &SagaDoc) -> Result<Option<Vec<Event>>, StoreError> {
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
        if applied.is_some() {
            ::metrics::counter!(metrics::SCHEDULED_TOTAL).increment(1);
            if let Some(enqueued) = doc.enqueued_at {
                let wait_ms = now
                    .timestamp_millis()
                    .saturating_sub(enqueued.timestamp_millis());
                ::metrics::histogram!(metrics::QUEUE_WAIT).record(wait_ms.max(0) as f64 / 1000.0);
            }
        }
        Ok(applied)
    }

    /// Publishes outboxes their writer left behind (crash, Kafka unavailable).
    async fn republish(&self) -> Result<(), StoreError> {
        let stale_ms = i64::try_from(STALE_OUTBOX.as_millis()).unwrap_or(i64::MAX);
        let older_than = DateTime::from_millis(DateTime::now().timestamp_millis() - stale_ms);
        for doc in self.saga.store.with_pending_outbox(older_than).await? {
            if let Err(error) = outbox::flush_doc(&self.saga.store, &self.saga.producer, &doc).await
            {
                tracing::warn!(saga_id = %doc.id, error = %error, "re-publish failed; will retry");
            }
        }
        Ok(())
    }
}
