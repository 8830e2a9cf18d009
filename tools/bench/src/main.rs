//! `kiln-bench`: submits N executions at concurrency C through the HTTP API of a running Kiln
//! (`./deploy.sh dev`) and reports throughput and end-to-end latency: from the submit request to
//! the moment result-processor announces the stored result (`result_stored` on Kafka). It also
//! counts lost executions (no stored result before the deadline) and duplicated ones (more than
//! one stored result for one execution).
//!
//! With `--users K` the submissions are spread over K bench accounts (`kiln-bench-1` ... `-K`,
//! registered on first use), as many users' load would be: each user has its own concurrency
//! slots (`limits.per_user_concurrency`), so one user alone measures that cap, not the pipeline.
//!
//! Example: `target/release/kiln-bench -n 3000 -c 32 --lang bash --script 'echo hello'`

mod report;
mod results;
mod token_cache;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use results::Stored;
use shared::config::Config;
use shared::events::{EventType, topic_for};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of a running Kiln")]
struct Args {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "user")]
    username: String,
    #[arg(long, env = "DEFAULT_USER_PASSWORD", default_value = "user123")]
    password: String,
    /// Executions to submit.
    #[arg(short = 'n', long, default_value_t = 500)]
    count: usize,
    /// Submissions in flight at once.
    #[arg(short = 'c', long, default_value_t = 16)]
    concurrency: usize,
    /// Submit at most this many executions per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value = "bash")]
    lang: String,
    #[arg(long, default_value = "echo hello")]
    script: String,
    /// How long to wait for the last results after the last submission.
    #[arg(long, default_value_t = 60)]
    settle_seconds: u64,
    /// Kiln's config (for Kafka's address and the topic prefix).
    #[arg(long, default_value = "config.toml")]
    config: std::path::PathBuf,
    /// An admin exempts the bench's user from the API's rate limits first (a per-user override),
    /// so the figures measure the pipeline, not the limiter.
    #[arg(long, default_value = "admin")]
    admin_username: String,
    #[arg(long, env = "ADMIN_USER_PASSWORD", default_value = "admin123")]
    admin_password: String,
    /// Keep the user's rate limits (measure with them).
    #[arg(long)]
    keep_rate_limits: bool,
    /// Submit as this many users, round robin: `--username` alone when 1, else the accounts
    /// `kiln-bench-1` ... `kiln-bench-K`, registered with `--bench-password` if missing.
    #[arg(long, default_value_t = 1)]
    users: usize,
    #[arg(
        long,
        env = "KILN_BENCH_PASSWORD",
        default_value = "kiln-bench-password"
    )]
    bench_password: String,
    /// Where the bench keeps its users' API tokens between runs (owner-only file).
    #[arg(long, default_value = ".kiln/bench-tokens.json")]
    token_cache: std::path::PathBuf,
    /// Also print the ids of the N slowest executions (look them up in their event history:
    /// `GET /api/v1/executions/{id}/events/history`).
    #[arg(long, default_value_t = 0)]
    show_slowest: usize,
}

impl Args {
    /// The accounts to submit as: (username, password).
    fn accounts(&self) -> Vec<(String, String)> {
        if self.users <= 1 {
            return vec![(self.username.clone(), self.password.clone())];
        }
        (1..=self.users)
            .map(|i| (format!("kiln-bench-{i}"), self.bench_password.clone()))
            .collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args.config).context("loading the Kiln config")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let accounts = args.accounts();
    let mut tokens = Vec::with_capacity(accounts.len());
    let admin = if args.keep_rate_limits {
        None
    } else {
        Some(
            sign_in(
                &client,
                &args.url,
                &args.admin_username,
                &args.admin_password,
            )
            .await?,
        )
    };
    let mut cache = token_cache::TokenCache::load(&args.token_cache);
    for (username, password) in &accounts {
        let token = match cache.get(&args.url, username) {
            Some(token) if token_cache::still_valid(&client, &args.url, token).await => {
                token.to_owned()
            }
            _ => {
                let token =
                    api_token(&client, &args.url, username, password, args.users > 1).await?;
                cache.put(&args.url, username, token.clone());
                token
            }
        };
        if let Some(admin) = &admin {
            exempt_from_rate_limits(&client, &args.url, admin, username, &token).await?;
        }
        tokens.push(token);
    }
    if let Err(error) = cache.save() {
        eprintln!("the API tokens were not kept for the next run: {error:#}");
    }

    let stored = Stored::default();
    let shutdown = CancellationToken::new();
    let watcher = results::watch(
        &config.kafka,
        &topic_for(&config.kafka.topic_prefix, EventType::ResultStored),
        stored.clone(),
        shutdown.clone(),
    )?;
    let body = serde_json::json!({ "lang": args.lang, "script": args.script });
    // One execution before the clock starts, waited for until its result is seen: the pipeline
    // and the result watcher work before anything is measured.
    probe(&client, &args.url, &tokens[0], &body, &stored).await?;

    let started = Instant::now();
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let submissions = futures::stream::iter(0..args.count)
        .map(|i| {
            let (client, body, url) = (&client, &body, &args.url);
            let token = &tokens[i % tokens.len()];
            async move {
                if let Some(interval) = interval {
                    tokio::time::sleep_until((started + interval * i as u32).into()).await;
                }
                let sent = Instant::now();
                let id = submit(client, url, token, body).await.ok();
                (id, sent)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await;
    let submitted_in = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(args.settle_seconds);
    let accepted: Vec<(String, Instant)> = submissions
        .iter()
        .filter_map(|(id, sent)| id.clone().map(|id| (id, *sent)))
        .collect();
    stored
        .wait_for(accepted.iter().map(|(id, _)| id.as_str()), deadline)
        .await;
    // Late duplicates would arrive shortly after the first result.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    watcher.await?;

    let stored = stored.snapshot();
    let report = report::Report::new(
        &args.lang,
        &args.script,
        args.count,
        args.concurrency,
        submitted_in,
        &accepted,
        &stored,
        started,
    );
    println!("{report}");
    if args.show_slowest > 0 {
        let mut latencies: Vec<(Duration, &str)> = accepted
            .iter()
            .filter_map(|(id, sent)| {
                let (at, _) = stored.get(id)?;
                Some((at.saturating_duration_since(*sent), id.as_str()))
            })
            .collect();
        latencies.sort_unstable_by(|a, b| b.cmp(a));
        for (latency, id) in latencies.iter().take(args.show_slowest) {
            println!("  slow: {id} {:.1} ms", latency.as_secs_f64() * 1000.0);
        }
    }
    println!("submitted as {} user(s)", accounts.len());
    if report.lost > 0 || report.duplicated > 0 || report.rejected > 0 {
        bail!(
            "{} lost, {} duplicated, {} rejected",
            report.lost,
            report.duplicated,
            report.rejected
        );
    }
    Ok(())
}

/// A password session: the cookie header and the CSRF token.
async fn sign_in(
    client: &reqwest::Client,
    url: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<(String, String)> {
    let login = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({ "username": username, "password": password }))
        .send()
        .await
        .context("logging in")?;
    if !login.status().is_success() {
        bail!("login as {username} failed: {}", login.status());
    }
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_owned))
        .collect();
    let csrf = cookies
        .iter()
        .find_map(|c| c.strip_prefix("kiln_csrf=").map(str::to_owned))
        .unwrap_or_default();
    Ok((cookies.join("; "), csrf))
}

/// Registers `username` (a bench account its login did not know).
async fn register(
    client: &reqwest::Client,
    url: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<()> {
    let response = client
        .post(format!("{url}/api/v1/auth/register"))
        .json(&serde_json::json!({
            "username": username,
            "email": format!("{username}@bench.kiln.invalid"),
            "password": password,
        }))
        .send()
        .await
        .context("registering a bench user")?;
    match response.status().as_u16() {
        201 | 409 => Ok(()),
        429 => {
            bail!("registering {username} was refused: too many registrations from here, try later")
        }
        status => bail!("registering {username} failed: {status}"),
    }
}

/// Logs in (registering a missing bench account first when `register_missing`; registrations
/// are rate limited, so only a login that fails registers) and creates a personal API token
/// (bearer auth needs no CSRF token).
async fn api_token(
    client: &reqwest::Client,
    url: &str,
    username: &str,
    password: &str,
    register_missing: bool,
) -> anyhow::Result<String> {
    let (cookie, csrf) = match sign_in(client, url, username, password).await {
        Ok(session) => session,
        Err(_) if register_missing => {
            register(client, url, username, password).await?;
            sign_in(client, url, username, password).await?
        }
        Err(error) => return Err(error),
    };
    let created: serde_json::Value = client
        .post(format!("{url}/api/v1/auth/tokens"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .json(&serde_json::json!({ "name": "kiln-bench" }))
        .send()
        .await?
        .error_for_status()
        .context("creating an API token")?
        .json()
        .await?;
    created["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the answer")
}

/// Has the admin session `admin` (cookie, CSRF token) lift the rate limits of the user behind
/// `token`.
async fn exempt_from_rate_limits(
    client: &reqwest::Client,
    url: &str,
    admin: &(String, String),
    username: &str,
    token: &str,
) -> anyhow::Result<()> {
    let me: serde_json::Value = client
        .get(format!("{url}/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()
        .context("reading the bench user")?
        .json()
        .await?;
    let user_id = me["id"].as_str().context("no id in /auth/me")?;
    let (cookie, csrf) = admin;
    client
        .put(format!("{url}/api/v1/admin/rate-limits/{user_id}"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .json(&serde_json::json!({ "exempt": true, "note": "kiln-bench" }))
        .send()
        .await?
        .error_for_status()
        .context("exempting the bench user from rate limits")?;
    eprintln!("rate limits lifted for {username} (admin override)");
    Ok(())
}

/// Submits one execution; its id once the API accepted it (202).
async fn submit(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{url}/api/v1/execute"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::ACCEPTED {
        bail!("submission answered {}", response.status());
    }
    let accepted: serde_json::Value = response.json().await?;
    accepted["execution_id"]
        .as_str()
        .map(str::to_owned)
        .context("no execution_id in the answer")
}

/// Submits one execution and waits until the watcher has seen its stored result.
async fn probe(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    stored: &Stored,
) -> anyhow::Result<()> {
    let id = submit(client, url, token, body)
        .await
        .context("submitting the probe execution")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    if !stored.wait_for([id.as_str()], deadline).await {
        bail!("the probe execution {id} had no stored result within 60 s: is every service up?");
    }
    Ok(())
}
