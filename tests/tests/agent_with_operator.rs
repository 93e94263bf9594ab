//! Both real binaries together on a hand-made SnapshotRepair: `snapmend-operator` drives the
//! phases, `snapmend-node-helper agent` answers its requests from a private containerd whose
//! sandbox image lost `/pause`. Checks the cordon history seen by a watch, the report, the
//! snapshot itself, and that the sandbox runs again.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use snapmend_crds::{
    ContentCheck, Outcome, Phase, RepairAction, SnapshotRepair, SnapshotRepairSpec,
};
use snapmend_tests::containerd::{ContainerdFixture, RunOutcome};
use snapmend_tests::image_builder::pause_image;
use snapmend_tests::kubelet::scenario::spawn_operator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_agent_repair_the_incident_with_a_cordon_in_between() {
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[pause_image(&sandbox).unwrap()])
        .unwrap();
    let pause = std::fs::read_dir(fixture.snapshotter_root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path().join("fs/pause"))
        .find(|p| p.is_file())
        .expect("the pause snapshot");

    let sim = start_cluster(0).await;
    let client = sim.client().unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    create_node(&client, "node-a").await;
    // Every value of spec.unschedulable the node goes through.
    let history = CordonHistory::record(&client);

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let store = StoreArgs {
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), "node-a", Some(&store));
    let _operator = spawn_operator(&kubeconfig, dir.path(), &[]).unwrap();
    agent.wait_ready().await;

    // The incident, then the SnapshotRepair a person applies.
    std::fs::remove_file(&pause).unwrap();
    let applied = std::time::Instant::now();
    let spec = SnapshotRepairSpec {
        node_name: "node-a".into(),
        image: None,
        sandbox_image: true,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: ContentCheck::Full,
        pull_secrets: Vec::new(),
    };
    create_repair_with(&client, "node-a-pause", spec).await;
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let done = wait_for("the repair to finish", Duration::from_secs(90), || async {
        let sr = srs.get("node-a-pause").await.ok()?;
        let phase = sr.status.as_ref()?.phase?;
        phase.is_terminal().then_some(sr)
    })
    .await;
    eprintln!(
        "SnapshotRepair applied → Succeeded in {:?}; agent peak RSS {:?} KiB",
        applied.elapsed(),
        agent.peak_rss_kib()
    );
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    let report = status.report.expect("report").report;
    assert_eq!(report.outcome, Outcome::Repaired);
    assert_eq!(status.findings.as_deref(), Some("1 missing"));
    assert_eq!(status.cordoned_by_operator, Some(true));

    // Cordoned while repairing, uncordoned afterwards.
    history
        .wait_for(&[false, true, false], Duration::from_secs(10))
        .await;
    let node = nodes.get("node-a").await.unwrap();
    let annotations = node.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key(snapmend_crds::labels::CORDONED_BY_ANNOTATION));

    assert!(pause.is_file(), "/pause restored in the snapshot");
    assert_eq!(
        fixture
            .run_container(&sandbox, "sandbox-after", &[])
            .unwrap(),
        RunOutcome::Started
    );
    fixture.remove_container("sandbox-after").unwrap();
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
        assert_eq!(agent.metric(series).await, want, "{series}");
    }
}
