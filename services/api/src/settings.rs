//! `/api/v1/settings`: the web app's per-user settings, one durable document per user in
//! `user_settings` (keyed by the user id). A user without a stored document gets the defaults.

use axum::Json;
use axum::extract::State;
use bson::doc;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::state::AppState;

pub const USER_SETTINGS: &str = "user_settings";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    Light,
    Dark,
    /// Follow the browser's preference.
    #[default]
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditorSettings {
    /// 10-32
    #[schema(minimum = 10, maximum = 32)]
    pub font_size: u8,
    /// 1-8
    #[schema(minimum = 1, maximum = 8)]
    pub tab_size: u8,
    pub word_wrap: bool,
    pub line_numbers: bool,
}

impl Default for EditorSettings {
    fn default() -> Self {
        Self {
            font_size: 14,
            tab_size: 4,
            word_wrap: false,
            line_numbers: true,
        }
    }
}

/// The whole settings document; `PUT` replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub theme: Theme,
    pub editor: EditorSettings,
}

impl Settings {
    fn validate(&self) -> Result<(), ApiError> {
        if !(10..=32).contains(&self.editor.font_size) {
            return Err(ApiError::bad_request(
                "invalid_settings",
                "editor.font_size: 10-32",
            ));
        }
        if !(1..=8).contains(&self.editor.tab_size) {
            return Err(ApiError::bad_request(
                "invalid_settings",
                "editor.tab_size: 1-8",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SettingsDoc {
    #[serde(rename = "_id")]
    user_id: String,
    settings: Settings,
    updated_at: bson::DateTime,
}

fn collection(db: &Database) -> Collection<SettingsDoc> {
    db.collection(USER_SETTINGS)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, put_settings))
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "settings",
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Settings), (status = "4XX", body = ErrorBody)))]
async fn get_settings(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Settings>, ApiError> {
    let stored = collection(&state.db)
        .find_one(doc! { "_id": &user.id })
        .await?;
    Ok(Json(stored.map(|d| d.settings).unwrap_or_default()))
}

#[utoipa::path(put, path = "/api/v1/settings", tag = "settings", request_body = Settings,
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Settings), (status = "4XX", body = ErrorBody)))]
async fn put_settings(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(settings): ApiJson<Settings>,
) -> Result<Json<Settings>, ApiError> {
    settings.validate()?;
    let doc = SettingsDoc {
        user_id: user.id.clone(),
        settings,
        updated_at: bson::DateTime::now(),
    };
    collection(&state.db)
        .replace_one(doc! { "_id": &user.id }, &doc)
        .upsert(true)
        .await?;
    Ok(Json(doc.settings))
}
