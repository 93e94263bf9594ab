//! The operator at cluster scale, against the real `snapmend-operator` binary on snapmend-sim:
//!
//! - 2,000 Nodes, each with 30 images in its status as real Nodes have: after start-up, repairs
//!   make no LIST (the sim's request log, filtered by the operator's User-Agent), 20 repairs on
//!   20 nodes run concurrently (their Repairing phases overlap) and `--max-cordoned-nodes`
//!   still holds;
//! - a leader killed in the middle of a cordon-cap race: the standby recounts the cap from the
//!   cluster and never more than the cap is cordoned.
//!
//! Agents are played by a protocol double that watches (Lease renewal, request → report); the
//! realistic Nodes and the double are shared with `snapmend-bench storm` (`bench::storm`).

mod operator_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use snapmend_crds::{Phase, RepairAction, SnapshotRepair};
use snapmend_tests::bench::storm::{self, add_realistic_nodes, node_name};
use snapmend_tests::kubelet::scenario::renew_helper_leases;
use snapmend_tests::sim::count_by_key;
use tokio::task::JoinHandle;

use operator_support::*;

const CLUSTER_NODES: usize = 2000;
const REPAIRS: usize = 20;

/// Keeps the presence Leases of `nodes` fresh, as their agents would.
fn renew_leases(client: &Client, nodes: Vec<String>) -> JoinHandle<()> {
    tokio::spawn(renew_helper_leases(
        client.clone(),
        NAMESPACE,
        nodes,
        "scale-agents",
    ))
}

/// Answers Verify after 50 ms and Repair after `repair_time` (the shared agent double).
fn answer_requests(client: &Client, repair_time: Duration) -> JoinHandle<()> {
    storm::answer_requests(client, Duration::from_millis(50), repair_time)
}

/// Every phase each repair was seen in, with when.
type PhaseLog = Arc<Mutex<Vec<(String, Phase, Instant)>>>;

fn track_phases(client: &Client) -> (PhaseLog, JoinHandle<()>) {
    let log: PhaseLog = Arc::default();
    let record = log.clone();
    let api = Api::<SnapshotRepair>::all(client.clone());
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        let mut last: HashMap<String, Phase> = HashMap::new();
        while let Ok(Some(sr)) = stream.try_next().await {
            let Some(phase) = phase_of(&sr) else { continue };
            if last.insert(sr.name_any(), phase) != Some(phase) {
                record
                    .lock()
                    .expect("log")
                    .push((sr.name_any(), phase, Instant::now()));
            }
        }
    });
    (log, task)
}

/// The largest number of repairs that were in `phase` at the same time.
fn max_at_once(log: &PhaseLog, phase: Phase) -> usize {
    let mut now: HashMap<String, Phase> = HashMap::new();
    let mut max = 0;
    for (name, p, _) in log.lock().expect("log").iter() {
        now.insert(name.clone(), *p);
        max = max.max(now.values().filter(|q| **q == phase).count());
    }
    max
}

async fn wait_all_succeeded(client: &Client, names: &[String], timeout: Duration) {
    let api = Api::<SnapshotRepair>::all(client.clone());
    wait_for("every repair Succeeded", timeout, || async {
        let list = api.list(&Default::default()).await.ok()?;
        let by_name: BTreeMap<_, _> = list.items.iter().map(|s| (s.name_any(), s)).collect();
        for name in names {
            let sr = by_name.get(name)?;
            assert_ne!(phase_of(sr), Some(Phase::Failed), "{name}: {}", message(sr));
            if phase_of(sr) != Some(Phase::Succeeded) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_nodes_repairs_issue_no_list_and_run_in_parallel() {
    let (sim, client) = start_cluster(&[]).await;
    let started = Instant::now();
    add_realistic_nodes(&client, CLUSTER_NODES)
        .await
        .expect("register Nodes");
    eprintln!(
        "{CLUSTER_NODES} realistic Nodes registered in {:?}",
        started.elapsed()
    );
    let repair_nodes: Vec<String> = (0..=REPAIRS).map(|i| node_name(i * 97)).collect();
    let _leases = renew_leases(&client, repair_nodes.clone());
    let _agents = answer_requests(&client, Duration::from_millis(1500));
    let history = NodeHistory::start(&client);
    let (phases, _tracker) = track_phases(&client);
    let cap = 10;
    let op = OperatorProcess::spawn(
        &sim,
        "op-1",
        &[
            "--max-cordoned-nodes",
            &cap.to_string(),
            "--helper-timeout",
            "1m",
        ],
    );
    op.wait_leader().await;

    // Start-up: the stores list once. A first repair proves the controller is running.
    apply_repair(
        &client,
        "warm-up",
        spec(&repair_nodes[REPAIRS], RepairAction::Repair),
    )
    .await;
    wait_all_succeeded(&client, &["warm-up".to_string()], Duration::from_secs(30)).await;
    let startup = sim.requests();
    let startup_ops = count_by_key(startup.iter().filter(|r| r.from_agent("snapmend-operator")));
    eprintln!("operator requests until the first repair finished: {startup_ops:?}");
    assert!(
        startup_ops.get("list nodes").is_some_and(|n| *n >= 1),
        "the operator's requests are told apart by User-Agent: {startup_ops:?}"
    );
    sim.clear_requests();

    let t0 = Instant::now();
    let names: Vec<String> = (0..REPAIRS).map(|i| format!("repair-{i:02}")).collect();
    for (name, node) in names.iter().zip(&repair_nodes) {
        apply_repair(&client, name, spec(node, RepairAction::Repair)).await;
    }
    wait_all_succeeded(&client, &names, Duration::from_secs(60)).await;
    let took = t0.elapsed();

    let requests = sim.requests();
    let ops: Vec<_> = requests
        .iter()
        .filter(|r| r.from_agent("snapmend-operator"))
        .collect();
    let counts = count_by_key(ops.iter().copied());
    let bytes: u64 = ops.iter().filter_map(|r| r.response_bytes).sum();
    eprintln!(
        "{REPAIRS} repairs among {CLUSTER_NODES} nodes in {took:?}: {} operator requests ({:.1} per repair, {:.1} KiB of responses per repair): {counts:?}",
        ops.len(),
        ops.len() as f64 / REPAIRS as f64,
        bytes as f64 / 1024.0 / REPAIRS as f64,
    );
    let lists: Vec<_> = ops.iter().filter(|r| r.verb == "list").collect();
    assert!(
        lists.is_empty(),
        "the operator listed after start-up: {lists:#?}"
    );
    for resource in ["nodes", "snapshotrepairs"] {
        assert!(
            !ops.iter()
                .any(|r| r.verb == "get" && r.resource == resource),
            "the operator GETs {resource} instead of reading its cache: {counts:?}"
        );
    }
    let repairing = max_at_once(&phases, Phase::Repairing);
    eprintln!("at most {repairing} repairs were Repairing at once (cap {cap})");
    assert!(
        repairing >= 2,
        "repairs on different nodes run in parallel; at most {repairing} at once"
    );
    let cordoned = history.max_unschedulable_at_once();
    assert!(
        cordoned <= cap,
        "{cordoned} nodes cordoned at once, cap {cap}"
    );
    assert!(
        cordoned >= 2,
        "the cap, not a lock, limits cordons: {cordoned}"
    );
    op.wait_metric(
        r#"snapmend_store_objects{store="nodes"}"#,
        CLUSTER_NODES as f64,
    )
    .await;
    assert!(op.metric("snapmend_reconciles_total").await > 0.0);
    // The same counts from outside, as kube-apiserver's apiserver_request_total on /metrics
    // (the test's own polling LISTs SnapshotRepairs).
    let (code, text) = http_get(sim.addr(), "/metrics")
        .await
        .expect("sim /metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains(r#"resource="snapshotrepairs",subresource="",verb="LIST"}"#),
        "{text}"
    );
    if let Some(kib) = op.peak_rss_kib() {
        eprintln!(
            "operator peak RSS with {CLUSTER_NODES} Nodes cached: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    // Sequential repairs (1.5 s each) would take 30 s.
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_in_a_cordon_cap_race_leaves_at_most_the_cap_cordoned() {
    let nodes: Vec<String> = (0..6).map(|i| format!("race-{i}")).collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let (sim, client) = start_cluster(&refs).await;
    let history = NodeHistory::start(&client);
    let _leases = renew_leases(&client, nodes.clone());
    let _agents = answer_requests(&client, Duration::from_millis(2500));
    let cap = 2;
    let args = ["--max-cordoned-nodes", "2", "--helper-timeout", "1m"];
    let mut first = OperatorProcess::spawn(&sim, "op-1", &args);
    first.wait_leader().await;
    let second = OperatorProcess::spawn(&sim, "op-2", &args);
    wait_for("standby up", Duration::from_secs(20), || async {
        matches!(second.http_get("/readyz").await, Some((200, _))).then_some(())
    })
    .await;

    let names: Vec<String> = nodes.iter().map(|n| format!("{n}-pause")).collect();
    for (name, node) in names.iter().zip(&nodes) {
        apply_repair(&client, name, spec(node, RepairAction::Repair)).await;
    }
    // Kill the leader as soon as the first cordon lands: the others race for the last slot.
    wait_for("a first cordon", Duration::from_secs(20), || async {
        (history.max_unschedulable_at_once() >= 1).then_some(())
    })
    .await;
    first.kill();
    second.wait_leader().await;
    wait_all_succeeded(&client, &names, Duration::from_secs(60)).await;
    let most = history.max_unschedulable_at_once();
    eprintln!("at most {most} nodes cordoned at once across the leader change (cap {cap})");
    assert!(most <= cap, "{most} nodes cordoned at once, cap {cap}");
    for n in &nodes {
        assert_eq!(
            history.of(n).last(),
            Some(&false),
            "{n} uncordoned at the end"
        );
    }
}
