//! Replay sessions, shared by the api (admin routes) and event-replay (the engine): the session
//! document in MongoDB (`replay_sessions`), its filter as a query on the event store, and the
//! headers that mark a replayed Kafka message.
//!
//! A replayed message is a copy of a stored event with a new `event_id`; the headers name the
//! session and the original event. Kiln's consumers skip replayed messages (see
//! [`skips_side_effects`]) unless the session set `allow_side_effects`.

use chrono::{DateTime, Utc};
use mongodb::bson::{self, Bson, Document, doc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::{Event, EventType};
use crate::kafka::InboundMessage;
use crate::kafka::headers::{self, HeaderList};

pub const SESSIONS_COLLECTION: &str = "replay_sessions";
/// The event store event-replay fills (one document per event; the event as published is its
/// `event` field).
pub const EVENTS_COLLECTION: &str = "events";

/// The replay session a message was replayed by.
pub const SESSION_HEADER: &str = "x-kiln-replay-session";
/// The `event_id` of the stored event this message copies.
pub const ORIGINAL_EVENT_HEADER: &str = "x-kiln-replay-of";
/// `true` when the session asked consumers to run their side effects again.
pub const SIDE_EFFECTS_HEADER: &str = "x-kiln-replay-side-effects";

/// Metric: events published by replay sessions, by target.
pub const EVENTS_REPLAYED_METRIC: &str = "kiln_replay_events_replayed_total";
/// Metric: replay sessions by state (a gauge refreshed by event-replay).
pub const SESSIONS_METRIC: &str = "kiln_replay_sessions";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    Created,
    Running,
    Paused,
    Completed,
    Cancelled,
    Failed,
}

impl ReplayState {
    pub const ALL: &'static [ReplayState] = &[
        Self::Created,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Cancelled,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Failed)
    }
}

/// Where replayed messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayTarget {
    /// Each event back to its own topic, keyed by its execution id.
    OriginalTopics,
    /// Every event to the session's own topic ([`session_topic`]).
    SessionTopic,
}

/// Which stored events a session replays; every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execution_ids: Vec<String>,
    /// Event type names from `docs/events.md`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub event_types: Vec<EventType>,
    /// Events that occurred at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred at or before this instant. A session fixes it at its creation when
    /// absent, so its total is known and it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("the filter must name execution_ids, event_types, user_id or from")]
    Unbounded,
    #[error("from must not be after until")]
    EmptyRange,
}

impl ReplayFilter {
    /// A filter must narrow the replay down: replaying the whole store is never what an admin
    /// meant by an empty form.
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.execution_ids.is_empty()
            && self.event_types.is_empty()
            && self.user_id.is_none()
            && self.from.is_none()
        {
            return Err(FilterError::Unbounded);
        }
        if let (Some(from), Some(until)) = (self.from, self.until)
            && from > until
        {
            return Err(FilterError::EmptyRange);
        }
        Ok(())
    }

    /// The query on the event store (`events`) that selects this filter's events; the store's
    /// (aggregate_id, occurred_at) and occurred_at indexes serve it, the other fields filter.
    pub fn to_query(&self) -> Document {
        let mut query = Document::new();
        if !self.execution_ids.is_empty() {
            query.insert("aggregate_id", doc! { "$in": &self.execution_ids });
        }
        if !self.event_types.is_empty() {
            let names: Vec<&str> = self.event_types.iter().map(|t| t.as_str()).collect();
            query.insert("event_type", doc! { "$in": names });
        }
        if let Some(user_id) = &self.user_id {
            query.insert("user_id", user_id);
        }
        let mut time = Document::new();
        if let Some(from) = self.from {
            time.insert("$gte", bson::DateTime::from_chrono(from));
        }
        if let Some(until) = self.until {
            time.insert("$lte", bson::DateTime::from_chrono(until));
        }
        if !time.is_empty() {
            query.insert("occurred_at", time);
        }
        query
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoredEventError {
    #[error("stored event {0} has no event field")]
    Missing(String),
    #[error("stored event {id} cannot be decoded")]
    Decode {
        id: String,
        #[source]
        source: bson::de::Error,
    },
}

/// The event as it was published, from an event store document.
pub fn stored_event(document: &Document) -> Result<Event, StoredEventError> {
    let id = || document.get_str("_id").unwrap_or("?").to_owned();
    let body = document
        .get_document("event")
        .map_err(|_| StoredEventError::Missing(id()))?;
    bson::from_document(body.clone())
        .map_err(|source| StoredEventError::Decode { id: id(), source })
}

/// The order in which events are replayed: time, then event id for events of one instant.
pub fn replay_order() -> Document {
    doc! { "occurred_at": 1, "_id": 1 }
}

/// The last event a session replayed; replay goes on after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Position {
    pub occurred_at: DateTime<Utc>,
    pub event_id: String,
}

impl Position {
    /// `query` narrowed to the events after this position in [`replay_order`].
    pub fn after(&self, query: Document) -> Document {
        let at = bson::DateTime::from_chrono(self.occurred_at);
        doc! {
            "$and": [
                query,
                { "$or": [
                    { "occurred_at": { "$gt": at } },
                    { "occurred_at": at, "_id": { "$gt": &self.event_id } },
                ] },
            ]
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub replayed: u64,
    /// The number of matching events when the session was created.
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// Which event-replay instance runs a session, until when. Times are epoch milliseconds so the
/// claim query can compare them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub owner: String,
    pub expires_at_ms: i64,
}

/// A replay session as shown by the admin API; [`ReplaySession::to_document`] stores it in
/// `replay_sessions`, where its id is `_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplaySession {
    #[serde(rename(serialize = "id", deserialize = "_id"), alias = "id")]
    pub id: String,
    pub state: ReplayState,
    pub filter: ReplayFilter,
    pub target: ReplayTarget,
    /// 1.0 keeps the original pacing, 2.0 is twice as fast, 0 is as fast as possible.
    pub speed: f64,
    pub allow_side_effects: bool,
    pub progress: Progress,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub lease: Option<Lease>,
}

impl ReplaySession {
    /// A new session in state `created`; `until` defaults to `now`.
    pub fn new(
        mut filter: ReplayFilter,
        target: ReplayTarget,
        speed: f64,
        allow_side_effects: bool,
        created_by: String,
        total: u64,
        now: DateTime<Utc>,
    ) -> Self {
        filter.until.get_or_insert(now);
        Self {
            id: Uuid::now_v7().to_string(),
            state: ReplayState::Created,
            filter,
            target,
            speed,
            allow_side_effects,
            progress: Progress {
                total,
                ..Progress::default()
            },
            created_by,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            error: None,
            lease: None,
        }
    }
}

impl ReplaySession {
    /// The document to insert into `replay_sessions`.
    pub fn to_document(&self) -> Result<Document, bson::ser::Error> {
        let mut document = bson::to_document(self)?;
        if let Some(id) = document.remove("id") {
            document.insert("_id", id);
        }
        Ok(document)
    }
}

/// The topic of a session with target [`ReplayTarget::SessionTopic`].
pub fn session_topic(prefix: &str, session_id: &str) -> String {
    format!("{prefix}replay_{}", session_id.replace('-', ""))
}

/// The id of the copy of `original` that `session` publishes: the two ids XORed, marked as a
/// version 8 (custom) UUID. It is the same for every publish of that copy, so a copy published
/// again after a crash is deduplicated like any redelivery. Within a session distinct originals
/// give distinct ids: the bits the marking overwrites are the version and variant bits, which
/// XOR to zero for two v7 ids, so no information is lost.
pub fn replayed_event_id(session: Uuid, original: Uuid) -> Uuid {
    let mixed = (session.as_u128() ^ original.as_u128()).to_be_bytes();
    uuid::Builder::from_custom_bytes(mixed).into_uuid()
}

/// The copy of `event` that `session` publishes: the same event under a new id.
pub fn replay_copy(event: &Event, session: Uuid) -> Event {
    let mut copy = event.clone();
    copy.event_id = replayed_event_id(session, event.event_id);
    copy
}

/// The headers of a replayed copy: the producer's own, the replay marker, and the trace context.
pub fn replay_headers(
    session_id: &str,
    original: &Event,
    copy: &Event,
    allow_side_effects: bool,
) -> HeaderList {
    let mut list = HeaderList::default();
    list.push(headers::EVENT_ID, copy.event_id.to_string());
    list.push(headers::EVENT_TYPE, copy.event_type().as_str());
    list.push(SESSION_HEADER, session_id);
    list.push(ORIGINAL_EVENT_HEADER, original.event_id.to_string());
    if allow_side_effects {
        list.push(SIDE_EFFECTS_HEADER, "true");
    }
    list.with_current_trace_context()
}

/// Whether `message` is a replayed copy.
pub fn is_replay(message: &InboundMessage) -> bool {
    message.header(SESSION_HEADER).is_some()
}

/// Whether a consumer must acknowledge `message` without running its side effects: it is a
/// replayed copy and its session did not ask for side effects.
pub fn skips_side_effects(message: &InboundMessage) -> bool {
    is_replay(message) && message.header(SIDE_EFFECTS_HEADER) != Some(b"true".as_slice())
}

/// A BSON value for a state, for queries on `state`.
pub fn state_bson(state: ReplayState) -> Bson {
    Bson::String(state.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)]) -> InboundMessage {
        InboundMessage {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            timestamp_ms: None,
        }
    }

    #[test]
    fn replayed_ids_are_stable_distinct_and_lead_back_to_the_original() {
        let session = Uuid::now_v7();
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let copy_a = replayed_event_id(session, a);
        assert_eq!(copy_a, replayed_event_id(session, a));
        assert_ne!(copy_a, replayed_event_id(session, b));
        assert_ne!(copy_a, a);
        assert_eq!(copy_a.get_version_num(), 8);
        // Only the version and variant bits differ from the plain XOR.
        let version_and_variant: u128 = (0xF << 76) | (0x3 << 62);
        let xor = session.as_u128() ^ a.as_u128();
        assert_eq!(
            copy_a.as_u128() & !version_and_variant,
            xor & !version_and_variant
        );
    }

    #[test]
    fn only_a_replay_without_side_effects_is_skipped() {
        assert!(!skips_side_effects(&message(&[])));
        assert!(skips_side_effects(&message(&[(SESSION_HEADER, "s")])));
        assert!(skips_side_effects(&message(&[
            (SESSION_HEADER, "s"),
            (SIDE_EFFECTS_HEADER, "false"),
        ])));
        assert!(!skips_side_effects(&message(&[
            (SESSION_HEADER, "s"),
            (SIDE_EFFECTS_HEADER, "true"),
        ])));
    }

    #[test]
    fn filters_must_narrow_the_replay() {
        assert_eq!(
            ReplayFilter::default().validate(),
            Err(FilterError::Unbounded)
        );
        let now = Utc::now();
        let backwards = ReplayFilter {
            from: Some(now),
            until: Some(now - chrono::Duration::seconds(1)),
            ..ReplayFilter::default()
        };
        assert_eq!(backwards.validate(), Err(FilterError::EmptyRange));
    }

    #[test]
    fn the_query_holds_every_criterion() {
        let now = Utc::now();
        let filter = ReplayFilter {
            execution_ids: vec!["e1".into()],
            event_types: vec![EventType::PodCreated],
            from: Some(now),
            until: None,
            user_id: Some("u1".into()),
        };
        let query = filter.to_query();
        assert_eq!(
            query.get_document("aggregate_id").unwrap(),
            &doc! { "$in": ["e1"] }
        );
        assert_eq!(
            query.get_document("event_type").unwrap(),
            &doc! { "$in": ["pod_created"] }
        );
        assert_eq!(query.get_str("user_id").unwrap(), "u1");
        assert!(
            query
                .get_document("occurred_at")
                .unwrap()
                .contains_key("$gte")
        );
    }

    #[test]
    fn a_new_session_fixes_its_end() {
        let now = Utc::now();
        let session = ReplaySession::new(
            ReplayFilter {
                user_id: Some("u".into()),
                ..ReplayFilter::default()
            },
            ReplayTarget::SessionTopic,
            0.0,
            false,
            "admin".into(),
            3,
            now,
        );
        assert_eq!(session.filter.until, Some(now));
        assert_eq!(session.state, ReplayState::Created);
        assert_eq!(session.progress.total, 3);
        let stored = session.to_document().unwrap();
        assert_eq!(stored.get_str("_id").unwrap(), session.id);
        let back: ReplaySession = bson::from_document(stored).unwrap();
        assert_eq!(back, session);
        let shown = serde_json::to_value(&session).unwrap();
        assert_eq!(shown["id"], session.id.as_str());
        let read: ReplaySession = serde_json::from_value(shown).unwrap();
        assert_eq!(read, session);
    }
}
