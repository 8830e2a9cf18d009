//! `GET /api/v1/executions`: history, newest first, with filters and an opaque cursor.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use bson::{Document, doc};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use shared::events::{ErrorType, ExecutionStatus};
use shared::executions::EXECUTIONS_COLLECTION;

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// queued, scheduled, running, completed, failed, timeout or cancelled
    status: Option<String>,
    lang: Option<String>,
    /// 1-100, default 20
    limit: Option<String>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
    /// `true`: every user's executions (admins only)
    all: Option<String>,
}

/// An execution without its script and output.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    #[serde(rename(deserialize = "_id"))]
    pub execution_id: String,
    pub user_id: String,
    pub status: ExecutionStatus,
    pub lang: String,
    pub lang_version: String,
    #[serde(default)]
    pub priority: u8,
    pub timeout_seconds: u64,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub error_type: Option<ErrorType>,
    #[serde(with = "bson_as_chrono")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: bson::DateTime,
    #[serde(default, with = "opt_bson_as_chrono")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<bson::DateTime>,
    #[serde(default, with = "opt_bson_as_chrono")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<bson::DateTime>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ExecutionPage)]
pub struct Page {
    pub items: Vec<Summary>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn bad(code: &'static str, message: &'static str) -> ApiError {
    ApiError::bad_request(code, message)
}

/// The MongoDB filter and page size for `params` as seen by `user`.
fn query(user: &CurrentUser, params: ListParams) -> Result<(Document, i64), ApiError> {
    let all = match params.all.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("invalid_query", "all: true or false")),
    };
    if all && !user.is_admin() {
        return Err(ApiError::forbidden(
            "only admins can list every user's executions",
        ));
    }
    let mut filter = if all {
        doc! {}
    } else {
        doc! { "user_id": &user.id }
    };
    if let Some(status) = params.status {
        let parsed: ExecutionStatus = serde_json::from_value(serde_json::Value::String(status))
            .map_err(|_| {
                bad(
                    "invalid_status",
                    "status: queued, scheduled, running, completed, failed, timeout or cancelled",
                )
            })?;
        filter.insert("status", bson::to_bson(&parsed)?);
    }
    if let Some(lang) = params.lang {
        filter.insert("lang", lang);
    }
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| bad("invalid_limit", "limit: 1-100"))?,
    };
    if let Some(cursor) = params.cursor {
        let id = uuid::Uuid::parse_str(&cursor)
            .map_err(|_| bad("invalid_cursor", "cursor is not one we issued"))?;
        // created_at is the id's own timestamp, so this bound lets the (user_id, created_at)
        // indexes serve the page while `_id` breaks ties within one millisecond.
        filter.insert("_id", doc! { "$lt": id.to_string() });
        if let Some(ts) = id.get_timestamp() {
            let (secs, nanos) = ts.to_unix();
            let millis = i64::try_from(secs.saturating_mul(1000) + u64::from(nanos / 1_000_000))
                .unwrap_or(i64::MAX);
            filter.insert(
                "created_at",
                doc! { "$lte": bson::DateTime::from_millis(millis) },
            );
        }
    }
    Ok((filter, limit))
}

/// Newest first.
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(ListParams),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Page), (status = "4XX", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (filter, limit) = query(&user, params)?;
    let projection = doc! { "script": 0, "stdin": 0, "stdout": 0, "stderr": 0 };
    let mut items: Vec<Summary> = state
        .db
        .collection::<Summary>(EXECUTIONS_COLLECTION)
        .find(filter)
        .projection(projection)
        .sort(doc! { "created_at": -1, "_id": -1 })
        .limit(limit + 1)
        .await?
        .try_collect()
        .await?;
    let has_more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if has_more {
        items.last().map(|s| s.execution_id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

mod bson_as_chrono {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &bson::DateTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &value
                .to_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bson::DateTime, D::Error> {
        bson::DateTime::deserialize(d)
    }
}

mod opt_bson_as_chrono {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<bson::DateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::bson_as_chrono::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<bson::DateTime>, D::Error> {
        Option::<bson::DateTime>::deserialize(d)
    }
}
