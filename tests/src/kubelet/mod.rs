//! A kubelet simulator for one node backed by a private containerd (the containerd fixture).
//!
//! It registers its Node, watches the pods bound to it, starts each pod's sandbox as `ctr run` of
//! the node's sandbox image and, in app-container mode, its containers from their own images. A
//! failed start is reported exactly as kubelet does: a Warning event (`FailedCreatePodSandBox`, or
//! `Failed` for a container) whose message wraps containerd's real error text, updated in place
//! with a rising `count` on every retry, and retries follow a doubling backoff. A pod whose sandbox
//! (and containers) started is reported Running.

pub mod cluster;
pub mod incident;
pub mod messages;
pub mod registry_node;
pub mod scenario;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::TestError;
use crate::containerd::{ContainerdFixture, RunOutcome};
pub use messages::Backoff;
use messages::{
    REASON_CONTAINER_FAILED, REASON_SANDBOX_FAILED, WAITING_RUN_ERROR, container_failed_message,
    cri_error_from_ctr, event_name, network_setup_error, sandbox_failed_message,
};

fn kube_err(
    action: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> TestError {
    let object = object.into();
    move |source| TestError::Kube {
        action,
        object,
        source,
    }
}

/// How the simulated kubelet behaves.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    pub node: String,
    /// Labels of the Node it registers (e.g. the auto-remediation opt-out).
    pub node_labels: BTreeMap<String, String>,
    pub backoff: Backoff,
    /// Also start the pods' application containers (from their own images).
    pub run_containers: bool,
    /// Simulates a broken CNI plugin: sandbox network setup fails with this plugin error (for
    /// example `plugin type="bridge" failed (add): …`) before any container is started.
    pub cni_failure: Option<String>,
}

impl KubeletConfig {
    pub fn new(node: &str) -> Self {
        KubeletConfig {
            node: node.to_string(),
            node_labels: BTreeMap::new(),
            backoff: Backoff::default(),
            run_containers: false,
            cni_failure: None,
        }
    }
}

/// Something the kubelet did, with when (for timelines and latency measurements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A start failed and the event `namespace/name` was posted or updated to `count`.
    StartFailed {
        pod: String,
        container: Option<String>,
        event: String,
        count: i32,
        message: String,
    },
    SandboxRunning {
        pod: String,
    },
    ContainerRunning {
        pod: String,
        container: String,
    },
    PodRunning {
        pod: String,
    },
}

/// What the kubelet has done so far.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    entries: Arc<Mutex<Vec<(Instant, Observation)>>>,
}

impl Journal {
    fn push(&self, o: Observation) {
        if let Ok(mut e) = self.entries.lock() {
            e.push((Instant::now(), o));
        }
    }

    pub fn entries(&self) -> Vec<(Instant, Observation)> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// When the first matching observation happened.
    pub fn first(&self, matches: impl Fn(&Observation) -> bool) -> Option<Instant> {
        self.entries()
            .into_iter()
            .find(|(_, o)| matches(o))
            .map(|(t, _)| t)
    }
}

/// A running simulated kubelet; dropping it stops it (containers stay until the fixture goes).
pub struct KubeletSim {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    journal: Journal,
}

impl KubeletSim {
    /// Registers the node (or updates its labels) and starts syncing its pods.
    pub async fn start(
        client: Client,
        fixture: Arc<ContainerdFixture>,
        config: KubeletConfig,
    ) -> Result<KubeletSim, TestError> {
        register_node(&client, &config).await?;
        let cancel = CancellationToken::new();
        let journal = Journal::default();
        let kubelet = Kubelet {
            client,
            fixture,
            config,
            journal: journal.clone(),
        };
        let task = tokio::spawn(kubelet.run(cancel.clone()));
        Ok(KubeletSim {
            cancel,
            task: Some(task),
            journal,
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for KubeletSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn register_node(client: &Client, config: &KubeletConfig) -> Result<(), TestError> {
    let nodes = Api::<Node>::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": config.node, "labels": config.node_labels },
    });
    nodes
        .patch(
            &config.node,
            &PatchParams::apply("kubelet-sim").force(),
            &Patch::Apply(&node),
        )
        .await
        .map_err(kube_err("register", format!("Node {}", config.node)))?;
    let status = json!({ "status": { "conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": Timestamp::now().to_string(),
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    nodes
        .patch_status(
            &config.node,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .map_err(kube_err(
            "report status of",
            format!("Node {}", config.node),
        ))?;
    Ok(())
}

#[derive(Clone)]
struct Kubelet {
    client: Client,
    fixture: Arc<ContainerdFixture>,
    config: KubeletConfig,
    journal: Journal,
}

impl Kubelet {
    async fn run(self, cancel: CancellationToken) {
        let pods = Api::<Pod>::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.config.node);
        let mut stream = watcher(pods, watcher::Config::default().fields(&selector))
            .default_backoff()
            .boxed();
        let mut workers: HashMap<String, CancellationToken> = HashMap::new();
        loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => break,
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            match item {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    let Some(uid) = pod.metadata.uid.clone() else {
                        continue;
                    };
                    let running =
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                    if running
                        || pod.metadata.deletion_timestamp.is_some()
                        || workers.contains_key(&uid)
                    {
                        continue;
                    }
                    let token = cancel.child_token();
                    workers.insert(uid, token.clone());
                    tokio::spawn(self.clone().sync_pod(pod, token));
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(token) = pod.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                        token.cancel();
                    }
                }
                Ok(_) => {}
                Err(error) => warn!(%error, node = %self.config.node, "pod watch failed; retrying"),
            }
        }
        for token in workers.values() {
            token.cancel();
        }
    }

    /// Starts the sandbox, then (in app mode) the containers, each with retries, then reports Running.
    async fn sync_pod(self, pod: Pod, cancel: CancellationToken) {
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let name = pod.name_any();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let short_uid: String = uid.chars().filter(|c| *c != '-').take(12).collect();
        let sandbox_id = format!("{}-{short_uid}-sandbox", self.config.node);
        let sandbox_image = self.fixture.sandbox_image().to_string();
        let started = self
            .start_with_retries(&pod, None, &sandbox_image, &sandbox_id, Vec::new(), &cancel)
            .await;
        if !started {
            return;
        }
        self.journal.push(Observation::SandboxRunning {
            pod: format!("{ns}/{name}"),
        });
        info!(pod = %format!("{ns}/{name}"), node = %self.config.node, "sandbox running");
        if self.config.run_containers {
            let containers = pod
                .spec
                .as_ref()
                .map(|s| s.containers.clone())
                .unwrap_or_default();
            for c in containers {
                let Some(image) = c.image.clone() else {
                    continue;
                };
                let id = format!("{}-{short_uid}-{}", self.config.node, c.name);
                let args: Vec<String> = c
                    .command
                    .iter()
                    .flatten()
                    .chain(c.args.iter().flatten())
                    .cloned()
                    .collect();
                if !self
                    .start_with_retries(&pod, Some(&c.name), &image, &id, args, &cancel)
                    .await
                {
                    return;
                }
                self.journal.push(Observation::ContainerRunning {
                    pod: format!("{ns}/{name}"),
                    container: c.name.clone(),
                });
            }
        }
        if let Err(error) = self.report_running(&pod).await {
            warn!(%error, "cannot report the pod running");
            return;
        }
        self.journal.push(Observation::PodRunning {
            pod: format!("{ns}/{name}"),
        });
    }

    /// `ctr run` until it starts or the pod goes away; every failure posts or updates the event.
    async fn start_with_retries(
        &self,
        pod: &Pod,
        container: Option<&str>,
        image: &str,
        id: &str,
        args: Vec<String>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut event: Option<(String, i32, Timestamp)> = None;
        let mut attempt = 0u32;
        loop {
            if container.is_none()
                && let Some(plugin_error) = &self.config.cni_failure
            {
                let message = sandbox_failed_message(&network_setup_error(id, plugin_error));
                self.report_failure(pod, container, &message, &mut event)
                    .await;
                if !self.back_off(&mut attempt, cancel).await {
                    return false;
                }
                continue;
            }
            let fixture = self.fixture.clone();
            let (image_owned, id_owned, args_owned) =
                (image.to_string(), id.to_string(), args.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                let argv: Vec<&str> = args_owned.iter().map(String::as_str).collect();
                fixture.run_container(&image_owned, &id_owned, &argv)
            })
            .await;
            let message = match outcome {
                Ok(Ok(RunOutcome::Started)) => return true,
                Ok(Ok(RunOutcome::Failed(stderr))) => {
                    let cri = cri_error_from_ctr(&stderr);
                    match container {
                        None => sandbox_failed_message(&cri),
                        Some(_) => container_failed_message(&cri),
                    }
                }
                Ok(Err(error)) => format!("Error: {error}"),
                Err(error) => format!("Error: {error}"),
            };
            self.report_failure(pod, container, &message, &mut event)
                .await;
            if !self.back_off(&mut attempt, cancel).await {
                return false;
            }
        }
    }

    /// Posts or updates the failure event, notes it in the journal and the container status.
    async fn report_failure(
        &self,
        pod: &Pod,
        container: Option<&str>,
        message: &str,
        event: &mut Option<(String, i32, Timestamp)>,
    ) {
        match self
            .post_failure(pod, container, message, event.as_ref())
            .await
        {
            Ok(posted) => {
                self.journal.push(Observation::StartFailed {
                    pod: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                    container: container.map(str::to_string),
                    event: posted.0.clone(),
                    count: posted.1,
                    message: message.to_string(),
                });
                *event = Some(posted);
            }
            Err(error) => warn!(%error, "cannot post the failure event"),
        }
        if let Some(c) = container
            && let Err(error) = self.report_waiting(pod, c, message).await
        {
            warn!(%error, "cannot report the container waiting");
        }
    }

    /// Sleeps the next backoff delay; false when the pod went away meanwhile.
    async fn back_off(&self, attempt: &mut u32, cancel: &CancellationToken) -> bool {
        let delay = self.config.backoff.delay(*attempt);
        *attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Creates the event on the first failure and updates it (count, lastTimestamp) afterwards.
    async fn post_failure(
        &self,
        pod: &Pod,
        container: Option<&str>,
        message: &str,
        previous: Option<&(String, i32, Timestamp)>,
    ) -> Result<(String, i32, Timestamp), TestError> {
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let events = Api::<Event>::namespaced(self.client.clone(), &ns);
        let now = Timestamp::now();
        if let Some((name, count, first)) = previous {
            let count = count + 1;
            let patch =
                json!({ "count": count, "lastTimestamp": now.to_string(), "message": message });
            events
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err("update", format!("Event {ns}/{name}")))?;
            return Ok((name.clone(), count, *first));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = event_name(&pod.name_any(), nanos);
        let (reason, field_path) = match container {
            None => (REASON_SANDBOX_FAILED, None),
            Some(c) => (
                REASON_CONTAINER_FAILED,
                Some(format!("spec.containers{{{c}}}")),
            ),
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                field_path,
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.config.node.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.config.node.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        events
            .create(&PostParams::default(), &event)
            .await
            .map_err(kube_err("create", format!("Event {ns}/{name}")))?;
        Ok((name, 1, now))
    }

    async fn report_waiting(
        &self,
        pod: &Pod,
        container: &str,
        message: &str,
    ) -> Result<(), TestError> {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container))
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let status = json!({ "status": { "phase": "Pending", "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": WAITING_RUN_ERROR, "message": message } },
        }]}});
        self.patch_pod_status(pod, &status).await
    }

    async fn report_running(&self, pod: &Pod) -> Result<(), TestError> {
        let now = Timestamp::now().to_string();
        let statuses: Vec<_> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let running = self.config.run_containers;
                json!({
                    "name": c.name, "image": c.image, "imageID": "", "ready": running, "restartCount": 0,
                    "started": running,
                    "state": if running { json!({ "running": { "startedAt": now } }) }
                             else { json!({ "waiting": { "reason": "ContainerCreating" } }) },
                })
            })
            .collect();
        let status = json!({ "status": {
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1",
            "conditions": [
                { "type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now },
                { "type": "Ready", "status": if self.config.run_containers { "True" } else { "False" }, "lastTransitionTime": now },
            ],
            "containerStatuses": statuses,
        }});
        self.patch_pod_status(pod, &status).await
    }

    async fn patch_pod_status(
        &self,
        pod: &Pod,
        status: &serde_json::Value,
    ) -> Result<(), TestError> {
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .map_err(kube_err(
            "report status of",
            format!("Pod {ns}/{}", pod.name_any()),
        ))?;
        Ok(())
    }
}
