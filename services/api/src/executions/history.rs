//! `GET /api/v1/executions/{id}/events/history`: one execution's stored events (the event
//! store `events` that event-replay fills), oldest first, for its owner or an admin.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use bson::{Document, doc};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use shared::events::Event;
use shared::replay::{EVENTS_COLLECTION, Position, replay_order, stored_event};

use super::routes::visible;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::pagination::PageRequest;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// 1-100, default 20
    limit: Option<String>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Events as they were published (see `docs/events.md`), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Event>,
    /// Pass as `cursor` for the next (later) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// 404 `not_found` for an execution the caller may not see, as for the execution itself.
#[utoipa::path(get, path = "/api/v1/executions/{id}/events/history", tag = "executions",
    params(("id" = String, Path, description = "execution id"), HistoryParams),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = HistoryPage), (status = "4XX", body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let doc = visible(&state, &user, &id).await?;
    let events = state.db.collection::<Document>(EVENTS_COLLECTION);
    let mut filter = doc! { "aggregate_id": &doc.id };
    if let Some(cursor) = &page.cursor {
        let after = events
            .find_one(doc! { "_id": cursor, "aggregate_id": &doc.id })
            .projection(doc! { "occurred_at": 1 })
            .await?
            .and_then(|d| d.get_datetime("occurred_at").ok().copied())
            .ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one we issued")
            })?;
        filter = Position {
            occurred_at: after.to_chrono(),
            event_id: cursor.clone(),
        }
        .after(filter);
    }
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    let stored: Vec<Document> = events
        .find(filter)
        .projection(doc! { "event": 1 })
        .sort(replay_order())
        .limit(i64::from(page.limit) + 1)
        .await?
        .try_collect()
        .await?;
    let mut items = stored
        .iter()
        .map(|d| stored_event(d).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    let has_more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if has_more {
        items.last().map(|e| e.event_id.to_string())
    } else {
        None
    };
    Ok(Json(HistoryPage { items, next_cursor }))
}
