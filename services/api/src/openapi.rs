//! The OpenAPI 3.1 document of every `/api/v1` route. It is generated from the handlers' own
//! `#[utoipa::path]` annotations as the router is built (`crate::api_routes`), so the document
//! and the routes cannot drift apart; `GET /api/v1/openapi.json` serves it and `api --openapi`
//! prints it without any infrastructure.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kiln API",
        description = "Run untrusted code. Errors are `{code, message}` with a stable `code`. \
            Authenticate with the session cookie from `POST /api/v1/auth/login` (then echo the \
            `kiln_csrf` cookie in `X-CSRF-Token` on every request that changes state) or with \
            `Authorization: Bearer <api token>`. Rate-limited routes answer \
            `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`, and 429 \
            `rate_limited` with `Retry-After` when the budget is spent."
    ),
    modifiers(&Security),
    components(schemas(
        crate::error::ErrorBody,
        shared::events::ExecutionOutput,
        crate::notifications::UnreadCount,
    )),
    tags(
        (name = "auth", description = "Accounts, sessions and API tokens"),
        (name = "executions", description = "Run code and follow it"),
        (name = "scripts", description = "Saved scripts"),
        (name = "settings", description = "Per-user settings of the web app"),
        (name = "notifications", description = "In-app notifications"),
        (name = "admin", description = "Administration (role admin)"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::cookies::SESSION_COOKIE,
                "Session cookie; state-changing requests also need X-CSRF-Token",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A personal API token from POST /api/v1/auth/tokens"))
                    .build(),
            ),
        );
    }
}

/// The router every route module merges into; it starts with the document's metadata.
pub(crate) fn base() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(openapi_json))
}

/// The document, built from the same route tree the server runs.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut document) = crate::api_routes().split_for_parts();
    unique_operation_ids(&mut document);
    document
}

/// utoipa names an operation after its handler, and several modules have a `list` or a
/// `get_one`; client generators need each id once. A shared id gets its path as a prefix.
fn unique_operation_ids(document: &mut utoipa::openapi::OpenApi) {
    fn operations(
        item: &mut utoipa::openapi::PathItem,
    ) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            if let Some(id) = &operation.operation_id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
    }
    for (path, item) in &mut document.paths.paths {
        // The path's fixed segments after the version: admin/replay/{id} -> admin_replay.
        let prefix: Vec<&str> = path
            .split('/')
            .filter(|segment| !segment.is_empty() && !segment.starts_with('{'))
            .skip(2)
            .collect();
        let prefix = prefix.join("_").replace(['-', '.'], "_");
        for operation in operations(item) {
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            if seen.get(&id).copied().unwrap_or_default() > 1 {
                operation.operation_id = Some(format!("{prefix}_{id}"));
            }
        }
    }
}

/// The document as pretty JSON (what `./deploy.sh openapi` writes).
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, content_type = "application/json", body = Object,
        description = "The OpenAPI 3.1 document")))]
async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    ([(CONTENT_TYPE, "application/json")], body.as_str())
}
