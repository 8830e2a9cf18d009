//! Saved scripts: CRUD, validation, unique names, paging and owner isolation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Session, TestApp, assert_error, assert_needs_sign_in, json_of};

async fn call(
    app: &TestApp,
    who: &Session,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = who.mutate(app.request(method, path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.unwrap()).await
}

async fn create(app: &TestApp, who: &Session, body: Value) -> (StatusCode, Value) {
    call(app, who, Method::POST, "/api/v1/scripts", Some(body)).await
}

#[tokio::test]
async fn create_read_rename_update_delete() {
    let app = TestApp::start().await;
    let ann = app.user("ann").await;

    let (status, created) = create(
        &app,
        &ann,
        json!({ "name": " hello ", "lang": "python", "script": "print('hi')" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "hello");
    assert_eq!(created["description"], "");
    assert!(
        created["lang_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    assert_eq!(created["created_at"], created["updated_at"]);
    let id = created["id"].as_str().unwrap().to_owned();

    let path = format!("/api/v1/scripts/{id}");
    let (status, read) = call(&app, &ann, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);

    // Rename only: everything else stays.
    let (status, renamed) = call(
        &app,
        &ann,
        Method::PUT,
        &path,
        Some(json!({ "name": "greet" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["name"], "greet");
    assert_eq!(renamed["script"], "print('hi')");
    assert_ne!(renamed["updated_at"], created["updated_at"]);

    let (status, updated) = call(
        &app,
        &ann,
        Method::PUT,
        &path,
        Some(json!({ "script": "print(2)", "description": "two" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (updated["name"].as_str(), updated["script"].as_str()),
        (Some("greet"), Some("print(2)"))
    );
    assert_eq!(updated["description"], "two");

    let (status, _) = call(&app, &ann, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let gone = call(&app, &ann, Method::GET, &path, None).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
    app.cleanup().await;
}

#[tokio::test]
async fn names_are_unique_per_user_and_input_is_checked() {
    let app = TestApp::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let script = |name: &str| json!({ "name": name, "lang": "python", "script": "1" });
    let (status, first) = create(&app, &ann, script("a")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = create(&app, &ann, script("b")).await;
    assert_eq!(status, StatusCode::CREATED);
    let taken = create(&app, &ann, script("a")).await;
    assert_error(&taken, StatusCode::CONFLICT, "script_name_taken");
    let path = format!("/api/v1/scripts/{}", first["id"].as_str().unwrap());
    let taken = call(&app, &ann, Method::PUT, &path, Some(json!({ "name": "b" }))).await;
    assert_error(&taken, StatusCode::CONFLICT, "script_name_taken");
    // Another user may use the same name.
    let (status, _) = create(&app, &bob, script("a")).await;
    assert_eq!(status, StatusCode::CREATED);

    let too_long = "x".repeat(101);
    for (body, code) in [
        (script(""), "invalid_name"),
        (script(&too_long), "invalid_name"),
        (
            json!({ "name": "c", "lang": "cobol", "script": "1" }),
            "unknown_language",
        ),
        (
            json!({ "name": "c", "lang": "python", "lang_version": "0.1", "script": "1" }),
            "unknown_version",
        ),
        (
            json!({ "name": "c", "lang": "python", "script": "1", "extra": 1 }),
            "invalid_request",
        ),
    ] {
        let answer = create(&app, &ann, body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, code);
    }
    let max = app.config.limits.max_script_bytes;
    let big = json!({ "name": "big", "lang": "python", "script": "#".repeat(max + 1) });
    let answer = create(&app, &ann, big).await;
    assert!(
        matches!(answer.0, StatusCode::PAYLOAD_TOO_LARGE),
        "{answer:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn pages_and_owner_isolation() {
    let app = TestApp::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    for i in 0..5 {
        let body = json!({ "name": format!("s{i}"), "lang": "python", "script": "1" });
        let (status, _) = create(&app, &ann, body).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/scripts?limit=2&cursor={c}"),
            None => "/api/v1/scripts?limit=2".to_owned(),
        };
        let (status, page) = call(&app, &ann, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        names.extend(items.iter().map(|s| s["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["s4", "s3", "s2", "s1", "s0"]);
    let bad = call(&app, &ann, Method::GET, "/api/v1/scripts?limit=0", None).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_limit");

    // Bob sees none of them and cannot touch them.
    let (_, page) = call(&app, &bob, Method::GET, "/api/v1/scripts", None).await;
    assert_eq!(page["items"], json!([]));
    let (_, page) = call(&app, &ann, Method::GET, "/api/v1/scripts?limit=1", None).await;
    let path = format!(
        "/api/v1/scripts/{}",
        page["items"][0]["id"].as_str().unwrap()
    );
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(json!({ "name": "mine" }))),
        (Method::DELETE, None),
    ] {
        let answer = call(&app, &bob, method, &path, body).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, _) = call(&app, &ann, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);

    // Without a session: 401; with a session but no CSRF header: 403.
    assert_needs_sign_in(&app, Method::GET, "/api/v1/scripts").await;
    assert_needs_sign_in(&app, Method::POST, "/api/v1/scripts").await;
    let no_csrf = ann
        .read(app.request(Method::DELETE, &path))
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(no_csrf).await,
        StatusCode::FORBIDDEN,
        "csrf_failed",
    );
    app.cleanup().await;
}
