//! The OpenAPI document against the router it is generated from: every documented operation
//! reaches a handler, no other method on a documented path does, and every `/api/v1` path the
//! source names is documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{TestApp, json_of};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// path -> documented methods
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let document = serde_json::to_value(api::openapi::document()).unwrap();
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (*m).to_owned())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Every `"/api/v1/..."` string literal in the api's source.
fn source_paths(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_paths(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("\"/api/v1/").skip(1) {
                let end = piece.find('"').unwrap();
                found.insert(format!("/api/v1/{}", &piece[..end]));
            }
        }
    }
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "0196a0a0-0000-7000-8000-000000000000"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The router's fallback: no route has this path (or the API has no such method on it).
fn unrouted(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && body["message"] == "no such route")
}

#[tokio::test]
async fn the_document_and_the_router_describe_the_same_routes() {
    let app = TestApp::start().await;
    let documented = documented();
    for must in [
        "/api/v1/openapi.json",
        "/api/v1/auth/login",
        "/api/v1/execute",
        "/api/v1/executions/{id}/events",
        "/api/v1/scripts/{id}",
        "/api/v1/settings",
    ] {
        assert!(documented.contains_key(must), "{must} is not documented");
    }
    for (path, methods) in &documented {
        for method in METHODS {
            let response = app
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &concrete(path),
                )
                .send()
                .await
                .unwrap();
            let (status, body) = json_of(response).await;
            let routed = !unrouted(status, &body);
            assert_eq!(
                routed,
                methods.contains(method),
                "{method} {path}: documented {}, answered {status} {body}",
                methods.contains(method)
            );
        }
    }

    let mut named = BTreeSet::new();
    source_paths(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut named,
    );
    let undocumented: Vec<_> = named
        .iter()
        .filter(|p| !documented.contains_key(*p))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes in the source but not in the document: {undocumented:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_document_is_served_as_openapi_3_1() {
    let app = TestApp::start().await;
    let response = app
        .request(Method::GET, "/api/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        body,
        serde_json::to_value(api::openapi::document()).unwrap()
    );
    let schemas = body["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "ExecutionView",
        "Script",
        "Settings",
        "ExecutionOutput",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    app.cleanup().await;
}

/// Client generators key operations by id: each must be used once.
#[test]
fn every_operation_id_is_unique() {
    let document = serde_json::to_value(api::openapi::document()).unwrap();
    let mut seen = BTreeMap::<String, usize>::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            if let Some(id) = operation["operationId"].as_str() {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    let shared: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        shared.is_empty(),
        "operation ids used more than once: {shared:?}"
    );
    assert!(seen.len() > 20, "{seen:?}");
}
