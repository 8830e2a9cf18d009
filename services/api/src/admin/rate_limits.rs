//! `/api/v1/admin/rate-limits/{user_id}`: read, set and remove a user's rate-limit override
//! (role admin). Stored in MongoDB, so an override outlives restarts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, users};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::ratelimit::overrides::{OverrideRequest, RateLimitOverride};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_override, put_override, delete_override))
}

#[utoipa::path(get, path = "/api/v1/admin/rate-limits/{user_id}", tag = "admin",
    params(("user_id" = String, Path, description = "the user")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = RateLimitOverride), (status = "4XX", body = ErrorBody)))]
async fn get_override(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<String>,
) -> Result<Json<RateLimitOverride>, ApiError> {
    user.require_admin()?;
    let found = state.rate_limiter.overrides.get(&user_id).await?;
    found.map(Json).ok_or_else(ApiError::not_found)
}

/// Replaces the user's override; applies at once on this replica, within 5 s on the others.
#[utoipa::path(put, path = "/api/v1/admin/rate-limits/{user_id}", tag = "admin",
    request_body = OverrideRequest,
    params(("user_id" = String, Path, description = "the user")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = RateLimitOverride), (status = "4XX", body = ErrorBody)))]
async fn put_override(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<String>,
    ApiJson(request): ApiJson<OverrideRequest>,
) -> Result<Json<RateLimitOverride>, ApiError> {
    user.require_admin()?;
    request.validate()?;
    if users::find_by_id(&state.db, &user_id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let stored = state
        .rate_limiter
        .overrides
        .put(&user_id, &request, &user.id)
        .await?;
    tracing::info!(target_user = %user_id, admin = %user.id, "rate-limit override set");
    Ok(Json(stored))
}

#[utoipa::path(delete, path = "/api/v1/admin/rate-limits/{user_id}", tag = "admin",
    params(("user_id" = String, Path, description = "the user")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn delete_override(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    user.require_admin()?;
    if !state.rate_limiter.overrides.delete(&user_id).await? {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
