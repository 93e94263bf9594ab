//! The incident end to end: the pause snapshot loses `/pause`, the kubelet simulator fails and
//! posts FailedCreatePodSandBox, the operator (`--auto-remediate repair`) creates a repair on its
//! own, the agent finds and restores `/pause`, the node is uncordoned and the sandbox runs.
//! The first test runs on `snapmend-sim --auth` with deploy/'s RBAC and policies, the operator
//! and the agent each on its own ServiceAccount's token: a permission the automatic path needs
//! and deploy/ lacks fails it.

use std::time::Duration;

use snapmend_crds::labels::{NODE_LABEL, TRIGGER_EVENT, TRIGGER_EVENT_ANNOTATION, TRIGGER_LABEL};
use snapmend_crds::{BlobSource, BlobState, Outcome, Phase, RepairAction};
use snapmend_tests::kubelet::incident::{Incident, IncidentConfig, NodeImages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_heals_itself_from_the_first_event() {
    let mut incident = Incident::start(IncidentConfig {
        identities: true,
        ..IncidentConfig::default()
    })
    .await
    .unwrap();
    let report = incident.run_until_sandbox_running().await.unwrap();
    for line in incident.timeline.lines() {
        println!("{line}");
    }
    println!(
        "first event -> repair created {:?}, -> sandbox running {:?} ({} failed starts)",
        report.first_event_to_repair_created,
        report.first_event_to_sandbox_running,
        report.failed_starts
    );

    assert_eq!(report.repairs.len(), 1, "exactly one automatic repair");
    let sr = &report.repairs[0];
    let labels = sr.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(TRIGGER_LABEL).map(String::as_str),
        Some(TRIGGER_EVENT)
    );
    assert_eq!(labels.get(NODE_LABEL).map(String::as_str), Some("node-a"));
    assert!(
        sr.metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("auto-node-a-")
    );
    let trigger = sr.metadata.annotations.clone().unwrap_or_default();
    assert!(
        trigger
            .get(TRIGGER_EVENT_ANNOTATION)
            .unwrap()
            .starts_with("default/web-0.")
    );
    assert!(sr.spec.sandbox_image);
    assert_eq!(sr.spec.action, RepairAction::Repair);
    let status = sr.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{:?}", status.message);
    assert_eq!(status.report.unwrap().report.outcome, Outcome::Repaired);
    assert!(report.pause_restored, "/pause is back in its snapshot");
    assert!(!report.node_unschedulable_at_end, "the node is uncordoned");
    assert!(
        report.first_event_to_sandbox_running < Duration::from_secs(10),
        "goal: under 10 s from the first event to the sandbox running, took {:?}",
        report.first_event_to_sandbox_running
    );
    // Every request was authenticated and authorized: deploy/ grants what the path needs.
    let refused = incident.sim.refused_requests();
    assert!(refused.is_empty(), "refused requests: {refused:#?}");
}

/// The demo's second act: the same incident on a node whose containerd's CRI pulled the pause
/// image from a loopback TLS registry with `discard_unpacked_layers = true`, so the layer
/// blob is gone from the node; the agent fetches it from the registry (credentials from the
/// node's docker config) and repairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_heals_itself_on_a_node_that_discards_unpacked_layers() {
    let mut incident = Incident::start(IncidentConfig {
        node: "node-b".into(),
        node_images: NodeImages::PulledDiscardingLayers,
        ..IncidentConfig::default()
    })
    .await
    .unwrap();
    let report = incident.run_until_sandbox_running().await.unwrap();
    let timeline = incident.timeline.lines().join("\n");
    println!("{timeline}");
    assert!(
        timeline.contains("discard_unpacked_layers = true) pulled snapmend.test/pause:3.10"),
        "{timeline}"
    );
    assert_eq!(report.repairs.len(), 1, "exactly one automatic repair");
    let status = report.repairs[0].status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{:?}", status.message);
    let r = status.report.unwrap().report;
    assert_eq!(r.outcome, Outcome::Repaired);
    let registry = incident.registry.as_ref().unwrap().host();
    // The verification fetched the blob from the registry; the repair read the copy the
    // agent kept in its cache (or fetched it again).
    assert!(
        timeline.contains(&format!(
            "report for request 1: Corrupted — /pause Missing (regular file, 667 KiB) in snapshot 1; layer blob from {registry}/pause (Registry, Verified)"
        )),
        "{timeline}"
    );
    let layer = &r.layers[0];
    assert!(
        matches!(
            layer.blob_source,
            Some(BlobSource::Cache | BlobSource::Registry)
        ),
        "{r:?}"
    );
    assert_eq!(layer.blob, BlobState::Verified, "{r:?}");
    assert!(report.pause_restored, "/pause is back in its snapshot");
    assert!(!report.node_unschedulable_at_end, "the node is uncordoned");
}
