//! An application container whose image layer lost its entrypoint: the kubelet's `Failed` event
//! is ambiguous (a badly built image says the same), so the operator first verifies the
//! container's own image (read-only, no cordon); the verification finds `/app` missing, the
//! repair that follows restores it, and the kubelet's retry starts the container.

use std::time::{Duration, Instant};

use snapmend_crds::{Outcome, Phase, RepairAction};
use snapmend_operator::events::decide::ESCALATED_FROM_ANNOTATION;
use snapmend_tests::kubelet::cluster::{NodeSpec, TestCluster};
use snapmend_tests::kubelet::scenario::{app_image, create_pod, pod_on_node};
use snapmend_tests::kubelet::{KubeletConfig, Observation};

const APP: &str = "snapmend.test/app:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_entrypoint_is_verified_then_repaired_through_its_own_image() {
    let mut cluster = TestCluster::start().await.unwrap();
    cluster
        .start_operator(&[
            "--auto-remediate",
            "repair",
            "--cooldown",
            "1m",
            "--helper-timeout",
            "1m",
        ])
        .await
        .unwrap();
    let node = NodeSpec {
        kubelet: KubeletConfig {
            run_containers: true,
            ..KubeletConfig::new("node-a")
        },
        images: vec![app_image(APP).unwrap()],
        delete: vec!["app".into()],
        with_agent: true,
    };
    cluster.add_node(node).await.unwrap();
    create_pod(
        &cluster.client,
        &pod_on_node("default", "api-0", "node-a", APP),
    )
    .await
    .unwrap();

    let node = cluster.node("node-a").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = node
            .kubelet
            .journal()
            .first(|o| matches!(o, Observation::ContainerRunning { .. }));
        if running.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container never ran\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        node.damage[0].is_repaired(),
        "/app is back in the app image's snapshot"
    );

    let repairs = cluster.repairs().await.unwrap();
    assert_eq!(
        repairs.len(),
        2,
        "a verification, then a repair: {repairs:#?}"
    );
    for sr in &repairs {
        assert_eq!(
            sr.spec.image.as_deref(),
            Some(APP),
            "the container's own image, not the sandbox image"
        );
        assert!(!sr.spec.sandbox_image);
    }
    let verify = repairs
        .iter()
        .find(|sr| sr.spec.action == RepairAction::Verify)
        .expect("the verification");
    let repair = repairs
        .iter()
        .find(|sr| sr.spec.action == RepairAction::Repair)
        .expect("the repair");
    let verify_status = verify.status.clone().unwrap();
    assert_eq!(verify_status.phase, Some(Phase::Succeeded));
    assert_eq!(
        verify_status.report.unwrap().report.outcome,
        Outcome::Corrupted
    );
    assert_ne!(
        verify_status.cordoned_by_operator,
        Some(true),
        "a verification never cordons"
    );
    assert_eq!(
        repair
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(ESCALATED_FROM_ANNOTATION),
        verify.metadata.name.as_ref()
    );
    let repair_status = repair.status.clone().unwrap();
    assert_eq!(
        repair_status.phase,
        Some(Phase::Succeeded),
        "{:?}",
        repair_status.message
    );
    assert_eq!(
        repair_status.report.unwrap().report.outcome,
        Outcome::Repaired
    );
}
