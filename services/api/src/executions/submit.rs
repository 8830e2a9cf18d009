//! `POST /api/v1/execute`: validate, insert the execution, publish `execution_requested`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::events::{
    Event, EventMetadata, EventPayload, ExecutionLimits, ExecutionRequested, ExecutionStatus,
};
use shared::executions::ExecutionDoc;
use shared::mongo::batch::Inserted;

use super::{idempotency, store};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

pub const MAX_STDIN_BYTES: usize = 1024 * 1024;
const MAX_PRIORITY: i64 = 9;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub script: String,
    pub lang: String,
    #[serde(default)]
    pub lang_version: Option<String>,
    #[serde(default)]
    pub stdin: Option<String>,
    /// Signed so a negative value gets `invalid_timeout` rather than a JSON type error.
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub execution_id: String,
    pub status: ExecutionStatus,
}

/// A request that passed every check, with defaults resolved.
struct Valid {
    request: ExecutionRequested,
}

fn validate(state: &AppState, request: SubmitRequest) -> Result<Valid, ApiError> {
    let language = state
        .languages
        .resolve(&request.lang, request.lang_version.as_deref())?;
    let limits = &state.limits;
    if request.script.len() > limits.max_script_bytes {
        return Err(ApiError::too_large(
            "script_too_large",
            format!("script: at most {} bytes", limits.max_script_bytes),
        ));
    }
    if request
        .stdin
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STDIN_BYTES)
    {
        return Err(ApiError::too_large(
            "stdin_too_large",
            format!("stdin: at most {MAX_STDIN_BYTES} bytes"),
        ));
    }
    let timeout = resolve_timeout(
        request.timeout_seconds,
        limits.default_timeout_seconds,
        limits.max_timeout_seconds,
    )?;
    let priority = resolve_priority(request.priority)?;
    Ok(Valid {
        request: ExecutionRequested {
            script: request.script,
            lang: language.lang.clone(),
            lang_version: language.version.clone(),
            stdin: request.stdin,
            priority,
            limits: ExecutionLimits {
                timeout_seconds: timeout,
                memory_mb: language.memory_mb.unwrap_or(limits.memory_mb),
                max_processes: language.max_processes.unwrap_or(limits.max_processes),
                max_output_bytes: u64::try_from(limits.max_output_bytes).unwrap_or(u64::MAX),
                max_file_bytes: limits.max_file_bytes,
            },
            agent: None,
        },
    })
}

/// The requested timeout if it is within `1..=max`, else `invalid_timeout`; `default` if none.
pub(super) fn resolve_timeout(
    requested: Option<i64>,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(t) = requested else {
        return Ok(default);
    };
    u64::try_from(t)
        .ok()
        .filter(|t| (1..=max).contains(t))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_timeout",
                format!("timeout_seconds: 1-{max} (default {default})"),
            )
        })
}

/// The requested priority (0-9), 0 if none.
pub(super) fn resolve_priority(requested: Option<i64>) -> Result<u8, ApiError> {
    let Some(p) = requested else { return Ok(0) };
    u8::try_from(p)
        .ok()
        .filter(|p| i64::from(*p) <= MAX_PRIORITY)
        .ok_or_else(|| ApiError::bad_request("invalid_priority", "priority: 0-9"))
}

/// The body of `POST /api/v1/execute` as documented: a script, or an agent run (its fields plus
/// `"kind": "agent"`). Documentation only: [`super::agent::SubmitBody`] parses requests.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SubmitSchema {
    Script(SubmitRequest),
    Agent(super::agent::AgentSubmit),
}

/// A UUIDv7 and a `created_at` taken from its own timestamp, so sorting by either agrees and
/// the id can serve as a time cursor.
fn new_id() -> (String, bson::DateTime) {
    let id = uuid::Uuid::now_v7();
    let created_at = id
        .get_timestamp()
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            let millis = secs
                .saturating_mul(1000)
                .saturating_add(u64::from(nanos / 1_000_000));
            bson::DateTime::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
        })
        .unwrap_or_else(bson::DateTime::now);
    (id.to_string(), created_at)
}

fn existing(doc: &ExecutionDoc) -> (StatusCode, Json<Accepted>) {
    (
        StatusCode::OK,
        Json(Accepted {
            execution_id: doc.id.clone(),
            status: doc.status,
        }),
    )
}

/// 202 for a new execution; 200 with the earlier one when `Idempotency-Key` repeats.
#[utoipa::path(post, path = "/api/v1/execute", tag = "executions", request_body = SubmitSchema,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe submission")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 202, body = Accepted), (status = 200, body = Accepted),
        (status = "4XX", body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<super::agent::SubmitBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let key = idempotency::from_headers(&headers)?;
    let request = match body {
        super::agent::SubmitBody::Script(request) => validate(&state, request)?.request,
        super::agent::SubmitBody::Agent(request) => super::agent::validate(&state, request)?,
    };

    if let Some(key) = &key
        && let Some(found) = store::find_by_key(&state.db, &user.id, key).await?
    {
        if idempotency::is_fresh(
            found.created_at,
            bson::DateTime::now(),
            state.api.idempotency_ttl_hours,
        ) {
            return Ok(existing(&found));
        }
        store::release_key(&state.db, &found.id, key).await?;
    }

    let (id, created_at) = new_id();
    if let Some(agent) = &request.agent {
        super::agent::reserve_daily_budget(&state, &user.id, agent, created_at).await?;
    }
    let mut doc = ExecutionDoc::queued(
        id.clone(),
        user.id.clone(),
        &request,
        key.clone(),
        created_at,
    );
    // The announcement is stored with the execution (the outbox, see `relay`), so no crash or
    // Kafka outage can leave an accepted execution that nobody will ever run.
    let event = Event::new(
        id.clone(),
        EventPayload::ExecutionRequested(request),
        EventMetadata::new(crate::SERVICE_NAME, Some(user.id.clone())),
    );
    let (outbox, outbox_at) = super::relay::mark(&event).map_err(ApiError::internal)?;
    doc.outbox = Some(outbox);
    doc.outbox_at = Some(outbox_at);
    // Batched: the submissions of a busy api share one insert command.
    let inserted = state
        .execution_inserts
        .insert(bson::to_document(&doc)?)
        .await
        .map_err(ApiError::internal)?;
    if inserted == Inserted::Duplicate {
        // A concurrent request with the same key won the insert; answer with its execution
        // (it publishes, this one does not). Without a key only the id can collide.
        let Some(key) = key.as_deref() else {
            return Err(ApiError::internal(format!(
                "execution id {id} exists already"
            )));
        };
        let found = store::find_by_key(&state.db, &user.id, key)
            .await?
            .ok_or_else(|| ApiError::internal("the execution holding the key vanished"))?;
        return Ok(existing(&found));
    }

    // The mark stays: the result-processor's first projection of the execution drops it (see
    // `relay`). On failure the execution is accepted all the same: it is stored with its
    // announcement, which the relay publishes once Kafka takes it.
    if let Err(error) = state.producer.publish(&event).await {
        tracing::warn!(execution_id = %id, error.cause_chain = %shared::errors::display_chain(&error), "publishing execution_requested failed; the relay will retry");
    }
    tracing::info!(execution_id = %id, "execution queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            execution_id: id,
            status: ExecutionStatus::Queued,
        }),
    ))
}
