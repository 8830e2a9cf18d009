//! `/api/v1/auth/*`: register, login, logout, me, and personal API tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bson::doc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cookies::{self, CSRF_COOKIE, SESSION_COOKIE};
use super::jwt::Claims;
use super::users::{self, ApiTokenDoc, Role, UserDoc, UserView};
use super::{CurrentUser, password, tokens, validate};
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiJson, is_duplicate_key};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    username: String,
    email: String,
    password: String,
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = "4XX", body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    validate::username(&request.username)?;
    let email = request.email.trim().to_lowercase();
    validate::email(&email)?;
    validate::password(&request.password)?;
    let user = UserDoc {
        id: uuid::Uuid::now_v7().to_string(),
        username: request.username,
        email,
        password_hash: password::hash(request.password).await?,
        role: Role::User,
        created_at: bson::DateTime::now(),
    };
    match users::users(&state.db).insert_one(&user).await {
        Ok(_) => Ok((StatusCode::CREATED, Json(UserView::from(&user)))),
        // The unique indexes decide; ask which one was hit to name the field.
        Err(error) if is_duplicate_key(&error) => {
            if users::find_by_username(&state.db, &user.username)
                .await?
                .is_some()
            {
                Err(ApiError::conflict("username_taken", "username is taken"))
            } else {
                Err(ApiError::conflict(
                    "email_taken",
                    "email is already registered",
                ))
            }
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
struct LoginResponse {
    user: UserView,
    /// Also in the `kiln_csrf` cookie; echo it in `X-CSRF-Token` on state-changing requests.
    csrf_token: String,
}

/// Sets the `kiln_session` (httpOnly) and `kiln_csrf` cookies. Too many failures lock the
/// username: 423 `account_locked` with `locked_until`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = "4XX", body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    if request.password.len() > validate::MAX_PASSWORD {
        return Err(ApiError::invalid_credentials());
    }
    let lockout = &state.rate_limiter.lockout;
    lockout.check(&state.redis, &request.username).await?;
    let user = users::find_by_username(&state.db, &request.username).await?;
    // An unknown user is checked against a dummy hash, so the answer takes as long as for a
    // wrong password and does not reveal which usernames exist.
    let phc = match &user {
        Some(user) => user.password_hash.clone(),
        None => dummy_hash(&state).await?,
    };
    let matches = password::verify(request.password, phc).await?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            lockout.failed(&state.redis, &request.username).await?;
            return Err(ApiError::invalid_credentials());
        }
    };
    lockout.succeeded(&state.redis, &request.username).await?;

    let csrf = tokens::random_base64url(32);
    let ttl_seconds = state.api.session_ttl_minutes.saturating_mul(60);
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user.id.clone(),
        username: user.username.clone(),
        role: user.role,
        csrf: csrf.clone(),
        iat: now,
        exp: now.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX)),
    };
    let jwt = state.jwt.sign(&claims).map_err(ApiError::internal)?;
    let secure = state.api.secure_cookies;
    let mut headers = HeaderMap::new();
    for cookie in [
        cookies::set(SESSION_COOKIE, &jwt, ttl_seconds, true, secure),
        cookies::set(CSRF_COOKIE, &csrf, ttl_seconds, false, secure),
    ] {
        let cookie = cookie.ok_or_else(|| ApiError::internal("cookie value is not a header"))?;
        headers.append(SET_COOKIE, cookie);
    }
    let body = LoginResponse {
        user: UserView::from(&user),
        csrf_token: csrf,
    };
    Ok((headers, Json(body)).into_response())
}

pub(crate) async fn dummy_hash(state: &AppState) -> Result<String, ApiError> {
    state
        .dummy_hash
        .get_or_try_init(|| password::hash(tokens::random_base64url(16)))
        .await
        .cloned()
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn logout(State(state): State<AppState>, _user: CurrentUser) -> Response {
    let secure = state.api.secure_cookies;
    let mut headers = HeaderMap::new();
    for cookie in [
        cookies::set(SESSION_COOKIE, "", 0, true, secure),
        cookies::set(CSRF_COOKIE, "", 0, false, secure),
    ]
    .into_iter()
    .flatten()
    {
        headers.append(SET_COOKIE, cookie);
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = UserView), (status = "4XX", body = ErrorBody)))]
async fn me(State(state): State<AppState>, user: CurrentUser) -> Result<Json<UserView>, ApiError> {
    let doc = users::find_by_id(&state.db, &user.id)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    Ok(Json(UserView::from(&doc)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTokenRequest {
    name: String,
}

#[derive(Serialize, ToSchema)]
struct CreatedToken {
    id: String,
    name: String,
    /// Shown once; only its SHA-256 is stored.
    token: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
struct TokenView {
    id: String,
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
struct TokenList {
    items: Vec<TokenView>,
}

#[utoipa::path(post, path = "/api/v1/auth/tokens", tag = "auth", request_body = CreateTokenRequest,
    security(("session" = []), ("bearer" = [])),
    responses((status = 201, body = CreatedToken), (status = "4XX", body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    validate::token_name(&request.name)?;
    let token = tokens::new_api_token();
    let record = ApiTokenDoc {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id,
        name: request.name.trim().to_owned(),
        token_hash: tokens::token_hash(&token),
        created_at: bson::DateTime::now(),
        last_used_at: None,
        revoked_at: None,
    };
    users::api_tokens(&state.db).insert_one(&record).await?;
    let created = CreatedToken {
        id: record.id,
        name: record.name,
        token,
        created_at: record.created_at.to_chrono(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/auth/tokens", tag = "auth",
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = TokenList), (status = "4XX", body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<TokenList>, ApiError> {
    use futures::TryStreamExt as _;
    let records: Vec<ApiTokenDoc> = users::api_tokens(&state.db)
        .find(doc! { "user_id": &user.id, "revoked_at": null })
        .sort(doc! { "created_at": -1 })
        .await?
        .try_collect()
        .await?;
    let items = records
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            created_at: t.created_at.to_chrono(),
            last_used_at: t.last_used_at.map(bson::DateTime::to_chrono),
        })
        .collect();
    Ok(Json(TokenList { items }))
}

#[utoipa::path(delete, path = "/api/v1/auth/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "token id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let outcome = users::api_tokens(&state.db)
        .update_one(
            doc! { "_id": &id, "user_id": &user.id, "revoked_at": null },
            doc! { "$set": { "revoked_at": bson::DateTime::now() } },
        )
        .await?;
    if outcome.matched_count == 0 {
        return Err(ApiError::not_found());
    }
    state.token_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}
