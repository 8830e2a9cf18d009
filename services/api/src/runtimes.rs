//! `GET /api/v1/runtimes`: what can be run and within which limits. Public: it reveals nothing
//! about users, and the web app shows it before sign-in.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::executions::submit::MAX_STDIN_BYTES;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
struct Runtimes {
    languages: Vec<LanguageView>,
    limits: LimitsView,
}

#[derive(Serialize, ToSchema)]
struct LanguageView {
    lang: String,
    default_version: String,
    versions: Vec<VersionView>,
}

#[derive(Serialize, ToSchema)]
struct VersionView {
    version: String,
    file_name: String,
    example: String,
}

#[derive(Serialize, ToSchema)]
struct LimitsView {
    max_script_bytes: usize,
    max_stdin_bytes: usize,
    default_timeout_seconds: u64,
    max_timeout_seconds: u64,
    memory_mb: u64,
    max_output_bytes: usize,
    max_priority: u8,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(runtimes))
}

/// Public: the languages this host runs and the limits of a submission.
#[utoipa::path(get, path = "/api/v1/runtimes", tag = "executions",
    responses((status = 200, body = Runtimes)))]
async fn runtimes(State(state): State<AppState>) -> Json<Runtimes> {
    let languages = state
        .languages
        .languages()
        .iter()
        .map(|language| LanguageView {
            lang: language.lang.clone(),
            default_version: language
                .versions
                .first()
                .map(|v| v.version.clone())
                .unwrap_or_default(),
            versions: language
                .versions
                .iter()
                .map(|v| VersionView {
                    version: v.version.clone(),
                    file_name: v.file_name.clone(),
                    example: v.example.clone(),
                })
                .collect(),
        })
        .collect();
    let limits = &state.limits;
    Json(Runtimes {
        languages,
        limits: LimitsView {
            max_script_bytes: limits.max_script_bytes,
            max_stdin_bytes: MAX_STDIN_BYTES,
            default_timeout_seconds: limits.default_timeout_seconds,
            max_timeout_seconds: limits.max_timeout_seconds,
            memory_mb: limits.memory_mb,
            max_output_bytes: limits.max_output_bytes,
            max_priority: 9,
        },
    })
}
