//! The event watcher (`run_event_remediation`) in-process against snapmend-sim, fed with
//! kubelet-style events: what it creates, and what it must never create. The operator's phase
//! machine and the agent are not involved (a test plays them where a status is needed).

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use snapmend_crds::labels::{AUTO_REMEDIATE_LABEL, TRIGGER_EVENT_ANNOTATION};
use snapmend_crds::{RepairAction, SnapshotRepair};
use snapmend_operator::events::decide::ESCALATED_FROM_ANNOTATION;
use snapmend_operator::events::{AutoRemediate, EventRemediationConfig, run_event_remediation};
use snapmend_tests::kubelet::scenario::{
    create_pod, install_snapmend, kubelet_event, pod_on_node, post_event, register_node,
};
use snapmend_tests::sim::SimServer;

const PAUSE_GONE: &str = r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#;
const CORPUS: &str = include_str!("../../operator/testdata/events.tsv");

async fn cluster(mode: AutoRemediate) -> (SimServer, Client, tokio::task::JoinHandle<()>) {
    let sim = SimServer::start().await.expect("test setup");
    let client = sim.client().expect("test setup");
    install_snapmend(&client).await.expect("test setup");
    register_node(&client, "node-a", &[])
        .await
        .expect("test setup");
    register_node(&client, "node-b", &[(AUTO_REMEDIATE_LABEL, "false")])
        .await
        .expect("test setup");
    register_node(&client, "node-c", &[])
        .await
        .expect("test setup");
    let config = EventRemediationConfig::new(mode, Duration::from_secs(600));
    let c = client.clone();
    let watcher = tokio::spawn(async move {
        run_event_remediation(c, config).await.expect("test setup");
    });
    (sim, client, watcher)
}

async fn repairs(client: &Client) -> Vec<SnapshotRepair> {
    Api::<SnapshotRepair>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("test setup")
        .items
}

async fn wait_for_repairs(client: &Client, n: usize, what: &str) -> Vec<SnapshotRepair> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let srs = repairs(client).await;
        if srs.len() >= n {
            return srs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; have {srs:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn on_node<'a>(srs: &'a [SnapshotRepair], node: &str) -> Vec<&'a SnapshotRepair> {
    srs.iter().filter(|sr| sr.spec.node_name == node).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_event_creates_one_repair_and_repeats_create_no_more() {
    let (sim, client, watcher) = cluster(AutoRemediate::Repair).await;
    let started = Instant::now();
    post_event(
        &client,
        &kubelet_event(
            "default",
            "web-0.1",
            "web-0",
            "node-a",
            "FailedCreatePodSandBox",
            PAUSE_GONE,
            None,
        ),
    )
    .await
    .unwrap();
    let srs = wait_for_repairs(&client, 1, "the automatic repair").await;
    println!("event -> repair: {:?}", started.elapsed());
    let sr = &srs[0];
    assert_eq!(sr.spec.node_name, "node-a");
    assert!(sr.spec.sandbox_image && sr.spec.image.is_none());
    assert_eq!(sr.spec.action, RepairAction::Repair);
    assert!(
        sr.metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("auto-node-a-")
    );
    assert_eq!(
        sr.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(TRIGGER_EVENT_ANNOTATION)
            .map(String::as_str),
        Some("default/web-0.1")
    );
    // More pods on the same node fail the same way, and kubelet updates its events.
    for i in 2..12 {
        let name = format!("web-{i}.1");
        let pod = format!("web-{i}");
        post_event(
            &client,
            &kubelet_event(
                "default",
                &name,
                &pod,
                "node-a",
                "FailedCreatePodSandBox",
                PAUSE_GONE,
                None,
            ),
        )
        .await
        .unwrap();
    }
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "default");
    for count in 2..6 {
        let patch = json!({ "count": count, "lastTimestamp": Timestamp::now().to_string() });
        events
            .patch("web-0.1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        repairs(&client).await.len(),
        1,
        "one active repair per node and target"
    );
    watcher.abort();
    sim.stop().await;
}

/// The corpus's group B with the reason kubelet would use for it.
fn group_b() -> Vec<(String, String)> {
    CORPUS
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.first() == Some(&"B")).then(|| {
                let reason = cols[1].split_whitespace().next().unwrap_or("Failed");
                let reason = if reason == "FailedCreatePodSandBox" {
                    reason
                } else {
                    "Failed"
                };
                (reason.to_string(), cols[3].to_string())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alikes_opted_out_and_stale_events_create_nothing() {
    let (sim, client, watcher) = cluster(AutoRemediate::Repair).await;
    // The look-alikes' pods exist, so container events can be resolved to an image.
    for (i, (reason, message)) in group_b().iter().enumerate() {
        let pod = format!("lookalike-{i}");
        create_pod(
            &client,
            &pod_on_node("default", &pod, "node-c", "snapmend.test/app:1"),
        )
        .await
        .unwrap();
        let container = (reason == "Failed").then_some("app");
        let name = format!("{pod}.1");
        post_event(
            &client,
            &kubelet_event("default", &name, &pod, "node-c", reason, message, container),
        )
        .await
        .unwrap();
    }
    // The real signature, on a node that opted out.
    post_event(
        &client,
        &kubelet_event(
            "default",
            "opt.1",
            "opt",
            "node-b",
            "FailedCreatePodSandBox",
            PAUSE_GONE,
            None,
        ),
    )
    .await
    .unwrap();
    // The real signature, an hour old.
    let mut stale = kubelet_event(
        "default",
        "old.1",
        "old",
        "node-a",
        "FailedCreatePodSandBox",
        PAUSE_GONE,
        None,
    );
    let hour_ago = Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(3600))
        .unwrap();
    stale.first_timestamp = Some(Time(hour_ago));
    stale.last_timestamp = Some(Time(hour_ago));
    post_event(&client, &stale).await.unwrap();
    // A positive control last: the watcher is alive and has read everything before it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_event(
        &client,
        &kubelet_event(
            "default",
            "ctl.1",
            "ctl",
            "node-a",
            "FailedCreatePodSandBox",
            PAUSE_GONE,
            None,
        ),
    )
    .await
    .unwrap();
    wait_for_repairs(&client, 1, "the positive control").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let srs = repairs(&client).await;
    assert!(
        on_node(&srs, "node-b").is_empty(),
        "opted-out node: {srs:?}"
    );
    let control = on_node(&srs, "node-a");
    assert_eq!(control.len(), 1);
    assert_eq!(
        control[0]
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(TRIGGER_EVENT_ANNOTATION)
            .map(String::as_str),
        Some("default/ctl.1"),
        "the stale event created nothing"
    );
    let lookalike = on_node(&srs, "node-c");
    assert!(
        lookalike
            .iter()
            .all(|sr| sr.spec.action == RepairAction::Verify),
        "a look-alike must never lead to a repair that can cordon: {lookalike:?}"
    );
    assert!(
        lookalike.len() <= 1,
        "at most one read-only verification of the image: {lookalike:?}"
    );
    watcher.abort();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_entrypoint_is_verified_through_its_own_image_then_repaired() {
    let (sim, client, watcher) = cluster(AutoRemediate::Repair).await;
    create_pod(
        &client,
        &pod_on_node("default", "api-0", "node-c", "snapmend.test/app:1"),
    )
    .await
    .unwrap();
    let message = r#"Error: failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/app": stat /app: no such file or directory: unknown"#;
    post_event(
        &client,
        &kubelet_event(
            "default",
            "api-0.1",
            "api-0",
            "node-c",
            "Failed",
            message,
            Some("app"),
        ),
    )
    .await
    .unwrap();
    let srs = wait_for_repairs(&client, 1, "the verification").await;
    let verify = &srs[0];
    assert_eq!(
        verify.spec.action,
        RepairAction::Verify,
        "ambiguous: verify first"
    );
    assert_eq!(verify.spec.image.as_deref(), Some("snapmend.test/app:1"));
    assert!(!verify.spec.sandbox_image);

    // The operator and agent would now verify; play them: damage found.
    let name = verify.metadata.name.clone().unwrap();
    let status = json!({ "status": {
        "phase": "Succeeded",
        "completionTime": Timestamp::now().to_string(),
        "report": { "requestId": "1", "image": "snapmend.test/app:1", "outcome": "Corrupted", "layers": [] },
    }});
    Api::<SnapshotRepair>::all(client.clone())
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let srs = wait_for_repairs(&client, 2, "the escalated repair").await;
    let repair = srs
        .iter()
        .find(|sr| sr.spec.action == RepairAction::Repair)
        .expect("a Repair");
    assert_eq!(repair.spec.image.as_deref(), Some("snapmend.test/app:1"));
    assert_eq!(repair.spec.node_name, "node-c");
    assert_eq!(
        repair
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(ESCALATED_FROM_ANNOTATION),
        Some(&name)
    );
    watcher.abort();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_mode_only_ever_verifies() {
    let (sim, client, watcher) = cluster(AutoRemediate::Verify).await;
    post_event(
        &client,
        &kubelet_event(
            "default",
            "web-0.1",
            "web-0",
            "node-a",
            "FailedCreatePodSandBox",
            PAUSE_GONE,
            None,
        ),
    )
    .await
    .unwrap();
    let srs = wait_for_repairs(&client, 1, "the verification").await;
    assert_eq!(srs[0].spec.action, RepairAction::Verify);
    watcher.abort();
    sim.stop().await;
}
