//! The incident, reproduced end to end on one simulated node: a private containerd whose pause
//! snapshot lost `/pause`, snapmend-sim, the real operator (`--auto-remediate repair`) and agent
//! binaries, and the kubelet simulator. It records a timeline (kubelet events, the automatic
//! SnapshotRepair and its phases, the cordon, the findings, the uncordon, the sandbox running)
//! by observing the cluster, and measures first event → sandbox running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use snapmend_crds::labels::{
    CORDONED_BY_ANNOTATION, DEFAULT_LEASE_NAMESPACE, TRIGGER_EVENT_ANNOTATION, helper_lease_name,
};
use snapmend_crds::{BlobSource, Phase, Report, SnapshotRepair};

use super::registry_node::start_registry_node;
use super::scenario::{
    ChildProcess, Damage, create_pod, install_snapmend, pod_on_node, spawn_agent_with,
    spawn_operator, workspace_binary,
};
use super::{Backoff, KubeletConfig, KubeletSim, Observation};
use crate::TestError;
use crate::containerd::ContainerdFixture;
use crate::containerd::DEFAULT_SANDBOX_IMAGE;
use crate::image_builder::pause_image;
use crate::kubectl::{bound_token, kubectl};
use crate::registry::Registry;
use crate::sim::{SimConfig, SimServer};

/// deploy/, applied as an operator of a real cluster would (`kubectl apply -k`).
const DEPLOY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
/// The Pod the operator's token is bound to (a Deployment's replica on a real cluster).
const OPERATOR_POD: &str = "snapmend-operator-0";

/// The Pods the DaemonSet and the Deployment would run, tokens bound to them
/// (`kubectl create token --bound-object-kind Pod`), and a kubeconfig on each token:
/// (agent's, operator's).
fn own_identities(
    sim: &SimServer,
    admin: &std::path::Path,
    dir: &std::path::Path,
    node: &str,
) -> Result<(PathBuf, PathBuf), TestError> {
    let ns = DEFAULT_LEASE_NAMESPACE;
    // The agent's Pod name is the one spawn_agent_with passes as POD_NAME.
    let agent_pod = format!("snapmend-agent-{node}");
    let pods = dir.join("identity-pods.yaml");
    std::fs::write(
        &pods,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {agent_pod}\n  namespace: {ns}\nspec:\n  nodeName: {node}\n  serviceAccountName: snapmend-node-helper\n  containers:\n  - name: agent\n    image: snapmend/node-helper\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {OPERATOR_POD}\n  namespace: {ns}\nspec:\n  nodeName: {node}\n  serviceAccountName: snapmend-operator\n  containers:\n  - name: operator\n    image: snapmend/operator\n"
        ),
    )
    .map_err(|e| TestError::io(&pods, e))?;
    kubectl(admin, &["apply", "-f", &pods.to_string_lossy()])?;
    // They run already (the kubelet simulator starts only Pods that do not).
    for pod in [agent_pod.as_str(), OPERATOR_POD] {
        kubectl(
            admin,
            &[
                "patch",
                "pod",
                pod,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running"}}"#,
            ],
        )?;
    }
    let kubeconfig = |sa: &str, pod: &str| -> Result<PathBuf, TestError> {
        let token = bound_token(admin, ns, sa, pod)?;
        let path = dir.join(format!("{sa}.kubeconfig"));
        sim.write_kubeconfig_with_token(&path, Some(&token))?;
        Ok(path)
    };
    let agent = kubeconfig("snapmend-node-helper", &agent_pod)?;
    let operator = kubeconfig("snapmend-operator", OPERATOR_POD)?;
    Ok((agent, operator))
}

/// Timestamped lines, printed as they are recorded when `live`.
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    live: bool,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Timeline {
    pub fn new(live: bool) -> Self {
        Timeline {
            start: Instant::now(),
            live,
            lines: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Records `text` as having happened at `at` (wall-clock time derived from it).
    pub fn record(&self, at: Instant, text: impl Into<String>) {
        let text = text.into();
        let line = self.format(at, &text);
        if self.live {
            println!("{line}");
        }
        if let Ok(mut l) = self.lines.lock() {
            l.push((at, line));
        }
    }

    fn format(&self, at: Instant, text: &str) -> String {
        let ago = Instant::now().saturating_duration_since(at);
        let wall = Timestamp::now()
            .checked_sub(ago)
            .unwrap_or_else(|_| Timestamp::now())
            .strftime("%H:%M:%S%.3f")
            .to_string();
        let offset = at.saturating_duration_since(self.start).as_secs_f64();
        format!("{wall}  +{offset:>6.2}s  {text}")
    }

    /// Every line, in the order things happened.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines.sort_by_key(|(at, _)| *at);
        lines.into_iter().map(|(_, l)| l).collect()
    }
}

/// How to run the incident.
#[derive(Clone, Debug)]
pub struct IncidentConfig {
    pub node: String,
    /// Extra operator flags (after `--metrics-addr` and `--kubeconfig`).
    pub operator_args: Vec<String>,
    pub backoff: Backoff,
    pub timeout: Duration,
    /// Print timeline lines as they happen.
    pub live: bool,
    pub node_images: NodeImages,
    /// `snapmend-sim --auth` with deploy/'s RBAC and ValidatingAdmissionPolicies applied by
    /// `kubectl apply -k`; the operator and the agent each on a token of their own
    /// ServiceAccount (the agent's bound to its Pod on the node). The kubelet simulator and
    /// the observer stay on the admin token, as kubelet and a human would not be snapmend's.
    pub identities: bool,
}

/// How the node got its sandbox image, and so whether its layer blob is still there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeImages {
    /// `ctr images import`: the layer blob stays in the content store (the incident itself).
    #[default]
    Imported,
    /// containerd's CRI pulled it from a loopback TLS registry with basic auth and
    /// `discard_unpacked_layers = true`: the blob is gone, the repair fetches it
    /// (see [`super::registry_node`]).
    PulledDiscardingLayers,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            node: "node-a".into(),
            operator_args: [
                "--auto-remediate",
                "repair",
                "--cooldown",
                "1m",
                "--helper-timeout",
                "1m",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            backoff: Backoff::default(),
            timeout: Duration::from_secs(60),
            live: false,
            node_images: NodeImages::Imported,
            identities: false,
        }
    }
}

/// What the run measured.
#[derive(Clone, Debug)]
pub struct IncidentReport {
    pub first_event_to_sandbox_running: Duration,
    pub first_event_to_repair_created: Option<Duration>,
    /// How many times the kubelet's sandbox start failed.
    pub failed_starts: usize,
    pub repairs: Vec<SnapshotRepair>,
    pub pause_restored: bool,
    pub node_unschedulable_at_end: bool,
}

/// Everything running for the incident; dropping it stops it all.
pub struct Incident {
    pub config: IncidentConfig,
    pub timeline: Timeline,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub kubelet: KubeletSim,
    pub operator: ChildProcess,
    pub agent: ChildProcess,
    pub damage: Damage,
    pub fixture: Arc<ContainerdFixture>,
    pub sim: SimServer,
    /// The registry of [`NodeImages::PulledDiscardingLayers`].
    pub registry: Option<Registry>,
    _dir: tempfile::TempDir,
}

impl Incident {
    /// Starts the cluster, the node (containerd, agent, kubelet) and the operator, deletes
    /// `/pause` from the pause snapshot, and schedules a pod on the node.
    pub async fn start(config: IncidentConfig) -> Result<Incident, TestError> {
        // From a test executable this runs `cargo build --workspace --bins` first (see
        // workspace_binary), blocking this thread: done before the timeline starts, so a
        // rebuild (a minute or more when `cargo test` last built the binaries with other
        // features) is not shown as the agent taking that long to start.
        tokio::task::block_in_place(|| {
            workspace_binary("snapmend-node-helper", "SNAPMEND_NODE_HELPER")
        })?;
        let timeline = Timeline::new(config.live);
        let dir = tempfile::Builder::new()
            .prefix("snapmend-incident-")
            .tempdir()
            .map_err(|e| crate::TestError::io(std::env::temp_dir(), e))?;
        let (fixture, registry, agent_args) = match config.node_images {
            NodeImages::Imported => {
                let fixture = tokio::task::block_in_place(|| -> Result<_, TestError> {
                    let fixture = ContainerdFixture::start()?;
                    let sandbox = fixture.sandbox_image().to_string();
                    fixture.import_images(&[pause_image(&sandbox)?])?;
                    Ok(fixture)
                })?;
                timeline.record(
                    Instant::now(),
                    format!(
                        "{}: private containerd up, sandbox image {} unpacked",
                        config.node,
                        fixture.sandbox_image()
                    ),
                );
                (fixture, None, Vec::new())
            }
            NodeImages::PulledDiscardingLayers => {
                let node = tokio::task::block_in_place(|| {
                    start_registry_node(dir.path(), DEFAULT_SANDBOX_IMAGE)
                })?;
                for (at, line) in &node.story {
                    timeline.record(*at, format!("{}: {line}", config.node));
                }
                (node.fixture, Some(node.registry), node.agent_args)
            }
        };
        let sim = SimServer::start_with(SimConfig {
            auth: config.identities,
            ..SimConfig::default()
        })
        .await?;
        let client = sim.client()?;
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        timeline.record(
            Instant::now(),
            format!("snapmend-sim serving at {}", sim.url()),
        );
        if config.identities {
            kubectl(&kubeconfig, &["apply", "-k", DEPLOY_DIR])?;
            timeline.record(Instant::now(), "kubectl apply -k deploy/ (RBAC, policies)");
        } else {
            install_snapmend(&client).await?;
        }

        let kubelet_config = KubeletConfig {
            backoff: config.backoff,
            ..KubeletConfig::new(&config.node)
        };
        let fixture = Arc::new(fixture);
        // The node registers before the agent starts, as on a real node.
        super::register_node(&client, &kubelet_config).await?;
        let (agent_kubeconfig, operator_kubeconfig) = if config.identities {
            let paths = own_identities(&sim, &kubeconfig, dir.path(), &config.node)?;
            timeline.record(
                Instant::now(),
                "operator and agent tokens bound to their Pods (kubectl create token)",
            );
            paths
        } else {
            (kubeconfig.clone(), kubeconfig.clone())
        };
        let agent = spawn_agent_with(
            &agent_kubeconfig,
            dir.path(),
            &config.node,
            &fixture,
            &agent_args,
        )?;
        wait_for_helper_lease(&client, &config.node, Duration::from_secs(30), &agent).await?;
        timeline.record(
            Instant::now(),
            format!(
                "{}: snapmend agent running (presence Lease renewed)",
                config.node
            ),
        );
        let args: Vec<&str> = config.operator_args.iter().map(String::as_str).collect();
        let operator = spawn_operator(&operator_kubeconfig, dir.path(), &args)?;
        timeline.record(
            Instant::now(),
            format!(
                "snapmend-operator started: {}",
                config.operator_args.join(" ")
            ),
        );

        let damage = Damage::delete_from_snapshot(&fixture, "pause")?;
        let blob = match config.node_images {
            NodeImages::Imported => "the layer blob stays intact",
            NodeImages::PulledDiscardingLayers => {
                "the layer blob is gone too: only the registry has it"
            }
        };
        timeline.record(
            Instant::now(),
            format!("cleanup script deletes {} ({blob})", damage.path.display()),
        );
        let kubelet = KubeletSim::start(client.clone(), fixture.clone(), kubelet_config).await?;
        let sandbox = fixture.sandbox_image().to_string();
        create_pod(
            &client,
            &pod_on_node("default", "web-0", &config.node, &sandbox),
        )
        .await?;
        timeline.record(
            Instant::now(),
            format!("pod default/web-0 scheduled to {}", config.node),
        );
        Ok(Incident {
            config,
            timeline,
            client,
            kubeconfig,
            kubelet,
            operator,
            agent,
            damage,
            fixture,
            sim,
            registry,
            _dir: dir,
        })
    }

    /// Observes until the kubelet's sandbox runs and every SnapshotRepair has finished.
    pub async fn run_until_sandbox_running(&mut self) -> Result<IncidentReport, TestError> {
        let deadline = Instant::now() + self.config.timeout;
        let observer = Arc::new(ClusterObserver {
            timeline: self.timeline.clone(),
            node: self.config.node.clone(),
            state: Mutex::new(Observer::default()),
        });
        let watching = tokio::spawn(observer.clone().watch(self.client.clone()));
        let mut journal_seen = 0;
        let outcome = loop {
            journal_seen = self.record_journal(journal_seen);
            let running = self
                .kubelet
                .journal()
                .first(|o| matches!(o, Observation::SandboxRunning { .. }));
            if running.is_some() && observer.settled() {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(TestError::Timeout {
                    what: format!(
                        "the sandbox to run\n--- operator log tail\n{}\n--- agent log tail\n{}",
                        tail(&self.operator.log_text(), 30),
                        tail(&self.agent.log_text(), 30)
                    ),
                    after: self.config.timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        watching.abort();
        outcome?;
        let journal = self.kubelet.journal();
        let first_event = journal
            .first(|o| matches!(o, Observation::StartFailed { .. }))
            .ok_or_else(|| {
                TestError::Scenario("the sandbox never failed; was /pause deleted?".into())
            })?;
        let running = journal
            .first(|o| matches!(o, Observation::SandboxRunning { .. }))
            .ok_or_else(|| TestError::Scenario("sandbox not running".into()))?;
        let failed_starts = journal
            .entries()
            .iter()
            .filter(|(_, o)| matches!(o, Observation::StartFailed { .. }))
            .count();
        let repairs = Api::<SnapshotRepair>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(super::kube_err("list", "SnapshotRepairs"))?
            .items;
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.config.node)
            .await
            .map_err(super::kube_err("get", format!("Node {}", self.config.node)))?;
        let first_repair_seen = observer.state.lock().ok().and_then(|s| s.first_repair_seen);
        Ok(IncidentReport {
            first_event_to_sandbox_running: running.saturating_duration_since(first_event),
            first_event_to_repair_created: first_repair_seen
                .map(|t| t.saturating_duration_since(first_event)),
            failed_starts,
            repairs,
            pause_restored: self.damage.is_repaired(),
            node_unschedulable_at_end: node.spec.and_then(|s| s.unschedulable).unwrap_or(false),
        })
    }

    /// New kubelet journal entries go to the timeline, at the instant they happened.
    fn record_journal(&self, seen: usize) -> usize {
        let entries = self.kubelet.journal().entries();
        for (at, entry) in entries.iter().skip(seen) {
            let text = match entry {
                Observation::StartFailed {
                    event,
                    count: 1,
                    message,
                    ..
                } => format!(
                    "kubelet: Warning FailedCreatePodSandBox (event {event}):\n{:24}{message}",
                    ""
                ),
                Observation::StartFailed { count, .. } => {
                    format!("kubelet: sandbox start retried, still failing (event count {count})")
                }
                Observation::SandboxRunning { pod } => format!("kubelet: sandbox of {pod} running"),
                Observation::ContainerRunning { pod, container } => {
                    format!("kubelet: container {container} of {pod} running")
                }
                Observation::PodRunning { pod } => format!("kubelet: pod {pod} is Running"),
            };
            self.timeline.record(*at, text);
        }
        entries.len()
    }

    /// `kubectl get sr` with the real kubectl when it is installed, else the same columns.
    pub async fn sr_table(&self) -> String {
        let kubectl = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["get", "sr"])
            .output();
        if let Ok(out) = kubectl
            && out.status.success()
        {
            return format!("$ kubectl get sr\n{}", String::from_utf8_lossy(&out.stdout));
        }
        let repairs = Api::<SnapshotRepair>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        render_sr_table(&repairs)
    }
}

/// The `kubectl get sr` columns (Name, Node, Target, Action, Phase, Findings, Age).
pub fn render_sr_table(repairs: &[SnapshotRepair]) -> String {
    let mut rows = vec![
        [
            "NAME", "NODE", "TARGET", "ACTION", "PHASE", "FINDINGS", "AGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for sr in repairs {
        let status = sr.status.clone().unwrap_or_default();
        let age = sr
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| format!("{}s", Timestamp::now().duration_since(t.0).as_secs()))
            .unwrap_or_default();
        rows.push(vec![
            sr.name_any(),
            sr.spec.node_name.clone(),
            status.target.clone().unwrap_or_else(|| sr.spec.target()),
            format!("{:?}", sr.spec.action),
            status.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
            status.findings.clone().unwrap_or_default(),
            age,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("(kubectl not installed; the same columns)\n");
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Default)]
struct RepairSeen {
    created: bool,
    phase: Option<Phase>,
    report_id: Option<String>,
}

#[derive(Default)]
struct Observer {
    repairs: BTreeMap<String, RepairSeen>,
    unschedulable: bool,
    first_repair_seen: Option<Instant>,
}

/// Follows SnapshotRepairs and the node through watches, so no transition is missed.
struct ClusterObserver {
    timeline: Timeline,
    node: String,
    state: Mutex<Observer>,
}

impl ClusterObserver {
    async fn watch(self: Arc<Self>, client: Client) {
        let repairs = watcher(
            Api::<SnapshotRepair>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .map(|r| r.map(|sr| Watched::Repair(Box::new(sr))).ok());
        let nodes = watcher(
            Api::<Node>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={}", self.node)),
        )
        .default_backoff()
        .applied_objects()
        .map(|r| r.map(|n| Watched::Node(Box::new(n))).ok());
        let mut merged = futures::stream::select(repairs.boxed(), nodes.boxed());
        while let Some(item) = merged.next().await {
            match item {
                Some(Watched::Repair(sr)) => self.repair_changed(&sr),
                Some(Watched::Node(node)) => self.node_changed(&node),
                None => {}
            }
        }
    }

    /// Every SnapshotRepair finished, and the node is not left cordoned.
    fn settled(&self) -> bool {
        self.state.lock().is_ok_and(|s| {
            !s.repairs.is_empty()
                && s.repairs
                    .values()
                    .all(|r| r.phase.is_some_and(Phase::is_terminal))
                && !s.unschedulable
        })
    }

    fn node_changed(&self, node: &Node) {
        let Ok(mut o) = self.state.lock() else { return };
        let unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if unschedulable != o.unschedulable {
            let by = node
                .annotations()
                .get(CORDONED_BY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let text = if unschedulable {
                format!(
                    "{} cordoned (unschedulable=true, {CORDONED_BY_ANNOTATION}={by})",
                    self.node
                )
            } else {
                format!("{} uncordoned", self.node)
            };
            self.timeline.record(Instant::now(), text);
            o.unschedulable = unschedulable;
        }
    }

    fn repair_changed(&self, sr: &SnapshotRepair) {
        let Ok(mut o) = self.state.lock() else { return };
        let now = Instant::now();
        let name = sr.name_any();
        let status = sr.status.clone().unwrap_or_default();
        if o.first_repair_seen.is_none() {
            o.first_repair_seen = Some(now);
        }
        let seen = o.repairs.entry(name.clone()).or_default();
        if !seen.created {
            seen.created = true;
            let ann = sr.annotations();
            self.timeline.record(
                now,
                format!(
                    "operator: created SnapshotRepair {name} (action {:?}, target {}, trigger {} [{}])",
                    sr.spec.action,
                    sr.spec.target(),
                    ann.get(TRIGGER_EVENT_ANNOTATION).map(String::as_str).unwrap_or("-"),
                    ann.get("snapmend.io/trigger-signature").map(String::as_str).unwrap_or("-"),
                ),
            );
        }
        if let Some(report) = &status.report
            && seen.report_id.as_deref() != Some(report.request_id.as_str())
        {
            seen.report_id = Some(report.request_id.clone());
            self.timeline
                .record(now, describe_report(&report.request_id, &report.report));
        }
        if status.phase != seen.phase {
            seen.phase = status.phase;
            if let Some(phase) = status.phase {
                let message = status.message.clone().unwrap_or_default();
                self.timeline
                    .record(now, format!("{name}: phase {phase:?} — {message}"));
            }
        }
    }
}

enum Watched {
    Repair(Box<SnapshotRepair>),
    Node(Box<Node>),
}

/// "agent: report for request 1: Corrupted — /pause Missing (regular file, 667 KiB) in snapshot 1".
fn describe_report(request_id: &str, r: &Report) -> String {
    let mut details: Vec<String> = Vec::new();
    for layer in &r.layers {
        let snapshot = layer.snapshot_id.as_deref().unwrap_or("?");
        for f in &layer.findings {
            details.push(format!(
                "{} {:?} ({}) in snapshot {snapshot}",
                f.path, f.kind, f.detail
            ));
        }
        if let Some(n) = layer.entries_restored {
            details.push(format!("{n} entries restored in snapshot {snapshot}"));
        }
        // Only worth a line when the blob did not come from the node's content store.
        match (&layer.blob_source, &layer.fetched_from) {
            (Some(BlobSource::Registry), Some(from)) => details.push(format!(
                "layer blob from {from} (Registry, {:?})",
                layer.blob
            )),
            (Some(BlobSource::Cache), _) => details.push(format!(
                "layer blob from the agent's blob cache ({:?})",
                layer.blob
            )),
            _ => {}
        }
    }
    format!(
        "agent: report for request {request_id}: {:?}{}{}",
        r.outcome,
        if details.is_empty() { "" } else { " — " },
        details.join("; ")
    )
}

/// Waits until the agent on `node` renewed its presence Lease.
pub async fn wait_for_helper_lease(
    client: &Client,
    node: &str,
    within: Duration,
    agent: &ChildProcess,
) -> Result<(), TestError> {
    let leases = Api::<Lease>::namespaced(client.clone(), DEFAULT_LEASE_NAMESPACE);
    let deadline = Instant::now() + within;
    loop {
        // Each request is bounded too: a deadline checked between requests never fires
        // while one request hangs.
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            leases.get_opt(&helper_lease_name(node)),
        )
        .await;
        if got.is_err() {
            tracing::warn!(%node, "GET of the agent's Lease took over 5 s");
        }
        if let Ok(Ok(Some(lease))) = got
            && lease.spec.and_then(|s| s.renew_time).is_some()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TestError::Timeout {
                what: format!(
                    "the agent's Lease on {node}\n--- agent log tail\n{}",
                    tail(&agent.log_text(), 30)
                ),
                after: within,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
