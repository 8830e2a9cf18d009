//! An execution's event history and the admin replay API. Events are put into the event store
//! (`events`) in the shape event-replay writes; the replay engine itself is tested in
//! services/event-replay/tests/replay.rs and end to end in tests/system.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::{Event, EventMetadata, EventPayload, ExecutionQueued, ExecutionScheduled};

use crate::common::{TestApp, assert_error, json_of, python};

/// Stores `event` as event-replay's event store does.
async fn store(app: &TestApp, event: &Event) {
    let document = bson::doc! {
        "_id": event.event_id.to_string(),
        "event_type": event.event_type().as_str(),
        "aggregate_id": &event.aggregate_id,
        "user_id": event.metadata.user_id.clone(),
        "occurred_at": bson::DateTime::from_chrono(event.occurred_at),
        "event": bson::to_document(event).unwrap(),
    };
    app.db
        .collection::<bson::Document>("events")
        .insert_one(document)
        .await
        .unwrap();
}

/// Three events of `execution_id`, 10 ms apart, stored newest first (the order must come from
/// the query, not from insertion).
async fn store_history(app: &TestApp, execution_id: &str, user_id: &str) -> Vec<Event> {
    let base = chrono::Utc::now() - chrono::Duration::minutes(1);
    let payloads = [
        EventPayload::ExecutionQueued(ExecutionQueued { position: Some(1) }),
        EventPayload::ExecutionScheduled(ExecutionScheduled {
            saga_id: "saga-1".into(),
        }),
        EventPayload::ExecutionQueued(ExecutionQueued { position: None }),
    ];
    let events: Vec<Event> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut event = Event::new(
                execution_id,
                payload,
                EventMetadata::new("test", Some(user_id.into())),
            );
            event.occurred_at = base + chrono::Duration::milliseconds(10 * i as i64);
            event
        })
        .collect();
    for event in events.iter().rev() {
        store(app, event).await;
    }
    events
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_pages_through_an_executions_events_and_others_get_404() {
    let app = TestApp::start().await;
    let alice = app.user("alice").await;
    let alice_token = app.token(&alice).await;
    let bob = app.user("bob").await;
    let bob_token = app.token(&bob).await;
    let admin = app.login("admin", "admin123").await;
    let admin_token = app.token(&admin).await;
    let (status, accepted) = app.submit(&alice_token, python("print(1)")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    let events = store_history(&app, &execution_id, &alice.user_id()).await;
    store_history(&app, "another-execution", &alice.user_id()).await;
    let expected: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();

    let get = |token: &str, query: String| {
        app.request(
            Method::GET,
            &format!("/api/v1/executions/{execution_id}/events/history{query}"),
        )
        .bearer_auth(token.to_owned())
        .send()
    };
    let first = json_of(get(&alice_token, "?limit=2".into()).await.unwrap()).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(ids(&first.1["items"]), expected[..2]);
    assert_eq!(first.1["items"][1]["event_type"], "execution_scheduled");
    assert_eq!(first.1["items"][1]["payload"]["saga_id"], "saga-1");
    let cursor = first.1["next_cursor"].as_str().unwrap().to_owned();
    let second = json_of(
        get(&alice_token, format!("?limit=2&cursor={cursor}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(&second.1["items"]), expected[2..]);
    assert!(second.1["next_cursor"].is_null());

    let by_admin = json_of(get(&admin_token, String::new()).await.unwrap()).await;
    assert_eq!(ids(&by_admin.1["items"]), expected);
    let by_bob = json_of(get(&bob_token, String::new()).await.unwrap()).await;
    assert_error(&by_bob, StatusCode::NOT_FOUND, "not_found");
    let bad_cursor = json_of(
        get(&alice_token, format!("?cursor={}", uuid::Uuid::now_v7()))
            .await
            .unwrap(),
    )
    .await;
    assert_error(&bad_cursor, StatusCode::BAD_REQUEST, "invalid_cursor");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_dry_run_create_and_steer_replay_sessions_and_nobody_else_can() {
    let app = TestApp::start().await;
    let alice = app.user("alice").await;
    let alice_token = app.token(&alice).await;
    let admin = app.login("admin", "admin123").await;
    let admin_token = app.token(&admin).await;
    let events = store_history(&app, "exec-1", &alice.user_id()).await;
    store_history(&app, "exec-2", &alice.user_id()).await;
    let call = |token: &str, method: Method, path: &str, body: Option<Value>| {
        let mut request = app.request(method, path).bearer_auth(token.to_owned());
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { json_of(request.send().await.unwrap()).await }
    };
    let root = "/api/v1/admin/replay";
    let filter = json!({ "execution_ids": ["exec-1"] });

    for (method, path) in [
        (Method::GET, root.to_owned()),
        (Method::POST, root.to_owned()),
        (Method::GET, format!("{root}/any")),
        (Method::POST, format!("{root}/any/start")),
        (Method::GET, format!("{root}/any/stream")),
    ] {
        let body = (method == Method::POST).then(|| json!({ "filter": filter }));
        let answer = call(&alice_token, method, &path, body).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    }

    let dry = call(
        &admin_token,
        Method::POST,
        root,
        Some(json!({ "filter": filter, "dry_run": true, "preview_limit": 2 })),
    )
    .await;
    assert_eq!(dry.0, StatusCode::OK, "{}", dry.1);
    assert_eq!(dry.1["count"], 3);
    let preview: Vec<String> = ids(&dry.1["preview"]);
    assert_eq!(
        preview,
        [
            events[0].event_id.to_string(),
            events[1].event_id.to_string()
        ]
    );
    assert_eq!(
        app.db
            .collection::<bson::Document>("replay_sessions")
            .count_documents(bson::doc! {})
            .await
            .unwrap(),
        0,
        "a dry run stored a session"
    );
    for bad in [
        json!({ "filter": {} }),
        json!({ "filter": filter, "speed": -1 }),
        json!({ "filter": filter, "allow_side_effects": true }),
        json!({ "filter": { "event_types": ["no_such_type"] } }),
    ] {
        let answer = call(&admin_token, Method::POST, root, Some(bad.clone())).await;
        assert!(answer.0.is_client_error(), "{bad} gave {answer:?}");
    }

    let created = call(
        &admin_token,
        Method::POST,
        root,
        Some(json!({ "filter": filter, "speed": 0 })),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    assert_eq!(created.1["state"], "created");
    assert_eq!(created.1["target"], "session_topic");
    assert_eq!(created.1["progress"]["total"], 3);
    let id = created.1["id"].as_str().unwrap().to_owned();
    let session = format!("{root}/{id}");
    for (action, state) in [
        ("start", "running"),
        ("pause", "paused"),
        ("resume", "running"),
    ] {
        let answer = call(
            &admin_token,
            Method::POST,
            &format!("{session}/{action}"),
            None,
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK, "{action}: {}", answer.1);
        assert_eq!(answer.1["state"], state);
    }
    let again = call(
        &admin_token,
        Method::POST,
        &format!("{session}/start"),
        None,
    )
    .await;
    assert_error(&again, StatusCode::CONFLICT, "invalid_state");
    let cancelled = call(
        &admin_token,
        Method::POST,
        &format!("{session}/cancel"),
        None,
    )
    .await;
    assert_eq!(cancelled.1["state"], "cancelled");
    let resume = call(
        &admin_token,
        Method::POST,
        &format!("{session}/resume"),
        None,
    )
    .await;
    assert_error(&resume, StatusCode::CONFLICT, "invalid_state");

    let shown = call(&admin_token, Method::GET, &session, None).await;
    assert_eq!(shown.1["state"], "cancelled");
    assert!(shown.1["started_at"].is_string());
    let listed = call(
        &admin_token,
        Method::GET,
        &format!("{root}?state=cancelled"),
        None,
    )
    .await;
    assert_eq!(listed.1["items"][0]["id"], id.as_str());
    let none = call(
        &admin_token,
        Method::GET,
        &format!("{root}?state=running"),
        None,
    )
    .await;
    assert_eq!(none.1["items"], json!([]));
    let missing = call(&admin_token, Method::GET, &format!("{root}/nope"), None).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");

    // The stream of a finished session sends its state once and ends.
    let stream = app
        .request(Method::GET, &format!("{session}/stream"))
        .bearer_auth(&admin_token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let body = stream.text().await.unwrap();
    assert_eq!(body.matches("event: progress").count(), 1, "{body}");
    assert!(body.contains("\"state\":\"cancelled\""), "{body}");
    app.cleanup().await;
}
