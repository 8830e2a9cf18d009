//! Notifications: list, read, read-all, delete, owner isolation, and the SSE stream fed by the
//! user's Redis stream (written here the way result-processor writes it).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::ExecutionStatus;
use shared::notifications::{
    NOTIFICATIONS_COLLECTION, Notification, NotificationDoc, stream as user_stream,
};

use crate::common::{Session, TestApp, assert_error, assert_needs_sign_in, json_of};
use crate::sse::SseReader;

/// Stores a notification for `user_id` and appends it to the user's stream, as
/// result-processor does; returns the stored document.
async fn notify(app: &TestApp, user_id: &str, status: ExecutionStatus) -> NotificationDoc {
    let doc = NotificationDoc {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        kind: "execution_finished".into(),
        title: "Execution completed".into(),
        body: "python 3.11 exited with code 0".into(),
        execution_id: uuid::Uuid::now_v7().to_string(),
        status,
        read: false,
        created_at: bson::DateTime::now().to_chrono(),
    };
    app.db
        .collection::<NotificationDoc>(NOTIFICATIONS_COLLECTION)
        .insert_one(&doc)
        .await
        .unwrap();
    let data = serde_json::to_string(&Notification::from(doc.clone())).unwrap();
    let mut redis = app.redis.clone();
    let _id: String = redis::cmd("XADD")
        .arg(user_stream::key(&app.config.redis.key_prefix, user_id))
        .arg("*")
        .arg(user_stream::DATA_FIELD)
        .arg(data)
        .query_async(&mut redis)
        .await
        .unwrap();
    doc
}

async fn call(app: &TestApp, who: &Session, method: Method, path: &str) -> (StatusCode, Value) {
    json_of(who.mutate(app.request(method, path)).send().await.unwrap()).await
}

#[tokio::test]
async fn list_mark_read_and_delete_own_notifications_only() {
    let app = TestApp::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    let first = notify(&app, &ann.user_id(), ExecutionStatus::Completed).await;
    let second = notify(&app, &ann.user_id(), ExecutionStatus::Failed).await;
    let third = notify(&app, &ann.user_id(), ExecutionStatus::Timeout).await;
    notify(&app, &bob.user_id(), ExecutionStatus::Completed).await;

    let (status, page) = call(&app, &ann, Method::GET, "/api/v1/notifications?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["unread_count"], 3);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [third.id.as_str(), second.id.as_str()]);
    assert_eq!(page["items"][0]["status"], "timeout");
    assert_eq!(page["items"][0]["read"], false);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        &ann,
        Method::GET,
        &format!("/api/v1/notifications?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["items"][0]["id"], first.id.as_str());
    assert_eq!(rest["next_cursor"], Value::Null);

    let (status, _) = call(
        &app,
        &ann,
        Method::POST,
        &format!("/api/v1/notifications/{}/read", second.id),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, unread) = call(
        &app,
        &ann,
        Method::GET,
        "/api/v1/notifications?unread_only=true",
    )
    .await;
    assert_eq!(unread["unread_count"], 2);
    assert_eq!(unread["items"].as_array().unwrap().len(), 2);
    assert!(
        unread["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != second.id.as_str())
    );

    // Bob can neither read, mark nor delete Ann's notifications, and his own stay unread.
    let (_, bobs) = call(&app, &bob, Method::GET, "/api/v1/notifications").await;
    assert_eq!(bobs["items"].as_array().unwrap().len(), 1);
    for (method, path) in [
        (
            Method::POST,
            format!("/api/v1/notifications/{}/read", first.id),
        ),
        (
            Method::DELETE,
            format!("/api/v1/notifications/{}", first.id),
        ),
    ] {
        assert_error(
            &call(&app, &bob, method, &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let (status, _) = call(&app, &ann, Method::POST, "/api/v1/notifications/read-all").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, all) = call(&app, &ann, Method::GET, "/api/v1/notifications").await;
    assert_eq!(all["unread_count"], 0);
    let (_, bobs) = call(&app, &bob, Method::GET, "/api/v1/notifications").await;
    assert_eq!(bobs["unread_count"], 1);

    let (status, _) = call(
        &app,
        &ann,
        Method::DELETE,
        &format!("/api/v1/notifications/{}", first.id),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let again = call(
        &app,
        &ann,
        Method::DELETE,
        &format!("/api/v1/notifications/{}", first.id),
    )
    .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    let bad = call(
        &app,
        &ann,
        Method::GET,
        "/api/v1/notifications?unread_only=maybe",
    )
    .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_query");
    app.cleanup().await;
}

#[tokio::test]
async fn the_stream_sends_the_unread_count_then_new_notifications_and_resumes() {
    let app = TestApp::start().await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    // Already there before the stream opens: counted, not re-sent.
    notify(&app, &ann.user_id(), ExecutionStatus::Completed).await;

    let open = |last: Option<&str>| {
        let mut request = ann.read(app.request(Method::GET, "/api/v1/notifications/stream"));
        if let Some(id) = last {
            request = request.header("last-event-id", id);
        }
        request.send()
    };
    let mut stream = SseReader::new(open(None).await.unwrap());
    let unread = stream.next().await.unwrap();
    assert_eq!(
        (unread.event.as_str(), unread.data.clone()),
        ("unread", json!({ "count": 1 }))
    );

    notify(&app, &bob.user_id(), ExecutionStatus::Completed).await;
    let sent = notify(&app, &ann.user_id(), ExecutionStatus::Cancelled).await;
    let event = stream.next().await.unwrap();
    assert_eq!(event.event, "notification");
    assert_eq!(event.data["id"], sent.id.as_str());
    assert_eq!(event.data["status"], "cancelled");
    assert_eq!(event.data["execution_id"], sent.execution_id.as_str());
    assert!(!event.id.is_empty());
    drop(stream);

    // Missed while disconnected: delivered on resume, and nothing before it.
    let missed = notify(&app, &ann.user_id(), ExecutionStatus::Failed).await;
    let mut resumed = SseReader::new(open(Some(&event.id)).await.unwrap());
    let unread = resumed.next().await.unwrap();
    assert_eq!(
        (unread.event.as_str(), unread.data.clone()),
        ("unread", json!({ "count": 3 }))
    );
    let event = resumed.next().await.unwrap();
    assert_eq!(event.data["id"], missed.id.as_str());

    let bad = open(Some("garbage")).await.unwrap();
    assert_error(
        &json_of(bad).await,
        StatusCode::BAD_REQUEST,
        "invalid_last_event_id",
    );
    assert_needs_sign_in(&app, Method::GET, "/api/v1/notifications/stream").await;
    assert_needs_sign_in(&app, Method::GET, "/api/v1/notifications").await;
    app.cleanup().await;
}

#[tokio::test]
async fn open_streams_are_capped_per_user() {
    let max = 2;
    let app = TestApp::start_with(|c| c.rate_limit.max_streams_per_user = max).await;
    let ann = app.user("ann").await;
    let mut open = Vec::new();
    for _ in 0..max {
        let response = ann
            .read(app.request(Method::GET, "/api/v1/notifications/stream"))
            .send()
            .await
            .unwrap();
        let mut reader = SseReader::new(response);
        assert_eq!(reader.next().await.unwrap().event, "unread");
        open.push(reader);
    }
    let refused = ann
        .read(app.request(Method::GET, "/api/v1/notifications/stream"))
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(refused).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
    );
    app.cleanup().await;
}
