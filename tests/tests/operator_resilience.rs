//! The operator under stress on snapmend-sim: killed at every phase, agents missing or silent,
//! repairs deleted mid-flight, two replicas, and the cordon cap across several broken nodes.

mod operator_support;

use std::time::{Duration, Instant};

use kube::Api;
use operator_support::*;
use snapmend_crds::{Phase, RepairAction, SnapshotRepair};

const FLOW: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_at_every_phase_still_completes() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    // A slow agent keeps Verifying and Repairing long enough to kill the operator in each;
    // Cordoning and Uncordoning last milliseconds, so the kill follows the node's own change.
    let _agent = FakeAgent::start(
        &client,
        "node-a",
        NodeState::Incident,
        Duration::from_secs(2),
    );
    let mut op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "30s"]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let mut kills: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let phase = get_repair(&client, "node-a-pause")
            .await
            .as_ref()
            .and_then(phase_of);
        if phase == Some(Phase::Succeeded) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Succeeded; kills {kills:?}, now {phase:?}"
        );
        let cordon = match history.of("node-a").len() {
            2 => Some("right after cordon".to_string()),
            3 => Some("right after uncordon".to_string()),
            _ => None,
        };
        let moments = [phase.map(|p| format!("{p:?}")), cordon];
        if let Some(m) = moments.into_iter().flatten().find(|m| !kills.contains(m)) {
            op.kill();
            kills.push(m);
            op.restart();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for m in ["Verifying", "right after cordon", "Repairing"] {
        assert!(kills.iter().any(|k| k == m), "kills {kills:?}, none {m}");
    }
    // Uncordoning lasts milliseconds; a kill lands there only sometimes. The crash windows
    // around the uncordon are covered deterministically by the resume test below.
    let sr = get_repair(&client, "node-a-pause").await.unwrap();
    assert_eq!(sr.status.as_ref().unwrap().cordoned_by_operator, Some(true));
    assert_eq!(history.of("node-a"), [false, true, false]);
    assert_eq!(cordoned_by(&node(&client, "node-a").await), None);
}

/// The state a crash can leave behind in each phase, including the windows between changing
/// the node and writing the status; a fresh operator finishes the repair from each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_resumes_from_every_phase_and_crash_window() {
    use serde_json::json;
    // (phase, request, answered, node cordoned by the repair)
    type Case = (
        &'static str,
        Option<(&'static str, &'static str)>,
        bool,
        bool,
    );
    let cases: [Case; 8] = [
        ("Pending", None, false, false),
        ("Verifying", Some(("1", "Verify")), false, false),
        ("Verifying", Some(("1", "Verify")), true, false),
        ("Verifying", Some(("1", "Verify")), true, true), // died after cordon, before status
        ("Cordoning", Some(("1", "Verify")), true, true),
        ("Repairing", Some(("2", "Repair")), false, true),
        ("Repairing", Some(("2", "Repair")), true, false), // died after uncordon
        ("Uncordoning", Some(("2", "Repair")), true, true),
    ];
    let nodes: Vec<String> = (0..cases.len()).map(|i| format!("node-{i}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let (sim, client) = start_cluster(&names).await;
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut agents = Vec::new();
    for (i, (phase, request, answered, cordoned)) in cases.iter().enumerate() {
        let node = &nodes[i];
        let name = format!("{node}-pause");
        apply_repair(&client, &name, spec(node, RepairAction::Repair)).await;
        let mut status = json!({"phase": phase, "startTime": "2026-01-01T00:00:00Z"});
        if let Some((id, action)) = request {
            status["request"] = json!({"id": id, "action": action});
            status["requestTime"] = json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now()
            ));
            if *answered {
                let act = if *action == "Verify" {
                    RepairAction::Verify
                } else {
                    RepairAction::Repair
                };
                let mut report =
                    serde_json::to_value(report_for(NodeState::Incident, act)).unwrap();
                report["requestId"] = json!(id);
                status["report"] = report;
            }
        }
        if *phase == "Repairing" || *phase == "Uncordoning" {
            status["cordonedByOperator"] = json!(true);
        }
        srs.patch_status(
            &name,
            &Default::default(),
            &kube::api::Patch::Merge(&json!({"status": status})),
        )
        .await
        .unwrap();
        if *cordoned {
            let patch = json!({
                "metadata": {"annotations": {"snapmend.io/cordoned-by": name}},
                "spec": {"unschedulable": true},
            });
            nodes_api
                .patch(node, &Default::default(), &kube::api::Patch::Merge(&patch))
                .await
                .unwrap();
        }
        agents.push(FakeAgent::start(
            &client,
            node,
            NodeState::Incident,
            Duration::ZERO,
        ));
    }
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "1m"]);
    for (i, case) in cases.iter().enumerate() {
        let name = format!("{}-pause", nodes[i]);
        let sr = wait_phase(&client, &name, Phase::Succeeded, FLOW).await;
        let node = node(&client, &nodes[i]).await;
        assert!(!is_unschedulable(&node), "{case:?} left the node cordoned");
        assert_eq!(cordoned_by(&node), None, "{case:?}");
        assert_eq!(condition(&sr, "Ready").0, "True", "{case:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_agent_fails_helper_unavailable() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let _op = OperatorProcess::spawn(&sim, "op-1", &[]);
    let started = Instant::now();
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;

    let sr = wait_phase(
        &client,
        "node-a-pause",
        Phase::Failed,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        condition(&sr, "Ready"),
        ("False".into(), "HelperUnavailable".into())
    );
    assert!(
        message(&sr).contains("snapmend-node-helper.node-a"),
        "{}",
        message(&sr)
    );
    assert!(!is_unschedulable(&node(&client, "node-a").await));
    wait_events(&client, "node-a-pause", &["HelperUnavailable"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_agent_fails_helper_unavailable_after_the_timeout() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    agent.hold(true);
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "3s"]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;
    wait_phase(&client, "node-a-pause", Phase::Verifying, FLOW).await;
    let asked = Instant::now();

    let sr = wait_phase(&client, "node-a-pause", Phase::Failed, FLOW).await;
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    assert_eq!(condition(&sr, "Ready").1, "HelperUnavailable");
    assert!(
        message(&sr).contains("within --helper-timeout 3s"),
        "{}",
        message(&sr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_deleted_mid_repair_leaves_the_node_uncordoned() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    agent.hold_repairs(true);
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "1m"]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;
    wait_phase(&client, "node-a-pause", Phase::Repairing, FLOW).await;
    assert!(is_unschedulable(&node(&client, "node-a").await));

    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    srs.delete("node-a-pause", &Default::default())
        .await
        .unwrap();
    wait_for("repair deleted", FLOW, || async {
        get_repair(&client, "node-a-pause")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let node = node(&client, "node-a").await;
    assert!(!is_unschedulable(&node));
    assert_eq!(cordoned_by(&node), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_repair_never_uncordons_a_node_it_did_not_cordon() {
    let (sim, client) = start_cluster(&[]).await;
    add_node(&client, "node-a", true).await;
    let agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    agent.hold_repairs(true);
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "1m"]);
    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;
    wait_phase(&client, "node-a-pause", Phase::Repairing, FLOW).await;

    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    srs.delete("node-a-pause", &Default::default())
        .await
        .unwrap();
    wait_for("repair deleted", FLOW, || async {
        get_repair(&client, "node-a-pause")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        is_unschedulable(&node(&client, "node-a").await),
        "a node someone else cordoned stays cordoned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_one_acts() {
    let (sim, client) = start_cluster(&["node-a", "node-b"]).await;
    let _a_agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    let _b_agent = FakeAgent::start(&client, "node-b", NodeState::Incident, Duration::ZERO);
    let mut first = OperatorProcess::spawn(&sim, "op-1", &[]);
    first.wait_leader().await;
    let second = OperatorProcess::spawn(&sim, "op-2", &[]);
    wait_for("second replica up", Duration::from_secs(20), || async {
        matches!(second.http_get("/readyz").await, Some((200, _))).then_some(())
    })
    .await;

    apply_repair(
        &client,
        "node-a-pause",
        spec("node-a", RepairAction::Repair),
    )
    .await;
    wait_phase(&client, "node-a-pause", Phase::Succeeded, FLOW).await;
    assert_eq!(second.metric("snapmend_operator_leader").await, 0.0);
    assert!(first.log_text().contains("phase changed"));
    assert!(
        !second.log_text().contains("phase changed"),
        "the standby acted:\n{}",
        second.log_text()
    );
    assert!(!second.log_text().contains("became leader"));

    // The leader dies without releasing its Lease: the standby takes over within the Lease time.
    first.kill();
    let killed = Instant::now();
    second.wait_leader().await;
    let takeover = killed.elapsed();
    eprintln!("standby took over {takeover:?} after the leader was killed (3 s Lease)");
    assert!(takeover < Duration::from_secs(10), "{takeover:?}");
    apply_repair(
        &client,
        "node-b-pause",
        spec("node-b", RepairAction::Repair),
    )
    .await;
    wait_phase(&client, "node-b-pause", Phase::Succeeded, FLOW).await;
    assert!(second.log_text().contains("phase changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_steps_down_cleanly_on_sigterm() {
    let (sim, _client) = start_cluster(&[]).await;
    let mut first = OperatorProcess::spawn(&sim, "op-1", &[]);
    first.wait_leader().await;
    let second = OperatorProcess::spawn(&sim, "op-2", &[]);
    let status = first
        .terminate(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    // Released, not expired: the standby leads at once.
    let t = Instant::now();
    second.wait_leader().await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_cap_holds_across_three_broken_nodes() {
    let nodes = ["node-a", "node-b", "node-c"];
    let (sim, client) = start_cluster(&nodes).await;
    let history = NodeHistory::start(&client);
    let _agents: Vec<_> = nodes
        .iter()
        .map(|n| FakeAgent::start(&client, n, NodeState::Incident, Duration::from_millis(500)))
        .collect();
    let op = OperatorProcess::spawn(
        &sim,
        "op-1",
        &["--max-cordoned-nodes", "1", "--helper-timeout", "1m"],
    );
    for n in nodes {
        apply_repair(
            &client,
            &format!("{n}-pause"),
            spec(n, RepairAction::Repair),
        )
        .await;
    }
    let mut saw_waiting = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut done = 0;
        for n in nodes {
            let sr = get_repair(&client, &format!("{n}-pause")).await.unwrap();
            match phase_of(&sr) {
                Some(Phase::Succeeded) => done += 1,
                Some(Phase::Failed) => panic!("{n} failed: {}", message(&sr)),
                Some(Phase::Pending) if message(&sr).contains("waiting for a cordon slot") => {
                    saw_waiting = true
                }
                _ => {}
            }
        }
        if done == nodes.len() {
            break;
        }
        assert!(Instant::now() < deadline, "not all repaired in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_waiting, "some repair waited in Pending for a slot");
    assert_eq!(
        history.max_unschedulable_at_once(),
        1,
        "never more than one node cordoned"
    );
    for n in nodes {
        assert_eq!(
            history.of(n),
            [false, true, false],
            "{n} cordoned once and released"
        );
    }
    op.wait_metric("snapmend_nodes_cordoned", 0.0).await;
    op.wait_metric(
        r#"snapmend_repairs_finished_total{phase="Succeeded",outcome="Repaired"}"#,
        3.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_repairs_of_one_node_share_the_cordon_until_both_are_done() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    let agent = FakeAgent::start(&client, "node-a", NodeState::Incident, Duration::ZERO);
    let names = ["node-a-app", "node-a-sandbox"];
    for n in names {
        agent.hold_repair_of(n, true);
    }
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "1m"]);
    let mut sandbox = spec("node-a", RepairAction::Repair);
    sandbox.image = None;
    sandbox.sandbox_image = true;
    apply_repair(&client, names[0], spec("node-a", RepairAction::Repair)).await;
    apply_repair(&client, names[1], sandbox).await;
    for n in names {
        wait_phase(&client, n, Phase::Repairing, FLOW).await;
    }
    let holder = cordoned_by(&node(&client, "node-a").await).expect("one of them cordoned");
    let other = names.into_iter().find(|n| *n != holder).unwrap();

    // The holder finishes first: the node stays cordoned, now for the other repair.
    agent.hold_repair_of(&holder, false);
    let done = wait_phase(&client, &holder, Phase::Succeeded, FLOW).await;
    assert!(
        message(&done).contains(&format!("stays cordoned for SnapshotRepair {other}")),
        "{}",
        message(&done)
    );
    let node_now = node(&client, "node-a").await;
    assert!(
        is_unschedulable(&node_now),
        "still cordoned while {other} repairs"
    );
    assert_eq!(cordoned_by(&node_now).as_deref(), Some(other));

    agent.hold_repair_of(other, false);
    let last = wait_phase(&client, other, Phase::Succeeded, FLOW).await;
    assert_eq!(
        last.status.as_ref().unwrap().cordoned_by_operator,
        Some(true)
    );
    let node_end = node(&client, "node-a").await;
    assert!(!is_unschedulable(&node_end));
    assert_eq!(cordoned_by(&node_end), None);
    assert_eq!(
        history.of("node-a"),
        [false, true, false],
        "never uncordoned in between"
    );
}
