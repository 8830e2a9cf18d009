//! The engine's side of `replay_sessions`: claiming a running session under a lease, saving
//! progress (which renews the lease), and ending a run. Every write is conditional on this
//! instance still holding the lease, so two instances never run one session at once.

use std::time::Duration;

use chrono::Utc;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use shared::replay::{
    Lease, Progress, ReplaySession, ReplayState, SESSIONS_COLLECTION, state_bson,
};

#[derive(Debug, Clone)]
pub struct SessionStore {
    sessions: Collection<ReplaySession>,
    owner: String,
    lease: Duration,
}

/// What saving progress found out about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still running and still ours: go on.
    Running,
    /// An admin paused or cancelled it; the lease has been given back.
    Stopped(ReplayState),
    /// Another instance holds it now (ours expired); stop without touching it.
    Lost,
}

impl SessionStore {
    pub fn new(db: &Database, owner: String, lease: Duration) -> Self {
        Self {
            sessions: db.collection(SESSIONS_COLLECTION),
            owner,
            lease,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The store of one run: its leases name the instance and the run, so a run can never
    /// mistake a lease another run of the same instance took over for its own.
    pub fn for_run(&self) -> Self {
        Self {
            owner: format!("{}/{}", self.owner, uuid::Uuid::now_v7().simple()),
            ..self.clone()
        }
    }

    fn lease_doc(&self) -> Result<Bson, bson::ser::Error> {
        let expires_at_ms = Utc::now().timestamp_millis()
            + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2);
        bson::to_bson(&Lease {
            owner: self.owner.clone(),
            expires_at_ms,
        })
    }

    fn ours(&self, id: &str) -> Document {
        doc! { "_id": id, "lease.owner": &self.owner }
    }

    /// Takes the oldest running session whose lease is free or expired.
    pub async fn claim(&self) -> Result<Option<ReplaySession>, SessionError> {
        let now_ms = Utc::now().timestamp_millis();
        let filter = doc! {
            "state": state_bson(ReplayState::Running),
            "$or": [
                { "lease": Bson::Null },
                { "lease.expires_at_ms": { "$lt": now_ms } },
            ],
        };
        let update = doc! { "$set": {
            "lease": self.lease_doc()?,
            "updated_at": bson::to_bson(&Utc::now())?,
        } };
        Ok(self
            .sessions
            .find_one_and_update(filter, update)
            .sort(doc! { "_id": 1 })
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Saves `progress` and renews the lease; says whether the run may go on.
    pub async fn save(&self, id: &str, progress: &Progress) -> Result<Standing, SessionError> {
        let update = doc! { "$set": {
            "progress": bson::to_bson(progress)?,
            "lease": self.lease_doc()?,
            "updated_at": bson::to_bson(&Utc::now())?,
        } };
        let saved = self
            .sessions
            .find_one_and_update(self.ours(id), update)
            .return_document(ReturnDocument::After)
            .await?;
        match saved {
            None => Ok(Standing::Lost),
            Some(session) if session.state == ReplayState::Running => Ok(Standing::Running),
            Some(session) => {
                self.release(id).await?;
                Ok(Standing::Stopped(session.state))
            }
        }
    }

    /// Gives the lease back, so another instance may take the session at once.
    pub async fn release(&self, id: &str) -> Result<(), SessionError> {
        self.sessions
            .update_one(self.ours(id), doc! { "$set": { "lease": Bson::Null } })
            .await?;
        Ok(())
    }

    /// Ends a running session we hold as `completed` or `failed`.
    pub async fn finish(
        &self,
        id: &str,
        state: ReplayState,
        progress: &Progress,
        error: Option<String>,
    ) -> Result<(), SessionError> {
        let now = bson::to_bson(&Utc::now())?;
        let mut filter = self.ours(id);
        filter.insert("state", state_bson(ReplayState::Running));
        self.sessions
            .update_one(
                filter,
                doc! { "$set": {
                    "state": state_bson(state),
                    "progress": bson::to_bson(progress)?,
                    "error": error,
                    "lease": Bson::Null,
                    "finished_at": now.clone(),
                    "updated_at": now,
                } },
            )
            .await?;
        // Paused or cancelled meanwhile: the admin's state stands, only the lease goes.
        self.release(id).await
    }

    /// How many sessions are in each state (for the `kiln_replay_sessions` gauge).
    pub async fn count_by_state(&self) -> Result<Vec<(ReplayState, u64)>, SessionError> {
        let mut counts = Vec::with_capacity(ReplayState::ALL.len());
        for state in ReplayState::ALL {
            let n = self
                .sessions
                .count_documents(doc! { "state": state_bson(*state) })
                .await?;
            counts.push((*state, n));
        }
        Ok(counts)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("replay_sessions query failed")]
    Mongo(#[from] mongodb::error::Error),
    #[error("replay session field could not be encoded")]
    Encode(#[from] bson::ser::Error),
}
