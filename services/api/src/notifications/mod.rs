//! `/api/v1/notifications`: the user's in-app notifications. result-processor creates them
//! (`shared::notifications`); here they are listed, marked read, deleted and streamed. Owner
//! only: another user's notification is "not found".

mod stream;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bson::doc;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use shared::notifications::{NOTIFICATIONS_COLLECTION, Notification, NotificationDoc};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::pagination::PageRequest;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `true`: only unread notifications
    pub unread_only: Option<String>,
    /// 1-100, default 20
    pub limit: Option<String>,
    /// `next_cursor` of the previous page
    pub cursor: Option<String>,
}

/// Newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// All unread notifications of the user, not just this page's.
    pub unread_count: u64,
}

/// The SSE `unread` event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnreadCount {
    pub count: u64,
}

pub fn collection(db: &Database) -> Collection<NotificationDoc> {
    db.collection(NOTIFICATIONS_COLLECTION)
}

/// Routes under the request timeout.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
        .routes(routes!(mark_all_read))
        .routes(routes!(remove))
}

/// The SSE stream (no timeout).
pub fn stream_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream::notification_stream))
}

pub async fn unread_count(state: &AppState, user_id: &str) -> Result<u64, ApiError> {
    Ok(collection(&state.db)
        .count_documents(doc! { "user_id": user_id, "read": false })
        .await?)
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(ListParams),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = NotificationPage), (status = "4XX", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<NotificationPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let unread_only = match params.unread_only.as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "unread_only: true or false",
            ));
        }
    };
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let mut filter = doc! { "user_id": &user.id };
    if unread_only {
        filter.insert("read", false);
    }
    let (docs, next_cursor) = page
        .fetch(&collection(&state.db), filter, |d| d.id.as_str())
        .await?;
    Ok(Json(NotificationPage {
        items: docs.into_iter().map(Notification::from).collect(),
        next_cursor,
        unread_count: unread_count(&state, &user.id).await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, description = "notification id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let outcome = collection(&state.db)
        .update_one(
            doc! { "_id": &id, "user_id": &user.id },
            doc! { "$set": { "read": true } },
        )
        .await?;
    if outcome.matched_count == 0 {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/notifications/read-all", tag = "notifications",
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn mark_all_read(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<StatusCode, ApiError> {
    collection(&state.db)
        .update_many(
            doc! { "user_id": &user.id, "read": false },
            doc! { "$set": { "read": true } },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/notifications/{id}", tag = "notifications",
    params(("id" = String, Path, description = "notification id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::pagination::delete_owned(&collection(&state.db), &id, &user.id).await
}
