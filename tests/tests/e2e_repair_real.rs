//! End to end with the real pieces: snapmend-sim, one private containerd, the real
//! `snapmend-operator` and one real `snapmend-node-helper agent` per simulated node, all reading
//! and writing the same containerd root. Each scenario uses its own node and its own image, so
//! the scenarios share one sim, one containerd and one operator and may run in parallel.
//!
//! Each scenario checks the phases a watch saw, the report, the cordon history a Node watch
//! recorded, the containerd snapshot itself (trees hashed before and after), and `/metrics`.
//! Two scenarios need operators with other flags (a cordon cap of 1, replicas to kill) and
//! start an environment of their own. Processes and containerd are stopped by Drop guards,
//! also when a scenario fails.

#[path = "agent_support/mod.rs"]
mod agent_support;
mod operator_support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use agent_support::{AgentProcess, StoreArgs, install, lease_of};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use operator_support::{
    NodeHistory, OperatorProcess, add_node, condition, cordoned_by, get_repair, is_unschedulable,
    message, metric_value, node, wait_events, wait_for,
};
use snapmend_crds::labels::CORDONED_BY_ANNOTATION;
use snapmend_crds::{
    ContentCheck, Outcome, Phase, RepairAction, SnapshotRepair, SnapshotRepairSpec,
};
use snapmend_tests::containerd::{ContainerdFixture, RunOutcome};
use snapmend_tests::fs_tree::{TreeSnapshot, capture_tree};
use snapmend_tests::image_builder::{
    BuiltImage, ImageSpec, LayerSpec, ManifestStyle, TarEntry, pause_binary, pause_image,
};
use snapmend_tests::node_helper_cli::{NodeHelper, flip_blob_byte};
use snapmend_tests::sim::BackgroundSim;
use tokio::task::{JoinHandle, block_in_place};

/// What the shared operator is started with; the no-agent scenario must fail within it.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one flow on a loaded 2-core machine (the incident takes ~0.3 s when idle).
const FLOW: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- the shared environment

/// One snapmend-sim, one private containerd and one operator, shared by the scenarios running
/// at the same time and torn down when the last of them drops its handle.
struct Env {
    /// The first one leads; the others (if any) stand by.
    operators: Vec<OperatorProcess>,
    fixture: ContainerdFixture,
    sim: Option<BackgroundSim>,
    kubeconfig_yaml: String,
    kubeconfig: PathBuf,
    /// `ctr images import` settles with a fixed lease id: one import at a time.
    imports: Mutex<()>,
    dir: tempfile::TempDir,
}

static SHARED: tokio::sync::Mutex<Weak<Env>> = tokio::sync::Mutex::const_new(Weak::new());

async fn shared_env() -> Arc<Env> {
    let mut slot = SHARED.lock().await;
    if let Some(env) = slot.upgrade() {
        return env;
    }
    let timeout = format!("{}s", HELPER_TIMEOUT.as_secs());
    // The corrupt-blob scenario keeps its node cordoned while others still need a slot.
    let args = ["--helper-timeout", &timeout, "--max-cordoned-nodes", "10"];
    let env = Arc::new(Env::start(&["op-e2e"], &args).await);
    *slot = Arc::downgrade(&env);
    env
}

impl Env {
    /// Starts containerd, the sim and one operator per identity (the first is made leader
    /// before the others start).
    async fn start(identities: &[&str], operator_args: &[&str]) -> Env {
        let fixture = block_in_place(ContainerdFixture::start).expect("private containerd");
        // BackgroundSim runs its own runtime; it must be created outside of ours.
        let sim = block_in_place(|| std::thread::spawn(BackgroundSim::start).join())
            .expect("sim thread")
            .expect("start snapmend-sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let kubeconfig_yaml = sim.server().kubeconfig_yaml();
        let client = client_for(&sim).await;
        install(&client).await;
        let mut operators = Vec::new();
        for identity in identities {
            operators.push(OperatorProcess::spawn(
                sim.server(),
                identity,
                operator_args,
            ));
            operators[0].wait_leader().await;
        }
        Env {
            operators,
            fixture,
            sim: Some(sim),
            kubeconfig_yaml,
            kubeconfig,
            imports: Mutex::new(()),
            dir,
        }
    }

    fn operator(&self) -> &OperatorProcess {
        &self.operators[0]
    }

    /// A client on the calling test's runtime.
    async fn client(&self) -> Client {
        client_for(self.sim.as_ref().expect("sim runs until drop")).await
    }

    fn import(&self, images: &[ImageSpec]) -> Vec<BuiltImage> {
        let _one = self.imports.lock().unwrap_or_else(|e| e.into_inner());
        block_in_place(|| self.fixture.import_images(images)).expect("import images")
    }

    fn helper(&self) -> NodeHelper {
        NodeHelper::for_fixture(&self.fixture).expect("node-helper binary")
    }

    /// The snapshot `fs` directory of each layer of `image`, bottom first (from the CLI).
    fn snapshot_fs(&self, image: &str) -> Vec<PathBuf> {
        block_in_place(|| self.helper().snapshot_paths(image)).expect("snapshot paths")
    }

    /// A started, ready agent for `node` whose presence Lease exists.
    async fn agent(&self, client: &Client, node: &str) -> AgentProcess {
        let store = StoreArgs {
            root: self.fixture.root(),
            config: self.fixture.config_path(),
        };
        let agent = AgentProcess::spawn(&self.kubeconfig_yaml, node, Some(&store));
        agent.wait_ready().await;
        wait_for("the agent's presence Lease", FLOW, || async {
            lease_of(client, node).await.map(drop)
        })
        .await;
        agent
    }

    /// Runs the real kubectl against the sim, asserting success; returns stdout.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = block_in_place(|| {
            Command::new(std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into()))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cache-dir")
                .arg(self.dir.path().join("kubectl-cache"))
                .args(args)
                .env_remove("KUBECONFIG")
                .output()
        })
        .expect("kubectl is required (scripts/install-test-deps.sh)");
        assert!(
            out.status.success(),
            "kubectl {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f` of a manifest, as a person would.
    fn kubectl_apply(&self, name: &str, manifest: &str) {
        let file = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, manifest).expect("write manifest");
        self.kubectl(&["apply", "-f", &file.to_string_lossy()]);
    }

    /// Waits until the operator's `series` reads at least `at_least` (other scenarios add to it).
    async fn wait_operator_metric(&self, series: &str, at_least: f64) {
        let mut last = 0.0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            last = self.operator().metric(series).await;
            if last >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("operator {series} is {last}, expected at least {at_least}");
    }
}

/// Prints the operators' logs when the scenario holding it fails (the shared environment
/// itself may outlive the failing scenario and drop without a panic).
struct OperatorLogOnPanic(Arc<Env>);

impl Drop for OperatorLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for operator in &self.0.operators {
                eprintln!("--- operator log ---\n{}", operator.log_text());
            }
        }
    }
}

async fn client_for(sim: &BackgroundSim) -> Client {
    Client::try_from(sim.server().kube_config().expect("kube config")).expect("client")
}

impl Drop for Env {
    fn drop(&mut self) {
        for operator in &mut self.operators {
            operator.terminate(Duration::from_secs(5));
        }
        // The sim's runtime blocks on its own shutdown; that may not happen on a runtime thread.
        if let Some(sim) = self.sim.take() {
            let _ = std::thread::spawn(move || drop(sim)).join();
        }
        // The fixture (a field) is dropped next: containers, shims and containerd are killed.
    }
}

// ---------------------------------------------------------------- helpers

/// An image of its own for one scenario: one layer with a marker file (so no other scenario
/// shares its snapshot) and a static `app` binary as entrypoint.
fn scenario_image(scenario: &str) -> ImageSpec {
    ImageSpec::new(
        &format!("snapmend.test/e2e-{scenario}:1"),
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(vec![
            TarEntry::dir("etc/"),
            TarEntry::file("etc/scenario", format!("{scenario}\n")),
            TarEntry::file("app", pause_binary().expect("pause binary")).mode(0o755),
        ])],
    )
    .entrypoint(&["/app"])
}

fn spec(node: &str, image: &str, action: RepairAction) -> SnapshotRepairSpec {
    SnapshotRepairSpec {
        node_name: node.into(),
        image: Some(image.into()),
        sandbox_image: false,
        all_images: false,
        action,
        cordon: true,
        content_check: ContentCheck::Full,
        pull_secrets: Vec::new(),
    }
}

async fn create_repair(client: &Client, name: &str, spec: SnapshotRepairSpec) {
    Api::<SnapshotRepair>::all(client.clone())
        .create(&Default::default(), &SnapshotRepair::new(name, spec))
        .await
        .expect("create SnapshotRepair");
}

/// Waits for Succeeded or Failed; returns the repair and how long it took from `since`.
async fn wait_terminal(client: &Client, name: &str, since: Instant) -> (SnapshotRepair, Duration) {
    let sr = wait_for(&format!("{name} to finish"), FLOW, || async {
        get_repair(client, name)
            .await
            .filter(|sr| phase_of(sr).is_some_and(Phase::is_terminal))
    })
    .await;
    (sr, since.elapsed())
}

fn phase_of(sr: &SnapshotRepair) -> Option<Phase> {
    sr.status.as_ref().and_then(|s| s.phase)
}

fn findings(sr: &SnapshotRepair) -> Option<String> {
    sr.status.as_ref().and_then(|s| s.findings.clone())
}

fn report_outcome(sr: &SnapshotRepair) -> Option<Outcome> {
    sr.status
        .as_ref()
        .and_then(|s| s.report.as_ref())
        .map(|r| r.report.outcome)
}

/// The tree of a snapshot directory (`fs` and `work`), every file hashed.
fn tree(snapshot_dir: &Path) -> TreeSnapshot {
    block_in_place(|| capture_tree(snapshot_dir)).expect("capture snapshot tree")
}

/// Every phase each SnapshotRepair went through, as a watch saw them.
struct PhaseHistory {
    seen: Arc<Mutex<HashMap<String, Vec<Phase>>>>,
    task: JoinHandle<()>,
}

impl PhaseHistory {
    fn start(client: &Client) -> Self {
        let seen = Arc::new(Mutex::new(HashMap::<String, Vec<Phase>>::new()));
        let record = seen.clone();
        let srs: Api<SnapshotRepair> = Api::all(client.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(srs, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(sr)) = stream.next().await {
                let Some(phase) = phase_of(&sr) else { continue };
                let mut seen = record.lock().expect("phases");
                let phases = seen.entry(sr.name_any()).or_default();
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
            }
        });
        PhaseHistory { seen, task }
    }

    /// The phases `name` went through, Pending left out (it may or may not be written).
    fn of(&self, name: &str) -> Vec<Phase> {
        let seen = self.seen.lock().expect("phases");
        let all = seen.get(name).cloned().unwrap_or_default();
        all.into_iter().filter(|p| *p != Phase::Pending).collect()
    }

    async fn wait_for(&self, name: &str, want: &[Phase]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.of(name) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.of(name), want, "phases of {name} seen by a watch");
    }
}

impl Drop for PhaseHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the Node watch recorded exactly `want` for `node`.
async fn wait_cordon_history(history: &NodeHistory, node: &str, want: &[bool]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && history.of(node) != want {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history.of(node), want, "unschedulable history of {node}");
}

// ---------------------------------------------------------------- scenarios

/// The incident: `/pause` deleted from the sandbox image's snapshot; applied with kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_is_verified_cordoned_repaired_and_uncordoned() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let sandbox = env.fixture.sandbox_image().to_string();
    env.import(&[pause_image(&sandbox).expect("pause image")]);
    let fs = env.snapshot_fs(&sandbox).pop().expect("one layer");
    let pristine = tree(&fs);

    add_node(&client, "node-a", false).await;
    let history = NodeHistory::start(&client);
    let phases = PhaseHistory::start(&client);
    let agent = env.agent(&client, "node-a").await;

    // The cleanup script of the incident, and the sandbox that can no longer start.
    std::fs::remove_file(fs.join("pause")).expect("delete /pause");
    let before = block_in_place(|| {
        env.fixture
            .run_container(&sandbox, "e2e-sandbox-before", &[])
    })
    .expect("ctr run");
    assert!(before.is_missing_entrypoint(), "runc refuses: {before:?}");

    let started = Instant::now();
    env.kubectl_apply(
        "node-a-pause",
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: node-a-pause\n\
         spec:\n  nodeName: node-a\n  sandboxImage: true\n",
    );
    let (sr, took) = wait_terminal(&client, "node-a-pause", started).await;
    eprintln!("incident repaired end to end in {took:?}");
    let status = sr.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(report_outcome(&sr), Some(Outcome::Repaired));
    assert_eq!(status.findings.as_deref(), Some("1 missing"));
    assert_eq!(status.cordoned_by_operator, Some(true));
    assert_eq!(
        condition(&sr, "Verified"),
        ("False".into(), "Corrupted".into())
    );
    assert_eq!(
        condition(&sr, "Repaired"),
        ("True".into(), "Repaired".into())
    );
    assert_eq!(condition(&sr, "Ready").0, "True");
    phases
        .wait_for(
            "node-a-pause",
            &[
                Phase::Verifying,
                Phase::Cordoning,
                Phase::Repairing,
                Phase::Uncordoning,
                Phase::Succeeded,
            ],
        )
        .await;
    wait_cordon_history(&history, "node-a", &[false, true, false]).await;
    wait_events(
        &client,
        "node-a-pause",
        &[
            "VerifyRequested",
            "CorruptionFound",
            "Cordoning",
            "RepairRequested",
            "Repaired",
            "Uncordoned",
            "Succeeded",
        ],
    )
    .await;
    let node_a = node(&client, "node-a").await;
    assert!(!is_unschedulable(&node_a));
    assert_eq!(cordoned_by(&node_a), None, "annotation removed");
    // What a person watching with kubectl sees (printer columns).
    let row = env.kubectl(&["get", "sr", "node-a-pause", "--no-headers"]);
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns[..4],
        ["node-a-pause", "node-a", "sandbox", "Repair"],
        "{row}"
    );
    assert!(
        row.contains("Succeeded") && row.contains("1 missing"),
        "{row}"
    );

    // The snapshot is what containerd unpacked (directory mtimes aside), and the sandbox runs.
    let diffs = tree(&fs).differences_from(&pristine, &BTreeSet::new());
    assert!(
        diffs.is_empty(),
        "snapshot differs from the unpack: {diffs:#?}"
    );
    assert!(
        !fs.with_file_name("snapmend-staging").exists(),
        "staging left behind"
    );
    let after = block_in_place(|| {
        env.fixture
            .run_container(&sandbox, "e2e-sandbox-after", &[])
    })
    .expect("ctr run");
    assert_eq!(after, RunOutcome::Started);
    block_in_place(|| env.fixture.remove_container("e2e-sandbox-after")).expect("remove");
    let cli = block_in_place(|| env.helper().run("verify", &["--sandbox-image", "--json"]))
        .expect("verify via CLI");
    assert_eq!(cli.code, Some(0), "{cli}");
    assert_eq!(cli.report().expect("report").outcome, Outcome::Healthy);

    for (series, want) in [
        (
            r#"snapmend_agent_requests_total{action="Verify",outcome="Corrupted"}"#,
            1.0,
        ),
        (
            r#"snapmend_agent_requests_total{action="Repair",outcome="Repaired"}"#,
            1.0,
        ),
    ] {
        assert_eq!(agent.metric(series).await, want, "agent {series}");
    }
    env.wait_operator_metric(
        r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Repaired"}"#,
        1.0,
    )
    .await;
}

/// A healthy snapshot: verified, Succeeded, never cordoned, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_snapshot_succeeds_without_a_cordon() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let image = scenario_image("healthy");
    env.import(std::slice::from_ref(&image));
    let fs = env.snapshot_fs(&image.name).pop().expect("one layer");
    let before = tree(fs.parent().expect("snapshot dir"));

    add_node(&client, "node-healthy", false).await;
    let history = NodeHistory::start(&client);
    let phases = PhaseHistory::start(&client);
    let agent = env.agent(&client, "node-healthy").await;
    let started = Instant::now();
    create_repair(
        &client,
        "node-healthy-app",
        spec("node-healthy", &image.name, RepairAction::Repair),
    )
    .await;
    let (sr, _) = wait_terminal(&client, "node-healthy-app", started).await;
    assert_eq!(phase_of(&sr), Some(Phase::Succeeded), "{:#?}", sr.status);
    assert_eq!(report_outcome(&sr), Some(Outcome::Healthy));
    assert_eq!(findings(&sr).as_deref(), Some("none"));
    assert_eq!(
        condition(&sr, "Verified"),
        ("True".into(), "Healthy".into())
    );
    phases
        .wait_for("node-healthy-app", &[Phase::Verifying, Phase::Succeeded])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history.of("node-healthy"), [false], "never cordoned");
    assert_eq!(
        tree(fs.parent().expect("snapshot dir")),
        before,
        "nothing written"
    );
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_requests_total{action="Verify",outcome="Healthy"}"#)
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_request_duration_seconds_count{action="Repair"}"#)
            .await,
        0.0,
        "no repair asked"
    );
    env.wait_operator_metric(
        r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Healthy"}"#,
        1.0,
    )
    .await;
}

/// `action: Verify` on a damaged snapshot reports the damage, never cordons, never writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_action_reports_damage_without_cordon_or_write() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let image = scenario_image("verify");
    env.import(std::slice::from_ref(&image));
    let fs = env.snapshot_fs(&image.name).pop().expect("one layer");
    std::fs::remove_file(fs.join("app")).expect("damage the snapshot");
    let before = tree(fs.parent().expect("snapshot dir"));

    add_node(&client, "node-verify", false).await;
    let history = NodeHistory::start(&client);
    let phases = PhaseHistory::start(&client);
    let agent = env.agent(&client, "node-verify").await;
    let started = Instant::now();
    create_repair(
        &client,
        "node-verify-app",
        spec("node-verify", &image.name, RepairAction::Verify),
    )
    .await;
    let (sr, _) = wait_terminal(&client, "node-verify-app", started).await;
    // The operator's design: a finished verification succeeds; the verdict is Verified=False.
    assert_eq!(phase_of(&sr), Some(Phase::Succeeded), "{:#?}", sr.status);
    assert_eq!(report_outcome(&sr), Some(Outcome::Corrupted));
    assert_eq!(findings(&sr).as_deref(), Some("1 missing"));
    assert_eq!(
        condition(&sr, "Verified"),
        ("False".into(), "Corrupted".into())
    );
    assert!(
        message(&sr).contains("not repaired because action is Verify"),
        "{}",
        message(&sr)
    );
    phases
        .wait_for("node-verify-app", &[Phase::Verifying, Phase::Succeeded])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history.of("node-verify"), [false], "never cordoned");
    assert_eq!(
        tree(fs.parent().expect("snapshot dir")),
        before,
        "never writes"
    );
    assert!(!fs.join("app").exists());
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_requests_total{action="Verify",outcome="Corrupted"}"#)
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_request_duration_seconds_count{action="Repair"}"#)
            .await,
        0.0,
        "never asked to repair"
    );
    env.wait_operator_metric(
        r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Verified"}"#,
        1.0,
    )
    .await;
}

/// A node someone else cordoned is repaired without a cordon of ours and stays cordoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_cordoned_node_is_repaired_and_stays_cordoned() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let image = scenario_image("cordoned");
    env.import(std::slice::from_ref(&image));
    let fs = env.snapshot_fs(&image.name).pop().expect("one layer");
    let pristine = tree(&fs);
    std::fs::remove_file(fs.join("app")).expect("damage the snapshot");

    add_node(&client, "node-cordoned", true).await;
    let history = NodeHistory::start(&client);
    let phases = PhaseHistory::start(&client);
    let _agent = env.agent(&client, "node-cordoned").await;
    let started = Instant::now();
    create_repair(
        &client,
        "node-cordoned-app",
        spec("node-cordoned", &image.name, RepairAction::Repair),
    )
    .await;
    let (sr, _) = wait_terminal(&client, "node-cordoned-app", started).await;
    let status = sr.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(report_outcome(&sr), Some(Outcome::Repaired));
    assert_eq!(status.cordoned_by_operator, Some(false));
    assert_eq!(
        condition(&sr, "Cordoned"),
        ("True".into(), "AlreadyUnschedulable".into())
    );
    assert!(
        message(&sr).contains("already unschedulable and stays so"),
        "{}",
        message(&sr)
    );
    phases
        .wait_for(
            "node-cordoned-app",
            &[Phase::Verifying, Phase::Repairing, Phase::Succeeded],
        )
        .await;
    wait_cordon_history(&history, "node-cordoned", &[true]).await;
    let n = node(&client, "node-cordoned").await;
    assert!(is_unschedulable(&n), "still unschedulable");
    assert_eq!(cordoned_by(&n), None, "never claimed");
    let diffs = tree(&fs).differences_from(&pristine, &BTreeSet::new());
    assert!(
        diffs.is_empty(),
        "snapshot differs from the unpack: {diffs:#?}"
    );
}

/// The layer blob is corrupt too: nothing can be restored. Failed, says why, and the node
/// stays cordoned (default --failure-policy keep-cordoned) until the repair is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_fails_and_keeps_the_node_cordoned() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let image = scenario_image("blob");
    let built = env.import(std::slice::from_ref(&image));
    let layer_digest = built[0].layers[0].digest().to_string();
    let fs = env.snapshot_fs(&image.name).pop().expect("one layer");
    std::fs::remove_file(fs.join("app")).expect("damage the snapshot");
    flip_blob_byte(&env.fixture.blob_path(&layer_digest)).expect("corrupt the blob");
    let before = tree(&fs);

    add_node(&client, "node-blob", false).await;
    let history = NodeHistory::start(&client);
    let phases = PhaseHistory::start(&client);
    let _agent = env.agent(&client, "node-blob").await;
    let started = Instant::now();
    create_repair(
        &client,
        "node-blob-app",
        spec("node-blob", &image.name, RepairAction::Repair),
    )
    .await;
    let (sr, _) = wait_terminal(&client, "node-blob-app", started).await;
    assert_eq!(phase_of(&sr), Some(Phase::Failed), "{:#?}", sr.status);
    assert_eq!(report_outcome(&sr), Some(Outcome::Unrepairable));
    assert_eq!(
        condition(&sr, "Ready"),
        ("False".into(), "Unrepairable".into())
    );
    let msg = message(&sr);
    assert!(
        msg.contains(layer_digest.trim_start_matches("sha256:")) && msg.contains("hashes to"),
        "says why (the layer blob does not hash to its digest): {msg}"
    );
    assert!(
        msg.contains("stays cordoned (--failure-policy keep-cordoned)"),
        "says what happened to the node: {msg}"
    );
    phases
        .wait_for(
            "node-blob-app",
            &[
                Phase::Verifying,
                Phase::Cordoning,
                Phase::Repairing,
                Phase::Failed,
            ],
        )
        .await;
    wait_cordon_history(&history, "node-blob", &[false, true]).await;
    let n = node(&client, "node-blob").await;
    assert!(is_unschedulable(&n));
    assert_eq!(cordoned_by(&n).as_deref(), Some("node-blob-app"));
    // The helper's own lock file beside `fs` may remain; `fs` itself and staging may not.
    assert_eq!(tree(&fs), before, "nothing written from an unverified blob");
    let staging = fs.with_file_name("snapmend-staging");
    assert!(!staging.exists(), "{} left behind", staging.display());
    env.wait_operator_metric(
        r#"snapmend_repairs_finished_total{phase="Failed",outcome="Unrepairable"}"#,
        1.0,
    )
    .await;
    env.wait_operator_metric("snapmend_nodes_cordoned", 1.0)
        .await;

    // Deleting the failed repair is how a person takes over: the node is given back.
    Api::<SnapshotRepair>::all(client.clone())
        .delete("node-blob-app", &Default::default())
        .await
        .expect("delete");
    wait_for("the repair to be gone", FLOW, || async {
        get_repair(&client, "node-blob-app")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    wait_cordon_history(&history, "node-blob", &[false, true, false]).await;
}

/// A node whose agent never ran: HelperUnavailable within --helper-timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_an_agent_fails_with_helper_unavailable() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    add_node(&client, "node-b", false).await;
    let history = NodeHistory::start(&client);
    let started = Instant::now();
    env.kubectl_apply(
        "node-b-pause",
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: node-b-pause\n\
         spec:\n  nodeName: node-b\n  sandboxImage: true\n",
    );
    let (sr, took) = wait_terminal(&client, "node-b-pause", started).await;
    eprintln!("no agent: Failed after {took:?}");
    assert_eq!(phase_of(&sr), Some(Phase::Failed), "{:#?}", sr.status);
    assert_eq!(
        condition(&sr, "Ready"),
        ("False".into(), "HelperUnavailable".into())
    );
    // One extra second: request times have whole seconds (see docs/architecture/operator.md).
    assert!(
        took <= HELPER_TIMEOUT + Duration::from_secs(1),
        "failed after {took:?}, --helper-timeout is {HELPER_TIMEOUT:?}"
    );
    assert!(
        message(&sr).contains("snapmend-node-helper.node-b"),
        "names the Lease: {}",
        message(&sr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history.of("node-b"), [false], "never cordoned");
    env.wait_operator_metric(
        r#"snapmend_repairs_finished_total{phase="Failed",outcome="HelperUnavailable"}"#,
        1.0,
    )
    .await;
}

/// An agent that died without a word (SIGKILL): its Lease still looks fresh, so the request
/// is sent, and nobody answers it. HelperUnavailable once --helper-timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_fails_with_helper_unavailable_after_the_timeout() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let image = scenario_image("killed");
    env.import(std::slice::from_ref(&image));
    add_node(&client, "node-killed", false).await;
    let history = NodeHistory::start(&client);
    let phases = PhaseHistory::start(&client);
    let agent = env.agent(&client, "node-killed").await;
    // SAFETY: kill(2) on our own child's pid; the Drop guard reaps it.
    unsafe {
        libc::kill(agent.pid() as libc::pid_t, libc::SIGKILL);
    }
    let started = Instant::now();
    create_repair(
        &client,
        "node-killed-app",
        spec("node-killed", &image.name, RepairAction::Repair),
    )
    .await;
    let (sr, took) = wait_terminal(&client, "node-killed-app", started).await;
    eprintln!("silent agent: Failed after {took:?}");
    assert_eq!(phase_of(&sr), Some(Phase::Failed), "{:#?}", sr.status);
    assert_eq!(
        condition(&sr, "Ready"),
        ("False".into(), "HelperUnavailable".into())
    );
    assert!(
        took >= HELPER_TIMEOUT && took <= HELPER_TIMEOUT + Duration::from_secs(3),
        "failed after {took:?}, --helper-timeout is {HELPER_TIMEOUT:?}"
    );
    assert!(sr.status.as_ref().and_then(|s| s.report.as_ref()).is_none());
    phases
        .wait_for("node-killed-app", &[Phase::Verifying, Phase::Failed])
        .await;
    assert_eq!(history.of("node-killed"), [false], "never cordoned");
}

/// Both binaries answer their probes and count what they did on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_of_operator_and_agent() {
    let env = shared_env().await;
    let _logs = OperatorLogOnPanic(env.clone());
    let client = env.client().await;
    let image = scenario_image("metrics");
    env.import(std::slice::from_ref(&image));
    add_node(&client, "node-metrics", false).await;
    let agent = env.agent(&client, "node-metrics").await;
    let started = Instant::now();
    create_repair(
        &client,
        "node-metrics-app",
        spec("node-metrics", &image.name, RepairAction::Verify),
    )
    .await;
    let (sr, _) = wait_terminal(&client, "node-metrics-app", started).await;
    assert_eq!(phase_of(&sr), Some(Phase::Succeeded), "{:#?}", sr.status);

    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            env.operator().http_get(path).await.map(|r| r.0),
            Some(200),
            "operator {path}"
        );
        assert_eq!(
            agent.http_get(path).await.map(|r| r.0),
            Some(200),
            "agent {path}"
        );
    }
    for (series, at_least) in [
        (
            r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Healthy"}"#,
            1.0,
        ),
        (
            r#"snapmend_repair_duration_seconds_count{phase="Succeeded"}"#,
            1.0,
        ),
        (r#"snapmend_repairs{phase="Succeeded"}"#, 1.0),
        ("snapmend_operator_leader", 1.0),
    ] {
        env.wait_operator_metric(series, at_least).await;
    }
    let (_, text) = env.operator().http_get("/metrics").await.expect("metrics");
    for series in ["snapmend_findings_total", "snapmend_nodes_cordoned"] {
        assert!(
            metric_value(&text, series).is_some(),
            "operator lacks {series}:\n{text}"
        );
    }

    for (series, want) in [
        (
            r#"snapmend_agent_requests_total{action="Verify",outcome="Healthy"}"#,
            1.0,
        ),
        (
            r#"snapmend_agent_request_duration_seconds_count{action="Verify"}"#,
            1.0,
        ),
        (r#"snapmend_agent_findings_total{action="Verify"}"#, 0.0),
        ("snapmend_agent_running_requests", 0.0),
    ] {
        assert_eq!(agent.metric(series).await, want, "agent {series}");
    }
    assert!(agent.metric("snapmend_agent_lease_renewals_total").await >= 1.0);
}

/// Three broken nodes, a cap of one cordoned node, two operator replicas, and the leader
/// SIGKILLed once the first node is cordoned: the standby takes over, at most one node is ever
/// cordoned, and all three snapshots are repaired without a request being asked twice.
/// Its own containerd, sim and operators (the shared operator would compete for leadership).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_cap_holds_across_a_leader_killed_mid_flight() {
    let mut env = Env::start(
        &["op-cap-a", "op-cap-b"],
        &["--helper-timeout", "20s", "--max-cordoned-nodes", "1"],
    )
    .await;
    let client = env.client().await;
    let nodes = ["node-cap-1", "node-cap-2", "node-cap-3"];
    let images: Vec<ImageSpec> = nodes.iter().map(|n| scenario_image(n)).collect();
    env.import(&images);
    let mut damaged = Vec::new();
    for image in &images {
        let fs = env.snapshot_fs(&image.name).pop().expect("one layer");
        let pristine = tree(&fs);
        std::fs::remove_file(fs.join("app")).expect("damage the snapshot");
        damaged.push((fs, pristine));
    }
    for node in nodes {
        add_node(&client, node, false).await;
    }
    let history = NodeHistory::start(&client);
    let mut agents = Vec::new();
    for node in nodes {
        agents.push(env.agent(&client, node).await);
    }
    let started = Instant::now();
    for (node, image) in nodes.iter().zip(&images) {
        create_repair(
            &client,
            &format!("{node}-app"),
            spec(node, &image.name, RepairAction::Repair),
        )
        .await;
    }

    wait_for("a first cordon", FLOW, || async {
        (history.max_unschedulable_at_once() >= 1).then_some(())
    })
    .await;
    env.operators[0].kill();
    for node in nodes {
        let (sr, _) = wait_terminal(&client, &format!("{node}-app"), started).await;
        assert_eq!(
            phase_of(&sr),
            Some(Phase::Succeeded),
            "{node}: {:#?}",
            sr.status
        );
        assert_eq!(report_outcome(&sr), Some(Outcome::Repaired), "{node}");
        assert_eq!(
            sr.status.as_ref().and_then(|s| s.cordoned_by_operator),
            Some(true)
        );
        wait_cordon_history(&history, node, &[false, true, false]).await;
    }
    eprintln!(
        "3 repairs with a cap of 1 and a leader change took {:?}",
        started.elapsed()
    );
    assert_eq!(
        history.max_unschedulable_at_once(),
        1,
        "never more than --max-cordoned-nodes"
    );
    for (fs, pristine) in &damaged {
        let diffs = tree(fs).differences_from(pristine, &BTreeSet::new());
        assert!(diffs.is_empty(), "{}: {diffs:#?}", fs.display());
    }
    // The standby leads now, and no request was issued twice (each agent ran one of each).
    assert_eq!(
        env.operators[1].metric("snapmend_operator_leader").await,
        1.0
    );
    for (node, agent) in nodes.iter().zip(&agents) {
        for series in [
            r#"snapmend_agent_requests_total{action="Verify",outcome="Corrupted"}"#,
            r#"snapmend_agent_requests_total{action="Repair",outcome="Repaired"}"#,
        ] {
            assert_eq!(agent.metric(series).await, 1.0, "{node} {series}");
        }
    }
}

/// Sends `signal` to one of our own child processes.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Holds a phase still with the real pieces: the cordon cap parks the repair in Pending after
/// its verification (another node holds the only slot), and a SIGSTOPped agent leaves the
/// repair request unanswered. The operator is SIGKILLed and restarted in both places and picks
/// up where it was; then the SnapshotRepair is deleted mid-repair and the node is uncordoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restarts_and_a_delete_mid_repair_leave_the_node_uncordoned() {
    let mut env = Env::start(
        &["op-del"],
        &["--helper-timeout", "60s", "--max-cordoned-nodes", "1"],
    )
    .await;
    let client = env.client().await;
    let image = scenario_image("delete");
    env.import(std::slice::from_ref(&image));
    let fs = env.snapshot_fs(&image.name).pop().expect("one layer");
    std::fs::remove_file(fs.join("app")).expect("damage the snapshot");
    let damaged = tree(&fs);

    // Another node holds the only cordon slot.
    let nodes: Api<Node> = Api::all(client.clone());
    let blocker: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "node-blocker",
                     "annotations": {CORDONED_BY_ANNOTATION: "someone-elses-repair"}},
        "spec": {"unschedulable": true},
    }))
    .expect("node");
    nodes
        .create(&Default::default(), &blocker)
        .await
        .expect("create node");
    add_node(&client, "node-del", false).await;
    let history = NodeHistory::start(&client);
    let agent = env.agent(&client, "node-del").await;
    create_repair(
        &client,
        "node-del-app",
        spec("node-del", &image.name, RepairAction::Repair),
    )
    .await;
    let parked = wait_for("the repair parked for a cordon slot", FLOW, || async {
        get_repair(&client, "node-del-app").await.filter(|sr| {
            phase_of(sr) == Some(Phase::Pending)
                && message(sr).contains("waiting for a cordon slot")
        })
    })
    .await;
    assert_eq!(
        findings(&parked).as_deref(),
        Some("1 missing"),
        "verified first"
    );

    signal(agent.pid(), libc::SIGSTOP);
    env.operators[0].kill();
    env.operators[0].restart();
    env.operators[0].wait_leader().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = get_repair(&client, "node-del-app").await.expect("repair");
    assert_eq!(
        phase_of(&still),
        Some(Phase::Pending),
        "{:#?}",
        still.status
    );

    // The slot frees up: cordon, then a repair request nobody answers (the agent is stopped).
    let free = serde_json::json!({
        "metadata": {"annotations": {CORDONED_BY_ANNOTATION: null}},
        "spec": {"unschedulable": false},
    });
    nodes
        .patch(
            "node-blocker",
            &PatchParams::default(),
            &Patch::Merge(&free),
        )
        .await
        .expect("free the slot");
    let repairing = wait_for("Repairing", FLOW, || async {
        get_repair(&client, "node-del-app")
            .await
            .filter(|sr| phase_of(sr) == Some(Phase::Repairing))
    })
    .await;
    let request = repairing.status.as_ref().and_then(|s| s.request.clone());
    assert_eq!(
        request.as_ref().map(|r| r.action),
        Some(RepairAction::Repair)
    );
    assert!(is_unschedulable(&node(&client, "node-del").await));

    env.operators[0].kill();
    env.operators[0].restart();
    env.operators[0].wait_leader().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = get_repair(&client, "node-del-app").await.expect("repair");
    assert_eq!(
        phase_of(&still),
        Some(Phase::Repairing),
        "{:#?}",
        still.status
    );
    assert_eq!(
        still.status.as_ref().and_then(|s| s.request.clone()),
        request,
        "the restarted operator did not ask again"
    );

    Api::<SnapshotRepair>::all(client.clone())
        .delete("node-del-app", &Default::default())
        .await
        .expect("delete");
    wait_for("the repair to be gone", FLOW, || async {
        get_repair(&client, "node-del-app")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    wait_cordon_history(&history, "node-del", &[false, true, false]).await;
    let n = node(&client, "node-del").await;
    assert!(!is_unschedulable(&n));
    assert_eq!(cordoned_by(&n), None);
    assert_eq!(
        tree(&fs),
        damaged,
        "nothing was written while the agent was stopped"
    );

    // The agent wakes up to a backlog naming a repair that no longer exists: it re-reads
    // before acting, so it never runs it.
    signal(agent.pid(), libc::SIGCONT);
    agent.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_request_duration_seconds_count{action="Repair"}"#)
            .await,
        0.0,
        "{}",
        agent.log_text()
    );
    assert_eq!(tree(&fs), damaged, "a deleted repair is never run");
}
