//! Server-Sent Events, with result-processor simulated by XADDs to the execution's stream.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use shared::executions::stream;

use crate::common::{TestApp, assert_error, json_of, python};

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// Reads a `text/event-stream` response event by event (also used by the notification tests).
pub struct SseReader {
    response: Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (skipping comments), or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: String::new(),
                    id: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    let field = |prefix: &str| {
                        line.strip_prefix(prefix)
                            .map(|v| v.strip_prefix(' ').unwrap_or(v).to_owned())
                    };
                    if let Some(v) = field("event:") {
                        event.event = v;
                    } else if let Some(v) = field("id:") {
                        event.id = v;
                    } else if let Some(v) = field("data:") {
                        data.push_str(&v);
                    }
                }
                if !event.event.is_empty() {
                    event.data = serde_json::from_str(&data).unwrap();
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.response.chunk())
                .await
                .expect("no SSE data within 15 s")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn xadd(app: &TestApp, id: &str, kind: &str, data: Value) -> String {
    let key = stream::key(&app.config.redis.key_prefix, id);
    let mut redis = app.redis.clone();
    redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg(stream::TYPE_FIELD)
        .arg(kind)
        .arg(stream::DATA_FIELD)
        .arg(data.to_string())
        .query_async(&mut redis)
        .await
        .unwrap()
}

async fn open(app: &TestApp, token: &str, id: &str, last_event_id: Option<&str>) -> Response {
    let mut request = app
        .request(Method::GET, &format!("/api/v1/executions/{id}/events"))
        .bearer_auth(token);
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn live_stream_resume_and_close_after_result() {
    let app = TestApp::start().await;
    let session = app.user("alice").await;
    let token = app.token(&session).await;
    let (_, body) = app.submit(&token, python("print(1)")).await;
    let id = body["execution_id"].as_str().unwrap().to_owned();

    let mut events = SseReader::new(open(&app, &token, &id, None).await);
    let snapshot = events.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.id, "0-0");
    assert_eq!(snapshot.data["execution_id"], id.as_str());
    assert_eq!(snapshot.data["status"], "queued");

    let status = json!({"status": "running", "event_type": "execution_started", "at": "2026-01-01T00:00:00Z"});
    let status_id = xadd(&app, &id, "status", status.clone()).await;
    let out1 = json!({"stream": "stdout", "seq": 0, "data": "line 1\n"});
    let out1_id = xadd(&app, &id, "output", out1.clone()).await;
    let out2 = json!({"stream": "stdout", "seq": 1, "data": "line 2\n"});
    let out2_id = xadd(&app, &id, "output", out2.clone()).await;

    let expected = [
        ("status", &status_id, &status),
        ("output", &out1_id, &out1),
        ("output", &out2_id, &out2),
    ];
    for (kind, entry_id, data) in expected {
        let event = events.next().await.unwrap();
        assert_eq!(
            (event.event.as_str(), &event.id, &event.data),
            (kind, entry_id, data)
        );
    }

    let mut view = snapshot.data.clone();
    view["status"] = json!("completed");
    view["stdout"] = json!("line 1\nline 2\n");
    view["exit_code"] = json!(0);
    let result_id = xadd(&app, &id, "result", view.clone()).await;
    let result = events.next().await.unwrap();
    assert_eq!(
        (result.event.as_str(), &result.id, &result.data),
        ("result", &result_id, &view)
    );
    // The server closes after the result.
    assert_eq!(events.next().await, None);

    // Resuming after the first output replays what followed, without snapshot or gap.
    let mut resumed = SseReader::new(open(&app, &token, &id, Some(&out1_id)).await);
    let next = resumed.next().await.unwrap();
    assert_eq!((next.event.as_str(), &next.id), ("output", &out2_id));
    let next = resumed.next().await.unwrap();
    assert_eq!((next.event.as_str(), &next.id), ("result", &result_id));
    assert_eq!(resumed.next().await, None);

    // Another user cannot follow it; a bad Last-Event-ID is refused.
    let bob = app.user("bob").await;
    let bob_token = app.token(&bob).await;
    assert_error(
        &json_of(open(&app, &bob_token, &id, None).await).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &json_of(open(&app, &token, &id, Some("garbage")).await).await,
        StatusCode::BAD_REQUEST,
        "invalid_last_event_id",
    );

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_execution_without_stream_gets_the_result_from_mongo_at_once() {
    let app = TestApp::start().await;
    let session = app.user("alice").await;
    let token = app.token(&session).await;
    let (_, body) = app.submit(&token, python("print(1)")).await;
    let id = body["execution_id"].as_str().unwrap().to_owned();
    // What result-processor stores, with no stream left in Redis (e.g. it expired).
    app.db
        .collection::<bson::Document>("executions")
        .update_one(
            bson::doc! {"_id": &id},
            bson::doc! {"$set": {"status": "completed", "stdout": "1\n", "exit_code": 0, "finished_at": bson::DateTime::now()}},
        )
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let mut events = SseReader::new(open(&app, &token, &id, None).await);
    let snapshot = events.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    let result = events.next().await.unwrap();
    assert_eq!(result.event, "result");
    assert_eq!(result.id, "mongo");
    assert_eq!(result.data["status"], "completed");
    assert_eq!(result.data["stdout"], "1\n");
    assert_eq!(events.next().await, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_per_user_are_limited() {
    let app = TestApp::start().await;
    let session = app.user("alice").await;
    let token = app.token(&session).await;
    let (_, body) = app.submit(&token, python("print(1)")).await;
    let id = body["execution_id"].as_str().unwrap().to_owned();

    let mut open_streams = Vec::new();
    for _ in 0..app.config.rate_limit.max_streams_per_user {
        let mut reader = SseReader::new(open(&app, &token, &id, None).await);
        assert_eq!(reader.next().await.unwrap().event, "snapshot");
        open_streams.push(reader);
    }
    assert_error(
        &json_of(open(&app, &token, &id, None).await).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
    );
    // Closing one frees a slot.
    drop(open_streams.pop());
    let mut freed = false;
    for _ in 0..50 {
        let response = open(&app, &token, &id, None).await;
        if response.status() == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot of a closed stream was not freed");

    app.cleanup().await;
}
