//! A Kafka broker and a MongoDB-wire server of one test's own, for tests that restart or stall
//! them: the shared instances serve every other test running at the same time.
//!
//! Both use what `./deploy.sh infra` installed under `.kiln/infra/` (Kafka's jars, SecantusDB's
//! virtualenv) and keep their data in a temporary directory, so a restart finds its data again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{free_port, workspace_root};

fn infra_dir() -> PathBuf {
    workspace_root().join(".kiln/infra")
}

fn temp_dir(tag: &str) -> PathBuf {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    (Stdio::from(log.try_clone().unwrap()), Stdio::from(log))
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Ends the process (SIGKILL if it is still there after `grace`) and reaps it.
fn stop(child: &mut Child, graceful: Signal, grace: Duration) {
    if child.try_wait().unwrap().is_some() {
        return;
    }
    signal(child, graceful);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().ok();
}

/// A single-node KRaft broker on two free ports.
pub struct PrivateKafka {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateKafka {
    pub async fn start() -> Self {
        let dir = temp_dir("kafka");
        let port = free_port();
        let controller = free_port();
        let template =
            std::fs::read_to_string(infra_dir().join("kafka/server.properties")).unwrap();
        let properties: String = template
            .lines()
            .map(|line| {
                if line.starts_with("log.dirs=") {
                    format!("log.dirs={}", dir.join("data").display())
                } else {
                    line.replace("9092", &port.to_string())
                        .replace("9093", &controller.to_string())
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("server.properties"), properties).unwrap();
        let cluster_id = std::fs::read_to_string(infra_dir().join("kafka/cluster-id")).unwrap();
        let (stdout, stderr) = log_file(&dir.join("format.log"));
        let status = Self::java(&dir)
            .args(["-Xmx256m", "-cp", &Self::classpath()])
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id.trim()])
            .args(["-c", "server.properties", "--ignore-formatted"])
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .unwrap();
        assert!(status.success(), "kafka format failed: {}", dir.display());
        let mut kafka = Self {
            port,
            dir,
            child: None,
        };
        kafka.spawn();
        kafka.wait_ready().await;
        kafka
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM: a controlled shutdown), starts it again on the same data and
    /// waits until it answers. Returns how long it was away.
    pub async fn restart(&mut self) -> Duration {
        let began = Instant::now();
        let mut child = self.child.take().unwrap();
        tokio::task::spawn_blocking(move || {
            stop(&mut child, Signal::SIGTERM, Duration::from_secs(30));
        })
        .await
        .unwrap();
        self.spawn();
        self.wait_ready().await;
        began.elapsed()
    }

    fn classpath() -> String {
        format!("{}/kafka/libs/*", infra_dir().display())
    }

    fn java(dir: &Path) -> Command {
        let mut command = Command::new("java");
        command.current_dir(dir);
        command
    }

    fn spawn(&mut self) {
        let (stdout, stderr) = log_file(&self.dir.join("kafka.log"));
        let log4j = workspace_root().join("scripts/infra/kafka-log4j2.properties");
        let child = Self::java(&self.dir)
            .args(["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC"])
            .args([
                "-Djava.awt.headless=true",
                "-Djava.net.preferIPv4Stack=true",
            ])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .args([
                "-cp",
                &Self::classpath(),
                "kafka.Kafka",
                "server.properties",
            ])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Until the broker answers a metadata request (about 10 s after a start).
    async fn wait_ready(&mut self) {
        let bootstrap = self.bootstrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kafka exited with {status}; see {}", self.dir.display());
            }
            let probe = bootstrap.clone();
            let up = tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &probe)
                    .set("log_level", "0")
                    .create()
                    .unwrap();
                consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok_and(|m| !m.brokers().is_empty())
            })
            .await
            .unwrap();
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kafka never became ready; see {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A SecantusDB (MongoDB wire protocol) server on a free port.
pub struct PrivateMongo {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl PrivateMongo {
    pub async fn start() -> Self {
        let dir = temp_dir("mongo");
        let port = free_port();
        let child = Self::spawn(&dir, port);
        let mut mongo = Self { port, dir, child };
        mongo.wait_ready().await;
        mongo
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        let (stdout, stderr) = log_file(&dir.join("secantus.log"));
        Command::new(infra_dir().join("mongo/venv/bin/python"))
            .args(["-m", "secantus", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.join("data"))
            .args([
                "--cache-size",
                "128M",
                "--log-level",
                "WARNING",
                "--standalone",
            ])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    pub fn uri(&self) -> String {
        // The options of config.toml's default URI, so the outages hit what Kiln really runs.
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&retryWrites=false&maxPoolSize=4&serverMonitoringMode=poll",
            self.port
        )
    }

    /// Freezes the server for `outage` (SIGSTOP, then SIGCONT): connections stay open but nothing
    /// answers, the worst kind of outage for a client.
    pub async fn freeze_for(&mut self, outage: Duration) {
        signal(&self.child, Signal::SIGSTOP);
        tokio::time::sleep(outage).await;
        signal(&self.child, Signal::SIGCONT);
    }

    /// Stops the server (SIGTERM, so it flushes its data), leaves it down for `outage`
    /// (connections are refused) and starts it again on the same port and data. Returns how long
    /// it was away.
    pub async fn stop_for(&mut self, outage: Duration) -> Duration {
        let began = Instant::now();
        tokio::task::block_in_place(|| {
            stop(&mut self.child, Signal::SIGTERM, Duration::from_secs(20));
        });
        tokio::time::sleep(outage).await;
        self.child = Self::spawn(&self.dir, self.port);
        self.wait_ready().await;
        began.elapsed()
    }

    async fn wait_ready(&mut self) {
        let client = mongodb::Client::with_uri_str(self.uri()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("secantus exited with {status}; see {}", self.dir.display());
            }
            let admin = client.database("admin");
            let ping = admin.run_command(mongodb::bson::doc! { "ping": 1 });
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), ping).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "secantus never became ready; see {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        // A frozen process must be thawed to die cleanly; SIGKILL works either way.
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
