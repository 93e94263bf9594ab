//! Automatic remediation reads the operator's shared reflector stores: the real operator binary
//! (`--auto-remediate repair`) on snapmend-sim holds exactly one WATCH of Nodes, of
//! SnapshotRepairs and of helper Leases (and one LIST of each, at start-up), and an incident
//! that creates a SnapshotRepair from a kubelet event and repairs it issues no LIST at all.
//! The sim's request log, filtered by the operator's User-Agent, is the proof.

mod operator_support;

use std::time::Duration;

use snapmend_crds::{Phase, RepairAction};
use snapmend_tests::kubelet::scenario::{kubelet_event, post_event};
use snapmend_tests::sim::RequestRecord;
use snapmend_tests::sim::count_by_key;

use operator_support::*;

const PAUSE_GONE: &str = r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#;

const NODES: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];

fn operator_requests(sim: &snapmend_tests::sim::SimServer) -> Vec<RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|r| r.from_agent("snapmend-operator"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_remediation_shares_the_operators_watches_and_never_lists_after_start_up() {
    let (sim, client) = start_cluster(&NODES).await;
    let _agent = FakeAgent::start(
        &client,
        "node-c",
        NodeState::Incident,
        Duration::from_millis(50),
    );
    let op = OperatorProcess::spawn(&sim, "op-1", &["--auto-remediate", "repair"]);
    op.wait_leader().await;

    // Start-up ends when the remediation watches events and the SnapshotScan controller watches
    // scans: both start once the stores are filled.
    let startup = wait_for(
        "the operator watches events and SnapshotScans",
        Duration::from_secs(20),
        || async {
            let ops = operator_requests(&sim);
            let watches = |resource: &str| {
                ops.iter()
                    .filter(|r| r.verb == "watch" && r.resource == resource)
                    .count()
            };
            (watches("events") == 8 && watches("snapshotscans") == 1).then_some(ops.len())
        },
    )
    .await;

    post_event(
        &client,
        &kubelet_event(
            "default",
            "web-0.1",
            "web-0",
            "node-c",
            "FailedCreatePodSandBox",
            PAUSE_GONE,
            None,
        ),
    )
    .await
    .expect("post the event");
    let repair = wait_for("the automatic repair", Duration::from_secs(20), || async {
        let srs = kube::Api::<snapmend_crds::SnapshotRepair>::all(client.clone())
            .list(&Default::default())
            .await
            .ok()?;
        srs.items.into_iter().next()
    })
    .await;
    assert_eq!(repair.spec.node_name, "node-c");
    assert_eq!(repair.spec.action, RepairAction::Repair);
    let name = repair.metadata.name.clone().expect("name");
    wait_phase(&client, &name, Phase::Succeeded, Duration::from_secs(30)).await;

    let ops = operator_requests(&sim);
    let counts = count_by_key(ops.iter());
    eprintln!("operator requests: {counts:?}");
    let after_startup: Vec<_> = ops[startup..].iter().filter(|r| r.verb == "list").collect();
    assert!(
        after_startup.is_empty(),
        "the operator listed after start-up: {after_startup:#?}"
    );
    for resource in ["nodes", "snapshotrepairs", "leases", "snapshotscans"] {
        let of = |verb: &str| {
            ops.iter()
                .filter(|r| r.verb == verb && r.resource == resource)
                .count()
        };
        assert_eq!(of("watch"), 1, "one WATCH of {resource}: {counts:?}");
        assert_eq!(
            of("list"),
            1,
            "one LIST of {resource}, at start: {counts:?}"
        );
    }
    for resource in ["nodes", "snapshotrepairs"] {
        assert!(
            !ops.iter()
                .any(|r| r.verb == "get" && r.resource == resource),
            "{resource} are read from the store, not fetched: {counts:?}"
        );
    }
    assert!(
        ops[startup..]
            .iter()
            .any(|r| r.verb == "create" && r.resource == "snapshotrepairs"),
        "the repair was created by the operator after start-up: {counts:?}"
    );
}
