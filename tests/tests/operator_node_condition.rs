//! The real `snapmend-operator` on snapmend-sim with a fake agent: the Node condition
//! `SnapshotsDamaged` goes True when a Verify SnapshotRepair finds damage, False after a Repair
//! SnapshotRepair repaired it, written once per finished repair, and the kubelet's own
//! conditions are left as they were.

mod operator_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::api::{Api, Patch, PatchParams};
use operator_support::*;
use serde_json::json;
use snapmend_crds::{Phase, RepairAction};

const FLOW: Duration = Duration::from_secs(30);

/// What the kubelet would have written: a Ready condition with its own times.
async fn set_ready(client: &kube::Client, node: &str) {
    let patch = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}});
    Api::<Node>::all(client.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("kubelet's Ready condition");
}

fn conditions(node: &Node) -> Vec<NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}

fn find<'a>(conds: &'a [NodeCondition], type_: &str) -> Option<&'a NodeCondition> {
    conds.iter().find(|c| c.type_ == type_)
}

/// Waits until node `name` shows `SnapshotsDamaged` with `status` and `reason`, naming `repair`.
async fn wait_condition(
    client: &kube::Client,
    name: &str,
    status: &str,
    reason: &str,
    repair: &str,
) -> NodeCondition {
    wait_for(
        &format!("{name}: SnapshotsDamaged {status}/{reason} from {repair}"),
        FLOW,
        || async {
            let node = node(client, name).await;
            find(&conditions(&node), "SnapshotsDamaged")
                .filter(|c| {
                    c.status == status
                        && c.reason.as_deref() == Some(reason)
                        && c.message.as_deref().is_some_and(|m| m.contains(repair))
                })
                .cloned()
        },
    )
    .await
}

fn status_patches_of(sim: &snapmend_tests::sim::SimServer, node: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| {
            r.key() == "patch nodes/status" && r.name.as_deref() == Some(node) && r.status == 200
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_damaged_goes_true_on_found_damage_then_false_after_the_repair() {
    let (sim, client) = start_cluster(&["node-a", "node-b"]).await;
    for n in ["node-a", "node-b"] {
        set_ready(&client, n).await;
    }
    let kubelets = [
        conditions(&node(&client, "node-a").await),
        conditions(&node(&client, "node-b").await),
    ];
    sim.clear_requests();
    let _agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    let _op = OperatorProcess::spawn(&sim, "op-1", &[]);

    // A Verify repair that finds /pause missing: damage found, not repaired.
    apply_repair(
        &client,
        "node-a-check",
        spec("node-a", RepairAction::Verify),
    )
    .await;
    wait_phase(&client, "node-a-check", Phase::Succeeded, FLOW).await;
    let damaged = wait_condition(
        &client,
        "node-a",
        "True",
        "SnapshotDamageFound",
        "node-a-check",
    )
    .await;
    let text = damaged.message.clone().unwrap_or_default();
    assert!(text.contains("1 missing"), "findings summary: {text}");
    assert!(text.contains("action Verify"), "why not repaired: {text}");
    assert!(damaged.last_heartbeat_time.is_some());
    assert_eq!(damaged.last_transition_time, damaged.last_heartbeat_time);

    // A Repair repair: cordon, re-extract, uncordon; the node is no longer damaged.
    apply_repair(&client, "node-a-fix", spec("node-a", RepairAction::Repair)).await;
    wait_phase(&client, "node-a-fix", Phase::Succeeded, FLOW).await;
    let repaired = wait_condition(
        &client,
        "node-a",
        "False",
        "SnapshotsRepaired",
        "node-a-fix",
    )
    .await;
    assert!(
        repaired
            .message
            .as_deref()
            .is_some_and(|m| m.contains("1 missing")),
        "{repaired:?}"
    );
    // The status changed, so the transition time is this write's time.
    assert_eq!(repaired.last_transition_time, repaired.last_heartbeat_time);
    assert!(repaired.last_heartbeat_time >= damaged.last_heartbeat_time);

    // Give stray writes a moment to show, then: one write per finished repair.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        status_patches_of(&sim, "node-a"),
        2,
        "one nodes/status write per finished SnapshotRepair"
    );
    assert_eq!(status_patches_of(&sim, "node-b"), 0);

    // The kubelet's conditions are untouched; node-b has no SnapshotsDamaged at all.
    let a = conditions(&node(&client, "node-a").await);
    assert_eq!(find(&a, "Ready"), find(&kubelets[0], "Ready"));
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(find(&a, "SnapshotsDamaged"), Some(&repaired));
    let b = conditions(&node(&client, "node-b").await);
    assert_eq!(b, kubelets[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_repair_leaves_it_true_and_a_restart_writes_nothing_again() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    set_ready(&client, "node-a").await;
    let ready = find(&conditions(&node(&client, "node-a").await), "Ready").cloned();
    sim.clear_requests();
    let _agent = FakeAgent::start(&client, "node-a", NodeState::CorruptBlob, Duration::ZERO);
    let mut op = OperatorProcess::spawn(&sim, "op-1", &["--failure-policy", "uncordon"]);

    apply_repair(
        &client,
        "node-a-first",
        spec("node-a", RepairAction::Verify),
    )
    .await;
    wait_phase(&client, "node-a-first", Phase::Succeeded, FLOW).await;
    let first = wait_condition(
        &client,
        "node-a",
        "True",
        "SnapshotDamageFound",
        "node-a-first",
    )
    .await;

    // The layer blob is corrupt too: the repair fails, the damage stays.
    apply_repair(
        &client,
        "node-a-second",
        spec("node-a", RepairAction::Repair),
    )
    .await;
    wait_phase(&client, "node-a-second", Phase::Failed, FLOW).await;
    let second = wait_condition(
        &client,
        "node-a",
        "True",
        "SnapshotDamageFound",
        "node-a-second",
    )
    .await;
    let text = second.message.clone().unwrap_or_default();
    assert!(text.contains("not repaired (Unrepairable)"), "{text}");
    assert_eq!(
        second.last_transition_time, first.last_transition_time,
        "still True: the transition time stays"
    );
    assert_eq!(status_patches_of(&sim, "node-a"), 2);

    // A new operator process remembers nothing: it reads the condition from its Node store,
    // and the older repair does not speak over the newer one.
    op.terminate(Duration::from_secs(10));
    op.restart();
    op.wait_leader().await;
    wait_for("both repairs reconciled", FLOW, || async {
        (op.metric("snapmend_reconciles_total").await >= 2.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        status_patches_of(&sim, "node-a"),
        2,
        "no write after the restart"
    );
    let now = conditions(&node(&client, "node-a").await);
    assert_eq!(find(&now, "SnapshotsDamaged"), Some(&second));
    assert_eq!(find(&now, "Ready").cloned(), ready);
}
