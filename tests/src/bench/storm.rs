//! The operator storm benchmark of issue 14: the real `snapmend-operator` binary on snapmend-sim
//! with thousands of realistic Nodes.
//!
//! - Storm: `--auto-remediate repair`; one FailedCreatePodSandBox event on each of the storm
//!   nodes, each updated `updates` times as kubelet does; event→SnapshotRepair and
//!   event→Succeeded per node; operator requests, response bytes and LISTs after start-up (the
//!   sim's request log by the operator's User-Agent); peak RSS (VmHWM).
//! - Batch latency: repairs applied directly, one after another, on a large cluster and on a
//!   one-node cluster; the ratio of the median create→Succeeded latencies shows what cluster
//!   size costs a repair.
//!
//! Agents are played by doubles that renew presence Leases and answer requests (Verify finds
//! `/pause` missing, Repair restores it), since thousands of containerds do not fit a machine.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use snapmend_crds::labels::DEFAULT_LEASE_NAMESPACE;
use snapmend_crds::{Phase, RepairAction, SnapshotRepair, SnapshotRepairSpec};
use tokio::task::JoinHandle;

use crate::TestError;
use crate::kubelet::scenario::{
    ChildProcess, free_port, install_snapmend, kubelet_event, renew_helper_leases,
};
use crate::probe::{http_get, metric_value};
use crate::sim::{RequestRecord, SimServer, count_by_key};

/// Images in each realistic Node's status.
pub const IMAGES_PER_NODE: usize = 30;
/// The image the agent doubles report on.
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The message kubelet posts when `/pause` is gone from the sandbox image's snapshot.
pub const PAUSE_GONE: &str = r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#;
/// The operator's User-Agent prefix, which tells its requests from everyone else's.
const OPERATOR_AGENT: &str = "snapmend-operator";
/// Event watches the operator opens once its stores are filled: start-up is over then.
const EVENT_WATCHES: usize = 8;

/// The name of the `i`-th Node, as on EKS.
pub fn node_name(i: usize) -> String {
    format!("ip-10-0-{}-{}.ec2.internal", i / 250, i % 250)
}

/// A Node status the size of a real one: 30 images (digest and tag names, sizes), conditions,
/// addresses, capacity and nodeInfo; about 9 KB of JSON.
pub fn realistic_status(i: usize) -> Value {
    let images: Vec<Value> = (0..IMAGES_PER_NODE)
        .map(|k| {
            json!({
                "names": [
                    format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team-{k}/service-{k}@sha256:{:064x}", i * 100 + k),
                    format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team-{k}/service-{k}:v1.{k}.{i}"),
                ],
                "sizeBytes": 50_000_000 + k * 1_000_003,
            })
        })
        .collect();
    let now = Timestamp::now().to_string();
    let conditions: Vec<Value> = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady"),
    ]
    .iter()
    .map(|(t, s, r)| json!({"type": t, "status": s, "reason": r, "message": format!("kubelet says {r}"), "lastHeartbeatTime": now, "lastTransitionTime": now}))
    .collect();
    json!({
        "images": images,
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250)}, {"type": "Hostname", "address": node_name(i)}],
        "capacity": {"cpu": "8", "memory": "32386544Ki", "pods": "110", "ephemeral-storage": "104845292Ki"},
        "allocatable": {"cpu": "7910m", "memory": "31369712Ki", "pods": "110", "ephemeral-storage": "95551679124"},
        "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("ec2{i:029x}"), "bootID": format!("{i:032x}"),
            "kernelVersion": "6.1.0-28-cloud-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.6.20",
            "kubeletVersion": "v1.33.1", "kubeProxyVersion": "v1.33.1", "operatingSystem": "linux", "architecture": "amd64"},
    })
}

fn kube_err(action: &'static str, object: String) -> impl FnOnce(kube::Error) -> TestError {
    move |source| TestError::Kube {
        action,
        object,
        source,
    }
}

/// Registers Nodes `0..count` with realistic statuses, 16 requests at a time.
pub async fn add_realistic_nodes(client: &Client, count: usize) -> Result<(), TestError> {
    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..count)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = node_name(i);
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "node.kubernetes.io/instance-type": "m6i.2xlarge", "topology.kubernetes.io/zone": "eu-west-1a"}},
                    "spec": {"providerID": format!("aws:///eu-west-1a/i-{i:017x}")},
                }))
                .map_err(|e| TestError::Scenario(format!("Node {name}: {e}")))?;
                nodes
                    .create(&PostParams::default(), &node)
                    .await
                    .map_err(kube_err("create", format!("Node {name}")))?;
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": realistic_status(i)})),
                    )
                    .await
                    .map_err(kube_err("patch", format!("Node {name} status")))?;
                Ok::<(), TestError>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Answers every request like an agent: Verify finds `/pause` missing after `verify_time`,
/// Repair restores it after `repair_time`, reported by server-side apply as the agent does.
/// Watches; never lists after its start.
pub fn answer_requests(
    client: &Client,
    verify_time: Duration,
    repair_time: Duration,
) -> JoinHandle<()> {
    let api = Api::<SnapshotRepair>::all(client.clone());
    tokio::spawn(async move {
        let stream = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        let mut answered = std::collections::BTreeSet::new();
        while let Ok(Some(sr)) = stream.try_next().await {
            let Some(status) = sr.status.clone() else {
                continue;
            };
            let Some(request) = status.request.clone() else {
                continue;
            };
            if status
                .report
                .as_ref()
                .is_some_and(|r| r.request_id == request.id)
                || !answered.insert((sr.name_any(), request.id.clone()))
            {
                continue;
            }
            let (outcome, restored, delay) = match request.action {
                RepairAction::Verify => ("Corrupted", json!(null), verify_time),
                RepairAction::Repair => ("Repaired", json!(1), repair_time),
            };
            let report = json!({
                "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair",
                "metadata": {"name": sr.name_any()},
                "status": { "report": {
                "requestId": request.id, "image": IMAGE, "outcome": outcome,
                "layers": [{ "index": 0, "digest": "sha256:aa", "diffId": "sha256:bb", "chainId": "sha256:bb",
                    "snapshotId": "1", "blob": "Verified", "state": outcome,
                    "findingsTotal": 1, "findings": [{ "path": "/pause", "kind": "Missing" }], "entriesRestored": restored }],
            }}});
            let api = api.clone();
            let name = sr.name_any();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = api
                    .patch_status(
                        &name,
                        &PatchParams::apply("snapmend-node-helper").force(),
                        &Patch::Apply(&report),
                    )
                    .await
                {
                    eprintln!("agent double: reporting on {name}: {e}");
                }
            });
        }
    })
}

/// When each SnapshotRepair was first seen and when it was first seen Succeeded or Failed.
#[derive(Clone, Debug, Default)]
pub struct RepairTimes {
    pub node: String,
    pub seen: Option<Instant>,
    pub done: Option<(Instant, Phase)>,
}

type RepairLog = Arc<Mutex<HashMap<String, RepairTimes>>>;

/// Watches SnapshotRepairs and records [`RepairTimes`] by name.
fn track_repairs(client: &Client) -> (RepairLog, JoinHandle<()>) {
    let log: RepairLog = Arc::default();
    let record = log.clone();
    let api = Api::<SnapshotRepair>::all(client.clone());
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(sr)) = stream.try_next().await {
            let now = Instant::now();
            let phase = sr.status.as_ref().and_then(|s| s.phase);
            let mut log = record.lock().unwrap_or_else(|p| p.into_inner());
            let entry = log.entry(sr.name_any()).or_default();
            entry.node.clone_from(&sr.spec.node_name);
            entry.seen.get_or_insert(now);
            if let Some(p) = phase.filter(|p| p.is_terminal()) {
                entry.done.get_or_insert((now, p));
            }
        }
    });
    (log, task)
}

fn snapshot(log: &RepairLog) -> HashMap<String, RepairTimes> {
    log.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The `p`-th percentile (nearest rank) of sorted samples; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        Latency {
            count: samples.len(),
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// `big / small` of two medians; `None` when the small one is zero.
pub fn median_ratio(big: &Latency, small: &Latency) -> Option<f64> {
    (!small.p50.is_zero()).then(|| big.p50.as_secs_f64() / small.p50.as_secs_f64())
}

/// What the operator asked of the API server after start-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestCost {
    pub requests: usize,
    pub lists: usize,
    pub response_bytes: u64,
    /// `verb resource` → count.
    pub by_key: BTreeMap<String, usize>,
}

impl RequestCost {
    /// The operator's requests in `records` (by User-Agent).
    pub fn of(records: &[RequestRecord]) -> RequestCost {
        let ops: Vec<&RequestRecord> = records
            .iter()
            .filter(|r| r.from_agent(OPERATOR_AGENT))
            .collect();
        RequestCost {
            requests: ops.len(),
            lists: ops.iter().filter(|r| r.verb == "list").count(),
            response_bytes: ops.iter().filter_map(|r| r.response_bytes).sum(),
            by_key: count_by_key(ops.iter().copied()),
        }
    }
}

/// Where start-up ends in a request log: just after the operator's `n`-th WATCH of events and
/// its WATCH of SnapshotScans (the scans controller starts on its own), whichever is later.
pub fn startup_end(records: &[RequestRecord], n: usize) -> Option<usize> {
    let (mut events_seen, mut events_at, mut scans_at) = (0, None, None);
    for (i, r) in records.iter().enumerate() {
        if !r.from_agent(OPERATOR_AGENT) || r.verb != "watch" {
            continue;
        }
        match r.resource.as_str() {
            "events" => {
                events_seen += 1;
                if events_seen == n {
                    events_at = Some(i + 1);
                }
            }
            "snapshotscans" if scans_at.is_none() => scans_at = Some(i + 1),
            _ => {}
        }
    }
    Some(events_at?.max(scans_at?))
}

#[derive(Clone, Debug)]
pub struct StormOptions {
    pub operator: PathBuf,
    /// Nodes in the storm's cluster.
    pub nodes: usize,
    /// Nodes that get a FailedCreatePodSandBox event.
    pub storm_nodes: usize,
    /// Updates of each event after its creation (count 2, 3, …).
    pub updates: u32,
    /// Repairs applied one after another on each cluster of the batch comparison.
    pub batch_repairs: usize,
    /// Nodes in the large cluster of the batch comparison (the small one has one).
    pub batch_cluster_nodes: usize,
    pub max_cordoned: usize,
    pub verify_time: Duration,
    pub repair_time: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct StormReport {
    pub operator: PathBuf,
    pub nodes: usize,
    pub storm_nodes: usize,
    pub event_writes: usize,
    pub nodes_registered_in: Duration,
    pub startup: Duration,
    pub storm_posted_in: Duration,
    pub event_to_repair: Latency,
    pub event_to_succeeded: Latency,
    /// SnapshotRepairs per storm node (each should have exactly one).
    pub repairs_per_node: BTreeMap<String, usize>,
    pub failed: Vec<String>,
    pub after_startup: RequestCost,
    pub peak_rss_kib: u64,
    pub batch_large: Latency,
    pub batch_one_node: Latency,
    pub batch_cluster_nodes: usize,
}

impl StormReport {
    pub fn repairs(&self) -> usize {
        self.repairs_per_node.values().sum()
    }
}

/// A running `snapmend-operator` against a sim, with its metrics address.
struct Operator {
    process: ChildProcess,
    metrics: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn spawn(binary: &Path, sim: &SimServer, args: &[String]) -> Result<Operator, TestError> {
        let dir = tempfile::Builder::new()
            .prefix("snapmend-storm-")
            .tempdir()
            .map_err(|e| TestError::io(std::env::temp_dir(), e))?;
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut all = vec![
            "--metrics-addr".to_string(),
            metrics.to_string(),
            "--kubeconfig".to_string(),
            kubeconfig.display().to_string(),
        ];
        all.extend(args.iter().cloned());
        let process = ChildProcess::spawn(
            "operator",
            binary,
            &all,
            &kubeconfig,
            dir.path(),
            &[
                ("POD_NAMESPACE", DEFAULT_LEASE_NAMESPACE),
                ("SNAPMEND_LEADER_LEASE_SECONDS", "4"),
            ],
        )?;
        Ok(Operator {
            process,
            metrics,
            _dir: dir,
        })
    }

    async fn wait_leader(&self, within: Duration) -> Result<(), TestError> {
        wait("the operator to lead", within, &self.process, || async {
            let (_, text) = http_get(self.metrics, "/metrics").await?;
            (metric_value(&text, "snapmend_operator_leader") == Some(1.0)).then_some(())
        })
        .await
    }
}

/// Polls `check` every 50 ms; a timeout names `what` and shows the operator's log tail.
async fn wait<T, F, Fut>(
    what: &str,
    within: Duration,
    operator: &ChildProcess,
    mut check: F,
) -> Result<T, TestError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(TestError::Timeout {
                what: format!(
                    "{what}\n--- operator log tail\n{}",
                    crate::kubelet::incident::tail(&operator.log_text(), 30)
                ),
                after: within,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sim with snapmend installed, `nodes` realistic Nodes, Lease-renewing and answering agent
/// doubles for `agents`, and a SnapshotRepair tracker.
struct Cluster {
    sim: SimServer,
    client: Client,
    repairs: RepairLog,
    tasks: Vec<JoinHandle<()>>,
    registered_in: Duration,
}

impl Cluster {
    async fn start(
        nodes: usize,
        agents: Vec<String>,
        opts: &StormOptions,
    ) -> Result<Cluster, TestError> {
        let sim = SimServer::start().await?;
        let client = sim.client()?;
        install_snapmend(&client).await?;
        let leases = tokio::spawn(renew_helper_leases(
            client.clone(),
            DEFAULT_LEASE_NAMESPACE,
            agents,
            "storm-agents",
        ));
        let started = Instant::now();
        add_realistic_nodes(&client, nodes).await?;
        let registered_in = started.elapsed();
        let answers = answer_requests(&client, opts.verify_time, opts.repair_time);
        let (repairs, tracker) = track_repairs(&client);
        Ok(Cluster {
            sim,
            client,
            repairs,
            tasks: vec![leases, answers, tracker],
            registered_in,
        })
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.sim.stop().await;
    }
}

/// Nodes spread evenly over `0..nodes`.
fn spread(nodes: usize, count: usize) -> Vec<String> {
    let stride = (nodes / count.max(1)).max(1);
    (0..count.min(nodes))
        .map(|k| node_name(k * stride))
        .collect()
}

/// The storm and the batch comparison.
pub async fn run_storm(opts: &StormOptions) -> Result<StormReport, TestError> {
    let mut report = run_event_storm(opts).await?;
    let large = run_batch(opts, opts.batch_cluster_nodes).await?;
    let one = run_batch(opts, 1).await?;
    report.batch_large = large;
    report.batch_one_node = one;
    report.batch_cluster_nodes = opts.batch_cluster_nodes;
    Ok(report)
}

async fn run_event_storm(opts: &StormOptions) -> Result<StormReport, TestError> {
    let storm_nodes = spread(opts.nodes, opts.storm_nodes);
    let cluster = Cluster::start(opts.nodes, storm_nodes.clone(), opts).await?;
    let client = cluster.client.clone();
    let started = Instant::now();
    let operator = Operator::spawn(
        &opts.operator,
        &cluster.sim,
        &[
            "--auto-remediate".into(),
            "repair".into(),
            "--cooldown".into(),
            "10m".into(),
            "--helper-timeout".into(),
            "1m".into(),
            "--max-cordoned-nodes".into(),
            opts.max_cordoned.to_string(),
        ],
    )?;
    let startup_at = wait(
        "the operator's event and SnapshotScan watches (end of start-up)",
        Duration::from_secs(120),
        &operator.process,
        || async { startup_end(&cluster.sim.requests(), EVENT_WATCHES) },
    )
    .await?;
    let startup = started.elapsed();

    // One event per storm node, then each updated `updates` times, as kubelet's event
    // aggregation does (count 2, 3, …).
    let first_event: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let events = Api::<Event>::namespaced(client.clone(), "default");
    let posted = Instant::now();
    futures::stream::iter(storm_nodes.iter().cloned())
        .map(|node| {
            let (events, first_event) = (events.clone(), first_event.clone());
            async move {
                let pod = format!("{}-web-0", node.split('.').next().unwrap_or(&node));
                let event = kubelet_event(
                    "default",
                    &format!("{pod}.1"),
                    &pod,
                    &node,
                    "FailedCreatePodSandBox",
                    PAUSE_GONE,
                    None,
                );
                first_event
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(node.clone())
                    .or_insert_with(Instant::now);
                events
                    .create(&PostParams::default(), &event)
                    .await
                    .map_err(kube_err("create", format!("Event default/{pod}.1")))?;
                Ok::<(), TestError>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let updates = (2..=opts.updates + 1).flat_map(|count| {
        storm_nodes.iter().map(move |node| {
            let pod = format!("{}-web-0", node.split('.').next().unwrap_or(node));
            (count, format!("{pod}.1"))
        })
    });
    futures::stream::iter(updates)
        .map(|(count, name)| {
            let events = events.clone();
            async move {
                let patch =
                    json!({ "count": count, "lastTimestamp": Timestamp::now().to_string() });
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_err("patch", format!("Event default/{name}")))?;
                Ok::<(), TestError>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let storm_posted_in = posted.elapsed();

    let repairs = cluster.repairs.clone();
    let want = storm_nodes.len();
    wait(
        "a finished repair on every storm node",
        Duration::from_secs(600),
        &operator.process,
        || {
            let repairs = repairs.clone();
            async move {
                let log = snapshot(&repairs);
                let done: std::collections::BTreeSet<_> = log
                    .values()
                    .filter(|t| t.done.is_some())
                    .map(|t| t.node.clone())
                    .collect();
                (done.len() >= want && log.values().all(|t| t.done.is_some())).then_some(())
            }
        },
    )
    .await?;
    // Late duplicates would show up within a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let requests = cluster.sim.requests();
    let after_startup = RequestCost::of(&requests[startup_at.min(requests.len())..]);
    let peak_rss_kib = operator.process.peak_rss_kib().unwrap_or_default();
    let log = snapshot(&cluster.repairs);
    let first_event = first_event
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut repairs_per_node: BTreeMap<String, usize> = BTreeMap::new();
    let (mut to_repair, mut to_done, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (name, t) in &log {
        *repairs_per_node.entry(t.node.clone()).or_default() += 1;
        let Some(first) = first_event.get(&t.node) else {
            continue;
        };
        if let Some(seen) = t.seen {
            to_repair.push(seen.saturating_duration_since(*first));
        }
        match t.done {
            Some((at, Phase::Succeeded)) => to_done.push(at.saturating_duration_since(*first)),
            _ => failed.push(name.clone()),
        }
    }
    drop(operator);
    let nodes_registered_in = cluster.registered_in;
    cluster.stop().await;
    Ok(StormReport {
        operator: opts.operator.clone(),
        nodes: opts.nodes,
        storm_nodes: want,
        event_writes: want * (1 + opts.updates as usize),
        nodes_registered_in,
        startup,
        storm_posted_in,
        event_to_repair: Latency::of(to_repair),
        event_to_succeeded: Latency::of(to_done),
        repairs_per_node,
        failed,
        after_startup,
        peak_rss_kib,
        ..Default::default()
    })
}

/// `batch_repairs` repairs applied one after another on a cluster of `nodes` Nodes (each on
/// its own node when there are enough), create→Succeeded each.
async fn run_batch(opts: &StormOptions, nodes: usize) -> Result<Latency, TestError> {
    let targets: Vec<String> = (0..opts.batch_repairs)
        .map(|k| node_name(k % nodes.max(1)))
        .collect();
    let mut agents = targets.clone();
    agents.sort();
    agents.dedup();
    let cluster = Cluster::start(nodes, agents, opts).await?;
    let operator = Operator::spawn(
        &opts.operator,
        &cluster.sim,
        &[
            "--helper-timeout".into(),
            "1m".into(),
            "--max-cordoned-nodes".into(),
            opts.max_cordoned.to_string(),
        ],
    )?;
    operator.wait_leader(Duration::from_secs(120)).await?;
    let api = Api::<SnapshotRepair>::all(cluster.client.clone());
    let mut samples = Vec::with_capacity(targets.len());
    for (k, node) in targets.iter().enumerate() {
        let name = format!("batch-{k:04}");
        let spec = SnapshotRepairSpec {
            node_name: node.clone(),
            image: Some(IMAGE.into()),
            sandbox_image: false,
            all_images: false,
            action: RepairAction::Repair,
            cordon: true,
            content_check: Default::default(),
            pull_secrets: Vec::new(),
        };
        let created = Instant::now();
        api.create(&PostParams::default(), &SnapshotRepair::new(&name, spec))
            .await
            .map_err(kube_err("create", format!("SnapshotRepair {name}")))?;
        let repairs = cluster.repairs.clone();
        let (at, phase) = wait(
            &format!("SnapshotRepair {name} to finish"),
            Duration::from_secs(60),
            &operator.process,
            || {
                let t = snapshot(&repairs).get(&name).and_then(|t| t.done);
                async move { t }
            },
        )
        .await?;
        if phase != Phase::Succeeded {
            return Err(TestError::Scenario(format!(
                "SnapshotRepair {name} on {node} ended {phase:?}"
            )));
        }
        samples.push(at.saturating_duration_since(created));
    }
    drop(operator);
    cluster.stop().await;
    Ok(Latency::of(samples))
}

/// The newest modification time under `dir`.
pub fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The release operator when it is built and newer than every source file, else the debug one.
pub fn choose_operator(target_dir: &Path, sources: &Path) -> Result<PathBuf, TestError> {
    let newest = newest_mtime(sources);
    let fresh = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|built| newest.is_none_or(|n| n <= built))
    };
    let release = target_dir.join("release/snapmend-operator");
    let debug = target_dir.join("debug/snapmend-operator");
    [release, debug]
        .into_iter()
        .find(|p| fresh(p))
        .ok_or_else(|| {
            TestError::Scenario(format!(
                "no snapmend-operator in {} newer than {}: run `cargo build -p snapmend-operator` (or with --release)",
                target_dir.display(),
                sources.display()
            ))
        })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The storm's Markdown section for docs/BENCHMARKS.md.
pub fn render_storm_markdown(r: &StormReport, date: &str, command: &str) -> String {
    let per_repair = |n: f64| n / r.repairs().max(1) as f64;
    let ratio = median_ratio(&r.batch_large, &r.batch_one_node)
        .map(|x| format!("{x:.2}×"))
        .unwrap_or_else(|| "—".into());
    let mut out = format!(
        "### Operator storm ({date}, `{command}`)\n\nOperator binary: `{}`. {} realistic Nodes \
         registered in {:.1} s; start-up (until the operator's {EVENT_WATCHES} event watches and its SnapshotScan watch) \
         {:.1} s.\n\n| | measured | goal |\n| --- | --- | --- |\n",
        r.operator.display(),
        r.nodes,
        r.nodes_registered_in.as_secs_f64(),
        r.startup.as_secs_f64(),
    );
    let rows = [
        (
            format!(
                "storm: {} event writes on {} nodes, posted in",
                r.event_writes, r.storm_nodes
            ),
            format!("{:.1} s", r.storm_posted_in.as_secs_f64()),
            String::new(),
        ),
        (
            "SnapshotRepairs created / failed".into(),
            format!("{} / {}", r.repairs(), r.failed.len()),
            format!("{} / 0", r.storm_nodes),
        ),
        (
            "event→SnapshotRepair p50 / p99 / max".into(),
            format!(
                "{} / {} / {}",
                ms(r.event_to_repair.p50),
                ms(r.event_to_repair.p99),
                ms(r.event_to_repair.max)
            ),
            String::new(),
        ),
        (
            "event→Succeeded p50 / p99 / max".into(),
            format!(
                "{} / {} / {}",
                ms(r.event_to_succeeded.p50),
                ms(r.event_to_succeeded.p99),
                ms(r.event_to_succeeded.max)
            ),
            String::new(),
        ),
        (
            "operator LISTs after start-up".into(),
            format!("**{}**", r.after_startup.lists),
            "0".into(),
        ),
        (
            "operator requests per repair".into(),
            format!("{:.1}", per_repair(r.after_startup.requests as f64)),
            String::new(),
        ),
        (
            "response bytes per repair".into(),
            format!(
                "{:.1} KiB",
                per_repair(r.after_startup.response_bytes as f64) / 1024.0
            ),
            String::new(),
        ),
        (
            format!("operator peak RSS (VmHWM) with {} Nodes", r.nodes),
            format!("**{:.1} MiB**", r.peak_rss_kib as f64 / 1024.0),
            "< 64 MiB".into(),
        ),
        (
            format!(
                "{} repairs one after another, create→Succeeded p50 / p99: {} Nodes",
                r.batch_large.count, r.batch_cluster_nodes
            ),
            format!("{} / {}", ms(r.batch_large.p50), ms(r.batch_large.p99)),
            String::new(),
        ),
        (
            "the same on one Node".into(),
            format!(
                "{} / {}",
                ms(r.batch_one_node.p50),
                ms(r.batch_one_node.p99)
            ),
            String::new(),
        ),
        (
            "ratio of medians".into(),
            format!("**{ratio}**"),
            "≤ 1.2×".into(),
        ),
    ];
    for (what, value, goal) in rows {
        out.push_str(&format!("| {what} | {value} | {goal} |\n"));
    }
    out.push_str(&format!(
        "\nOperator requests after start-up: {:?}\n",
        r.after_startup.by_key
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verb: &str, resource: &str, agent: &str, bytes: Option<u64>) -> RequestRecord {
        RequestRecord {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: None,
            path: String::new(),
            user_agent: Some(agent.into()),
            status: 200,
            response_bytes: bytes,
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 99.0), Duration::from_millis(7));
    }

    #[test]
    fn latency_sorts_its_samples() {
        let l = Latency::of(vec![
            Duration::from_millis(30),
            Duration::from_millis(10),
            Duration::from_millis(20),
        ]);
        assert_eq!(l.count, 3);
        assert_eq!(l.p50, Duration::from_millis(20));
        assert_eq!(l.p99, Duration::from_millis(30));
        assert_eq!(l.max, Duration::from_millis(30));
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }

    #[test]
    fn the_median_ratio_needs_a_nonzero_baseline() {
        let big = Latency::of(vec![Duration::from_millis(120)]);
        let small = Latency::of(vec![Duration::from_millis(100)]);
        let r = median_ratio(&big, &small).expect("ratio");
        assert!((r - 1.2).abs() < 1e-9, "{r}");
        assert_eq!(median_ratio(&big, &Latency::default()), None);
    }

    #[test]
    fn start_up_ends_after_the_operators_nth_event_watch() {
        let log = vec![
            record("list", "nodes", "snapmend-operator/0.1", Some(10)),
            record("watch", "events", "kubectl/1.33", None),
            record("watch", "events", "snapmend-operator/0.1", None),
            record("list", "events", "snapmend-operator/0.1", Some(5)),
            record("watch", "events", "snapmend-operator/0.1", None),
            record(
                "create",
                "snapshotrepairs",
                "snapmend-operator/0.1",
                Some(7),
            ),
        ];
        assert_eq!(startup_end(&log, 1), None, "no SnapshotScan watch yet");
        let mut log = log;
        log.insert(
            4,
            record("watch", "snapshotscans", "snapmend-operator/0.1", None),
        );
        assert_eq!(startup_end(&log, 1), Some(5), "the scans watch came later");
        assert_eq!(startup_end(&log, 2), Some(6));
        assert_eq!(startup_end(&log, 3), None);
    }

    #[test]
    fn request_cost_counts_only_the_operators_requests() {
        let log = vec![
            record("list", "nodes", "snapmend-operator/0.1", Some(100)),
            record("list", "nodes", "kubectl/1.33", Some(1000)),
            record("watch", "nodes", "snapmend-operator/0.1", None),
            record("patch", "nodes", "snapmend-operator/0.1", Some(50)),
        ];
        let cost = RequestCost::of(&log);
        assert_eq!(cost.requests, 3);
        assert_eq!(cost.lists, 1);
        assert_eq!(cost.response_bytes, 150);
        assert_eq!(cost.by_key.get("list nodes"), Some(&1));
        assert_eq!(cost.by_key.get("watch nodes"), Some(&1));
    }

    #[test]
    fn storm_nodes_spread_over_the_cluster() {
        assert_eq!(
            spread(10, 5),
            ["0", "2", "4", "6", "8"].map(|i| node_name(i.parse().unwrap()))
        );
        assert_eq!(spread(3, 5).len(), 3);
        assert_eq!(spread(5, 0), Vec::<String>::new());
    }

    #[test]
    fn the_release_operator_is_chosen_only_when_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(dir.path().join("release")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("debug")).expect("mkdir");
        std::fs::create_dir_all(&src).expect("mkdir");
        assert!(choose_operator(dir.path(), &src).is_err(), "nothing built");
        std::fs::write(dir.path().join("debug/snapmend-operator"), "").expect("write");
        std::fs::write(dir.path().join("release/snapmend-operator"), "").expect("write");
        assert_eq!(
            choose_operator(dir.path(), &src).expect("chosen"),
            dir.path().join("release/snapmend-operator")
        );
        // A source edited after the release build: release is stale, debug rebuilt after it.
        let old = SystemTime::now() - Duration::from_secs(60);
        let release = std::fs::File::options()
            .write(true)
            .open(dir.path().join("release/snapmend-operator"))
            .expect("open");
        release.set_modified(old).expect("mtime");
        std::fs::write(src.join("lib.rs"), "").expect("write");
        let source = std::fs::File::options()
            .write(true)
            .open(src.join("lib.rs"))
            .expect("open");
        source
            .set_modified(SystemTime::now() - Duration::from_secs(30))
            .expect("mtime");
        assert_eq!(
            choose_operator(dir.path(), &src).expect("chosen"),
            dir.path().join("debug/snapmend-operator")
        );
    }
}
