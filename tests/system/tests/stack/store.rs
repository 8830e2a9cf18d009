//! Reads a stack's MongoDB database directly: the event store, executions and sagas, to check
//! exactly-once properties that the API does not show.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;

use super::Isolation;

pub const TERMINAL: [&str; 4] = ["completed", "failed", "timeout", "cancelled"];

pub struct Store {
    pub db: mongodb::Database,
}

impl Store {
    pub async fn open(isolation: &Isolation) -> Self {
        let mut options = ClientOptions::parse(isolation.mongo_uri()).await.unwrap();
        options.server_selection_timeout = Some(Duration::from_secs(5));
        let client = mongodb::Client::with_options(options).unwrap();
        Self {
            db: client.database(isolation.database()),
        }
    }

    async fn find(&self, collection: &str, filter: Document) -> Vec<Document> {
        self.db
            .collection::<Document>(collection)
            .find(filter)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    /// How many stored events of `event_type` each execution has.
    pub async fn events_per_execution(&self, event_type: &str) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for event in self.find("events", doc! { "event_type": event_type }).await {
            *counts
                .entry(event.get_str("aggregate_id").unwrap().to_owned())
                .or_default() += 1;
        }
        counts
    }

    /// How many of `ids` have a terminal status (`None` while the database does not answer).
    pub async fn terminal_count(&self, ids: &[String]) -> Option<u64> {
        self.db
            .collection::<Document>("executions")
            .count_documents(doc! { "_id": { "$in": ids }, "status": { "$in": TERMINAL.to_vec() } })
            .await
            .ok()
    }

    /// How many executions of this stack are terminal (`None` while the database does not answer).
    pub async fn terminal_total(&self) -> Option<u64> {
        self.db
            .collection::<Document>("executions")
            .count_documents(doc! { "status": { "$in": TERMINAL.to_vec() } })
            .await
            .ok()
    }

    /// Every execution's document, by id.
    pub async fn executions(&self, ids: &[String]) -> HashMap<String, Document> {
        self.find("executions", doc! { "_id": { "$in": ids } })
            .await
            .into_iter()
            .map(|d| (d.get_str("_id").unwrap().to_owned(), d))
            .collect()
    }

    /// Sagas still holding (or waiting for) a slot.
    pub async fn unfinished_sagas(&self) -> Vec<Document> {
        self.find(
            "sagas",
            doc! { "state": { "$in": ["queued", "scheduled", "running"] } },
        )
        .await
    }

    pub async fn count(&self, collection: &str) -> u64 {
        self.db
            .collection::<Document>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }
}
