//! The admin DLQ API. Messages are put into `dlq_messages` in the shape dlq-processor stores
//! them; the processor itself (storing, scheduling, re-publishing) is tested in
//! services/dlq-processor/tests/dlq.rs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::dlq::{DlqMessage, DlqStatus, DlqStore, HistoryAction, HistoryEntry, binary};
use shared::events::{EventPayload, EventType};

use crate::common::{TestApp, assert_error, assert_needs_sign_in, json_of};

/// A message as dlq-processor stores it, first failed `minutes_ago`.
fn message(topic: &str, event_type: &str, status: DlqStatus, minutes_ago: i64) -> DlqMessage {
    let failed =
        bson::DateTime::from_chrono(chrono::Utc::now() - chrono::Duration::minutes(minutes_ago));
    let mut entry = HistoryEntry::new(HistoryAction::Failed, 0);
    entry.error_class = Some("undecodable_event".into());
    DlqMessage {
        id: uuid::Uuid::now_v7().to_string(),
        status,
        original_topic: topic.into(),
        original_partition: 0,
        original_offset: minutes_ago,
        key: Some(binary(b"exec-1")),
        payload: Some(binary(b"{not json")),
        headers: vec![shared::dlq::StoredHeader {
            name: "x-error-class".into(),
            value: binary(b"undecodable_event"),
        }],
        event_type: Some(event_type.into()),
        policy: "results".into(),
        consumer_group: "result-processor".into(),
        error_class: "undecodable_event".into(),
        error_kind: "poison".into(),
        error_message: "expected value".into(),
        first_failed_at: failed,
        received_at: failed,
        updated_at: failed,
        attempts: 0,
        next_attempt_at: None,
        expires_at: Some(bson::DateTime::now()),
        claim: None,
        discard_reason: None,
        sources: vec![format!("dlq:0:{minutes_ago}")],
        history: vec![entry],
        version: 0,
    }
}

struct Admin<'a> {
    app: &'a TestApp,
    token: String,
}

impl Admin<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.app.request(method, path).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_of(request.send().await.unwrap()).await
    }

    async fn ids(&self, query: &str) -> Vec<String> {
        let (status, page) = self
            .call(Method::GET, &format!("/api/v1/admin/dlq{query}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_filter_page_and_inspect_dead_lettered_messages() {
    let app = TestApp::start().await;
    let store = DlqStore::new(&app.db);
    store.ensure_indexes().await.unwrap();
    let results = app.topic(EventType::ResultStored);
    let commands = app.topic(EventType::CreatePodCommand);
    let old = message(&results, "result_stored", DlqStatus::Parked, 120);
    let parked = message(&results, "result_stored", DlqStatus::Parked, 30);
    let command = message(&commands, "create_pod_command", DlqStatus::Pending, 10);
    for m in [&old, &parked, &command] {
        store.collection.insert_one(m).await.unwrap();
    }
    let admin = app.login("admin", "admin123").await;
    let admin = Admin {
        token: app.token(&admin).await,
        app: &app,
    };

    // Newest first; every filter narrows.
    assert_eq!(
        admin.ids("").await,
        vec![command.id.clone(), parked.id.clone(), old.id.clone()]
    );
    assert_eq!(admin.ids("?status=pending").await, vec![command.id.clone()]);
    assert_eq!(
        admin.ids(&format!("?topic={results}")).await,
        vec![parked.id.clone(), old.id.clone()]
    );
    assert_eq!(
        admin.ids("?event_type=create_pod_command").await,
        vec![command.id.clone()]
    );
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let quarter_ago = (chrono::Utc::now() - chrono::Duration::minutes(15)).to_rfc3339();
    let range = format!(
        "?from={}&to={}",
        urlencode(&hour_ago),
        urlencode(&quarter_ago)
    );
    assert_eq!(admin.ids(&range).await, vec![parked.id.clone()]);

    // Cursor pages.
    let (_, first) = admin
        .call(Method::GET, "/api/v1/admin/dlq?limit=2", None)
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert_eq!(
        admin.ids(&format!("?limit=2&cursor={cursor}")).await,
        vec![old.id.clone()]
    );

    // One message in full: payload, key and headers as text and base64, its history.
    let (status, shown) = admin
        .call(
            Method::GET,
            &format!("/api/v1/admin/dlq/{}", parked.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["payload_text"], "{not json");
    assert_eq!(shown["payload_base64"], "e25vdCBqc29u");
    assert_eq!(shown["key"], "exec-1");
    assert_eq!(shown["headers"][0]["name"], "x-error-class");
    assert_eq!(shown["headers"][0]["value"], "undecodable_event");
    assert_eq!(shown["history"][0]["action"], "failed");
    assert_eq!(shown["status"], "parked");

    // Bad input answers {code, message}.
    assert_error(
        &admin
            .call(Method::GET, "/api/v1/admin/dlq?status=lost", None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_status",
    );
    assert_error(
        &admin
            .call(Method::GET, "/api/v1/admin/dlq?from=yesterday", None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_time",
    );
    assert_error(
        &admin
            .call(Method::GET, "/api/v1/admin/dlq/no-such-id", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_makes_a_message_due_and_discard_keeps_the_reason() {
    let app = TestApp::start().await;
    let discarded_topic = app.topic(EventType::DlqMessageDiscarded);
    shared::kafka::ensure_topics_named(&app.config.kafka, std::slice::from_ref(&discarded_topic))
        .await
        .unwrap();
    let store = DlqStore::new(&app.db);
    let results = app.topic(EventType::ResultStored);
    let parked = message(&results, "result_stored", DlqStatus::Parked, 5);
    let doomed = message(&results, "result_stored", DlqStatus::Pending, 4);
    for m in [&parked, &doomed] {
        store.collection.insert_one(m).await.unwrap();
    }
    let admin = app.login("admin", "admin123").await;
    let admin = Admin {
        token: app.token(&admin).await,
        app: &app,
    };

    // Retry now: pending, due now, no age limit; the admin is in the history.
    let before = chrono::Utc::now();
    let (status, retried) = admin
        .call(
            Method::POST,
            &format!("/api/v1/admin/dlq/{}/retry", parked.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["expires_at"], Value::Null);
    let due: chrono::DateTime<chrono::Utc> = retried["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(due >= before - chrono::Duration::seconds(1) && due <= chrono::Utc::now());
    let last = &retried["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "retry_requested");
    assert_eq!(last["by"], "admin");

    // Discard: the reason is kept, announced, and the message can no longer be retried.
    let path = format!("/api/v1/admin/dlq/{}/discard", doomed.id);
    assert_error(
        &admin
            .call(Method::POST, &path, Some(json!({ "reason": "  " })))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_reason",
    );
    let (status, discarded) = admin
        .call(
            Method::POST,
            &path,
            Some(json!({ "reason": "sent by a client we retired" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{discarded}");
    assert_eq!(discarded["status"], "discarded");
    assert_eq!(discarded["discard_reason"], "sent by a client we retired");
    let stored = store.get(&doomed.id).await.unwrap().unwrap();
    assert_eq!(
        stored.discard_reason.as_deref(),
        Some("sent by a client we retired")
    );
    let events = app
        .consume(
            EventType::DlqMessageDiscarded,
            1,
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, doomed.id);
    match &events[0].1.payload {
        EventPayload::DlqMessageDiscarded(r) => {
            assert_eq!(r.reason.as_deref(), Some("sent by a client we retired"));
            assert_eq!(r.original_topic, results);
        }
        other => panic!("unexpected {other:?}"),
    }
    for action in ["retry", "discard"] {
        assert_error(
            &admin
                .call(
                    Method::POST,
                    &format!("/api/v1/admin/dlq/{}/{action}", doomed.id),
                    Some(json!({ "reason": "again" })),
                )
                .await,
            StatusCode::CONFLICT,
            "invalid_status",
        );
    }
    assert_error(
        &admin
            .call(Method::POST, "/api/v1/admin/dlq/nope/retry", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_reach_the_dlq() {
    let app = TestApp::start().await;
    let store = DlqStore::new(&app.db);
    let m = message(
        &app.topic(EventType::ResultStored),
        "result_stored",
        DlqStatus::Parked,
        1,
    );
    store.collection.insert_one(&m).await.unwrap();
    let alice = app.user("alice").await;
    let alice = Admin {
        token: app.token(&alice).await,
        app: &app,
    };
    let routes = [
        (Method::GET, "/api/v1/admin/dlq".to_owned(), None),
        (Method::GET, format!("/api/v1/admin/dlq/{}", m.id), None),
        (
            Method::POST,
            format!("/api/v1/admin/dlq/{}/retry", m.id),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/admin/dlq/{}/discard", m.id),
            Some(json!({ "reason": "mine now" })),
        ),
    ];
    for (method, path, body) in routes {
        assert_error(
            &alice.call(method.clone(), &path, body).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_needs_sign_in(&app, method, &path).await;
    }
    // Nothing changed.
    assert_eq!(
        store.get(&m.id).await.unwrap().unwrap().status,
        DlqStatus::Parked
    );
    app.cleanup().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
