//! A served api router plus clients for its infrastructure.

use std::time::Duration;

use api::AppState;
use mongodb::Database;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use redis::aio::ConnectionManager;
use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use shared::config::Config;
use shared::events::{Event, EventType, topic_for};
use shared::kafka::EventProducer;

pub struct TestApp {
    pub base: String,
    pub config: Config,
    pub db: Database,
    pub redis: ConnectionManager,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    /// [`TestApp::start`] with `adjust` applied to the test configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = shared::testing::test_config().expect("config loads");
        adjust(&mut config);
        let topics: Vec<String> = [
            EventType::ExecutionRequested,
            EventType::ExecutionCancelRequested,
        ]
        .into_iter()
        .map(|t| topic_for(&config.kafka.topic_prefix, t))
        .collect();
        shared::kafka::ensure_topics_named(&config.kafka, &topics)
            .await
            .expect("topics");
        let producer = EventProducer::new(&config.kafka, "api-test").expect("producer");
        let db = shared::mongo::connect(&config.mongo, "api-test")
            .await
            .expect("mongo");
        let redis = shared::redis::connect(&config.redis).await.expect("redis");
        let state = AppState::new(&config, producer, db.clone(), redis.clone()).expect("state");
        api::setup::prepare(&state).await.expect("setup");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestApp {
            base: format!("http://{addr}"),
            config,
            db,
            redis,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Drops the database and the topics (best effort).
    pub async fn cleanup(self) {
        if let Err(error) = self.db.drop().await {
            eprintln!("dropping the test database: {error}");
        }
        if let Err(error) = shared::testing::delete_topics_with_prefix(
            &self.config.kafka,
            &self.config.kafka.topic_prefix,
        )
        .await
        {
            eprintln!("deleting the test topics: {error}");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub async fn register(&self, username: &str) -> Value {
        let response = self
            .request(Method::POST, "/api/v1/auth/register")
            .json(&json!({
                "username": username,
                "email": format!("{username}@example.com"),
                "password": "password123",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> Session {
        let response = self
            .request(Method::POST, "/api/v1/auth/login")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "login {username}");
        Session::from_response(response).await
    }

    /// A new user with a session.
    pub async fn user(&self, username: &str) -> Session {
        self.register(username).await;
        self.login(username, "password123").await
    }

    /// A bearer token for `session`'s user.
    pub async fn token(&self, session: &Session) -> String {
        let response = session
            .mutate(self.request(Method::POST, "/api/v1/auth/tokens"))
            .json(&json!({ "name": "test" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn submit(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .request(Method::POST, "/api/v1/execute")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    pub fn topic(&self, event_type: EventType) -> String {
        topic_for(&self.config.kafka.topic_prefix, event_type)
    }

    /// Every event on `event_type`'s topic: waits until at least `min` arrived, then `settle`
    /// longer for any extra (to prove something was published only once).
    pub async fn consume(
        &self,
        event_type: EventType,
        min: usize,
        settle: Duration,
    ) -> Vec<(String, Event)> {
        let consumer: StreamConsumer =
            shared::kafka::base_client_config(&self.config.kafka, "api-test-consumer")
                .set("group.id", format!("api-test-{}", uuid::Uuid::now_v7()))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
        consumer.subscribe(&[&self.topic(event_type)]).unwrap();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let wait = if seen.len() >= min {
                settle
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            };
            match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(Ok(message)) => {
                    let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                    let event = Event::from_json(message.payload()).unwrap();
                    seen.push((key, event));
                }
                Ok(Err(error)) => panic!("kafka: {error}"),
                Err(_) => break,
            }
        }
        assert!(
            seen.len() >= min,
            "expected {min} events, got {}",
            seen.len()
        );
        seen
    }
}

/// A password session: the cookies and the CSRF token.
#[derive(Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub set_cookies: Vec<String>,
    pub body: Value,
}

impl Session {
    pub async fn from_response(response: Response) -> Session {
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let pairs: Vec<&str> = set_cookies
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .collect();
        let csrf = pairs
            .iter()
            .find_map(|p| p.strip_prefix("kiln_csrf="))
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        Session {
            cookie: pairs.join("; "),
            csrf,
            set_cookies,
            body,
        }
    }

    pub fn user_id(&self) -> String {
        self.body["user"]["id"].as_str().unwrap().to_owned()
    }

    /// A cookie-authenticated request without the CSRF header.
    pub fn read(&self, builder: RequestBuilder) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_str(&self.cookie).unwrap());
        builder.headers(headers)
    }

    /// A cookie-authenticated request with the CSRF header.
    pub fn mutate(&self, builder: RequestBuilder) -> RequestBuilder {
        self.read(builder).header("x-csrf-token", &self.csrf)
    }
}

pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts an error answer: status and `code`, with a message.
pub fn assert_error(actual: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(actual.0, status, "body: {}", actual.1);
    assert_eq!(actual.1["code"], code, "body: {}", actual.1);
    assert!(actual.1["message"].is_string(), "body: {}", actual.1);
}

/// Asserts that `path` answers 401 `unauthenticated` without credentials.
pub async fn assert_needs_sign_in(app: &TestApp, method: Method, path: &str) {
    let response = app.request(method, path).send().await.unwrap();
    assert_error(
        &json_of(response).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
}

pub fn python(script: &str) -> Value {
    json!({ "script": script, "lang": "python" })
}
