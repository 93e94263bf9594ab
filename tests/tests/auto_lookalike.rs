//! Look-alikes never lead to a repair that cordons: a live CNI failure from the kubelet simulator,
//! every look-alike message of the corpus (group B), and the real incident on a node that opted
//! out. A damaged node next to them is repaired, which shows the operator was watching.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use snapmend_crds::labels::AUTO_REMEDIATE_LABEL;
use snapmend_crds::{Phase, RepairAction};
use snapmend_tests::kubelet::cluster::{NodeSpec, TestCluster};
use snapmend_tests::kubelet::scenario::{create_pod, kubelet_event, pod_on_node, post_event};
use snapmend_tests::kubelet::{KubeletConfig, Observation};

const CORPUS: &str = include_str!("../../operator/testdata/events.tsv");
const CNI: &str = r#"plugin type="bridge" name="cbr0" failed (add): failed to allocate for range 0: no IP addresses available in range set: 10.88.0.1-10.88.0.2"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alikes_and_opted_out_nodes_are_never_cordoned() {
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
    // node-cni: healthy snapshots, broken network plugin.
    let cni = NodeSpec {
        kubelet: KubeletConfig {
            cni_failure: Some(CNI.into()),
            ..KubeletConfig::new("node-cni")
        },
        with_agent: true,
        ..NodeSpec::new("node-cni")
    };
    cluster.add_node(cni).await.unwrap();
    // node-optout: the incident itself, but the node opted out.
    let mut optout = KubeletConfig::new("node-optout");
    optout
        .node_labels
        .insert(AUTO_REMEDIATE_LABEL.into(), "false".into());
    cluster
        .add_node(NodeSpec {
            kubelet: optout,
            delete: vec!["pause".into()],
            with_agent: true,
            ..NodeSpec::new("node-optout")
        })
        .await
        .unwrap();
    // node-a: the incident; the positive control.
    cluster
        .add_node(NodeSpec {
            delete: vec!["pause".into()],
            ..NodeSpec::new("node-a")
        })
        .await
        .unwrap();

    for node in ["node-cni", "node-optout", "node-a"] {
        let sandbox = cluster
            .node(node)
            .unwrap()
            .fixture
            .sandbox_image()
            .to_string();
        create_pod(
            &cluster.client,
            &pod_on_node("default", &format!("web-{node}"), node, &sandbox),
        )
        .await
        .unwrap();
    }
    // Every corpus look-alike, as kubelet on node-cni would post it.
    for (i, line) in CORPUS
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("B\t"))
        .enumerate()
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let sandbox = cols[1].starts_with("FailedCreatePodSandBox");
        let reason = if sandbox {
            "FailedCreatePodSandBox"
        } else {
            "Failed"
        };
        let pod = format!("lookalike-{i}");
        create_pod(
            &cluster.client,
            &pod_on_node("default", &pod, "node-cni", "snapmend.test/pause:3.10"),
        )
        .await
        .unwrap();
        let event = kubelet_event(
            "default",
            &format!("{pod}.1"),
            &pod,
            "node-cni",
            reason,
            cols[3],
            (!sandbox).then_some("app"),
        );
        post_event(&cluster.client, &event).await.unwrap();
    }

    // Wait for the control to be repaired and for both other kubelets to have failed repeatedly.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed = |node: &str| {
            cluster
                .node(node)
                .unwrap()
                .kubelet
                .journal()
                .entries()
                .iter()
                .filter(|(_, o)| matches!(o, Observation::StartFailed { .. }))
                .count()
        };
        let control_running = cluster
            .node("node-a")
            .unwrap()
            .kubelet
            .journal()
            .first(|o| matches!(o, Observation::SandboxRunning { .. }))
            .is_some();
        if control_running && failed("node-cni") >= 3 && failed("node-optout") >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scenario did not settle\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let repairs = cluster.repairs().await.unwrap();
    let on = |node: &str| {
        repairs
            .iter()
            .filter(|sr| sr.spec.node_name == node)
            .collect::<Vec<_>>()
    };
    assert!(
        on("node-optout").is_empty(),
        "opted-out node: {:#?}",
        on("node-optout")
    );
    assert!(
        on("node-cni")
            .iter()
            .all(|sr| sr.spec.action == RepairAction::Verify),
        "look-alikes may at most verify: {:#?}",
        on("node-cni")
    );
    let control = on("node-a");
    assert_eq!(control.len(), 1);
    assert_eq!(
        control[0].status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
    let nodes = Api::<Node>::all(cluster.client.clone());
    for node in ["node-cni", "node-optout"] {
        let n = nodes.get(node).await.unwrap();
        assert_ne!(
            n.spec.and_then(|s| s.unschedulable),
            Some(true),
            "{node} was cordoned"
        );
        let cordoned = repairs
            .iter()
            .filter(|sr| sr.spec.node_name == node)
            .any(|sr| sr.status.as_ref().and_then(|s| s.cordoned_by_operator) == Some(true));
        assert!(!cordoned, "{node} was cordoned by a repair");
    }
    println!(
        "look-alike verifications on node-cni: {}",
        on("node-cni").len()
    );
}
