//! Rate limits in Redis: 429 with its headers, per-user buckets, persistent overrides, the
//! login lockout, and forwarded addresses believed only from trusted proxies.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::json;
use shared::config::{Config, RateRule};

use crate::common::{Session, TestApp, assert_error, json_of};

const SETTINGS: &str = "GET /api/v1/settings";
const RUNTIMES: &str = "GET /api/v1/runtimes";

fn limit(config: &mut Config, route: &str, requests: u32) {
    config
        .rate_limit
        .routes
        .insert(route.to_owned(), RateRule::new(requests, 60));
}

fn header(response: &Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn settings(app: &TestApp, who: &Session) -> Response {
    who.read(app.request(Method::GET, "/api/v1/settings"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_spent_budget_answers_429_with_retry_after_and_budget_headers() {
    let app = TestApp::start_with(|c| limit(c, SETTINGS, 3)).await;
    let ann = app.user("ann").await;
    let bob = app.user("bob").await;
    for remaining in [2, 1, 0] {
        let response = settings(&app, &ann).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some(3));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some(remaining));
        let reset = header(&response, "x-ratelimit-reset").unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
        assert!(response.headers().get("retry-after").is_none());
    }
    let refused = settings(&app, &ann).await;
    assert_eq!(header(&refused, "x-ratelimit-limit"), Some(3));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some(0));
    let retry = header(&refused, "retry-after").unwrap();
    // One request frees up every 60 / 3 = 20 s.
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert!(header(&refused, "x-ratelimit-reset").unwrap() >= retry);
    assert_error(
        &json_of(refused).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    // Buckets are per user and per route.
    assert_eq!(settings(&app, &bob).await.status(), StatusCode::OK);
    let other = ann
        .read(app.request(Method::GET, "/api/v1/scripts"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(
        header(&other, "x-ratelimit-limit"),
        Some(app.config.rate_limit.default.requests.into())
    );
    app.cleanup().await;
}

#[tokio::test]
async fn overrides_are_admin_only_persist_and_apply() {
    let app = TestApp::start_with(|c| limit(c, SETTINGS, 3)).await;
    let ann = app.user("ann").await;
    let admin = app.login("admin", "admin123").await;
    let path = format!("/api/v1/admin/rate-limits/{}", ann.user_id());
    let body = json!({
        "multiplier": 2.0,
        "routes": { SETTINGS: { "requests": 5, "per_seconds": 60 } },
        "note": "load test"
    });

    let denied = ann
        .mutate(app.request(Method::PUT, &path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(&json_of(denied).await, StatusCode::FORBIDDEN, "forbidden");
    let missing = admin
        .read(app.request(Method::GET, &path))
        .send()
        .await
        .unwrap();
    assert_error(&json_of(missing).await, StatusCode::NOT_FOUND, "not_found");
    let bad = admin
        .mutate(app.request(Method::PUT, &path))
        .json(&json!({ "multiplier": 0 }))
        .send()
        .await
        .unwrap();
    assert_error(
        &json_of(bad).await,
        StatusCode::BAD_REQUEST,
        "invalid_override",
    );

    let put = admin
        .mutate(app.request(Method::PUT, &path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, stored) = json_of(put).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["user_id"], ann.user_id().as_str());
    assert_eq!(stored["routes"][SETTINGS]["requests"], 5);
    assert_eq!(stored["updated_by"], admin.user_id().as_str());

    // Applies at once: the route's own rule, and the multiplier elsewhere.
    let response = settings(&app, &ann).await;
    assert_eq!(header(&response, "x-ratelimit-limit"), Some(5));
    let scripts = ann
        .read(app.request(Method::GET, "/api/v1/scripts"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&scripts, "x-ratelimit-limit"),
        Some(u64::from(app.config.rate_limit.default.requests) * 2)
    );

    // Persisted: a fresh replica (no cache) reads the same override from MongoDB.
    let fresh = api::ratelimit::Overrides::new(&app.db);
    let found = fresh.for_user(&ann.user_id()).await.unwrap().unwrap();
    assert_eq!(found.routes[SETTINGS], RateRule::new(5, 60));
    let (status, read) = json_of(
        admin
            .read(app.request(Method::GET, &path))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, read["note"].clone()),
        (StatusCode::OK, json!("load test"))
    );

    let deleted = admin
        .mutate(app.request(Method::DELETE, &path))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&settings(&app, &ann).await, "x-ratelimit-limit"),
        Some(3)
    );
    assert!(fresh.get(&ann.user_id()).await.unwrap().is_none());
    app.cleanup().await;
}

async fn login(app: &TestApp, password: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({ "username": "ann", "password": password }))
        .send()
        .await
        .unwrap();
    json_of(response).await
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_until_the_unlock_time() {
    let app = TestApp::start_with(|c| {
        c.rate_limit.lockout_failures = 3;
        c.rate_limit.lockout_seconds = 2;
        // The unlock is polled; the login budget is not what this test is about.
        limit(c, "POST /api/v1/auth/login", 1000);
    })
    .await;
    app.register("ann").await;
    for _ in 0..2 {
        assert_error(
            &login(&app, "wrong-one").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    }
    let locked = login(&app, "wrong-one").await;
    assert_error(&locked, StatusCode::LOCKED, "account_locked");
    let until =
        chrono::DateTime::parse_from_rfc3339(locked.1["locked_until"].as_str().unwrap()).unwrap();
    assert!(until > chrono::Utc::now());
    assert!(
        locked.1["message"]
            .as_str()
            .unwrap()
            .contains(locked.1["locked_until"].as_str().unwrap())
    );
    // Even the right password is refused while locked.
    assert_error(
        &login(&app, "password123").await,
        StatusCode::LOCKED,
        "account_locked",
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = login(&app, "password123").await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(body["code"], "account_locked");
        assert!(tokio::time::Instant::now() < deadline, "never unlocked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(chrono::Utc::now() >= until);
    // The success cleared the failures: one more miss does not lock again.
    assert_error(
        &login(&app, "wrong-one").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    app.cleanup().await;
}

/// A Redis of its own (the shared one must stay up for the other tests), stopped mid-test.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = shared::testing::free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian redis-server) on PATH");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test]
async fn with_redis_down_sign_in_still_checks_the_password() {
    let mut redis = PrivateRedis::start().await;
    let port = redis.port;
    let app = TestApp::start_with(move |c| {
        c.redis.url = format!("redis://127.0.0.1:{port}/").into();
        c.redis.response_timeout_ms = 500;
    })
    .await;
    app.register("ann").await;
    redis.stop();

    // Answered, not a 500 and not a hang: the lockout (and the rate limits) fail open.
    let wrong = tokio::time::timeout(Duration::from_secs(15), login(&app, "wrong-one"))
        .await
        .expect("a sign-in with Redis down hung");
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let (status, body) = login(&app, "password123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.cleanup().await;
}

async fn runtimes(app: &TestApp, forwarded_for: &str) -> Response {
    app.request(Method::GET, "/api/v1/runtimes")
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_spoofed_forwarded_header_from_an_untrusted_peer_keeps_the_bucket() {
    // The test client connects from 127.0.0.1, which is not a trusted proxy here.
    let app = TestApp::start_with(|c| limit(c, RUNTIMES, 2)).await;
    assert_eq!(
        header(&runtimes(&app, "1.1.1.1").await, "x-ratelimit-remaining"),
        Some(1)
    );
    assert_eq!(
        header(&runtimes(&app, "2.2.2.2").await, "x-ratelimit-remaining"),
        Some(0)
    );
    let refused = runtimes(&app, "3.3.3.3").await;
    assert_error(
        &json_of(refused).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address() {
    let app = TestApp::start_with(|c| {
        limit(c, RUNTIMES, 2);
        c.api.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    assert_eq!(
        header(&runtimes(&app, "1.1.1.1").await, "x-ratelimit-remaining"),
        Some(1)
    );
    assert_eq!(
        header(&runtimes(&app, "2.2.2.2").await, "x-ratelimit-remaining"),
        Some(1)
    );
    // A client-supplied hop in front of the proxy's does not help: the rightmost untrusted hop
    // (what our proxy saw) decides.
    assert_eq!(
        header(
            &runtimes(&app, "9.9.9.9, 1.1.1.1").await,
            "x-ratelimit-remaining"
        ),
        Some(0)
    );
    let refused = runtimes(&app, "1.1.1.1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    app.cleanup().await;
}
