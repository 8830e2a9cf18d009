//! User settings: defaults, full-document replace, validation, durability and isolation.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestApp, assert_needs_sign_in, json_of};

#[tokio::test]
async fn defaults_then_stored_document_per_user() {
    let app = TestApp::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let defaults = json!({
        "theme": "auto",
        "editor": { "font_size": 14, "tab_size": 4, "word_wrap": false, "line_numbers": true }
    });
    let get = |who: &crate::common::Session| who.read(app.request(Method::GET, "/api/v1/settings"));
    let (status, body) = json_of(get(&ann).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, defaults);

    let mine = json!({
        "theme": "dark",
        "editor": { "font_size": 18, "tab_size": 2, "word_wrap": true, "line_numbers": false }
    });
    let put = ann
        .mutate(app.request(Method::PUT, "/api/v1/settings"))
        .json(&mine)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(put).await, (StatusCode::OK, mine.clone()));
    assert_eq!(json_of(get(&ann).send().await.unwrap()).await.1, mine);
    // Stored durably in MongoDB, not in the session.
    let stored = app
        .db
        .collection::<bson::Document>("user_settings")
        .count_documents(bson::doc! { "_id": ann.user_id() })
        .await
        .unwrap();
    assert_eq!(stored, 1);
    // Bob still has the defaults.
    assert_eq!(json_of(get(&bob).send().await.unwrap()).await.1, defaults);

    for bad in [
        json!({ "theme": "neon", "editor": mine["editor"] }),
        json!({ "theme": "dark", "editor": { "font_size": 9, "tab_size": 2, "word_wrap": true, "line_numbers": true } }),
        json!({ "theme": "dark", "editor": { "font_size": 33, "tab_size": 2, "word_wrap": true, "line_numbers": true } }),
        json!({ "theme": "dark", "editor": { "font_size": 14, "tab_size": 0, "word_wrap": true, "line_numbers": true } }),
        json!({ "theme": "dark", "editor": { "font_size": 14, "tab_size": 9, "word_wrap": true, "line_numbers": true } }),
        json!({ "theme": "dark" }),
    ] {
        let response = ann
            .mutate(app.request(Method::PUT, "/api/v1/settings"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        let answer = json_of(response).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{bad} -> {answer:?}");
        assert!(
            ["invalid_settings", "invalid_request"].contains(&answer.1["code"].as_str().unwrap()),
            "{answer:?}"
        );
    }
    assert_eq!(json_of(get(&ann).send().await.unwrap()).await.1, mine);

    assert_needs_sign_in(&app, Method::GET, "/api/v1/settings").await;
    assert_needs_sign_in(&app, Method::PUT, "/api/v1/settings").await;
    app.cleanup().await;
}
