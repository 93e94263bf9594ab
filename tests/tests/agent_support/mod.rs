//! Shared by the `agent_*` tests: a snapmend-sim (or a real cluster) with the CRD and the
//! agent's namespace, the real `snapmend-node-helper agent` binary as a child process, and what
//! the operator would write (requests) and read (reports, Leases, /metrics).
//!
//! `SNAPMEND_TEST_KUBECONFIG=/path/to/kubeconfig` runs the tests built on [`TestCluster`]
//! against that cluster instead of snapmend-sim. Their node, SnapshotRepair and Lease names get
//! a per-run suffix and the label `snapmend.io/test-run=<suffix>`, and are deleted afterwards.

#![allow(dead_code)] // each agent_* test file uses a different subset

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;
use snapmend_crds::{
    RepairAction, RequestReport, SnapshotRepair, SnapshotRepairSpec, SnapshotScan,
};
use snapmend_tests::node_helper_cli::node_helper_binary;
use snapmend_tests::sim::{SimConfig, SimServer};

pub const LEASE_NAMESPACE: &str = "snapmend-system";

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Label on every object a test creates on a real cluster.
pub const TEST_RUN_LABEL: &str = "snapmend.io/test-run";

/// Empty on snapmend-sim (a fresh server per test); unique per test process on a real cluster.
fn run_suffix() -> &'static str {
    static SUFFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SUFFIX.get_or_init(|| {
        if std::env::var_os("SNAPMEND_TEST_KUBECONFIG").is_none() {
            return String::new();
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("-t{}{:08x}", std::process::id(), nanos)
    })
}

/// A node or object name unique to this run on a real cluster (unchanged on snapmend-sim).
pub fn unique(base: &str) -> String {
    format!("{base}{}", run_suffix())
}

/// Labels for the objects a test creates: the test-run label on a real cluster.
pub fn run_labels() -> Vec<(String, String)> {
    match run_suffix().trim_start_matches('-') {
        "" => Vec::new(),
        run => vec![(TEST_RUN_LABEL.to_string(), run.to_string())],
    }
}

/// The API server a test runs against: snapmend-sim, or the cluster of
/// `SNAPMEND_TEST_KUBECONFIG`.
pub struct TestCluster {
    sim: Option<SimServer>,
    kubeconfig_yaml: String,
    client: Client,
}

impl TestCluster {
    pub async fn start() -> Self {
        let Some(path) = std::env::var_os("SNAPMEND_TEST_KUBECONFIG") else {
            let sim = start_cluster(0).await;
            let client = sim.client().expect("client");
            return TestCluster {
                kubeconfig_yaml: sim.kubeconfig_yaml(),
                sim: Some(sim),
                client,
            };
        };
        let kubeconfig_yaml =
            std::fs::read_to_string(&path).expect("read SNAPMEND_TEST_KUBECONFIG");
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&path).expect("parse SNAPMEND_TEST_KUBECONFIG");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config from SNAPMEND_TEST_KUBECONFIG");
        let client = Client::try_from(config).expect("client");
        install(&client).await;
        TestCluster {
            sim: None,
            kubeconfig_yaml,
            client,
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig_yaml
    }

    /// Stops the simulated server, or deletes what this run created on a real cluster.
    pub async fn finish(self, nodes: &[&str]) {
        match self.sim {
            Some(sim) => sim.stop().await,
            None => {
                // Only this test's objects: other tests of the run may still be going.
                let srs: Api<SnapshotRepair> = Api::all(self.client.clone());
                for node in nodes {
                    let lp =
                        kube::api::ListParams::default().fields(&format!("spec.nodeName={node}"));
                    for sr in srs.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                        let name = sr.metadata.name.unwrap_or_default();
                        if let Err(e) = srs.delete(&name, &Default::default()).await {
                            eprintln!("cleaning up SnapshotRepair {name}: {e}");
                        }
                    }
                }
                let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
                for node in nodes {
                    let _ = leases
                        .delete(
                            &snapmend_crds::labels::helper_lease_name(node),
                            &Default::default(),
                        )
                        .await;
                }
            }
        }
    }
}

/// A simulated API server with the SnapshotRepair CRD and the `snapmend-system` namespace.
pub async fn start_cluster(port: u16) -> SimServer {
    let sim = SimServer::start_with(SimConfig {
        port,
        ..SimConfig::default()
    })
    .await
    .expect("start snapmend-sim");
    install(&sim.client().expect("client")).await;
    sim
}

/// What `kubectl apply -k deploy/` would create that the agent depends on (kept when a real
/// cluster already has it).
pub async fn install(client: &Client) {
    install_with_crd(client, &SnapshotRepair::crd()).await;
}

/// [`install`] with another version of the CRD (e.g. one older than the agent).
pub async fn install_with_crd(client: &Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    ok_or_exists(crds.create(&PostParams::default(), crd).await, "create CRD");
    // The operator of the tests that run one also watches SnapshotScans.
    ok_or_exists(
        crds.create(&PostParams::default(), &SnapshotScan::crd())
            .await,
        "create the SnapshotScan CRD",
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": LEASE_NAMESPACE}})).expect("namespace");
    ok_or_exists(
        namespaces.create(&PostParams::default(), &ns).await,
        "create namespace",
    );
    // The CRD is served once its group appears in discovery.
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    wait_for(
        "SnapshotRepair API served",
        Duration::from_secs(10),
        || async { srs.list(&Default::default()).await.ok().map(|_| ()) },
    )
    .await;
}

fn ok_or_exists<T>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The agent binary running against a kubeconfig; stopped with SIGTERM on drop.
pub struct AgentProcess {
    child: Option<Child>,
    pub metrics_addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Store options for the agent: a root and a config path.
pub struct StoreArgs {
    pub root: PathBuf,
    pub config: PathBuf,
}

impl AgentProcess {
    /// Starts `snapmend-node-helper agent --node NODE` against `kubeconfig_yaml`; with no store
    /// given, an empty containerd root (every job reports Outcome Error: image unknown).
    pub fn spawn(kubeconfig_yaml: &str, node: &str, store: Option<&StoreArgs>) -> Self {
        Self::spawn_with(
            kubeconfig_yaml,
            node,
            store,
            &[],
            "info,kube=warn,hyper=warn",
        )
    }

    /// [`AgentProcess::spawn`] with more agent flags and another `RUST_LOG`.
    pub fn spawn_with(
        kubeconfig_yaml: &str,
        node: &str,
        store: Option<&StoreArgs>,
        extra_args: &[&str],
        rust_log: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml).expect("write kubeconfig");
        let empty_root = dir.path().join("containerd-root");
        std::fs::create_dir_all(&empty_root).expect("mkdir root");
        let (root, config) = match store {
            Some(s) => (s.root.clone(), s.config.clone()),
            None => (empty_root, dir.path().join("config.toml")),
        };
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = dir.path().join("agent.log");
        let binary = node_helper_binary().expect("snapmend-node-helper binary");
        let child = Command::new(binary)
            .args([
                "agent",
                "--node",
                node,
                "--metrics-addr",
                &metrics_addr.to_string(),
            ])
            .args(["--lease-namespace", LEASE_NAMESPACE])
            .arg("--root")
            .arg(&root)
            .arg("--config")
            .arg(&config)
            .args(["--toc-cache", "none"])
            .args(extra_args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .env("POD_NAME", format!("agent-{node}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("agent.stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn agent");
        AgentProcess {
            child: Some(child),
            metrics_addr,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Peak resident memory of the agent (VmHWM), for the record.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// GET `path` on the agent's endpoint: (status code, body).
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_addr, path).await
    }

    /// The value of one metric line (`name{labels} value`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.http_get("/metrics").await.unwrap_or_default();
        metric_value(&text, series).unwrap_or(0.0)
    }

    pub async fn wait_ready(&self) {
        wait_for("agent /readyz 200", Duration::from_secs(30), || async {
            matches!(self.http_get("/readyz").await, Some((200, _))).then_some(())
        })
        .await;
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log_text());
        }
    }
}

#[allow(unused_imports)] // each test file uses a different subset
pub use snapmend_tests::probe::{http_get, metric_value};

/// Polls `check` every 100 ms until it yields a value; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    snapmend_tests::probe::wait_until(what, timeout, Duration::from_millis(100), check).await
}

/// A SnapshotRepair as a person would apply it.
pub async fn create_repair(client: &Client, name: &str, node: &str, image: &str) -> SnapshotRepair {
    let spec = SnapshotRepairSpec {
        node_name: node.into(),
        image: Some(image.into()),
        sandbox_image: false,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: Default::default(),
        pull_secrets: Vec::new(),
    };
    create_repair_with(client, name, spec).await
}

pub async fn create_repair_with(
    client: &Client,
    name: &str,
    spec: SnapshotRepairSpec,
) -> SnapshotRepair {
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let mut sr = SnapshotRepair::new(name, spec.clone());
    sr.metadata.labels = Some(
        [(
            snapmend_crds::labels::NODE_LABEL.to_string(),
            spec.node_name.clone(),
        )]
        .into(),
    );
    srs.create(&PostParams::default(), &sr)
        .await
        .expect("create SnapshotRepair")
}

/// What the operator writes to ask the agent for something (plus fields only it owns).
pub async fn request(client: &Client, name: &str, id: &str, action: RepairAction) {
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let phase = match action {
        RepairAction::Verify => "Verifying",
        RepairAction::Repair => "Repairing",
    };
    let patch = json!({"status": {
        "phase": phase,
        "message": format!("operator asked for request {id}"),
        "request": {"id": id, "action": action},
    }});
    srs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch status.request");
}

pub async fn report_of(client: &Client, name: &str) -> Option<RequestReport> {
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    srs.get(name).await.ok()?.status?.report
}

/// Waits for the report answering request `id`.
pub async fn wait_for_report(
    client: &Client,
    name: &str,
    id: &str,
    timeout: Duration,
) -> RequestReport {
    wait_for(
        &format!("report for {name} request {id}"),
        timeout,
        || async { report_of(client, name).await.filter(|r| r.request_id == id) },
    )
    .await
}

pub async fn lease_of(client: &Client, node: &str) -> Option<Lease> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    leases
        .get_opt(&snapmend_crds::labels::helper_lease_name(node))
        .await
        .ok()
        .flatten()
}

/// renewTime of the node's presence Lease.
pub async fn lease_renew_time(client: &Client, node: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    lease_of(client, node).await?.spec?.renew_time.map(|t| t.0)
}

pub fn path_exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// A process named `name` (its argv[0]) that has deleted `path` and stays alive, so that /proc
/// still names it when the culprit guard reads it, as a cron job's shell would.
pub struct Culprit {
    child: Child,
}

impl Culprit {
    /// Starts it and waits until the file is gone.
    pub fn delete(name: &str, path: &Path) -> Culprit {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("perl")
            .arg0(name)
            .arg("-e")
            .arg("unlink $ARGV[0] or die; $| = 1; print \"done\\n\"; my $end = <STDIN>;")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start perl");
        let mut done = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut done)
            .expect("read the culprit's output");
        assert_eq!(done.trim(), "done");
        Culprit { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it exit, and checks that it did so cleanly.
    pub fn release(mut self) {
        use std::io::Write;
        self.child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(b"end\n")
            .expect("tell the culprit to exit");
        assert!(self.child.wait().expect("wait for the culprit").success());
    }
}

/// Creates Node `name` labelled with its hostname, as a kubelet registers it.
pub async fn create_node(client: &Client, name: &str) {
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}
    }))
    .expect("node");
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

/// Every value `spec.unschedulable` of the nodes goes through, as a watch sees it (repeats
/// folded), for "cordoned while repairing, uncordoned afterwards". Stops on drop.
pub struct CordonHistory {
    seen: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CordonHistory {
    pub fn record(client: &Client) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
        let task = {
            let seen = seen.clone();
            let stream = watcher(nodes, watcher::Config::default()).applied_objects();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(Ok(node)) = stream.next().await {
                    let cordoned = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
                    let mut h = seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if h.last() != Some(&cordoned) {
                        h.push(cordoned);
                    }
                }
            })
        };
        CordonHistory { seen, task }
    }

    pub fn values(&self) -> Vec<bool> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until the history is exactly `want`.
    pub async fn wait_for(&self, want: &[bool], timeout: Duration) {
        wait_for(&format!("cordon history {want:?}"), timeout, || async {
            (self.values() == want).then_some(())
        })
        .await;
    }
}

impl Drop for CordonHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}
