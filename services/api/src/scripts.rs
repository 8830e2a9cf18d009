//! `/api/v1/scripts`: a user's saved scripts. Owner only: another user's script is "not found",
//! admins included (these are private drafts, not platform records).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bson::doc;
use chrono::{DateTime, Utc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiJson, ErrorBody, is_duplicate_key};
use crate::pagination::PageRequest;
use crate::state::AppState;

pub const SCRIPTS: &str = "scripts";
const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub lang: String,
    pub lang_version: String,
    pub script: String,
    pub description: String,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

/// A saved script.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Script {
    pub id: String,
    pub name: String,
    pub lang: String,
    pub lang_version: String,
    pub script: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ScriptDoc> for Script {
    fn from(doc: ScriptDoc) -> Self {
        Self {
            id: doc.id,
            name: doc.name,
            lang: doc.lang,
            lang_version: doc.lang_version,
            script: doc.script,
            description: doc.description,
            created_at: doc.created_at,
            updated_at: doc.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScript {
    /// 1-100 characters, unique among the user's scripts.
    pub name: String,
    pub lang: String,
    /// Default: the language's default version.
    #[serde(default)]
    pub lang_version: Option<String>,
    pub script: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Any subset of the fields; the rest stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScript {
    #[serde(default)]
    pub name: Option<String>,
    /// Changing the language without a version picks the new language's default version.
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub lang_version: Option<String>,
    #[serde(default)]
    pub script: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-100, default 20
    pub limit: Option<String>,
    /// `next_cursor` of the previous page
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn page(params: Result<Query<Self>, QueryRejection>) -> Result<PageRequest, ApiError> {
        let Query(params) =
            params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())
    }
}

/// Newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScriptPage {
    pub items: Vec<Script>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub fn collection(db: &Database) -> Collection<ScriptDoc> {
    db.collection(SCRIPTS)
}

pub fn indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "name": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("user_script_name_unique".to_owned())
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "_id": -1 })
            .build(),
    ]
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, remove))
}

fn name(value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || trimmed.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name: 1-100 characters, no control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

fn description(value: &str) -> Result<String, ApiError> {
    if value.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(
            "invalid_description",
            "description: at most 1000 characters",
        ));
    }
    Ok(value.to_owned())
}

fn script(state: &AppState, value: &str) -> Result<(), ApiError> {
    let max = state.limits.max_script_bytes;
    if value.len() > max {
        return Err(ApiError::too_large(
            "script_too_large",
            format!("script: at most {max} bytes"),
        ));
    }
    Ok(())
}

/// The language and its resolved version.
fn language(
    state: &AppState,
    lang: &str,
    version: Option<&str>,
) -> Result<(String, String), ApiError> {
    let found = state.languages.resolve(lang, version)?;
    Ok((found.lang.clone(), found.version.clone()))
}

fn name_taken(error: mongodb::error::Error) -> ApiError {
    if is_duplicate_key(&error) {
        ApiError::conflict(
            "script_name_taken",
            "you already have a script with this name",
        )
    } else {
        error.into()
    }
}

#[utoipa::path(get, path = "/api/v1/scripts", tag = "scripts", params(PageParams),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = ScriptPage), (status = "4XX", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<ScriptPage>, ApiError> {
    let page = PageParams::page(params)?;
    let (docs, next_cursor) = page
        .fetch(&collection(&state.db), doc! { "user_id": &user.id }, |d| {
            d.id.as_str()
        })
        .await?;
    Ok(Json(ScriptPage {
        items: docs.into_iter().map(Script::from).collect(),
        next_cursor,
    }))
}

/// 409 `script_name_taken` when the name is in use.
#[utoipa::path(post, path = "/api/v1/scripts", tag = "scripts", request_body = CreateScript,
    security(("session" = []), ("bearer" = [])),
    responses((status = 201, body = Script), (status = "4XX", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(request): ApiJson<CreateScript>,
) -> Result<(StatusCode, Json<Script>), ApiError> {
    let name = name(&request.name)?;
    let (lang, lang_version) = language(&state, &request.lang, request.lang_version.as_deref())?;
    script(&state, &request.script)?;
    let description = description(request.description.as_deref().unwrap_or_default())?;
    let now = bson::DateTime::now().to_chrono();
    let doc = ScriptDoc {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id,
        name,
        lang,
        lang_version,
        script: request.script,
        description,
        created_at: now,
        updated_at: now,
    };
    collection(&state.db)
        .insert_one(&doc)
        .await
        .map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(Script::from(doc))))
}

async fn owned(state: &AppState, user: &CurrentUser, id: &str) -> Result<ScriptDoc, ApiError> {
    collection(&state.db)
        .find_one(doc! { "_id": id, "user_id": &user.id })
        .await?
        .ok_or_else(ApiError::not_found)
}

#[utoipa::path(get, path = "/api/v1/scripts/{id}", tag = "scripts",
    params(("id" = String, Path, description = "script id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Script), (status = "4XX", body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<Script>, ApiError> {
    Ok(Json(Script::from(owned(&state, &user, &id).await?)))
}

/// Rename or update: any subset of the fields.
#[utoipa::path(put, path = "/api/v1/scripts/{id}", tag = "scripts", request_body = UpdateScript,
    params(("id" = String, Path, description = "script id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Script), (status = "4XX", body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateScript>,
) -> Result<Json<Script>, ApiError> {
    let mut set = doc! { "updated_at": bson::DateTime::now() };
    if let Some(value) = &request.name {
        set.insert("name", name(value)?);
    }
    if request.lang.is_some() || request.lang_version.is_some() {
        let lang = match &request.lang {
            Some(lang) => lang.clone(),
            None => owned(&state, &user, &id).await?.lang,
        };
        let (lang, version) = language(&state, &lang, request.lang_version.as_deref())?;
        set.insert("lang", lang);
        set.insert("lang_version", version);
    }
    if let Some(value) = &request.script {
        script(&state, value)?;
        set.insert("script", value);
    }
    if let Some(value) = &request.description {
        set.insert("description", description(value)?);
    }
    let updated = collection(&state.db)
        .find_one_and_update(
            doc! { "_id": &id, "user_id": &user.id },
            doc! { "$set": set },
        )
        .return_document(ReturnDocument::After)
        .await
        .map_err(name_taken)?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(Script::from(updated)))
}

#[utoipa::path(delete, path = "/api/v1/scripts/{id}", tag = "scripts",
    params(("id" = String, Path, description = "script id")),
    security(("session" = []), ("bearer" = [])),
    responses((status = 204), (status = "4XX", body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::pagination::delete_owned(&collection(&state.db), &id, &user.id).await
}
