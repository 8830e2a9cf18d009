//! The one error type every handler returns. Its JSON body is `{code, message}` with a stable
//! snake_case `code`; server-side failures answer an opaque `internal_error` and log the cause
//! once, here, so the client never learns about our internals.

use std::borrow::Cow;
use std::error::Error as StdError;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// Extra top-level members of the body, e.g. `locked_until` of `account_locked`.
    /// Boxed: it is rarely set and every `Result<_, ApiError>` carries its size.
    fields: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    #[source]
    source: Option<BoxError>,
}

/// The body of every error answer; some codes add members (documented with the code).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case; clients branch on it.
    code: &'static str,
    /// For humans; may change.
    message: Cow<'static, str>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
            source: None,
        }
    }

    /// Adds `name` to the JSON body next to `code` and `message`.
    pub fn with_field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields
            .get_or_insert_default()
            .insert(name.to_owned(), value.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn too_large(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in or send an API token",
        )
    }

    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the API token is unknown or revoked",
        )
    }

    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        )
    }

    pub fn csrf_failed() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "the X-CSRF-Token header must match the CSRF cookie",
        )
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn queue_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_unavailable",
            "the execution queue is unavailable; try again later",
        )
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took too long",
        )
    }

    /// A failure on our side; the cause is logged, never sent.
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            message: Cow::Borrowed("internal error"),
            fields: None,
            source: Some(source.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.source {
                Some(source) => tracing::error!(
                    code = self.code,
                    error.cause_chain = %shared::errors::display_chain(source.as_ref()),
                    "request failed"
                ),
                None => tracing::warn!(code = self.code, "request failed"),
            }
        }
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            fields: self.fields.map(|f| *f).unwrap_or_default(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<mongodb::error::Error> for ApiError {
    fn from(error: mongodb::error::Error) -> Self {
        Self::internal(error)
    }
}

impl From<bson::ser::Error> for ApiError {
    fn from(error: bson::ser::Error) -> Self {
        Self::internal(error)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> Self {
        Self::internal(error)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => Self::bad_request("invalid_json", e.body_text()),
            JsonRejection::JsonDataError(e) => Self::bad_request("invalid_request", e.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::too_large("payload_too_large", "the request body is too large")
            }
            other => Self::bad_request("invalid_request", other.body_text()),
        }
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s, so bad JSON gets our `{code, message}`.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Is `error` a unique index violation (E11000)?
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    const DUPLICATE_KEY: i32 = 11_000;
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}
