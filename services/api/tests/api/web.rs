//! The built web app on the API's origin: files, SPA fallback, cache headers, and the hint
//! page when the app is not built.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};

use crate::common::{TestApp, assert_error, json_of};

struct Dist(PathBuf);

impl Dist {
    fn new(build: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("kiln-web-{}", uuid::Uuid::now_v7()));
        if build {
            std::fs::create_dir_all(dir.join("assets")).unwrap();
            std::fs::write(dir.join("index.html"), "<!doctype html><title>Kiln</title>").unwrap();
            std::fs::write(dir.join("assets/app-1a2b3c.js"), "console.log(1)").unwrap();
            std::fs::write(dir.join("assets/app-1a2b3c.css"), "body{}").unwrap();
        }
        Self(dir)
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, String, String, String) {
    let response = app.request(Method::GET, path).send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, cache) = (header("content-type"), header("cache-control"));
    (
        response.status(),
        content_type,
        cache,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn serves_the_app_with_spa_fallback_and_cache_headers() {
    let dist = Dist::new(true);
    let dir = dist.0.to_str().unwrap().to_owned();
    let app = TestApp::start_with(|c| c.api.static_dir = dir).await;

    let (status, content_type, cache, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(cache, "no-cache");
    assert!(body.contains("<title>Kiln</title>"));

    // A client-side route gets the app.
    let (status, content_type, cache, body) = get(&app, "/history/some-id").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    assert_eq!(cache, "no-cache");
    assert!(body.contains("<title>Kiln</title>"));

    let (status, content_type, cache, _) = get(&app, "/assets/app-1a2b3c.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.contains("javascript"), "{content_type}");
    assert_eq!(cache, "public, max-age=31536000, immutable");
    let (_, content_type, _, _) = get(&app, "/assets/app-1a2b3c.css").await;
    assert!(content_type.starts_with("text/css"), "{content_type}");

    // A missing hashed asset is not the app under a year-long cache.
    let (status, _, cache, _) = get(&app, "/assets/gone-000.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(cache, "no-cache");

    // Unknown API paths stay JSON errors.
    let response = app
        .request(Method::GET, "/api/v1/nope")
        .send()
        .await
        .unwrap();
    assert_error(&json_of(response).await, StatusCode::NOT_FOUND, "not_found");
    let response = app
        .request(Method::POST, "/elsewhere")
        .send()
        .await
        .unwrap();
    assert_error(&json_of(response).await, StatusCode::NOT_FOUND, "not_found");
    app.cleanup().await;
}

#[tokio::test]
async fn without_a_build_the_root_says_how_to_build() {
    let dist = Dist::new(false);
    let dir = dist.0.to_str().unwrap().to_owned();
    let app = TestApp::start_with(|c| c.api.static_dir = dir).await;
    let (status, content_type, _, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"));
    assert!(body.contains("npm --prefix frontend"), "{body}");
    app.cleanup().await;
}
