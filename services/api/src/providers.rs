//! `GET /api/v1/providers`: the coding agents this installation offers, and whether each can run
//! here now (enabled and its CLI present).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
struct Providers {
    providers: Vec<ProviderView>,
    limits: AgentLimitsView,
}

#[derive(Serialize, ToSchema)]
struct ProviderView {
    name: String,
    description: String,
    available: bool,
    default_model: String,
    /// `plain`, `json` or `jsonl`.
    parser: String,
    network: bool,
    allowed_hosts: Vec<String>,
    default_timeout_seconds: u64,
    max_timeout_seconds: u64,
}

#[derive(Serialize, ToSchema)]
struct AgentLimitsView {
    max_files: usize,
    max_file_bytes: u64,
    max_workspace_bytes: u64,
    default_max_cost_usd: f64,
    daily_budget_usd: f64,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(providers))
}

/// The agent providers, with availability on this installation.
#[utoipa::path(get, path = "/api/v1/providers", tag = "executions",
    security(("session" = []), ("bearer" = [])),
    responses((status = 200, body = Providers), (status = 401, body = crate::error::ErrorBody)))]
async fn providers(State(state): State<AppState>, _user: CurrentUser) -> Json<Providers> {
    let registry = &state.providers;
    let config = &registry.config;
    let providers = config
        .providers
        .iter()
        .map(|(name, p)| ProviderView {
            name: name.clone(),
            description: p.description.clone(),
            available: registry.is_available(p),
            default_model: p.default_model.clone(),
            parser: serde_json::to_value(p.parser)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            network: p.network,
            allowed_hosts: p.allowed_hosts.clone(),
            default_timeout_seconds: p.default_timeout_seconds,
            max_timeout_seconds: p.max_timeout_seconds,
        })
        .collect();
    Json(Providers {
        providers,
        limits: AgentLimitsView {
            max_files: config.max_files,
            max_file_bytes: config.max_file_bytes,
            max_workspace_bytes: config.max_workspace_bytes,
            default_max_cost_usd: config.default_max_cost_usd,
            daily_budget_usd: config.daily_budget_usd,
        },
    })
}
