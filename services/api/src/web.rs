//! The built web app (`api.static_dir`) on the same origin as the API: files by path with their
//! content types, `index.html` for any other non-API path (the app routes in the browser).
//! Vite names everything under `assets/` by its content hash, so those files are cached for a
//! year; `index.html` must be revalidated so a new build is picked up at once.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::ApiError;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";
const NOT_BUILT: &str = "Kiln's web app is not built yet.\n\n\
    Build it with `npm --prefix frontend ci && npm --prefix frontend run build`, then reload.\n\
    The API is at /api/v1 (document: /api/v1/openapi.json).\n";

/// Answers every request no route matched.
#[derive(Debug, Clone)]
pub struct WebApp {
    dir: Option<PathBuf>,
}

impl WebApp {
    /// `dir` empty: no web app, every unknown path is a JSON 404.
    pub fn new(dir: &str) -> Self {
        Self {
            dir: (!dir.is_empty()).then(|| PathBuf::from(dir)),
        }
    }

    pub async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path();
        let is_api = path == "/api" || path.starts_with("/api/");
        let readable = matches!(*request.method(), Method::GET | Method::HEAD);
        let Some(dir) = self.dir.as_deref().filter(|_| !is_api && readable) else {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
                .into_response();
        };
        // Checked per request, so building the app while the api runs needs no restart.
        let index = dir.join("index.html");
        if !index.is_file() {
            return (
                StatusCode::OK,
                [
                    (CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (CACHE_CONTROL, REVALIDATE),
                ],
                NOT_BUILT,
            )
                .into_response();
        }
        if path.starts_with("/assets/") {
            // A missing hashed asset is a 404, never the index under a year-long cache.
            let response = serve(ServeDir::new(dir), request).await;
            let cache = if response.status().is_success() {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            return with_cache(response, cache);
        }
        let response = serve(ServeDir::new(dir).fallback(ServeFile::new(index)), request).await;
        with_cache(response, REVALIDATE)
    }
}

async fn serve<S>(service: S, request: Request) -> Response
where
    S: tower::Service<
            Request,
            Response = Response<tower_http::services::fs::ServeFileSystemResponseBody>,
        > + Send,
    S::Error: std::fmt::Display,
    S::Future: Send,
{
    match service.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => ApiError::internal(error.to_string()).into_response(),
    }
}

fn with_cache(mut response: Response, value: &'static str) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(value));
    response
}

/// Whether `dir` holds a built app (for the start-up log).
pub fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}
