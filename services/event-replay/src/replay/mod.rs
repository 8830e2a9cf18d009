//! The replay engine: runs replay sessions stored in MongoDB (`replay_sessions`).
//!
//! The api creates sessions and moves them between states; every event-replay instance polls
//! for a `running` session whose lease is free or expired, claims it with a conditional update,
//! and runs it, saving progress (the last replayed position) and renewing the lease every batch.
//! A paused, cancelled or crashed run resumes from that position on any instance. Each copy's
//! event id is derived from the session and the original ([`shared::replay::replayed_event_id`]),
//! so events published again after a crash, before their progress was saved, carry the same ids.

mod run;
mod sessions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::Database;
use mongodb::bson::Document;
use shared::config::{EventStoreConfig, KafkaConfig};
use shared::kafka::{EventProducer, Handler, HandlerError, InboundMessage};
use shared::replay::{SESSIONS_METRIC, is_replay};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use sessions::{SessionError, SessionStore, Standing};

use crate::EVENTS_COLLECTION;

/// Sessions one instance runs at once; more wait for a free slot here or for another instance.
pub const MAX_RUNS: usize = 4;
/// How often the sessions-by-state gauge is refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct ReplayEngine {
    db: Database,
    producer: EventProducer,
    kafka: KafkaConfig,
    sessions: SessionStore,
    batch_size: u64,
    lease: Duration,
    poll_interval: Duration,
}

impl ReplayEngine {
    /// An engine whose leases name `owner` (unique per process).
    pub fn new(
        db: &Database,
        producer: EventProducer,
        kafka: KafkaConfig,
        settings: &EventStoreConfig,
        owner: String,
    ) -> Self {
        let lease = Duration::from_secs(settings.replay_lease_seconds);
        Self {
            db: db.clone(),
            producer,
            kafka,
            sessions: SessionStore::new(db, owner, lease),
            batch_size: u64::from(settings.replay_batch_size.max(1)),
            lease,
            poll_interval: Duration::from_millis(settings.replay_poll_interval_ms),
        }
    }

    /// Indexes of `replay_sessions`: the claim query looks for running sessions.
    pub fn session_indexes() -> Vec<mongodb::IndexModel> {
        vec![
            mongodb::IndexModel::builder()
                .keys(mongodb::bson::doc! { "state": 1, "_id": 1 })
                .build(),
        ]
    }

    /// Claims and runs sessions (up to [`MAX_RUNS`] at once) until `shutdown`; sessions in
    /// progress are handed back before it returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let base = run::Runner {
            events: self.db.collection::<Document>(EVENTS_COLLECTION),
            sessions: self.sessions.clone(),
            producer: self.producer.clone(),
            kafka: self.kafka.clone(),
            batch_size: self.batch_size,
            lease: self.lease,
            shutdown: shutdown.clone(),
        };
        let mut runs = JoinSet::new();
        let mut gauge_at: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            while let Some(ended) = runs.try_join_next() {
                log_panic(ended);
            }
            if runs.len() < MAX_RUNS {
                let sessions = self.sessions.for_run();
                match sessions.claim().await {
                    Ok(Some(session)) => {
                        let runner = run::Runner {
                            sessions,
                            ..base.clone()
                        };
                        runs.spawn(async move {
                            let id = session.id.clone();
                            // Store or Kafka trouble: the session is claimed again after a poll
                            // interval (its lease was given back) or once its lease runs out.
                            if let Err(error) = runner.run(session).await {
                                tracing::warn!(session_id = %id, error.cause_chain = %shared::errors::display_chain(&error), "replay run interrupted");
                            }
                        });
                        continue;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(error.cause_chain = %shared::errors::display_chain(&error), "claiming a replay session failed");
                    }
                }
            }
            if gauge_at.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
                self.refresh_gauge().await;
                gauge_at = Some(Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll_interval) => {}
                () = shutdown.cancelled() => {}
            }
        }
        // Each run saw the same token: it saves its progress and gives its lease back.
        while let Some(ended) = runs.join_next().await {
            log_panic(ended);
        }
        Ok(())
    }

    async fn refresh_gauge(&self) {
        match self.sessions.count_by_state().await {
            Ok(counts) => {
                for (state, n) in counts {
                    ::metrics::gauge!(SESSIONS_METRIC, "state" => state.as_str()).set(n as f64);
                }
            }
            Err(error) => {
                tracing::debug!(error.cause_chain = %shared::errors::display_chain(&error), "counting replay sessions failed")
            }
        }
    }
}

fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended {
        tracing::error!(%error, "a replay run panicked; its session resumes after its lease");
    }
}

/// The event store's handler, minus replayed copies: the original of every copy is already
/// stored, and storing the copy under its new id would show the event twice in the history.
/// The session document records what was replayed.
pub struct SkipReplays<H>(pub Arc<H>);

impl<H: Handler> Handler for SkipReplays<H> {
    async fn handle(&self, message: &InboundMessage) -> Result<(), HandlerError> {
        if is_replay(message) {
            return Ok(());
        }
        self.0.handle(message).await
    }
}
