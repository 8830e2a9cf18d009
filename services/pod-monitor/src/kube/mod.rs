//! The Kubernetes watcher: turns executor pods into executor and execution events.
//!
//! It lists the executor pods, then watches from the list's `resourceVersion`. The watch is
//! opened with a server-side timeout of `kubernetes.reconcile_interval_seconds`; when it ends (or
//! the server answers 410 Gone because that version is compacted, or anything fails) the monitor
//! lists again. Every list is a full reconciliation: a pod whose terminal update was missed is
//! found finished and reported then.
//!
//! What was published for a pod is recorded in the pod itself (annotation `kiln.dev/monitor`), so
//! a restarted monitor neither repeats `pod_running` nor reports a result twice; output chunks
//! carry their frame index as `seq`, so a re-read log repeats only `seq`s consumers already have.
//! Once the terminal events are acknowledged the pod is deleted (its ConfigMap goes with it).

mod assess;
mod output;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kiln_runner_protocol::pod::{
    ANNOTATION_CANCELLED, ANNOTATION_META, ANNOTATION_MONITOR, EXECUTOR_SELECTOR, FrameStream,
    decode_line,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde::{Deserialize, Serialize};
use shared::config::KubernetesConfig;
use shared::events::{EventPayload, ExecutionOutput, ExecutionStarted, ExecutorRef, PodTerminated};
use shared::executions::ExecutorMeta;
use shared::kafka::{EventProducer, KafkaError};
use shared::kube_client::api_status;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::monitor::new_event;
use assess::{Finish, Observed, assess, terminal_payload, terminated_reason};
use output::{Captured, Chunker, log_params, read_log};

/// Every (resource, verbs) this watcher uses in the executor namespace; `k8s/executors/rbac.yaml`
/// grants exactly these (checked by a test).
pub const PERMISSIONS: &[(&str, &[&str])] = &[
    ("pods", &["delete", "list", "patch", "watch"]),
    ("pods/log", &["get"]),
];

const GONE: u16 = 410;
const NOT_FOUND: u16 = 404;
/// After a failed list, wait this long (doubling up to the maximum) before the next.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a finished pod's log follower may take to reach the end of the log.
const FOLLOWER_DRAIN: Duration = Duration::from_secs(5);

/// What has been published for one pod, kept in its `kiln.dev/monitor` annotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `pod_running` and `execution_started` were acknowledged.
    #[serde(default)]
    pub running: bool,
    /// The terminal events were acknowledged; only the delete may be left to do.
    #[serde(default)]
    pub finished: bool,
}

pub struct KubeMonitor {
    pods: Api<Pod>,
    producer: EventProducer,
    service: &'static str,
    image_pull_grace: chrono::Duration,
    reconcile_seconds: u32,
    tracked: HashMap<String, Tracked>,
}

struct Tracked {
    meta: ExecutorMeta,
    progress: Progress,
    scheduled: bool,
    cancelled: bool,
    follower: Option<Follower>,
}

/// A task following a running pod's log and publishing its frames live.
struct Follower {
    task: JoinHandle<()>,
    /// Frames published so far (all of them from index 0 on).
    published: Arc<AtomicU64>,
}

impl KubeMonitor {
    pub fn new(
        pods: Api<Pod>,
        producer: EventProducer,
        config: &KubernetesConfig,
        service: &'static str,
    ) -> KubeMonitor {
        KubeMonitor {
            pods,
            producer,
            service,
            image_pull_grace: chrono::Duration::seconds(
                i64::try_from(config.image_pull_grace_seconds).unwrap_or(i64::MAX),
            ),
            reconcile_seconds: u32::try_from(config.reconcile_interval_seconds).unwrap_or(u32::MAX),
            tracked: HashMap::new(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut retry = RETRY_MIN;
        loop {
            let resource_version = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                listed = self.reconcile() => listed,
            };
            let Some(resource_version) = resource_version else {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            };
            retry = RETRY_MIN;
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.watch(resource_version) => {}
            }
        }
    }

    /// Lists every executor pod and brings each up to date. Returns the list's resourceVersion,
    /// or `None` when the list failed.
    pub async fn reconcile(&mut self) -> Option<String> {
        let list = match self
            .pods
            .list(&ListParams::default().labels(EXECUTOR_SELECTOR))
            .await
        {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "listing executor pods failed; retrying");
                return None;
            }
        };
        let present: HashSet<String> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        for pod in list.items {
            self.observe(pod).await;
        }
        // Tracked pods missing from the list were deleted while no watch was open.
        let vanished: Vec<String> = self
            .tracked
            .keys()
            .filter(|name| !present.contains(*name))
            .cloned()
            .collect();
        for name in vanished {
            self.vanished(&name).await;
        }
        Some(list.metadata.resource_version.unwrap_or_default())
    }

    /// Follows changes from `resource_version` until the watch ends, expires or fails.
    pub async fn watch(&mut self, mut resource_version: String) {
        let params = WatchParams::default()
            .labels(EXECUTOR_SELECTOR)
            .timeout(self.reconcile_seconds);
        let stream = match self.pods.watch(&params, &resource_version).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "opening the pod watch failed; relisting");
                return;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                    resource_version = pod
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or(resource_version);
                    self.observe(pod).await;
                }
                Ok(WatchEvent::Deleted(pod)) => self.deleted(pod).await,
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    resource_version = bookmark.metadata.resource_version;
                }
                Ok(WatchEvent::Error(status)) if status.code == GONE => {
                    tracing::info!(%resource_version, "watch expired (410 Gone); relisting");
                    return;
                }
                Ok(WatchEvent::Error(status)) => {
                    tracing::warn!(code = status.code, message = %status.message, "watch error; relisting");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "watch failed; relisting");
                    return;
                }
            }
        }
        tracing::debug!(%resource_version, "watch ended; reconciling");
    }

    /// Publishes what `pod` shows that was not published yet.
    async fn observe(&mut self, pod: Pod) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        let progress = annotation::<Progress>(&pod, ANNOTATION_MONITOR).unwrap_or_default();
        if progress.finished {
            // Reported before a restart or a failed delete: only the delete is left.
            self.stop_tracking(&name);
            self.delete_pod(&name).await;
            return;
        }
        if !self.track(&name, &pod, progress) {
            return;
        }
        let observed = assess(&pod, Utc::now(), self.image_pull_grace);
        if let Err(error) = self.advance(&name, observed).await {
            // Nothing was recorded for the failed publish: the next event or reconciliation
            // publishes it again.
            tracing::warn!(pod = %name, %error, "publish failed; retrying on the next update");
        }
    }

    /// Starts (or refreshes) tracking `pod`; false when it carries no readable executor meta.
    fn track(&mut self, name: &str, pod: &Pod, progress: Progress) -> bool {
        let cancelled = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_CANCELLED));
        if let Some(tracked) = self.tracked.get_mut(name) {
            tracked.cancelled = cancelled;
            return true;
        }
        let Some(meta) = annotation::<ExecutorMeta>(pod, ANNOTATION_META) else {
            tracing::warn!(pod = %name, "executor pod without readable {ANNOTATION_META}; ignored");
            return false;
        };
        self.tracked.insert(
            name.to_owned(),
            Tracked {
                meta,
                progress,
                scheduled: false,
                cancelled,
                follower: None,
            },
        );
        true
    }

    async fn advance(&mut self, name: &str, observed: Observed) -> Result<(), KafkaError> {
        match observed {
            Observed::Pending | Observed::Terminating => Ok(()),
            Observed::Scheduled { node } => self.scheduled(name, node).await,
            Observed::Running { node } => {
                self.running(name, Some(node)).await?;
                self.follow(name);
                Ok(())
            }
            Observed::Finished(finish) => self.finish(name, finish, true).await,
        }
    }

    async fn scheduled(&mut self, name: &str, node: String) -> Result<(), KafkaError> {
        let Some(t) = self.tracked.get_mut(name) else {
            return Ok(());
        };
        if t.scheduled || t.progress.running {
            return Ok(());
        }
        let event = new_event(
            &t.meta,
            EventPayload::PodScheduled(ExecutorRef {
                executor: name.to_owned(),
                node: Some(node),
            }),
            self.service,
        );
        self.producer.publish(&event).await?;
        t.scheduled = true;
        Ok(())
    }

    async fn running(&mut self, name: &str, node: Option<String>) -> Result<(), KafkaError> {
        let Some(t) = self.tracked.get_mut(name) else {
            return Ok(());
        };
        if t.progress.running {
            return Ok(());
        }
        let running = new_event(
            &t.meta,
            EventPayload::PodRunning(ExecutorRef {
                executor: name.to_owned(),
                node,
            }),
            self.service,
        );
        let started = new_event(
            &t.meta,
            EventPayload::ExecutionStarted(ExecutionStarted {
                executor: name.to_owned(),
                started_at: Utc::now(),
            }),
            self.service,
        );
        let (a, b) = tokio::join!(
            self.producer.publish(&running),
            self.producer.publish(&started)
        );
        a?;
        b?;
        t.progress.running = true;
        let progress = t.progress;
        self.record(name, progress).await;
        Ok(())
    }

    /// Starts a live follower for a running pod (again, if the last one ended early).
    fn follow(&mut self, name: &str) {
        let Some(t) = self.tracked.get_mut(name) else {
            return;
        };
        let published = match &t.follower {
            Some(f) if !f.task.is_finished() => return,
            Some(f) => Arc::clone(&f.published),
            None => Arc::new(AtomicU64::new(0)),
        };
        let task = tokio::spawn(follow_log(
            self.pods.clone(),
            name.to_owned(),
            t.meta.clone(),
            self.producer.clone(),
            self.service,
            Arc::clone(&published),
        ));
        t.follower = Some(Follower { task, published });
    }

    /// Reports a finished pod: the rest of its output, the terminal event, `pod_terminated`; then
    /// records that and deletes the pod. `pod_exists` is false for a pod already deleted.
    async fn finish(
        &mut self,
        name: &str,
        finish: Finish,
        pod_exists: bool,
    ) -> Result<(), KafkaError> {
        let started = !matches!(finish, Finish::ImagePull(_) | Finish::Cancelled);
        if started {
            self.running(name, None).await?;
        }
        let Some(t) = self.tracked.get_mut(name) else {
            return Ok(());
        };
        let mut already = 0;
        if let Some(follower) = t.follower.take() {
            // The container has stopped, so the followed log is ending: let it drain.
            let mut task = follower.task;
            if tokio::time::timeout(FOLLOWER_DRAIN, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
            already = follower.published.load(Ordering::Acquire);
        }
        let meta = t.meta.clone();
        let wants_output = !matches!(finish, Finish::ImagePull(_) | Finish::Cancelled);
        let log = if wants_output && pod_exists {
            read_log(&self.pods, name).await
        } else {
            String::new()
        };
        let captured = Captured::parse(&log);
        let mut chunker = Chunker::default();
        let mut outputs = Vec::new();
        for (seq, (stream, bytes)) in captured.frames.iter().enumerate() {
            let (stream, data) = chunker.push(*stream, bytes);
            if (seq as u64) >= already {
                let chunk = ExecutionOutput {
                    stream,
                    seq: seq as u64,
                    data,
                };
                outputs.push(new_event(
                    &meta,
                    EventPayload::ExecutionOutput(chunk),
                    self.service,
                ));
            }
        }
        for result in
            futures::future::join_all(outputs.iter().map(|e| self.producer.publish(e))).await
        {
            result?;
        }
        let exit_code = match &finish {
            Finish::Result(result) => result.exit_code,
            _ => None,
        };
        if let Some(payload) = terminal_payload(
            &finish,
            captured.text(FrameStream::Stdout),
            captured.text(FrameStream::Stderr),
            meta.timeout_seconds,
        ) {
            self.producer
                .publish(&new_event(&meta, payload, self.service))
                .await?;
        }
        let terminated = EventPayload::PodTerminated(PodTerminated {
            executor: name.to_owned(),
            exit_code,
            reason: Some(terminated_reason(&finish).to_owned()),
        });
        self.producer
            .publish(&new_event(&meta, terminated, self.service))
            .await?;
        tracing::info!(pod = %name, reason = terminated_reason(&finish), "executor finished");
        self.stop_tracking(name);
        if pod_exists {
            self.record(
                name,
                Progress {
                    running: started,
                    finished: true,
                },
            )
            .await;
            self.delete_pod(name).await;
        }
        Ok(())
    }

    /// A pod deleted while tracked, or one whose deletion we only see now.
    async fn deleted(&mut self, pod: Pod) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        let progress = annotation::<Progress>(&pod, ANNOTATION_MONITOR).unwrap_or_default();
        if progress.finished || !self.track(&name, &pod, progress) {
            self.stop_tracking(&name);
            return;
        }
        let finish = match assess(&pod, Utc::now(), self.image_pull_grace) {
            Observed::Finished(finish) => finish,
            _ if self.tracked.get(&name).is_some_and(|t| t.cancelled) => Finish::Cancelled,
            _ => Finish::Lost("the executor pod was deleted before it reported a result".into()),
        };
        if let Err(error) = self.finish(&name, finish, false).await {
            tracing::warn!(pod = %name, %error, "publish failed for a deleted pod; retrying at the next reconciliation");
        }
    }

    /// A tracked pod missing from a fresh list.
    async fn vanished(&mut self, name: &str) {
        let finish = match self.tracked.get(name) {
            Some(t) if t.cancelled => Finish::Cancelled,
            Some(_) => {
                Finish::Lost("the executor pod disappeared before it reported a result".into())
            }
            None => return,
        };
        if let Err(error) = self.finish(name, finish, false).await {
            tracing::warn!(pod = %name, %error, "publish failed for a vanished pod; retrying at the next reconciliation");
        }
    }

    fn stop_tracking(&mut self, name: &str) {
        if let Some(follower) = self.tracked.remove(name).and_then(|t| t.follower) {
            follower.task.abort();
        }
    }

    /// Records progress on the pod; a failure only means some events may be published again.
    async fn record(&self, name: &str, progress: Progress) {
        let Ok(value) = serde_json::to_string(&progress) else {
            return;
        };
        let patch =
            serde_json::json!({ "metadata": { "annotations": { ANNOTATION_MONITOR: value } } });
        if let Err(error) = self
            .pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            && api_status(&error) != Some(NOT_FOUND)
        {
            tracing::warn!(pod = %name, %error, "recording monitor progress failed; events may repeat");
        }
    }

    async fn delete_pod(&self, name: &str) {
        match self.pods.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::debug!(pod = %name, "executor pod deleted"),
            Err(error) if api_status(&error) == Some(NOT_FOUND) => {}
            Err(error) => {
                tracing::warn!(pod = %name, %error, "deleting the executor pod failed; retrying at the next reconciliation");
            }
        }
    }

    /// Pods being tracked now (for tests and metrics).
    pub fn tracked(&self) -> Vec<String> {
        self.tracked.keys().cloned().collect()
    }
}

fn annotation<T: serde::de::DeserializeOwned>(pod: &Pod, key: &str) -> Option<T> {
    let text = pod.metadata.annotations.as_ref()?.get(key)?;
    serde_json::from_str(text).ok()
}

/// Publishes a running pod's frames as they reach its log; frames below `published` were
/// already published by an earlier follower.
async fn follow_log(
    pods: Api<Pod>,
    name: String,
    meta: ExecutorMeta,
    producer: EventProducer,
    service: &'static str,
    published: Arc<AtomicU64>,
) {
    let stream = match pods.log_stream(&name, &log_params(true)).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(pod = %name, %error, "log not followable yet");
            return;
        }
    };
    let mut lines = std::pin::pin!(stream.lines());
    let mut chunker = Chunker::default();
    let mut index: u64 = 0;
    let skip = published.load(Ordering::Acquire);
    while let Ok(Some(line)) = lines.try_next().await {
        let Some((stream, bytes)) = decode_line(&line) else {
            continue;
        };
        let (stream, data) = chunker.push(stream, &bytes);
        if index >= skip {
            let chunk = ExecutionOutput {
                stream,
                seq: index,
                data,
            };
            let event = new_event(&meta, EventPayload::ExecutionOutput(chunk), service);
            if let Err(error) = producer.publish(&event).await {
                tracing::warn!(pod = %name, %error, "live output publish failed; the final read catches up");
                return;
            }
            published.store(index + 1, Ordering::Release);
        }
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_defaults() {
        let progress = Progress {
            running: true,
            finished: false,
        };
        let text = serde_json::to_string(&progress).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Progress>(&text).ok(), Some(progress));
        assert_eq!(
            serde_json::from_str::<Progress>("{}").ok(),
            Some(Progress::default())
        );
    }
}
