//! Shared by the `operator_*` tests: a snapmend-sim with the CRDs, Nodes and the snapmend-system
//! namespace; the real `snapmend-operator` binary as a child process; a fake node agent written
//! here (renews the presence Lease and answers requests by patching `status.report`); and a
//! Node watch that records every change of `spec.unschedulable`.

#![allow(dead_code)] // each operator_* test file uses a different subset

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use snapmend_crds::labels::{CORDONED_BY_ANNOTATION, helper_lease_name};
use snapmend_crds::{
    BlobState, Finding, FindingKind, LayerReport, LayerState, Outcome, Phase, RepairAction, Report,
    SnapshotRepair, SnapshotRepairSpec, SnapshotScan,
};
use snapmend_tests::sim::{BackgroundSim, SimConfig, SimServer};
use tokio::task::JoinHandle;

pub const NAMESPACE: &str = "snapmend-system";
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A simulated API server with the CRDs, the snapmend-system namespace and `nodes` Nodes.
pub async fn start_cluster(nodes: &[&str]) -> (SimServer, Client) {
    let sim = SimServer::start().await.expect("start snapmend-sim");
    let client = sim.client().expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [SnapshotRepair::crd(), SnapshotScan::crd()] {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    for node in nodes {
        add_node(&client, node, false).await;
    }
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    wait_for(
        "SnapshotRepair API served",
        Duration::from_secs(10),
        || async { srs.list(&ListParams::default()).await.ok().map(|_| ()) },
    )
    .await;
    (sim, client)
}

pub async fn add_node(client: &Client, name: &str, unschedulable: bool) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"unschedulable": unschedulable},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

pub async fn node(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .expect("get node")
}

pub fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

pub fn cordoned_by(node: &Node) -> Option<String> {
    node.annotations().get(CORDONED_BY_ANNOTATION).cloned()
}

// ---------------------------------------------------------------- SnapshotRepairs

pub fn spec(node: &str, action: RepairAction) -> SnapshotRepairSpec {
    SnapshotRepairSpec {
        node_name: node.into(),
        image: Some(IMAGE.into()),
        sandbox_image: false,
        all_images: false,
        action,
        cordon: true,
        content_check: Default::default(),
        pull_secrets: Vec::new(),
    }
}

/// A SnapshotRepair as a person applies it: no labels, no status.
pub async fn apply_repair(client: &Client, name: &str, spec: SnapshotRepairSpec) {
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    srs.create(&PostParams::default(), &SnapshotRepair::new(name, spec))
        .await
        .expect("create SnapshotRepair");
}

pub async fn get_repair(client: &Client, name: &str) -> Option<SnapshotRepair> {
    Api::<SnapshotRepair>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get SnapshotRepair")
}

pub fn phase_of(sr: &SnapshotRepair) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

pub async fn wait_phase(
    client: &Client,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> SnapshotRepair {
    let mut last = None;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(sr) = get_repair(client, name).await {
            if phase_of(&sr) == Some(phase) {
                return sr;
            }
            last = sr.status.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {phase:?} within {timeout:?}; last status {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn condition(sr: &SnapshotRepair, type_: &str) -> (String, String) {
    let c = sr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition on {}", sr.name_any()));
    (c.status.clone(), c.reason.clone())
}

pub fn message(sr: &SnapshotRepair) -> String {
    sr.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// Reasons of the events.k8s.io Events recorded about SnapshotRepair `name`.
pub async fn event_reasons(client: &Client, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let mut list: Vec<_> = events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter().filter_map(|e| e.reason).collect()
}

/// Waits until Events with all `reasons` were recorded about `name` (they follow the status).
pub async fn wait_events(client: &Client, name: &str, reasons: &[&str]) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        seen = event_reasons(client, name).await;
        if reasons.iter().all(|r| seen.iter().any(|s| s == r)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events {reasons:?} about {name} not all recorded; saw {seen:?}");
}

// ---------------------------------------------------------------- node watch

/// (node, unschedulable, cordoned-by) as the API server reported it.
type NodeSighting = (String, bool, Option<String>);

/// Every NodeSighting the API server reported, in order.
pub struct NodeHistory {
    seen: Arc<Mutex<Vec<NodeSighting>>>,
    task: JoinHandle<()>,
}

impl NodeHistory {
    pub fn start(client: &Client) -> Self {
        let seen = Arc::new(Mutex::new(Vec::<NodeSighting>::new()));
        let nodes: Api<Node> = Api::all(client.clone());
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(nodes, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(node)) = stream.next().await {
                let entry = (node.name_any(), is_unschedulable(&node), cordoned_by(&node));
                let mut seen = record.lock().expect("history");
                if seen.iter().rev().find(|(n, ..)| *n == entry.0) != Some(&entry) {
                    seen.push(entry);
                }
            }
        });
        NodeHistory { seen, task }
    }

    /// unschedulable values seen for `node`, in order, without repeats.
    pub fn of(&self, node: &str) -> Vec<bool> {
        let mut out: Vec<bool> = Vec::new();
        for (n, u, _) in self.seen.lock().expect("history").iter() {
            if n == node && out.last() != Some(u) {
                out.push(*u);
            }
        }
        out
    }

    /// The largest number of nodes that were unschedulable at the same time.
    pub fn max_unschedulable_at_once(&self) -> usize {
        let mut now: HashMap<String, bool> = HashMap::new();
        let mut max = 0;
        for (n, u, _) in self.seen.lock().expect("history").iter() {
            now.insert(n.clone(), *u);
            max = max.max(now.values().filter(|u| **u).count());
        }
        max
    }
}

impl Drop for NodeHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- fake agent

/// How the fake agent's node is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Healthy,
    /// `/pause` deleted from the snapshot; the blob is intact (the incident).
    Incident,
    /// The snapshot is damaged and the layer blob is corrupt too.
    CorruptBlob,
}

pub fn report_for(state: NodeState, action: RepairAction) -> Report {
    let missing = Finding {
        path: "/pause".into(),
        kind: FindingKind::Missing,
        detail: "regular file, 732 KiB".into(),
    };
    let (outcome, blob, layer_state, findings, message) = match (state, action) {
        (NodeState::Healthy, _) => (
            Outcome::Healthy,
            BlobState::Verified,
            LayerState::Healthy,
            vec![],
            None,
        ),
        (NodeState::Incident, RepairAction::Verify)
        | (NodeState::CorruptBlob, RepairAction::Verify) => (
            Outcome::Corrupted,
            BlobState::NotChecked,
            LayerState::Corrupted,
            vec![missing],
            None,
        ),
        (NodeState::Incident, RepairAction::Repair) => (
            Outcome::Repaired,
            BlobState::Verified,
            LayerState::Repaired,
            vec![missing],
            None,
        ),
        (NodeState::CorruptBlob, RepairAction::Repair) => (
            Outcome::Unrepairable,
            BlobState::DigestMismatch,
            LayerState::Unrepairable,
            vec![missing],
            Some(
                "layer blob sha256:1111 does not match its digest; nothing was written".to_string(),
            ),
        ),
    };
    Report {
        image: IMAGE.into(),
        manifest_digest: "sha256:2222".into(),
        outcome,
        layers: vec![LayerReport {
            index: 0,
            digest: "sha256:1111".into(),
            diff_id: "sha256:3333".into(),
            chain_id: "sha256:3333".into(),
            snapshot_id: Some("1".into()),
            snapshot_path: None,
            blob,
            state: layer_state,
            findings_total: findings.len() as u64,
            findings,
            entries_restored: (action == RepairAction::Repair && state == NodeState::Incident)
                .then_some(1),
            leftover_staging: None,
            ..Default::default()
        }],
        mounts: 0,
        duration_ms: 5,
        message,
        scan: None,
    }
}

/// A node agent written for the tests: renews `snapmend-node-helper.<node>` every second and
/// answers each new request of its node's SnapshotRepairs after `delay`, unless held.
pub struct FakeAgent {
    pub held: Arc<AtomicBool>,
    /// Answer verifications but leave repair requests unanswered.
    pub held_repairs: Arc<AtomicBool>,
    /// Leave these SnapshotRepairs' repair requests unanswered.
    pub held_names: Arc<Mutex<Vec<String>>>,
    answered: Arc<Mutex<Vec<(String, String, RepairAction)>>>,
    task: JoinHandle<()>,
}

impl FakeAgent {
    pub fn start(client: &Client, node: &str, state: NodeState, delay: Duration) -> Self {
        let held = Arc::new(AtomicBool::new(false));
        let held_repairs = Arc::new(AtomicBool::new(false));
        let hold_repairs = held_repairs.clone();
        let held_names = Arc::new(Mutex::new(Vec::<String>::new()));
        let hold_names = held_names.clone();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let (client, node, hold, log) = (
            client.clone(),
            node.to_string(),
            held.clone(),
            answered.clone(),
        );
        let task = tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
            let srs: Api<SnapshotRepair> = Api::all(client.clone());
            let lease_name = helper_lease_name(&node);
            let mut last_renew = Instant::now() - Duration::from_secs(10);
            let mut first_seen: HashMap<(String, String), Instant> = HashMap::new();
            loop {
                if last_renew.elapsed() >= Duration::from_secs(1) {
                    renew_lease(&leases, &lease_name, &node).await;
                    last_renew = Instant::now();
                }
                if let Ok(list) = srs.list(&ListParams::default()).await {
                    for sr in list.items.iter().filter(|sr| sr.spec.node_name == node) {
                        let Some(status) = &sr.status else { continue };
                        let Some(request) = &status.request else {
                            continue;
                        };
                        if status
                            .report
                            .as_ref()
                            .is_some_and(|r| r.request_id == request.id)
                        {
                            continue;
                        }
                        let key = (sr.name_any(), request.id.clone());
                        let since = *first_seen.entry(key.clone()).or_insert_with(Instant::now);
                        let repair_held = request.action == RepairAction::Repair
                            && (hold_repairs.load(Ordering::SeqCst)
                                || hold_names.lock().expect("names").contains(&key.0));
                        if hold.load(Ordering::SeqCst) || repair_held || since.elapsed() < delay {
                            continue;
                        }
                        let mut report = serde_json::to_value(report_for(state, request.action))
                            .expect("report");
                        report["requestId"] = json!(request.id);
                        let patch = json!({"status": {"report": report}});
                        if srs
                            .patch_status(&key.0, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .is_ok()
                        {
                            log.lock()
                                .expect("log")
                                .push((key.0, key.1, request.action));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        FakeAgent {
            held,
            held_repairs,
            held_names,
            answered,
            task,
        }
    }

    /// (repair, request id, action) of every answer, in order.
    pub fn answered(&self) -> Vec<(String, String, RepairAction)> {
        self.answered.lock().expect("log").clone()
    }

    pub fn hold(&self, hold: bool) {
        self.held.store(hold, Ordering::SeqCst);
    }

    /// Holds (or releases) the repair request of one SnapshotRepair.
    pub fn hold_repair_of(&self, name: &str, hold: bool) {
        let mut names = self.held_names.lock().expect("names");
        names.retain(|n| n != name);
        if hold {
            names.push(name.to_string());
        }
    }

    pub fn hold_repairs(&self, hold: bool) {
        self.held_repairs.store(hold, Ordering::SeqCst);
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew_lease(leases: &Api<Lease>, name: &str, node: &str) {
    let now = MicroTime(Timestamp::now());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"holderIdentity": format!("agent-{node}"), "leaseDurationSeconds": 40, "renewTime": now},
    }))
    .expect("lease");
    if leases.create(&PostParams::default(), &lease).await.is_err() {
        let patch = json!({"spec": {"renewTime": now}});
        let _ = leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

// ---------------------------------------------------------------- the operator binary

pub fn operator_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SNAPMEND_OPERATOR") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let binary = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("snapmend-operator"))
        .find(|p| p.is_file())
        .expect("snapmend-operator not built: run `cargo build -p snapmend-operator` or set SNAPMEND_OPERATOR");
    // A stale binary would test old code and pass for the wrong reason.
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/src");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .expect("binary mtime");
    if let Some(newest) = newest_mtime(&sources) {
        assert!(
            newest <= built,
            "{} is older than the sources in {}; run `cargo build -p snapmend-operator`",
            binary.display(),
            sources.display()
        );
    }
    binary
}

fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
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

/// `snapmend-operator` against the sim; SIGTERM on drop.
pub struct OperatorProcess {
    child: Option<Child>,
    pub metrics_addr: SocketAddr,
    pub log: PathBuf,
    kubeconfig_yaml: String,
    identity: String,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts the operator with `--helper-timeout 5s` unless `args` says otherwise, a 3 s
    /// leader Lease, and identity `identity`.
    pub fn spawn(sim: &SimServer, identity: &str, args: &[&str]) -> Self {
        Self::spawn_with_kubeconfig(sim.kubeconfig_yaml(), identity, args)
    }

    /// Like [`OperatorProcess::spawn`], with a kubeconfig of its own (e.g. the token of the
    /// operator's ServiceAccount on `snapmend-sim --auth`).
    pub fn spawn_with_kubeconfig(kubeconfig_yaml: String, identity: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = OperatorProcess {
            child: None,
            metrics_addr: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            log: dir.path().join(format!("{identity}.log")),
            kubeconfig_yaml,
            identity: identity.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let kubeconfig = self.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &self.kubeconfig_yaml).expect("kubeconfig");
        let mut args = vec!["--metrics-addr".to_string(), self.metrics_addr.to_string()];
        if !self.args.iter().any(|a| a.starts_with("--helper-timeout")) {
            args.extend(["--helper-timeout".into(), "5s".into()]);
        }
        args.extend(self.args.iter().cloned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(operator_binary())
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("POD_NAME", &self.identity)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("SNAPMEND_LEADER_LEASE_SECONDS", "3")
            .env(
                "RUST_LOG",
                "info,kube=warn,hyper=warn,kube_lease_manager=warn",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn snapmend-operator");
        self.child = Some(child);
    }

    fn signal(&mut self, sig: libc::c_int, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGTERM; the exit status if it stopped within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal(libc::SIGTERM, within)
    }

    /// Peak resident set size of the running operator (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL, Duration::from_secs(5));
    }

    /// Starts the same operator again (same identity, port and flags).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.start();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_addr, path).await
    }

    /// The value of one metric series (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.http_get("/metrics").await.unwrap_or_default();
        metric_value(&text, series).unwrap_or(0.0)
    }

    /// Waits until `series` reads `value` (metrics follow the status write by a moment).
    pub async fn wait_metric(&self, series: &str, value: f64) {
        let mut last = 0.0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            last = self.metric(series).await;
            if last == value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{series} is {last}, not {value}");
    }

    pub async fn wait_leader(&self) {
        wait_for(
            &format!("{} leads", self.identity),
            Duration::from_secs(20),
            || async { (self.metric("snapmend_operator_leader").await == 1.0).then_some(()) },
        )
        .await;
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.identity, self.log_text());
        }
    }
}

#[allow(unused_imports)] // each test file uses a different subset
pub use snapmend_tests::probe::{http_get, metric_value};

/// Polls `check` every 50 ms until it yields a value; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    snapmend_tests::probe::wait_until(what, timeout, Duration::from_millis(50), check).await
}

/// The real kubectl on `kubeconfig`, its stdout; panics with kubectl's stderr when it fails.
pub fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    snapmend_tests::kubectl::kubectl(kubeconfig, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `snapmend-sim --auth` with deploy/ applied by kubectl as the admin: the sim, and the
/// admin's kubeconfig (written in `dir`).
pub fn start_auth_sim_with_deploy(dir: &std::path::Path) -> (BackgroundSim, PathBuf) {
    let sim = tokio::task::block_in_place(|| {
        // The sim runs its own runtime on its own thread.
        std::thread::spawn(|| {
            BackgroundSim::start_with(SimConfig {
                auth: true,
                ..SimConfig::default()
            })
        })
        .join()
    })
    .expect("sim thread")
    .expect("start snapmend-sim --auth");
    let admin = dir.join("admin");
    sim.write_kubeconfig(&admin).expect("kubeconfig");
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    kubectl(&admin, &["apply", "-k", deploy]);
    (sim, admin)
}
