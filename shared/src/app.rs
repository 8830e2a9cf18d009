//! The life of a Kiln binary, shared by all seven: parse the command line, load config, connect
//! to Kafka, MongoDB and Redis, serve health and metrics, run the service's components, and drain
//! them within the deadline on SIGTERM.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use clap::Parser;
use mongodb::Database;
use redis::aio::ConnectionManager;
use tokio::task::JoinSet;

use crate::config::{CONFIG_PATH_ENV, Config, DEFAULT_CONFIG_PATH};
use crate::kafka::{EventProducer, ensure_topics};
use crate::lifecycle::Lifecycle;

/// Exit code for a configuration that cannot be used.
const CONFIG_EXIT_CODE: u8 = 2;
/// How long a starting service waits for its infrastructure before giving up.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(version, about = "A Kiln service")]
pub struct Cli {
    /// Path of the configuration file.
    #[arg(long, env = CONFIG_PATH_ENV, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub dump_config: bool,
}

/// Parses the command line and loads the configuration. `Err` carries the exit code to return
/// (0 after `--dump-config`, 2 for a bad configuration, whose message names the key).
pub fn load_config() -> Result<Config, ExitCode> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config).map_err(|error| {
        eprintln!("kiln: {error}");
        ExitCode::from(CONFIG_EXIT_CODE)
    })?;
    if cli.dump_config {
        print!("{}", config.to_redacted_toml());
        return Err(ExitCode::SUCCESS);
    }
    Ok(config)
}

/// Clients to the shared infrastructure; cheap to clone.
#[derive(Clone)]
pub struct Infra {
    pub producer: EventProducer,
    pub mongo: Database,
    pub redis: ConnectionManager,
}

impl std::fmt::Debug for Infra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infra")
            .field("producer", &self.producer)
            .field("mongo", &self.mongo.name())
            .finish_non_exhaustive()
    }
}

impl Infra {
    /// Connects to all three and creates the Kafka topics, retrying while they come up.
    pub async fn connect(config: &Config, service: &str) -> anyhow::Result<Infra> {
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        let mut attempt = 1;
        loop {
            match Self::try_connect(config, service).await {
                Ok(infra) => return Ok(infra),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(
                        attempt,
                        error.cause_chain = %format_args!("{error:#}"),
                        "infrastructure not ready; retrying"
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(error.context(format!(
                        "infrastructure not reachable within {} s",
                        STARTUP_WAIT.as_secs()
                    )));
                }
            }
        }
    }

    async fn try_connect(config: &Config, service: &str) -> anyhow::Result<Infra> {
        let topics = ensure_topics(&config.kafka)
            .await
            .with_context(|| format!("creating topics on {}", config.kafka.bootstrap_servers))?;
        tracing::debug!(count = topics.len(), "kafka topics ensured");
        let producer = EventProducer::new(&config.kafka, service)?;
        let mongo = crate::mongo::connect(&config.mongo, service).await?;
        crate::mongo::ping(&mongo).await?;
        let redis = crate::redis::connect(&config.redis).await?;
        Ok(Infra {
            producer,
            mongo,
            redis,
        })
    }
}

/// What a service needs to build its components.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub config: Config,
    pub infra: Infra,
    pub lifecycle: Lifecycle,
}

type ComponentFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A service's parts: routes merged next to the health routes, and long-running components
/// that must return once the shutdown token is cancelled.
#[derive(Default)]
pub struct Components {
    pub routes: Router,
    components: Vec<(&'static str, ComponentFuture)>,
}

impl Components {
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = routes;
        self
    }

    pub fn spawn(
        mut self,
        name: &'static str,
        component: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        self.components.push((name, Box::pin(component)));
        self
    }
}

/// Runs `build`'s components and the HTTP server until shutdown, then drains. Returns the exit
/// code: 0 after a clean drain, 1 on a start-up failure, a component error or a missed deadline.
pub async fn run_service<F, Fut>(name: &'static str, config: Config, build: F) -> ExitCode
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = anyhow::Result<Components>>,
{
    match run(name, config, build).await {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error.cause_chain = %format_args!("{error:#}"), "service failed");
            ExitCode::FAILURE
        }
    }
}

async fn run<F, Fut>(name: &'static str, config: Config, build: F) -> anyhow::Result<()>
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = anyhow::Result<Components>>,
{
    let service_config = config
        .services
        .get(name)
        .with_context(|| format!("no [services.{}] section", name.replace('-', "_")))?
        .clone();
    tracing::info!(config = %config.to_redacted_toml(), "starting");
    let lifecycle = Lifecycle::new(Duration::from_secs(config.lifecycle.drain_timeout_seconds));
    lifecycle
        .spawn_signal_listener()
        .context("installing signal handlers")?;
    let shutdown = lifecycle.shutdown_token();

    // Serve health and metrics before connecting, so liveness answers while the infrastructure
    // comes up; readiness says "starting" until the service is built.
    let listener = tokio::net::TcpListener::bind(service_config.http_addr)
        .await
        .with_context(|| format!("binding {}", service_config.http_addr))?;
    tracing::info!(addr = %service_config.http_addr, "serving health, metrics and routes");
    crate::health::record_build_info(name);
    let check_timeout = Duration::from_millis(config.lifecycle.readiness_check_timeout_ms);
    let health = crate::health::Health::new(lifecycle.clone(), check_timeout);
    let app = crate::health::router(health.clone());
    // The server outlives the drain, so probes see "draining" rather than a refused connection;
    // it stops after the components have finished.
    let server_stop = tokio_util::sync::CancellationToken::new();
    let server_stopped = server_stop.clone();
    let server = tokio::spawn(async move {
        // The peer address lets the api tell clients apart (rate limits of anonymous routes).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(server_stopped.cancelled_owned())
            .await
            .context("http server")
    });

    let infra = tokio::select! {
        infra = Infra::connect(&config, name) => infra?,
        () = shutdown.cancelled() => {
            server_stop.cancel();
            return Ok(());
        }
    };
    let context = ServiceContext {
        name,
        config,
        infra: infra.clone(),
        lifecycle: lifecycle.clone(),
    };
    let components = build(context).await.context("building the service")?;
    health.set_ready(infra.clone(), components.routes);

    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    for (component, future) in components.components {
        tasks.spawn(async move { (component, future.await) });
    }

    // Run until a signal, or until any component stops on its own (which is a failure: components
    // only return after shutdown).
    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        Some(joined) = tasks.join_next() => {
            // A component may return because shutdown began in the same instant; only a return
            // before any shutdown is a failure.
            if let Some(error) = component_failure(joined) {
                failure = Some(error);
            } else if !shutdown.is_cancelled() {
                failure = Some(anyhow::anyhow!("a component stopped before shutdown"));
            }
            lifecycle.begin_shutdown("component stopped");
        }
    }

    let drained = tokio::time::timeout(lifecycle.drain_timeout(), async {
        while let Some(joined) = tasks.join_next().await {
            if let Some(error) = component_failure(joined) {
                failure.get_or_insert(error);
            }
        }
    })
    .await;
    infra.producer.flush(Duration::from_secs(5));
    server_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            failure.get_or_insert(error);
        }
        Err(error) => {
            failure.get_or_insert(anyhow::Error::new(error).context("http server task"));
        }
    }
    if drained.is_err() {
        tasks.abort_all();
        anyhow::bail!(
            "components did not drain within {} s",
            lifecycle.drain_timeout().as_secs()
        );
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The error a finished component reports, if it failed.
fn component_failure(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match joined {
        Ok((_, Ok(()))) => None,
        Ok((name, Err(error))) => Some(error.context(format!("component {name} failed"))),
        Err(error) => Some(anyhow::Error::new(error).context("component panicked or was aborted")),
    }
}

/// The whole `main` of a Kiln binary: config, telemetry, then [`run_service`].
pub async fn main<F, Fut>(name: &'static str, build: F) -> ExitCode
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = anyhow::Result<Components>>,
{
    let config = match load_config() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let _telemetry = match crate::telemetry::init(&config.telemetry, name) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!(
                "kiln: telemetry setup failed: {}",
                crate::errors::display_chain(&error)
            );
            return ExitCode::FAILURE;
        }
    };
    run_service(name, config, build).await
}
