//! The incident through the agent: a private containerd whose sandbox image lost `/pause`,
//! snapmend-sim, and the real agent binary answering Verify and Repair requests with the same
//! job code as the CLI. The operator's part is played by the test (it writes the requests).
//! With `SNAPMEND_TEST_KUBECONFIG` the requests go through that cluster instead.

mod agent_support;

use std::path::PathBuf;
use std::time::Duration;

use agent_support::*;
use kube::CustomResourceExt;
use snapmend_crds::{
    BlobState, ContentCheck, FindingKind, LayerState, Outcome, RepairAction, SnapshotRepairSpec,
};
use snapmend_tests::containerd::{ContainerdFixture, RunOutcome};
use snapmend_tests::image_builder::pause_image;
use snapmend_tests::sim::SimServer;

const ANSWER: Duration = Duration::from_secs(60);

/// `snapshots/<id>/fs` dirs of the fixture that hold `name` (the pause layer's snapshot).
fn snapshots_holding(fixture: &ContainerdFixture, name: &str) -> Vec<PathBuf> {
    std::fs::read_dir(fixture.snapshotter_root().join("snapshots"))
        .expect("snapshots dir")
        .map(|e| e.expect("snapshot entry").path().join("fs"))
        .filter(|fs| path_exists(&fs.join(name)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_verifies_and_repairs_the_incident_on_request() {
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[pause_image(&sandbox).unwrap()])
        .unwrap();
    let fs = snapshots_holding(&fixture, "pause");
    assert_eq!(fs.len(), 1, "one pause snapshot: {fs:?}");
    let pause = fs[0].join("pause");

    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let node = unique("incident-a");
    let app = unique("incident-a-pause");
    let store = StoreArgs {
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, Some(&store));
    agent.wait_ready().await;
    let spec = SnapshotRepairSpec {
        node_name: node.clone(),
        image: None,
        sandbox_image: true,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: ContentCheck::Full,
        pull_secrets: Vec::new(),
    };
    create_repair_with(&client, &app, spec).await;

    request(&client, &app, "1", RepairAction::Verify).await;
    let healthy = wait_for_report(&client, &app, "1", ANSWER).await.report;
    assert_eq!(healthy.outcome, Outcome::Healthy, "{healthy:?}");
    assert_eq!(healthy.image, sandbox);
    assert_eq!(healthy.layers.len(), 1);
    assert_eq!(healthy.layers[0].blob, BlobState::Verified);

    // The incident: a cleanup script deletes /pause from the unpacked snapshot.
    std::fs::remove_file(&pause).unwrap();
    request(&client, &app, "2", RepairAction::Verify).await;
    let corrupted = wait_for_report(&client, &app, "2", ANSWER).await.report;
    assert_eq!(corrupted.outcome, Outcome::Corrupted, "{corrupted:?}");
    let layer = &corrupted.layers[0];
    assert_eq!(layer.state, LayerState::Corrupted);
    assert_eq!(layer.findings_total, 1);
    assert_eq!(layer.findings[0].path, "/pause");
    assert_eq!(layer.findings[0].kind, FindingKind::Missing);
    assert!(!path_exists(&pause), "Verify never writes");

    request(&client, &app, "3", RepairAction::Repair).await;
    let repaired = wait_for_report(&client, &app, "3", ANSWER).await.report;
    assert_eq!(repaired.outcome, Outcome::Repaired, "{repaired:?}");
    assert!(pause.is_file(), "/pause restored");
    assert_eq!(
        fixture
            .run_container(&sandbox, "after-repair", &[])
            .unwrap(),
        RunOutcome::Started
    );
    fixture.remove_container("after-repair").unwrap();

    assert_eq!(
        agent
            .metric(r#"snapmend_agent_requests_total{action="Verify",outcome="Corrupted"}"#)
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_findings_total{action="Verify"}"#)
            .await,
        1.0
    );
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_requests_total{action="Repair",outcome="Repaired"}"#)
            .await,
        1.0
    );
    drop(agent);
    cluster.finish(&[&node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_the_api_server_rejects_is_replaced_by_a_minimal_error_report() {
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[pause_image(&sandbox).unwrap()])
        .unwrap();

    // A CRD that allows no layers in status.report: the full report is Invalid (422).
    let mut crd = serde_json::to_value(snapmend_crds::SnapshotRepair::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["report"]["properties"]["layers"]["maxItems"] = serde_json::json!(0);
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    install_with_crd(&client, &serde_json::from_value(crd).unwrap()).await;

    let store = StoreArgs {
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), "node-a", Some(&store));
    agent.wait_ready().await;
    create_repair(&client, "node-a-pause", "node-a", &sandbox).await;
    request(&client, "node-a-pause", "1", RepairAction::Verify).await;
    let report = wait_for_report(&client, "node-a-pause", "1", ANSWER)
        .await
        .report;
    assert_eq!(report.outcome, Outcome::Error, "{report:?}");
    assert!(report.layers.is_empty());
    assert_eq!(report.image, sandbox);
    let message = report.message.unwrap_or_default();
    assert!(message.contains("Healthy report was rejected"), "{message}");
    assert!(
        agent
            .metric("snapmend_agent_report_write_failures_total")
            .await
            >= 1.0
    );
}
