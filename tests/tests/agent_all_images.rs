//! `spec.allImages` end to end (issue 16): the real operator and the real agent on snapmend-sim,
//! a private containerd with several images sharing base layers. An allImages Verify finds the
//! damage in every image and the snapshot store and says so in a bounded status; an allImages
//! Repair cordons, repairs to exactly what containerd unpacked, and uncordons; the Node
//! condition `SnapshotsDamaged` follows. And a node with 200 images keeps a small object.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::*;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use snapmend_crds::labels::{RUN_NOW_ANNOTATION, SCAN_LABEL, SCAN_RUN_LABEL};
use snapmend_crds::{
    ContentCheck, FindingKind, Outcome, Phase, RepairAction, SnapshotRepair, SnapshotRepairSpec,
    SnapshotScan, SnapshotScanSpec,
};
use snapmend_tests::image_builder::ImageSpec;
use snapmend_tests::image_builder::{
    LayerSpec, ManifestStyle, TarEntry, pause_image, rich_image, shared_base_images,
};
use snapmend_tests::kubectl::kubectl;
use snapmend_tests::kubelet::scenario::spawn_operator;
use snapmend_tests::node_helper_cli::Scenario;
use snapmend_tests::sim::SimServer;

const A: &str = "snapmend.test/shared-a:1";
const B: &str = "snapmend.test/shared-b:1";
const RICH: &str = "snapmend.test/rich:1";
const PAUSE: &str = "snapmend.test/pause:1";
const NODE: &str = "node-a";
const FLOW: Duration = Duration::from_secs(120);
/// The whole SnapshotRepair of a scan stays below this (the API server's limit is 1.5 MiB;
/// large lists and watches stay cheap well below 256 KiB).
const OBJECT_BUDGET: usize = 64 * 1024;

/// snapmend-sim with node-a, the real agent on the scenario's containerd, the real operator.
struct Cluster {
    sim: SimServer,
    client: Client,
    _agent: AgentProcess,
    _operator: snapmend_tests::kubelet::scenario::ChildProcess,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Runs the real kubectl against the cluster; returns stdout, asserting success.
    fn kubectl(&self, args: &[&str]) -> String {
        kubectl(&self.dir.path().join("kubeconfig"), args).unwrap()
    }
}

async fn cluster(s: &Scenario) -> Cluster {
    let sim = start_cluster(0).await;
    let client = sim.client().unwrap();
    create_node(&client, NODE).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let store = StoreArgs {
        root: s.fixture.root(),
        config: s.fixture.config_path(),
    };
    let agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), NODE, Some(&store));
    let operator = spawn_operator(&kubeconfig, dir.path(), &[]).unwrap();
    agent.wait_ready().await;
    Cluster {
        sim,
        client,
        _agent: agent,
        _operator: operator,
        dir,
    }
}

fn all_images(action: RepairAction, content: ContentCheck) -> SnapshotRepairSpec {
    SnapshotRepairSpec {
        node_name: NODE.into(),
        image: None,
        sandbox_image: false,
        all_images: true,
        action,
        cordon: true,
        content_check: content,
        pull_secrets: Vec::new(),
    }
}

/// Creates the SnapshotRepair and waits until it has finished.
async fn run_to_the_end(client: &Client, name: &str, spec: SnapshotRepairSpec) -> SnapshotRepair {
    create_repair_with(client, name, spec).await;
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    wait_for(&format!("{name} to finish"), FLOW, || async {
        let sr = srs.get(name).await.ok()?;
        sr.status.as_ref()?.phase?.is_terminal().then_some(sr)
    })
    .await
}

/// The SnapshotRepair as the API server serves it, serialised.
async fn served_size(client: &Client, name: &str) -> usize {
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let raw: serde_json::Value = srs
        .get(name)
        .await
        .map(|sr| serde_json::to_value(sr).unwrap())
        .unwrap();
    serde_json::to_vec(&raw).unwrap().len()
}

/// Waits until the node shows `SnapshotsDamaged` = `status` with `reason`, written for `repair`.
async fn wait_condition(
    client: &Client,
    status: &str,
    reason: &str,
    repair: &str,
) -> NodeCondition {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(
        &format!("SnapshotsDamaged {status}/{reason} from {repair}"),
        Duration::from_secs(30),
        || async {
            let node = nodes.get(NODE).await.ok()?;
            node.status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "SnapshotsDamaged")
                .filter(|c| {
                    c.status == status
                        && c.reason.as_deref() == Some(reason)
                        && c.message.as_deref().is_some_and(|m| m.contains(repair))
                })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_images_verify_reports_the_damage_and_an_all_images_repair_restores_it() {
    let t0 = Instant::now();
    let [a, b] = shared_base_images(A, B).unwrap();
    let s =
        Scenario::start(&[a, b, rich_image(RICH).unwrap(), pause_image(PAUSE).unwrap()]).unwrap();
    eprintln!("containerd with 4 images after {:?}", t0.elapsed());
    let pristine: Vec<_> = [A, B, RICH]
        .iter()
        .map(|n| s.capture_pristine(n).unwrap())
        .collect();
    eprintln!("pristine captured after {:?}", t0.elapsed());
    let c = cluster(&s).await;
    eprintln!("cluster ready after {:?}", t0.elapsed());
    // Every value of spec.unschedulable the node goes through.
    let history = CordonHistory::record(&c.client);

    // Damage in two images, and B's top snapshot directory deleted.
    std::fs::remove_file(pristine[0].layers[1].fs.join("a")).unwrap();
    std::fs::write(pristine[2].layers[2].fs.join("newdir/file"), b"tampered").unwrap();
    std::fs::remove_dir_all(pristine[1].snapshot_dir(1)).unwrap();
    let b_top_id = pristine[1]
        .snapshot_dir(1)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let started = Instant::now();
    let verify = run_to_the_end(
        &c.client,
        "node-a-1-verify-all",
        all_images(RepairAction::Verify, ContentCheck::Full),
    )
    .await;
    eprintln!("allImages Verify finished in {:?}", started.elapsed());
    let st = verify.status.clone().unwrap();
    assert_eq!(st.phase, Some(Phase::Succeeded), "{st:#?}");
    assert_eq!(st.target.as_deref(), Some("all"));
    assert_eq!(
        st.findings.as_deref(),
        Some("3/4 images damaged, 1 snapshot dir missing"),
        "{st:#?}"
    );
    let report = st.report.clone().unwrap().report;
    assert_eq!(report.outcome, Outcome::Corrupted);
    let scan = report.scan.clone().expect("scan summary");
    assert_eq!(scan.images_total, 4);
    assert_eq!((scan.outcomes.corrupted, scan.outcomes.healthy), (3, 1));
    // Shared base: 2 + 2 + 3 + 1 layers, 7 of them unique.
    assert_eq!(scan.layers_checked, 7);
    assert_eq!(scan.damaged_layers, 3, "{scan:#?}");
    assert_eq!(scan.omitted, 0);
    let order: Vec<(&str, Outcome)> = scan
        .images
        .iter()
        .map(|i| (i.image.as_str(), i.outcome))
        .collect();
    assert_eq!(
        order,
        [
            (RICH, Outcome::Corrupted),
            (A, Outcome::Corrupted),
            (B, Outcome::Corrupted),
            (PAUSE, Outcome::Healthy),
        ],
        "damaged first, then by name"
    );
    assert_eq!(scan.store.missing, 1);
    assert_eq!(scan.store.listed.missing[0].id, b_top_id);
    let paths: Vec<(&str, FindingKind)> = report
        .layers
        .iter()
        .flat_map(|l| l.findings.iter().map(|f| (f.path.as_str(), f.kind)))
        .collect();
    assert!(paths.contains(&("/a", FindingKind::Missing)), "{paths:?}");
    assert!(paths.iter().any(|(p, _)| *p == "/newdir/file"), "{paths:?}");
    let message = st.message.clone().unwrap_or_default();
    assert!(
        message.contains(RICH) && message.contains(A) && message.contains(B),
        "{message}"
    );
    assert!(
        message.ends_with("not repaired because action is Verify"),
        "{message}"
    );
    assert!(served_size(&c.client, "node-a-1-verify-all").await < OBJECT_BUDGET);
    wait_condition(
        &c.client,
        "True",
        "SnapshotDamageFound",
        "node-a-1-verify-all",
    )
    .await;
    assert!(history.values().iter().all(|u| !u), "Verify never cordons");

    let started = Instant::now();
    let repair = run_to_the_end(
        &c.client,
        "node-a-2-repair-all",
        all_images(RepairAction::Repair, ContentCheck::Full),
    )
    .await;
    eprintln!("allImages Repair finished in {:?}", started.elapsed());
    let st = repair.status.clone().unwrap();
    assert_eq!(st.phase, Some(Phase::Succeeded), "{st:#?}");
    assert_eq!(
        st.findings.as_deref(),
        Some("3/4 images repaired"),
        "{st:#?}"
    );
    assert_eq!(st.cordoned_by_operator, Some(true));
    let report = st.report.unwrap().report;
    assert_eq!(report.outcome, Outcome::Repaired);
    let scan = report.scan.expect("scan summary");
    assert_eq!((scan.outcomes.repaired, scan.outcomes.healthy), (3, 1));
    assert_eq!(scan.store.missing, 0, "the deleted directory is back");
    history
        .wait_for(&[false, true, false], Duration::from_secs(10))
        .await;
    for p in &pristine {
        let diffs = p.differences_now().unwrap();
        assert!(
            diffs.is_empty(),
            "{}: differs from containerd's unpack after the allImages repair:\n{}",
            p.name,
            diffs.join("\n")
        );
    }
    wait_condition(
        &c.client,
        "False",
        "SnapshotsRepaired",
        "node-a-2-repair-all",
    )
    .await;

    // What a person sees.
    let table = c.kubectl(&["get", "sr"]);
    let row = |name: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
            .to_string()
    };
    let cells = |line: &str| -> Vec<String> {
        line.split_whitespace()
            .take(5)
            .map(str::to_string)
            .collect()
    };
    let verify_row = row("node-a-1-verify-all");
    assert_eq!(
        cells(&verify_row)[1..],
        ["node-a", "all", "Verify", "Succeeded"],
        "{table}"
    );
    assert!(
        verify_row.contains("3/4 images damaged, 1 snapshot dir missing"),
        "{table}"
    );
    let repair_row = row("node-a-2-repair-all");
    assert_eq!(
        cells(&repair_row)[1..],
        ["node-a", "all", "Repair", "Succeeded"]
    );
    assert!(repair_row.contains("3/4 images repaired"), "{table}");
    let described = c.kubectl(&["describe", "sr", "node-a-1-verify-all"]);
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().eq(["Images", "Total:", "4"])),
        "{described}"
    );
    assert!(described.lines().count() < 250, "{described}");
    c.sim.stop().await;
}

/// `count` images named with long repository paths, sharing one base layer, each with a layer
/// of its own.
fn many_images(count: usize) -> Vec<ImageSpec> {
    let base = LayerSpec::gzip(vec![TarEntry::file("base", "shared by every image\n")]);
    let long = "team-with-a-long-name/".repeat(7);
    (0..count)
        .map(|i| {
            let name = format!("snapmend.test/{long}app-{i:03}:1");
            let own = LayerSpec::gzip(vec![TarEntry::file("id", format!("{i}\n"))]);
            ImageSpec::new(&name, ManifestStyle::Oci, vec![base.clone(), own])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_over_200_images_finishes_with_a_bounded_status() {
    let images = many_images(200);
    let damaged = images[150].name.clone();
    let started = Instant::now();
    let s = Scenario::start(&images).unwrap();
    eprintln!("200 images imported in {:?}", started.elapsed());
    let fs = s.layer_fs(&damaged).unwrap();
    std::fs::remove_file(fs[1].join("id")).unwrap();
    let c = cluster(&s).await;

    let started = Instant::now();
    let sr = run_to_the_end(
        &c.client,
        "node-a-200",
        all_images(RepairAction::Verify, ContentCheck::Metadata),
    )
    .await;
    let took = started.elapsed();
    let size = served_size(&c.client, "node-a-200").await;
    eprintln!("scan of 200 images through the agent: {took:?}; SnapshotRepair {size} bytes");
    let st = sr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::Succeeded), "{:?}", st.message);
    assert_eq!(st.findings.as_deref(), Some("1/200 images damaged"));
    let scan = st.report.unwrap().report.scan.expect("scan summary");
    assert_eq!(scan.images_total, 200);
    assert_eq!((scan.outcomes.healthy, scan.outcomes.corrupted), (199, 1));
    assert_eq!(
        scan.layers_checked, 201,
        "the base once, and each image's own layer"
    );
    assert_eq!(scan.images[0].image, damaged, "the damaged image first");
    assert_eq!(scan.images.len() as u64 + scan.omitted, 200);
    assert!(
        scan.omitted > 0,
        "the names do not all fit: the byte budget decides"
    );
    assert!(size < OBJECT_BUDGET, "{size} bytes");
    c.sim.stop().await;
}

/// A SnapshotScan started with the run-now annotation, through the real operator and the real
/// agent: its run creates the node's allImages Repair, which restores containerd's unpack, and
/// the scan's status, columns and events count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_scan_started_with_run_now_repairs_the_node_through_the_agent() {
    let [a, b] = shared_base_images(A, B).unwrap();
    let s = Scenario::start(&[a, b, pause_image(PAUSE).unwrap()]).unwrap();
    let pristine: Vec<_> = [A, B]
        .iter()
        .map(|n| s.capture_pristine(n).unwrap())
        .collect();
    let c = cluster(&s).await;
    // Damage in the shared base layer: both images are damaged, the layer is repaired once.
    std::fs::remove_file(pristine[1].layers[0].fs.join("shared")).unwrap();

    // Nightly at 03:00 UTC: only the annotation can start this run within the test.
    let mut scan = SnapshotScan::new(
        "nightly",
        SnapshotScanSpec {
            schedule: "0 3 * * *".into(),
            node_selector: None,
            action: RepairAction::Repair,
            content_check: ContentCheck::Full,
            max_concurrent_nodes: 1,
            suspend: false,
            history_limit: 3,
        },
    );
    scan.metadata.annotations =
        Some([(RUN_NOW_ANNOTATION.to_string(), "first".to_string())].into());
    let scans: Api<SnapshotScan> = Api::all(c.client.clone());
    scans.create(&PostParams::default(), &scan).await.unwrap();

    let run = wait_for("the run-now run to finish", FLOW, || async {
        let s = scans.get("nightly").await.ok()?;
        s.status?.last_run.filter(|r| r.completion_time.is_some())
    })
    .await;
    assert_eq!(
        (
            run.nodes,
            run.repaired,
            run.damaged,
            run.failed,
            run.healthy
        ),
        (1, 1, 0, 0, 0),
        "{run:?}"
    );
    let srs: Api<SnapshotRepair> = Api::all(c.client.clone());
    let made = srs
        .list(&ListParams::default().labels(&format!("{SCAN_LABEL}=nightly")))
        .await
        .unwrap()
        .items;
    assert_eq!(made.len(), 1, "one SnapshotRepair for the one node");
    let sr = &made[0];
    assert!(sr.spec.all_images && sr.spec.node_name == NODE);
    assert_eq!(
        sr.labels().get(SCAN_RUN_LABEL).map(String::as_str),
        Some(run.id.as_str())
    );
    let st = sr.status.clone().unwrap();
    assert_eq!(st.phase, Some(Phase::Succeeded), "{st:#?}");
    assert_eq!(
        st.findings.as_deref(),
        Some("2/3 images repaired"),
        "{st:#?}"
    );
    for p in &pristine {
        let diffs = p.differences_now().unwrap();
        assert!(diffs.is_empty(), "{}: {}", p.name, diffs.join("\n"));
    }
    wait_condition(&c.client, "False", "SnapshotsRepaired", &sr.name_any()).await;

    // What a person sees: the scan's columns and its events.
    let table = c.kubectl(&["get", "sscan"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("nightly"))
        .unwrap_or_else(|| panic!("no nightly in\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1..=5], ["0", "3", "*", "*", "*"], "{table}");
    assert_eq!(row[6], "Repair", "{table}");
    let events = c.kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "involvedObject.name=nightly",
        "-o",
        "custom-columns=REASON:.reason",
        "--no-headers",
    ]);
    for reason in ["RunStarted", "RunFinished"] {
        assert!(
            events.lines().any(|l| l.trim() == reason),
            "{reason} missing from\n{events}"
        );
    }
    c.sim.stop().await;
}
