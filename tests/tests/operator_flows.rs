//! The real `snapmend-operator` binary on snapmend-sim with a fake agent written in the test:
//! each SnapshotRepair flow of the contract, the cordon bookkeeping it must keep, and what it
//! shows on `/metrics` and in Events.

mod operator_support;

use std::time::Duration;

use kube::ResourceExt;
use operator_support::*;
use snapmend_crds::labels::NODE_LABEL;
use snapmend_crds::{Phase, RepairAction};

const FLOW: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_snapshot_succeeds_without_cordon() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    let _agent = FakeAgent::start(&client, "node-a", NodeState::Healthy, Duration::ZERO);
    let op = OperatorProcess::spawn(&sim, "op-1", &[]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let sr = wait_phase(&client, "node-a-pause", Phase::Succeeded, FLOW).await;
    let status = sr.status.clone().unwrap();
    assert_eq!(status.findings.as_deref(), Some("none"));
    assert_eq!(
        condition(&sr, "Verified"),
        ("True".into(), "Healthy".into())
    );
    assert_eq!(condition(&sr, "Ready").0, "True");
    assert_eq!(
        status.request.unwrap().action,
        RepairAction::Verify,
        "no repair was requested"
    );
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(status.target.as_deref(), Some(IMAGE));
    assert_eq!(
        sr.labels().get(NODE_LABEL).map(String::as_str),
        Some("node-a")
    );
    assert!(sr.finalizers().iter().any(|f| f == "snapmend.io/cleanup"));
    assert_eq!(history.of("node-a"), [false], "never cordoned");
    op.wait_metric(
        r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Healthy"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_is_cordoned_repaired_and_uncordoned() {
    let (sim, client) = start_cluster(&["node-a", "node-b"]).await;
    let history = NodeHistory::start(&client);
    let agent = FakeAgent::start(
        &client,
        "node-a",
        NodeState::Incident,
        Duration::from_millis(300),
    );
    let op = OperatorProcess::spawn(&sim, "op-1", &[]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let sr = wait_phase(&client, "node-a-pause", Phase::Succeeded, FLOW).await;
    let status = sr.status.clone().unwrap();
    assert_eq!(
        history.of("node-a"),
        [false, true, false],
        "a watch saw the node unschedulable in between"
    );
    assert_eq!(history.of("node-b"), [false], "other nodes untouched");
    let node = node(&client, "node-a").await;
    assert!(!is_unschedulable(&node));
    assert_eq!(cordoned_by(&node), None, "annotation removed");
    assert_eq!(status.cordoned_by_operator, Some(true));
    assert_eq!(status.findings.as_deref(), Some("1 missing"));
    assert_eq!(
        condition(&sr, "Verified"),
        ("False".into(), "Corrupted".into())
    );
    assert_eq!(
        condition(&sr, "Cordoned"),
        ("False".into(), "Uncordoned".into())
    );
    assert_eq!(
        condition(&sr, "Repaired"),
        ("True".into(), "Repaired".into())
    );
    assert_eq!(condition(&sr, "Ready"), ("True".into(), "Repaired".into()));
    let answers: Vec<_> = agent
        .answered()
        .into_iter()
        .map(|(_, id, a)| (id, a))
        .collect();
    assert_eq!(
        answers,
        [
            ("1".to_string(), RepairAction::Verify),
            ("2".to_string(), RepairAction::Repair)
        ]
    );
    assert!(
        message(&sr).contains("node node-a uncordoned"),
        "{}",
        message(&sr)
    );

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
    op.wait_metric(
        r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Repaired"}"#,
        1.0,
    )
    .await;
    op.wait_metric(r#"snapmend_repairs{phase="Succeeded"}"#, 1.0)
        .await;
    op.wait_metric("snapmend_findings_total", 1.0).await;
    op.wait_metric("snapmend_nodes_cordoned", 0.0).await;
    op.wait_metric(
        r#"snapmend_repair_duration_seconds_count{phase="Succeeded"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_action_never_cordons() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    let agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    let _op = OperatorProcess::spawn(&sim, "op-1", &[]);
    apply_repair(
        &client,
        "node-a-verify",
        spec("node-a", RepairAction::Verify),
    )
    .await;

    let sr = wait_phase(&client, "node-a-verify", Phase::Succeeded, FLOW).await;
    assert_eq!(
        condition(&sr, "Verified"),
        ("False".into(), "Corrupted".into())
    );
    assert_eq!(
        sr.status.as_ref().unwrap().findings.as_deref(),
        Some("1 missing")
    );
    assert!(message(&sr).contains("not repaired because action is Verify"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(history.of("node-a"), [false]);
    assert!(
        agent
            .answered()
            .iter()
            .all(|(_, _, a)| *a == RepairAction::Verify),
        "never asked to write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_cordoned_node_stays_cordoned() {
    let (sim, client) = start_cluster(&[]).await;
    add_node(&client, "node-a", true).await;
    let history = NodeHistory::start(&client);
    let _agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    let _op = OperatorProcess::spawn(&sim, "op-1", &[]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let sr = wait_phase(&client, "node-a-pause", Phase::Succeeded, FLOW).await;
    assert_eq!(
        sr.status.as_ref().unwrap().cordoned_by_operator,
        Some(false)
    );
    assert_eq!(
        condition(&sr, "Cordoned"),
        ("True".into(), "AlreadyUnschedulable".into())
    );
    assert_eq!(condition(&sr, "Repaired").0, "True");
    let node = node(&client, "node-a").await;
    assert!(is_unschedulable(&node), "still unschedulable");
    assert_eq!(cordoned_by(&node), None, "never claimed");
    assert_eq!(history.of("node-a"), [true]);
    assert!(
        message(&sr).contains("already unschedulable and stays so"),
        "{}",
        message(&sr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_fails_and_keeps_the_node_cordoned_by_default() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    let _agent = FakeAgent::start(&client, "node-a", NodeState::CorruptBlob, Duration::ZERO);
    let op = OperatorProcess::spawn(&sim, "op-1", &[]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let sr = wait_phase(&client, "node-a-pause", Phase::Failed, FLOW).await;
    assert_eq!(
        condition(&sr, "Ready"),
        ("False".into(), "Unrepairable".into())
    );
    assert_eq!(condition(&sr, "Repaired").0, "False");
    let msg = message(&sr);
    assert!(msg.contains("does not match its digest"), "says why: {msg}");
    assert!(
        msg.contains("stays cordoned (--failure-policy keep-cordoned)"),
        "says what happened to the node: {msg}"
    );
    let node = node(&client, "node-a").await;
    assert!(is_unschedulable(&node));
    assert_eq!(cordoned_by(&node).as_deref(), Some("node-a-pause"));
    assert_eq!(history.of("node-a"), [false, true]);
    wait_events(&client, "node-a-pause", &["Unrepairable"]).await;
    op.wait_metric(
        r#"snapmend_repairs_finished_total{phase="Failed",outcome="Unrepairable"}"#,
        1.0,
    )
    .await;
    op.wait_metric("snapmend_nodes_cordoned", 1.0).await;

    // Deleting the failed repair gives the node back.
    let srs: kube::Api<snapmend_crds::SnapshotRepair> = kube::Api::all(client.clone());
    srs.delete("node-a-pause", &Default::default())
        .await
        .unwrap();
    wait_for("repair gone", FLOW, || async {
        get_repair(&client, "node-a-pause")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!is_unschedulable(
        &operator_support::node(&client, "node-a").await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_with_uncordon_policy_uncordons() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    let _agent = FakeAgent::start(&client, "node-a", NodeState::CorruptBlob, Duration::ZERO);
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--failure-policy", "uncordon"]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let sr = wait_phase(&client, "node-a-pause", Phase::Failed, FLOW).await;
    assert!(
        message(&sr).contains("uncordoned (--failure-policy uncordon)"),
        "{}",
        message(&sr)
    );
    let node = node(&client, "node-a").await;
    assert!(!is_unschedulable(&node));
    assert_eq!(cordoned_by(&node), None);
    assert_eq!(history.of("node-a"), [false, true, false]);
}
