//! A small client of Kiln's HTTP API, authenticated with a personal API token.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    /// Logs in with a password (cookie + CSRF), then creates and uses an API token.
    pub async fn login(base: &str, username: &str, password: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let login = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200, "login as {username}");
        let cookies: Vec<String> = login
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
            .collect();
        let csrf = cookies
            .iter()
            .find(|c| c.to_lowercase().contains("csrf"))
            .and_then(|c| c.split_once('=').map(|(_, v)| v.to_owned()))
            .expect("a CSRF cookie");
        let created: Value = client
            .post(format!("{base}/api/v1/auth/tokens"))
            .header("cookie", cookies.join("; "))
            .header("x-csrf-token", csrf)
            .json(&json!({ "name": "system-test" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            base: base.to_owned(),
            client,
            token: created["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Registers a new user and logs in as them.
    pub async fn register(base: &str, username: &str) -> Self {
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&json!({
                "username": username,
                "email": format!("{username}@example.test"),
                "password": "correct-horse-battery",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "register {username}");
        Self::login(base, username, "correct-horse-battery").await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a script; returns the execution id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, answer) = self.post("/api/v1/execute", body.clone()).await;
        assert_eq!(status, 202, "{body} -> {answer}");
        answer["execution_id"].as_str().unwrap().to_owned()
    }

    /// `POST` that survives an api restart or a store outage: transport errors and 5xx answers
    /// are retried until `timeout`. Returns the first other answer.
    pub async fn post_retrying(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
        timeout: Duration,
    ) -> (u16, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut request = self
                .client
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(body);
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            let last = match request.send().await {
                Ok(response) if response.status().is_server_error() => {
                    format!("{}", response.status())
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    return (status, response.json().await.unwrap_or(Value::Null));
                }
                Err(error) => error.to_string(),
            };
            assert!(Instant::now() < deadline, "POST {path} {body}: {last}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Submits a script under an idempotency key, retrying until the api accepts it once.
    pub async fn submit_retrying(&self, body: &Value, key: &str, timeout: Duration) -> String {
        let (status, answer) = self
            .post_retrying("/api/v1/execute", body, Some(key), timeout)
            .await;
        assert!(matches!(status, 200 | 202), "{body} -> {status} {answer}");
        answer["execution_id"].as_str().unwrap().to_owned()
    }

    /// Polls the execution until it reaches a terminal status.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, execution) = self.get(&format!("/api/v1/executions/{id}")).await;
            assert_eq!(status, 200, "{execution}");
            if ["completed", "failed", "timeout", "cancelled"]
                .contains(&execution["status"].as_str().unwrap_or_default())
            {
                return execution;
            }
            assert!(Instant::now() < deadline, "{id} not finished: {execution}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submits and waits for the result.
    pub async fn run(&self, body: Value) -> Value {
        let id = self.submit(body).await;
        self.wait_terminal(&id, Duration::from_secs(60)).await
    }
}
