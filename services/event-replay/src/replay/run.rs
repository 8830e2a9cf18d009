//! One run of one session: read its events from the store after its last position, publish each
//! copy, save progress every batch. A run ends when the events do (completed), when an admin
//! pauses or cancels, when the lease is lost, or at shutdown (progress saved, lease released, so
//! any instance resumes from the last position).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use mongodb::Collection;
use mongodb::bson::Document;
use shared::errors::display_chain;
use shared::events::{Event, topic_for};
use shared::kafka::{EventProducer, KafkaError, ensure_topics_named};
use shared::replay::{
    EVENTS_REPLAYED_METRIC, Position, Progress, ReplaySession, ReplayState, ReplayTarget,
    replay_copy, replay_headers, replay_order, session_topic, stored_event,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sessions::{SessionError, SessionStore, Standing};

/// Publishing one copy is tried this many times before the run stops (and resumes later).
const PUBLISH_ATTEMPTS: u32 = 5;
/// Progress is saved at least this often, so pause and cancel act quickly.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// One run's view of the engine (cheap to clone; `sessions` names the run's lease owner).
#[derive(Clone)]
pub(super) struct Runner {
    pub(super) events: Collection<Document>,
    pub(super) sessions: SessionStore,
    pub(super) producer: EventProducer,
    pub(super) kafka: shared::config::KafkaConfig,
    pub(super) batch_size: u64,
    pub(super) lease: Duration,
    pub(super) shutdown: CancellationToken,
}

/// Why a run stopped before its events did.
#[derive(Debug, thiserror::Error)]
pub(super) enum RunError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("reading the event store failed")]
    Store(#[from] mongodb::error::Error),
    /// Kafka is unreachable: progress is saved and the lease given back; a later claim goes on.
    #[error("{0}")]
    Kafka(String),
    /// The session cannot go on; it is marked failed with this message.
    #[error("{0}")]
    Broken(String),
}

/// Spreads events over time as they originally were, `speed` times faster (0: no waiting).
struct Pacer {
    speed: f64,
    anchor: Option<(Instant, DateTime<Utc>)>,
}

impl Pacer {
    fn wait_before(&mut self, occurred_at: DateTime<Utc>) -> Duration {
        if self.speed <= 0.0 {
            return Duration::ZERO;
        }
        let (started, first) = *self.anchor.get_or_insert((Instant::now(), occurred_at));
        let gap = (occurred_at - first).to_std().unwrap_or_default();
        let due = started + gap.div_f64(self.speed);
        due.saturating_duration_since(Instant::now())
    }
}

struct Cursor {
    session_id: String,
    progress: Progress,
    unsaved: u64,
    saved_at: Instant,
}

impl Runner {
    /// Runs `session` (which this instance holds) until it ends or must stop. A session that
    /// cannot go on is marked failed, with the reason.
    pub(super) async fn run(&self, session: ReplaySession) -> Result<(), RunError> {
        let mut cursor = Cursor {
            session_id: session.id.clone(),
            progress: session.progress.clone(),
            unsaved: 0,
            saved_at: Instant::now(),
        };
        match self.replay(&session, &mut cursor).await {
            Err(RunError::Broken(message)) => {
                tracing::error!(session_id = %session.id, reason = %message, "replay session failed");
                self.sessions
                    .finish(
                        &session.id,
                        ReplayState::Failed,
                        &cursor.progress,
                        Some(message),
                    )
                    .await?;
                Ok(())
            }
            Err(RunError::Kafka(message)) => {
                if let Err(error) = self.stop(&cursor).await {
                    tracing::warn!(session_id = %session.id, error.cause_chain = %display_chain(&error), "saving progress after a Kafka failure failed");
                }
                Err(RunError::Kafka(message))
            }
            other => other,
        }
    }

    async fn replay(&self, session: &ReplaySession, cursor: &mut Cursor) -> Result<(), RunError> {
        let session_uuid = Uuid::parse_str(&session.id)
            .map_err(|_| RunError::Broken("the session id is not a UUID".into()))?;
        let fixed_topic = match session.target {
            ReplayTarget::SessionTopic => {
                let topic = session_topic(self.producer.topic_prefix(), &session.id);
                ensure_topics_named(&self.kafka, std::slice::from_ref(&topic))
                    .await
                    .map_err(|e| {
                        RunError::Kafka(format!("creating {topic}: {}", display_chain(&e)))
                    })?;
                Some(topic)
            }
            ReplayTarget::OriginalTopics => None,
        };
        let query = match &session.progress.position {
            Some(position) => position.after(session.filter.to_query()),
            None => session.filter.to_query(),
        };
        let mut stored = self.events.find(query).sort(replay_order()).await?;
        let mut pacer = Pacer {
            speed: session.speed,
            anchor: None,
        };
        tracing::info!(session_id = %session.id, replayed = cursor.progress.replayed, "replay session running");
        loop {
            let next = tokio::select! {
                next = stored.try_next() => next?,
                () = self.shutdown.cancelled() => return self.stop(cursor).await,
            };
            let Some(document) = next else {
                return self.complete(cursor).await;
            };
            let original =
                stored_event(&document).map_err(|e| RunError::Broken(display_chain(&e)))?;
            let wait = pacer.wait_before(original.occurred_at);
            if !wait.is_zero() && !self.wait(cursor, wait).await? {
                return Ok(());
            }
            let topic = fixed_topic
                .clone()
                .unwrap_or_else(|| topic_for(self.producer.topic_prefix(), original.event_type()));
            self.publish(&topic, &original, session, session_uuid)
                .await?;
            ::metrics::counter!(EVENTS_REPLAYED_METRIC, "target" => target_label(session.target))
                .increment(1);
            cursor.progress.replayed += 1;
            cursor.progress.position = Some(Position {
                occurred_at: original.occurred_at,
                event_id: original.event_id.to_string(),
            });
            cursor.unsaved += 1;
            if (cursor.unsaved >= self.batch_size || cursor.saved_at.elapsed() >= SAVE_INTERVAL)
                && !self.save(cursor).await?
            {
                return Ok(());
            }
        }
    }

    /// Saves progress; false when the run must stop (paused, cancelled or lease lost).
    async fn save(&self, cursor: &mut Cursor) -> Result<bool, RunError> {
        let standing = self
            .sessions
            .save(&cursor.session_id, &cursor.progress)
            .await?;
        cursor.unsaved = 0;
        cursor.saved_at = Instant::now();
        match standing {
            Standing::Running => Ok(true),
            Standing::Stopped(state) => {
                tracing::info!(session_id = %cursor.session_id, state = state.as_str(), replayed = cursor.progress.replayed, "replay session stopped by an admin");
                Ok(false)
            }
            Standing::Lost => {
                tracing::warn!(session_id = %cursor.session_id, "replay session lease lost; another instance goes on");
                Ok(false)
            }
        }
    }

    /// Waits out the pacing gap, saving progress (and so renewing the lease and noticing a pause)
    /// at least every third of the lease. False when the run must stop.
    async fn wait(&self, cursor: &mut Cursor, wait: Duration) -> Result<bool, RunError> {
        let deadline = tokio::time::Instant::now() + wait;
        let slice = (self.lease / 3).min(SAVE_INTERVAL);
        loop {
            if (cursor.unsaved > 0 || cursor.saved_at.elapsed() >= slice)
                && !self.save(cursor).await?
            {
                return Ok(false);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(true);
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline.min(now + slice)) => {}
                () = self.shutdown.cancelled() => {
                    self.stop(cursor).await?;
                    return Ok(false);
                }
            }
        }
    }

    async fn publish(
        &self,
        topic: &str,
        original: &Event,
        session: &ReplaySession,
        session_uuid: Uuid,
    ) -> Result<(), RunError> {
        let copy = replay_copy(original, session_uuid);
        let payload = copy
            .to_json()
            .map_err(|e| RunError::Broken(format!("encoding event {}: {e}", original.event_id)))?;
        let headers = replay_headers(&session.id, original, &copy, session.allow_side_effects);
        let mut attempt = 1;
        loop {
            let sent = self
                .producer
                .send(
                    topic,
                    Some(copy.aggregate_id.as_bytes()),
                    Some(&payload),
                    &headers,
                )
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(error) if attempt < PUBLISH_ATTEMPTS => {
                    tracing::warn!(session_id = %session.id, attempt, error.cause_chain = %shared::errors::display_chain(&error), "replay publish failed; retrying");
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))) => {}
                        () = self.shutdown.cancelled() => return Err(publish_failed(topic, &error)),
                    }
                }
                Err(error) => return Err(publish_failed(topic, &error)),
            }
        }
    }

    async fn complete(&self, cursor: &Cursor) -> Result<(), RunError> {
        self.sessions
            .finish(
                &cursor.session_id,
                ReplayState::Completed,
                &cursor.progress,
                None,
            )
            .await?;
        tracing::info!(session_id = %cursor.session_id, replayed = cursor.progress.replayed, "replay session completed");
        Ok(())
    }

    /// Shutdown or a Kafka failure: keep what was done and let any instance go on from here.
    async fn stop(&self, cursor: &Cursor) -> Result<(), RunError> {
        if let Standing::Running = self
            .sessions
            .save(&cursor.session_id, &cursor.progress)
            .await?
        {
            self.sessions.release(&cursor.session_id).await?;
        }
        tracing::info!(session_id = %cursor.session_id, replayed = cursor.progress.replayed, "replay session handed back");
        Ok(())
    }
}

fn publish_failed(topic: &str, error: &KafkaError) -> RunError {
    RunError::Kafka(format!(
        "publishing to {topic} failed: {}",
        shared::errors::display_chain(error)
    ))
}

fn target_label(target: ReplayTarget) -> &'static str {
    match target {
        ReplayTarget::OriginalTopics => "original_topics",
        ReplayTarget::SessionTopic => "session_topic",
    }
}
