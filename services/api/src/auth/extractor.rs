//! `CurrentUser`: who is calling, from `Authorization: Bearer <api token>` or the session cookie.
//! Cookie-authenticated requests that change state must carry `X-CSRF-Token` (double submit);
//! bearer requests need no CSRF check because browsers never attach them on their own.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use bson::doc;

use super::cookies::{self, CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE};
use super::tokens::{constant_time_eq, token_hash};
use super::users::{self, Role};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    pub id: String,
    pub username: String,
    pub role: Role,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// For admin-only routes: everyone else gets 403 `forbidden`.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs the admin role"))
        }
    }

    /// Whether this user may see a resource owned by `owner_id`.
    pub fn can_access(&self, owner_id: &str) -> bool {
        self.is_admin() || self.id == owner_id
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(value) = parts.headers.get(AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or_else(ApiError::invalid_token)?;
            return from_api_token(state, token).await;
        }
        let session =
            cookies::get(&parts.headers, SESSION_COOKIE).ok_or_else(ApiError::unauthenticated)?;
        let claims = state
            .jwt
            .verify(session, chrono::Utc::now().timestamp())
            .map_err(|_| ApiError::unauthenticated())?;
        if !is_safe(&parts.method) && !csrf_ok(&parts.headers, &claims.csrf) {
            return Err(ApiError::csrf_failed());
        }
        Ok(CurrentUser {
            id: claims.sub,
            username: claims.username,
            role: claims.role,
        })
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The header must equal both the CSRF cookie and the token bound into the session.
fn csrf_ok(headers: &HeaderMap, session_csrf: &str) -> bool {
    let Some(header) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(cookie) = cookies::get(headers, CSRF_COOKIE) else {
        return false;
    };
    !header.is_empty()
        && constant_time_eq(header.as_bytes(), cookie.as_bytes())
        && constant_time_eq(header.as_bytes(), session_csrf.as_bytes())
}

async fn from_api_token(state: &AppState, token: &str) -> Result<CurrentUser, ApiError> {
    let hash = token_hash(token);
    if let Some(cached) = state.token_cache.get(&hash) {
        record_use(state, cached.token_id);
        return Ok(cached.user);
    }
    let record = users::api_tokens(&state.db)
        .find_one(doc! { "token_hash": &hash, "revoked_at": null })
        .await?
        .ok_or_else(ApiError::invalid_token)?;
    let user = users::find_by_id(&state.db, &record.user_id)
        .await?
        .ok_or_else(ApiError::invalid_token)?;
    let user = CurrentUser {
        id: user.id,
        username: user.username,
        role: user.role,
    };
    state
        .token_cache
        .insert(hash, record.id.clone(), user.clone());
    record_use(state, record.id);
    Ok(user)
}

/// Bookkeeping only: the request does not wait for it, and a failure costs nothing but the
/// timestamp.
fn record_use(state: &AppState, token_id: String) {
    if !state.token_cache.last_used_due(&token_id) {
        return;
    }
    let tokens = users::api_tokens(&state.db);
    tokio::spawn(async move {
        let update = tokens
            .update_one(
                doc! { "_id": &token_id },
                doc! { "$set": { "last_used_at": bson::DateTime::now() } },
            )
            .await;
        if let Err(error) = update {
            tracing::debug!(%error, "recording token use failed");
        }
    });
}
