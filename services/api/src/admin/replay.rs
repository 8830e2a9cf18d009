//! `/api/v1/admin/replay`: replay sessions (admins only). The api writes the session and moves
//! it between states; event-replay instances run it (see `docs/design/execution-pipeline.md`,
//! "Replay"). Transitions: `start` created→running, `pause` running→paused, `resume`
//! paused→running, `cancel` created|running|paused→cancelled; the engine ends a run as
//! completed or failed.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bson::{Bson, Document, doc};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use shared::events::Event;
use shared::replay::{
    EVENTS_COLLECTION, ReplayFilter, ReplaySession, ReplayState, ReplayTarget, SESSIONS_COLLECTION,
    replay_order, state_bson, stored_event,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::pagination::PageRequest;
use crate::state::AppState;

const DEFAULT_PREVIEW: u32 = 10;
const MAX_PREVIEW: u32 = 100;
const MAX_SPEED: f64 = 1_000.0;
/// How often the progress stream looks at the session.
const STREAM_POLL: Duration = Duration::from_millis(500);

/// Routes under the request timeout.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(transition))
}

/// The progress stream, which stays open.
pub fn stream_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

fn sessions(state: &AppState) -> mongodb::Collection<ReplaySession> {
    state.db.collection(SESSIONS_COLLECTION)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReplay {
    pub filter: ReplayFilter,
    /// Default `session_topic` (`{prefix}replay_{session id without dashes}`).
    #[serde(default = "default_target")]
    pub target: ReplayTarget,
    /// 1.0 (default) keeps the original pacing, 0 replays as fast as possible; at most 1000.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Let Kiln's consumers act on the copies (a second sandbox, a second result); only with
    /// target `original_topics`.
    #[serde(default)]
    pub allow_side_effects: bool,
    /// Count and preview the matching events; nothing is stored or published.
    #[serde(default)]
    pub dry_run: bool,
    /// Events in a dry run's preview: 1-100, default 10.
    #[serde(default)]
    pub preview_limit: Option<u32>,
}

fn default_target() -> ReplayTarget {
    ReplayTarget::SessionTopic
}

fn default_speed() -> f64 {
    1.0
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DryRun {
    /// Matching events now.
    pub count: u64,
    /// The first matching events in replay order, as they were published.
    #[schema(value_type = Vec<Object>)]
    pub preview: Vec<Event>,
}

fn validate(request: &CreateReplay) -> Result<(), ApiError> {
    request
        .filter
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_filter", e.to_string()))?;
    if !request.speed.is_finite() || !(0.0..=MAX_SPEED).contains(&request.speed) {
        return Err(ApiError::bad_request(
            "invalid_speed",
            "speed: 0 (as fast as possible) to 1000",
        ));
    }
    if request.allow_side_effects && request.target != ReplayTarget::OriginalTopics {
        return Err(ApiError::bad_request(
            "invalid_target",
            "allow_side_effects needs target original_topics",
        ));
    }
    if request
        .preview_limit
        .is_some_and(|n| !(1..=MAX_PREVIEW).contains(&n))
    {
        return Err(ApiError::bad_request(
            "invalid_preview_limit",
            "preview_limit: 1-100",
        ));
    }
    Ok(())
}

/// 201 with the new session (state `created`; `start` it), or 200 with a count and preview
/// for `dry_run`.
#[utoipa::path(post, path = "/api/v1/admin/replay", tag = "admin", request_body = CreateReplay,
    security(("session" = []), ("bearer" = [])),
    responses((status = 201, body = ReplaySession), (status = 200, body = DryRun),
        (status = "4XX", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(request): Json<CreateReplay>,
) -> Result<Response, ApiError> {
    user.require_admin()?;
    validate(&request)?;
    let mut filter = request.filter.clone();
    // Fixed now, so the count, the preview and the session all mean the same events.
    let now = chrono::Utc::now();
    filter.until.get_or_insert(now);
    let events = state.db.collection::<Document>(EVENTS_COLLECTION);
    let count = events.count_documents(filter.to_query()).await?;
    if request.dry_run {
        let limit = request.preview_limit.unwrap_or(DEFAULT_PREVIEW);
        let stored: Vec<Document> = events
            .find(filter.to_query())
            .projection(doc! { "event": 1 })
            .sort(replay_order())
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        let preview = stored
            .iter()
            .map(|d| stored_event(d).map_err(ApiError::internal))
            .collect::<Result<_, _>>()?;
        return Ok(Json(DryRun { count, preview }).into_response());
    }
    let session = ReplaySession::new(
        filter,
        request.target,
        request.speed,
        request.allow_side_effects,
        user.id.clone(),
        count,
        now,
    );
    state
        .db
        .collection::<Document>(SESSIONS_COLLECTION)
        .insert_one(session.to_document()?)
        .await?;
    tracing::info!(session_id = %session.id, admin = %user.id, total = count, "replay session created");
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// created, running, paused, completed, cancelled or failed
    state: Option<ReplayState>,
    /// 1-100, default 20
    limit: Option<String>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReplaySessionPage)]
pub struct Page {
    pub items: Vec<ReplaySession>,
    pub next_cursor: Option<String>,
}

/// Sessions, newest first.
#[utoipa::path(get, path = "/api/v1/admin/replay", tag = "admin", params(ListParams),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Page), (status = "4XX", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    user.require_admin()?;
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let filter = match params.state {
        Some(s) => doc! { "state": state_bson(s) },
        None => doc! {},
    };
    let (items, next_cursor) = page
        .fetch(&sessions(&state), filter, |s: &ReplaySession| &s.id)
        .await?;
    Ok(Json(Page { items, next_cursor }))
}

async fn find(state: &AppState, id: &str) -> Result<ReplaySession, ApiError> {
    sessions(state)
        .find_one(doc! { "_id": id })
        .await?
        .ok_or_else(ApiError::not_found)
}

/// One session with its progress.
#[utoipa::path(get, path = "/api/v1/admin/replay/{id}", tag = "admin",
    params(("id" = String, Path, description = "session id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = ReplaySession), (status = "4XX", body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ReplaySession>, ApiError> {
    user.require_admin()?;
    Ok(Json(find(&state, &id).await?))
}

/// The states an action applies to, and the state it leads to.
fn action(name: &str) -> Option<(&'static [ReplayState], ReplayState)> {
    use ReplayState::{Cancelled, Created, Paused, Running};
    match name {
        "start" => Some((&[Created], Running)),
        "pause" => Some((&[Running], Paused)),
        "resume" => Some((&[Paused], Running)),
        "cancel" => Some((&[Created, Running, Paused], Cancelled)),
        _ => None,
    }
}

/// `start`, `pause`, `resume` or `cancel`; 409 `invalid_state` when the session is not in a
/// state the action applies to. A running instance notices pause and cancel at its next
/// progress save (within about a second) and stops there.
#[utoipa::path(post, path = "/api/v1/admin/replay/{id}/{action}", tag = "admin",
    params(("id" = String, Path, description = "session id"),
        ("action" = String, Path, description = "start, pause, resume or cancel")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = ReplaySession), (status = "4XX", body = ErrorBody)))]
async fn transition(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<ReplaySession>, ApiError> {
    user.require_admin()?;
    let (from, to) = action(&name).ok_or_else(ApiError::not_found)?;
    let now = bson::to_bson(&chrono::Utc::now())?;
    let mut set = doc! { "state": state_bson(to), "updated_at": now.clone() };
    match name.as_str() {
        "start" => {
            set.insert("started_at", now);
        }
        "cancel" => {
            set.insert("finished_at", now);
        }
        _ => {}
    }
    let from: Vec<Bson> = from.iter().map(|s| state_bson(*s)).collect();
    let updated = sessions(&state)
        .find_one_and_update(
            doc! { "_id": &id, "state": { "$in": from } },
            doc! { "$set": set },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?;
    match updated {
        Some(session) => {
            tracing::info!(session_id = %id, admin = %user.id, action = %name, "replay session changed");
            Ok(Json(session))
        }
        None => {
            let current = find(&state, &id).await?;
            Err(ApiError::conflict(
                "invalid_state",
                format!(
                    "the session is {}; {name} does not apply",
                    current.state.as_str()
                ),
            ))
        }
    }
}

/// `text/event-stream` of `progress` events (the session, as `show` returns it), one whenever
/// it changes; the stream ends after the session reaches completed, cancelled or failed.
#[utoipa::path(get, path = "/api/v1/admin/replay/{id}/stream", tag = "admin",
    params(("id" = String, Path, description = "session id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "the progress stream"), (status = "4XX", body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    user.require_admin()?;
    find(&state, &id).await?;
    let heartbeat = Duration::from_secs(state.api.sse_heartbeat_seconds.max(1));
    let updates = futures::stream::unfold(
        (state, id, None::<ReplaySession>, false),
        |(state, id, last, done)| async move {
            if done {
                return None;
            }
            let mut wait = last.is_some();
            loop {
                if wait {
                    tokio::time::sleep(STREAM_POLL).await;
                }
                wait = true;
                let session = match find(&state, &id).await {
                    Ok(session) => session,
                    Err(error) => {
                        tracing::warn!(session_id = %id, error.cause_chain = %shared::errors::display_chain(&error), "replay progress stream ended");
                        return None;
                    }
                };
                if last.as_ref() == Some(&session) {
                    continue;
                }
                let done = session.state.is_terminal();
                let event = SseEvent::default().event("progress").json_data(&session);
                return Some((event, (state, id, Some(session), done)));
            }
        },
    );
    Ok(Sse::new(updates).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}
