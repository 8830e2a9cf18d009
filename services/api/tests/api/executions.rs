//! Submitting, reading, listing and cancelling executions.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::events::{EventPayload, EventType};

use crate::common::{TestApp, assert_error, json_of, python};

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_clean_errors() {
    let app = TestApp::start().await;
    let session = app.user("alice").await;
    let token = app.token(&session).await;
    let max_script = app.config.limits.max_script_bytes;

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"script": "x", "lang": "cobol"}),
            StatusCode::BAD_REQUEST,
            "unknown_language",
        ),
        (
            json!({"script": "x", "lang": "python", "lang_version": "2.7"}),
            StatusCode::BAD_REQUEST,
            "unknown_version",
        ),
        (
            json!({"script": "x".repeat(max_script + 1), "lang": "python"}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "script_too_large",
        ),
        (
            json!({"script": "x", "lang": "python", "timeout_seconds": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_timeout",
        ),
        (
            json!({"script": "x", "lang": "python", "timeout_seconds": 301}),
            StatusCode::BAD_REQUEST,
            "invalid_timeout",
        ),
        (
            json!({"script": "x", "lang": "python", "timeout_seconds": -1}),
            StatusCode::BAD_REQUEST,
            "invalid_timeout",
        ),
        (
            json!({"script": "x", "lang": "python", "priority": 10}),
            StatusCode::BAD_REQUEST,
            "invalid_priority",
        ),
        (
            json!({"script": "x", "lang": "python", "stdin": "i".repeat(1024 * 1024 + 1)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "stdin_too_large",
        ),
        (
            json!({"script": 5, "lang": "python"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"lang": "python"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"script": "x", "lang": "python", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let answer = app.submit(&token, body).await;
        assert_error(&answer, status, code);
    }

    let post = |body: &'static str, content_type: &'static str| {
        app.request(Method::POST, "/api/v1/execute")
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_error(
        &json_of(post("{not json", "application/json").await.unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        &json_of(post("{}", "text/plain").await.unwrap()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let oversized = app
        .request(Method::POST, "/api/v1/execute")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(vec![b' '; app.config.api.max_body_bytes + 1])
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(oversized).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let bad_key = app
        .request(Method::POST, "/api/v1/execute")
        .bearer_auth(&token)
        .header("idempotency-key", "has space")
        .json(&python("print(1)"))
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(bad_key).await,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    );

    let unknown_route = app
        .request(Method::GET, "/api/v1/nope")
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(unknown_route).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Nothing above reached MongoDB.
    let stored = app
        .db
        .collection::<bson::Document>("executions")
        .count_documents(bson::doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Runtimes: public, with limits, only languages present on this host.
    let runtimes = json_of(
        app.request(Method::GET, "/api/v1/runtimes")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(runtimes.0, StatusCode::OK);
    let python = runtimes.1["languages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lang"] == "python")
        .unwrap();
    assert_eq!(python["default_version"], "3.11");
    assert_eq!(python["versions"][0]["file_name"], "main.py");
    assert_eq!(runtimes.1["limits"]["max_script_bytes"], max_script);
    assert_eq!(runtimes.1["limits"]["max_timeout_seconds"], 300);

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_stores_and_publishes_execution_requested() {
    let app = TestApp::start().await;
    let session = app.user("alice").await;
    let token = app.token(&session).await;

    let (status, body) = app
        .submit(&token, json!({"script": "print(1)", "lang": "python", "stdin": "in", "timeout_seconds": 7, "priority": 3}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let doc = app
        .db
        .collection::<shared::executions::ExecutionDoc>("executions")
        .find_one(bson::doc! {"_id": &id})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.user_id, session.user_id());
    assert_eq!(doc.status, shared::events::ExecutionStatus::Queued);
    assert_eq!(doc.lang_version, "3.11");
    assert_eq!(doc.timeout_seconds, 7);
    assert_eq!(doc.priority, 3);

    let events = app
        .consume(EventType::ExecutionRequested, 1, Duration::from_millis(500))
        .await;
    assert_eq!(events.len(), 1);
    let (key, event) = &events[0];
    assert_eq!(key, &id);
    assert_eq!(event.aggregate_id, id);
    assert_eq!(event.metadata.service, "api");
    assert_eq!(
        event.metadata.user_id.as_deref(),
        Some(session.user_id().as_str())
    );
    let EventPayload::ExecutionRequested(request) = &event.payload else {
        panic!("unexpected payload {:?}", event.payload);
    };
    assert_eq!(request.script, "print(1)");
    assert_eq!(request.lang, "python");
    assert_eq!(request.lang_version, "3.11");
    assert_eq!(request.stdin.as_deref(), Some("in"));
    assert_eq!(request.priority, 3);
    assert_eq!(request.limits.timeout_seconds, 7);
    assert_eq!(request.limits.memory_mb, app.config.limits.memory_mb);
    assert_eq!(
        request.limits.max_processes,
        app.config.limits.max_processes
    );

    // GET returns the view.
    let view = json_of(
        app.request(Method::GET, &format!("/api/v1/executions/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(view.0, StatusCode::OK);
    assert_eq!(view.1["execution_id"], id.as_str());
    assert_eq!(view.1["status"], "queued");
    assert_eq!(view.1["lang"], "python");

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_returns_the_same_execution_and_publishes_once() {
    let app = TestApp::start().await;
    let session = app.user("alice").await;
    let token = app.token(&session).await;
    let submit = |key: &'static str| {
        app.request(Method::POST, "/api/v1/execute")
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&python("print(1)"))
            .send()
    };

    let first = json_of(submit("key-1").await.unwrap()).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    let again = json_of(submit("key-1").await.unwrap()).await;
    assert_eq!(again.0, StatusCode::OK);
    assert_eq!(again.1["execution_id"], first.1["execution_id"]);

    // Racing requests with one fresh key all get one execution.
    let racing = futures::future::join_all((0..5).map(|_| submit("key-race"))).await;
    let mut ids = Vec::new();
    for response in racing {
        let (status, body) = json_of(response.unwrap()).await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status} {body}"
        );
        ids.push(body["execution_id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // Another user's identical key is independent.
    let bob = app.user("bob").await;
    let bob_token = app.token(&bob).await;
    let bobs = json_of(
        app.request(Method::POST, "/api/v1/execute")
            .bearer_auth(&bob_token)
            .header("idempotency-key", "key-1")
            .json(&python("print(1)"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bobs.0, StatusCode::ACCEPTED);
    assert_ne!(bobs.1["execution_id"], first.1["execution_id"]);

    // An expired key may be reused: it makes a new execution.
    let executions = app.db.collection::<bson::Document>("executions");
    let old =
        bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 25 * 3_600_000);
    executions
        .update_one(
            bson::doc! {"_id": first.1["execution_id"].as_str().unwrap()},
            bson::doc! {"$set": {"created_at": old}},
        )
        .await
        .unwrap();
    let reused = json_of(submit("key-1").await.unwrap()).await;
    assert_eq!(reused.0, StatusCode::ACCEPTED);
    assert_ne!(reused.1["execution_id"], first.1["execution_id"]);

    // Keyless submissions never collide with each other.
    for _ in 0..2 {
        let (status, _) = app.submit(&token, python("print(2)")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }

    // Kafka: key-1 once, key-race once, bob once, the reuse once, two keyless.
    let events = app
        .consume(EventType::ExecutionRequested, 6, Duration::from_secs(2))
        .await;
    assert_eq!(
        events.len(),
        6,
        "{:?}",
        events.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let first_id = first.1["execution_id"].as_str().unwrap();
    assert_eq!(events.iter().filter(|(k, _)| k == first_id).count(), 1);
    assert_eq!(events.iter().filter(|(k, _)| *k == ids[0]).count(), 1);

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ownership_listing_and_cancel() {
    let app = TestApp::start().await;
    let alice = app.user("alice").await;
    let alice_token = app.token(&alice).await;
    let bob = app.user("bob").await;
    let bob_token = app.token(&bob).await;
    let admin = app.login("admin", "admin123").await;
    let admin_token = app.token(&admin).await;

    let mut alice_ids = Vec::new();
    for lang in ["python", "bash", "python", "bash", "python"] {
        let script = if lang == "bash" {
            "echo hi"
        } else {
            "print(1)"
        };
        let (status, body) = app
            .submit(&alice_token, json!({"script": script, "lang": lang}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        alice_ids.push(body["execution_id"].as_str().unwrap().to_owned());
    }
    let (_, bobs) = app.submit(&bob_token, python("print(2)")).await;
    let bob_id = bobs["execution_id"].as_str().unwrap().to_owned();

    let get = |token: &str, path: String| app.request(Method::GET, &path).bearer_auth(token).send();
    // Another user's execution, a malformed id and an unknown id all look the same.
    for path in [
        format!("/api/v1/executions/{bob_id}"),
        "/api/v1/executions/not-a-uuid".to_owned(),
        format!("/api/v1/executions/{}", uuid::Uuid::now_v7()),
    ] {
        assert_error(
            &json_of(get(&alice_token, path).await.unwrap()).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let by_admin = json_of(
        get(&admin_token, format!("/api/v1/executions/{bob_id}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(by_admin.0, StatusCode::OK);
    let cancel_other = app
        .request(Method::POST, &format!("/api/v1/executions/{bob_id}/cancel"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(cancel_other).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Pages of 2, newest first, no gaps or repeats, no output fields.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/executions?limit=2".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = json_of(get(&alice_token, path).await.unwrap()).await;
        assert_eq!(page.0, StatusCode::OK, "{}", page.1);
        for item in page.1["items"].as_array().unwrap() {
            assert!(item.get("stdout").is_none() && item.get("script").is_none());
            seen.push(item["execution_id"].as_str().unwrap().to_owned());
        }
        match page.1["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut newest_first = alice_ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let count = |body: &Value| body["items"].as_array().unwrap().len();
    let bash = json_of(
        get(&alice_token, "/api/v1/executions?lang=bash".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count(&bash.1), 2);
    let queued = json_of(
        get(&alice_token, "/api/v1/executions?status=queued".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count(&queued.1), 5);

    // A finished execution (as result-processor would write it) filters by status and cannot be
    // cancelled.
    app.db
        .collection::<bson::Document>("executions")
        .update_one(
            bson::doc! {"_id": &alice_ids[0]},
            bson::doc! {"$set": {"status": "completed", "exit_code": 0, "finished_at": bson::DateTime::now()}},
        )
        .await
        .unwrap();
    let completed = json_of(
        get(&alice_token, "/api/v1/executions?status=completed".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count(&completed.1), 1);
    assert_eq!(
        completed.1["items"][0]["execution_id"],
        alice_ids[0].as_str()
    );
    let finished = app
        .request(
            Method::POST,
            &format!("/api/v1/executions/{}/cancel", alice_ids[0]),
        )
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(finished).await,
        StatusCode::CONFLICT,
        "already_finished",
    );

    for (path, code) in [
        ("/api/v1/executions?status=bogus", "invalid_status"),
        ("/api/v1/executions?limit=0", "invalid_limit"),
        ("/api/v1/executions?limit=101", "invalid_limit"),
        ("/api/v1/executions?cursor=xyz", "invalid_cursor"),
    ] {
        assert_error(
            &json_of(get(&alice_token, path.into()).await.unwrap()).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    assert_error(
        &json_of(
            get(&alice_token, "/api/v1/executions?all=true".into())
                .await
                .unwrap(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let everyone = json_of(
        get(&admin_token, "/api/v1/executions?all=true".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count(&everyone.1), 6);
    let own = json_of(
        get(&admin_token, "/api/v1/executions".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count(&own.1), 0);

    // Cancel publishes execution_cancel_requested.
    let cancel = json_of(
        app.request(
            Method::POST,
            &format!("/api/v1/executions/{}/cancel", alice_ids[1]),
        )
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(cancel.0, StatusCode::ACCEPTED, "{}", cancel.1);
    assert_eq!(cancel.1["execution_id"], alice_ids[1].as_str());
    let events = app
        .consume(
            EventType::ExecutionCancelRequested,
            1,
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, alice_ids[1]);
    let EventPayload::ExecutionCancelRequested(payload) = &events[0].1.payload else {
        panic!("unexpected payload");
    };
    assert_eq!(payload.requested_by, alice.user_id());

    app.cleanup().await;
}
