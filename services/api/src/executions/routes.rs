//! Routes for one execution: read and cancel, plus the router of the module.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use shared::events::{Event, EventMetadata, EventPayload, ExecutionCancelRequested};
use shared::executions::{ExecutionDoc, ExecutionView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::submit::Accepted;
use super::{history, list, store, submit};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Routes under the request timeout (the SSE route lives in `crate::sse`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit::submit))
        .routes(routes!(list::list))
        .routes(routes!(get_one))
        .routes(routes!(cancel))
        .routes(routes!(history::history))
}

/// The execution if `user` may see it; another user's execution is "not found", so ids of
/// other users' executions cannot be probed.
pub async fn visible(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<ExecutionDoc, ApiError> {
    match store::get(&state.db, id).await? {
        Some(doc) if user.can_access(&doc.user_id) => Ok(doc),
        _ => Err(ApiError::not_found()),
    }
}

#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "execution id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = ExecutionView), (status = "4XX", body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    let doc = visible(&state, &user, &id).await?;
    Ok(Json(ExecutionView::from(&doc)))
}

/// 409 `already_finished` once the execution is terminal.
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions",
    params(("id" = String, Path, description = "execution id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 202, body = Accepted), (status = "4XX", body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let doc = visible(&state, &user, &id).await?;
    if doc.status.is_terminal() {
        return Err(ApiError::conflict(
            "already_finished",
            "the execution has already finished",
        ));
    }
    let event = Event::new(
        doc.id.clone(),
        EventPayload::ExecutionCancelRequested(ExecutionCancelRequested {
            requested_by: user.id.clone(),
        }),
        EventMetadata::new(crate::SERVICE_NAME, Some(user.id)),
    );
    if let Err(error) = state.producer.publish(&event).await {
        tracing::error!(execution_id = %doc.id, error.cause_chain = %shared::errors::display_chain(&error), "publishing execution_cancel_requested failed");
        return Err(ApiError::queue_unavailable());
    }
    tracing::info!(execution_id = %doc.id, "cancel requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            execution_id: doc.id,
            status: doc.status,
        }),
    ))
}
