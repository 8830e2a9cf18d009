//! Registration, sessions with CSRF, API tokens.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error, json_of, python};

#[tokio::test(flavor = "multi_thread")]
async fn register_login_me_logout_and_csrf() {
    let app = TestApp::start().await;

    let user = app.register("alice").await;
    assert_eq!(user["username"], "alice");
    assert_eq!(user["role"], "user");
    assert!(user.get("password_hash").is_none());

    let register = |body: Value| {
        app.request(Method::POST, "/api/v1/auth/register")
            .json(&body)
            .send()
    };
    let taken = json_of(
        register(
            json!({"username": "alice", "email": "other@example.com", "password": "password123"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(&taken, StatusCode::CONFLICT, "username_taken");
    let taken = json_of(
        register(
            json!({"username": "alice2", "email": "ALICE@example.com", "password": "password123"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(&taken, StatusCode::CONFLICT, "email_taken");
    let bad = json_of(
        register(json!({"username": "Al", "email": "a@example.com", "password": "password123"}))
            .await
            .unwrap(),
    )
    .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_username");
    let weak = json_of(
        register(json!({"username": "bob", "email": "b@example.com", "password": "short"}))
            .await
            .unwrap(),
    )
    .await;
    assert_error(&weak, StatusCode::BAD_REQUEST, "weak_password");

    // Wrong password and unknown user get the same answer.
    for (username, password) in [("alice", "wrong-password"), ("nobody", "password123")] {
        let response = app
            .request(Method::POST, "/api/v1/auth/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_error(
            &json_of(response).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }

    let session = app.login("alice", "password123").await;
    let session_cookie = session
        .set_cookies
        .iter()
        .find(|c| c.starts_with("kiln_session="))
        .unwrap();
    assert!(session_cookie.contains("HttpOnly"));
    assert!(session_cookie.contains("SameSite=Lax"));
    assert!(!session_cookie.contains("Secure"));
    let csrf_cookie = session
        .set_cookies
        .iter()
        .find(|c| c.starts_with("kiln_csrf="))
        .unwrap();
    assert!(!csrf_cookie.contains("HttpOnly"));
    assert_eq!(session.body["csrf_token"], session.csrf.as_str());

    let me = json_of(
        session
            .read(app.request(Method::GET, "/api/v1/auth/me"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me.0, StatusCode::OK);
    assert_eq!(me.1["username"], "alice");
    assert_eq!(me.1["email"], "alice@example.com");

    let anonymous = json_of(
        app.request(Method::GET, "/api/v1/auth/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthenticated");
    let forged = json_of(
        app.request(Method::GET, "/api/v1/auth/me")
            .header("cookie", "kiln_session=a.b.c")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&forged, StatusCode::UNAUTHORIZED, "unauthenticated");

    // A cookie-authenticated mutation needs the CSRF header, matching the cookie.
    let no_csrf = json_of(
        session
            .read(app.request(Method::POST, "/api/v1/execute"))
            .json(&python("print(1)"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&no_csrf, StatusCode::FORBIDDEN, "csrf_failed");
    let wrong_csrf = json_of(
        session
            .read(app.request(Method::POST, "/api/v1/execute"))
            .header("x-csrf-token", "not-the-token")
            .json(&python("print(1)"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&wrong_csrf, StatusCode::FORBIDDEN, "csrf_failed");
    let with_csrf = json_of(
        session
            .mutate(app.request(Method::POST, "/api/v1/execute"))
            .json(&python("print(1)"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(with_csrf.0, StatusCode::ACCEPTED, "{}", with_csrf.1);

    // Logout needs CSRF too, then clears both cookies.
    let logout = session
        .read(app.request(Method::POST, "/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::FORBIDDEN);
    let logout = session
        .mutate(app.request(Method::POST, "/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let cleared: Vec<String> = logout
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("kiln_session=;") && c.contains("Max-Age=0"))
    );
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("kiln_csrf=;") && c.contains("Max-Age=0"))
    );

    // The seeded accounts exist, with their roles.
    let admin = app.login("admin", "admin123").await;
    assert_eq!(admin.body["user"]["role"], "admin");
    let user = app.login("user", "user123").await;
    assert_eq!(user.body["user"]["role"], "user");

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_create_use_list_revoke() {
    let app = TestApp::start().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;

    let created = json_of(
        alice
            .mutate(app.request(Method::POST, "/api/v1/auth/tokens"))
            .json(&json!({"name": "laptop"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);
    let token = created.1["token"].as_str().unwrap().to_owned();
    let token_id = created.1["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kiln_"));
    assert_eq!(token.len(), 48);

    // Bearer works everywhere, with no CSRF header.
    let me = json_of(
        app.request(Method::GET, "/api/v1/auth/me")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me.1["username"], "alice");
    let (status, _) = app.submit(&token, python("print(1)")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Listing shows the token without its secret; only the hash is stored.
    let list = json_of(
        app.request(Method::GET, "/api/v1/auth/tokens")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list.0, StatusCode::OK);
    let items = list.1["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "laptop");
    assert!(items[0].get("token").is_none() && items[0].get("token_hash").is_none());
    let stored = app
        .db
        .collection::<bson::Document>("api_tokens")
        .find_one(bson::doc! {"_id": &token_id})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("token_hash").unwrap().len(), 64);
    assert!(!stored.to_string().contains(&token));

    // Bob cannot revoke Alice's token.
    let foreign = bob
        .mutate(app.request(Method::DELETE, &format!("/api/v1/auth/tokens/{token_id}")))
        .send()
        .await
        .unwrap();
    assert_error(&json_of(foreign).await, StatusCode::NOT_FOUND, "not_found");

    let revoke = app
        .request(Method::DELETE, &format!("/api/v1/auth/tokens/{token_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let after = json_of(
        app.request(Method::GET, "/api/v1/auth/me")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&after, StatusCode::UNAUTHORIZED, "invalid_token");
    let unknown = json_of(
        app.request(Method::GET, "/api/v1/auth/me")
            .bearer_auth("kiln_nonsense")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "invalid_token");

    app.cleanup().await;
}
