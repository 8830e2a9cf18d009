//! `/api/v1/admin/dlq`: dead-lettered messages (admins only). dlq-processor stores and retries
//! them (`dlq_messages`, see `shared::dlq`); here admins list and inspect them, make one due now
//! (`retry`: the processor re-publishes it on its next scan) or give up on it (`discard`, with a
//! reason that is kept).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::dlq::{
    ActionError, DISCARDED_METRIC, DLQ_COLLECTION, DlqMessage, DlqQuery, DlqStatus, DlqStore,
    HistoryAction,
};
use shared::events::{Event, EventMetadata, EventPayload};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::pagination::PageRequest;
use crate::state::AppState;

/// A discard reason is kept in the document and the event; this bounds both.
const MAX_REASON_CHARS: usize = 1_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(retry))
        .routes(routes!(discard))
}

/// A dead-lettered message without its payload, headers and history.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DlqSummary {
    pub id: String,
    /// pending, retrying, retried, parked or discarded
    pub status: String,
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    /// The original key as text (invalid UTF-8 replaced); the bytes are in `key_base64`.
    pub key: Option<String>,
    pub key_base64: Option<String>,
    pub event_type: Option<String>,
    /// The `[dlq]` retry policy: commands, execution_events, results or default.
    pub policy: String,
    pub consumer_group: String,
    pub error_class: String,
    /// `poison` or `retries_exhausted`.
    pub error_kind: String,
    pub error_message: String,
    /// Re-publishes so far.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub first_failed_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub discard_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeaderView {
    pub name: String,
    /// As text, invalid UTF-8 replaced.
    pub value: String,
    pub value_base64: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryView {
    pub at: DateTime<Utc>,
    /// failed, retried, retry_requested, parked or discarded
    pub action: String,
    pub attempt: u32,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub reason: Option<String>,
    /// The admin, for admin actions.
    pub by: Option<String>,
}

/// One dead-lettered message in full.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DlqMessageView {
    #[serde(flatten)]
    pub summary: DlqSummary,
    /// The payload as text when it is UTF-8.
    pub payload_text: Option<String>,
    pub payload_base64: Option<String>,
    /// Every header of the dead-lettered copy, the dead-letter contract's included.
    pub headers: Vec<HeaderView>,
    pub history: Vec<HistoryView>,
}

fn history_action(action: HistoryAction) -> &'static str {
    match action {
        HistoryAction::Failed => "failed",
        HistoryAction::Retried => "retried",
        HistoryAction::RetryRequested => "retry_requested",
        HistoryAction::Parked => "parked",
        HistoryAction::Discarded => "discarded",
    }
}

impl From<&DlqMessage> for DlqSummary {
    fn from(m: &DlqMessage) -> Self {
        Self {
            id: m.id.clone(),
            status: m.status.as_str().to_owned(),
            original_topic: m.original_topic.clone(),
            original_partition: m.original_partition,
            original_offset: m.original_offset,
            key: m
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(&k.bytes).into_owned()),
            key_base64: m.key.as_ref().map(|k| BASE64.encode(&k.bytes)),
            event_type: m.event_type.clone(),
            policy: m.policy.clone(),
            consumer_group: m.consumer_group.clone(),
            error_class: m.error_class.clone(),
            error_kind: m.error_kind.clone(),
            error_message: m.error_message.clone(),
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at.map(bson::DateTime::to_chrono),
            expires_at: m.expires_at.map(bson::DateTime::to_chrono),
            first_failed_at: m.first_failed_at.to_chrono(),
            received_at: m.received_at.to_chrono(),
            updated_at: m.updated_at.to_chrono(),
            discard_reason: m.discard_reason.clone(),
        }
    }
}

impl From<&DlqMessage> for DlqMessageView {
    fn from(m: &DlqMessage) -> Self {
        Self {
            summary: DlqSummary::from(m),
            payload_text: m
                .payload
                .as_ref()
                .and_then(|p| String::from_utf8(p.bytes.clone()).ok()),
            payload_base64: m.payload.as_ref().map(|p| BASE64.encode(&p.bytes)),
            headers: m
                .headers
                .iter()
                .map(|h| HeaderView {
                    name: h.name.clone(),
                    value: String::from_utf8_lossy(&h.value.bytes).into_owned(),
                    value_base64: BASE64.encode(&h.value.bytes),
                })
                .collect(),
            history: m
                .history
                .iter()
                .map(|e| HistoryView {
                    at: e.at.to_chrono(),
                    action: history_action(e.action).to_owned(),
                    attempt: e.attempt,
                    error_class: e.error_class.clone(),
                    error_message: e.error_message.clone(),
                    reason: e.reason.clone(),
                    by: e.by.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// pending, retrying, retried, parked or discarded
    status: Option<String>,
    /// The original topic, with its prefix.
    topic: Option<String>,
    /// e.g. `result_stored`
    event_type: Option<String>,
    /// First failure at or after this time (RFC 3339).
    from: Option<String>,
    /// First failure before this time (RFC 3339).
    to: Option<String>,
    /// 1-100, default 20
    limit: Option<String>,
    /// `next_cursor` of the previous page
    cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DlqPage)]
pub struct Page {
    pub items: Vec<DlqSummary>,
    pub next_cursor: Option<String>,
}

fn time(raw: Option<&str>, name: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.filter(|r| !r.is_empty())
        .map(|r| {
            DateTime::parse_from_rfc3339(r)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::bad_request("invalid_time", format!("{name}: RFC 3339")))
        })
        .transpose()
}

fn query(params: &ListParams) -> Result<DlqQuery, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(|s| {
            DlqStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_status",
                    "status: pending, retrying, retried, parked or discarded",
                )
            })
        })
        .transpose()?;
    let query = DlqQuery {
        status,
        original_topic: params.topic.clone(),
        event_type: params.event_type.clone(),
        from: time(params.from.as_deref(), "from")?,
        to: time(params.to.as_deref(), "to")?,
        before_id: None,
    };
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        return Err(ApiError::bad_request(
            "invalid_time",
            "from must be before to",
        ));
    }
    Ok(query)
}

/// Dead-lettered messages, newest first, with filters.
#[utoipa::path(get, path = "/api/v1/admin/dlq", tag = "admin", params(ListParams),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Page), (status = "4XX", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    user.require_admin()?;
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let filter = query(&params)?.to_filter();
    let collection = state.db.collection::<DlqMessage>(DLQ_COLLECTION);
    let (items, next_cursor) = page
        .fetch(&collection, filter, |m: &DlqMessage| &m.id)
        .await?;
    Ok(Json(Page {
        items: items.iter().map(DlqSummary::from).collect(),
        next_cursor,
    }))
}

/// One dead-lettered message with its payload, headers and history.
#[utoipa::path(get, path = "/api/v1/admin/dlq/{id}", tag = "admin",
    params(("id" = String, Path, description = "dlq message id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = DlqMessageView), (status = "4XX", body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<DlqMessageView>, ApiError> {
    user.require_admin()?;
    let message = DlqStore::new(&state.db)
        .get(&id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(DlqMessageView::from(&message)))
}

fn action_error(error: ActionError, action: &str) -> ApiError {
    match error {
        ActionError::NotFound => ApiError::not_found(),
        ActionError::WrongStatus(status) => ApiError::conflict(
            "invalid_status",
            format!(
                "the message is {}; {action} applies to pending, retried or parked messages",
                status.as_str()
            ),
        ),
        ActionError::Mongo(error) => ApiError::internal(error),
        ActionError::Encode(error) => ApiError::internal(error),
    }
}

/// Makes the message due now (status `pending`, no age limit for this attempt); dlq-processor
/// re-publishes it to its original topic within `dlq.scan_interval_ms`. 409 `invalid_status`
/// while a re-publish is in flight or after a discard.
#[utoipa::path(post, path = "/api/v1/admin/dlq/{id}/retry", tag = "admin",
    params(("id" = String, Path, description = "dlq message id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = DlqMessageView), (status = "4XX", body = ErrorBody)))]
async fn retry(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<DlqMessageView>, ApiError> {
    user.require_admin()?;
    let message = DlqStore::new(&state.db)
        .retry_now(&id, &user.username)
        .await
        .map_err(|e| action_error(e, "retry"))?;
    tracing::info!(dlq_id = %id, admin = %user.id, "dead-lettered message retry requested");
    Ok(Json(DlqMessageView::from(&message)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardRequest {
    /// Why the message is given up on (1-1000 characters); kept with the message.
    pub reason: String,
}

/// Gives up on the message for good; the reason is kept and announced in
/// `dlq_message_discarded`. 409 `invalid_status` while a re-publish is in flight or after a
/// discard.
#[utoipa::path(post, path = "/api/v1/admin/dlq/{id}/discard", tag = "admin",
    params(("id" = String, Path, description = "dlq message id")),
    request_body = DiscardRequest,
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = DlqMessageView), (status = "4XX", body = ErrorBody)))]
async fn discard(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<DiscardRequest>,
) -> Result<Json<DlqMessageView>, ApiError> {
    user.require_admin()?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "reason: 1-1000 characters",
        ));
    }
    let message = DlqStore::new(&state.db)
        .discard(&id, reason, &user.username)
        .await
        .map_err(|e| action_error(e, "discard"))?;
    metrics::counter!(DISCARDED_METRIC).increment(1);
    tracing::info!(dlq_id = %id, admin = %user.id, "dead-lettered message discarded");
    // The document is the record; the event only announces it.
    let event = Event::new(
        message.id.clone(),
        EventPayload::DlqMessageDiscarded(message.reference(Some(reason.to_owned()))),
        EventMetadata::new(crate::SERVICE_NAME, Some(user.id.clone())),
    );
    if let Err(error) = state.producer.publish(&event).await {
        tracing::warn!(dlq_id = %id, error.cause_chain = %shared::errors::display_chain(&error), "dlq_message_discarded not published");
    }
    Ok(Json(DlqMessageView::from(&message)))
}
