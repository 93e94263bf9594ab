//! A storm: 1,000 kubelet events (200 FailedCreatePodSandBox events, each updated four more times)
//! from 50 nodes against the real operator binary. Exactly one SnapshotRepair per node, never
//! more nodes cordoned than `--max-cordoned-nodes`; prints event→repair latency (p50/p99) and the
//! operator's peak RSS. The 50 agents are played by a protocol double (Leases, request → report),
//! since 50 containerds do not fit a test machine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use snapmend_crds::labels::DEFAULT_LEASE_NAMESPACE;
use snapmend_crds::{Phase, SnapshotRepair};
use snapmend_tests::bench::storm;
use snapmend_tests::kubelet::cluster::TestCluster;
use snapmend_tests::kubelet::scenario::{kubelet_event, register_node, renew_helper_leases};

const NODES: usize = 50;
const PODS_PER_NODE: usize = 4;
const UPDATES_PER_EVENT: i32 = 4;
const MAX_CORDONED: usize = 3;
const PAUSE_GONE: &str = r#"Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/pause": stat /pause: no such file or directory: unknown"#;

fn node_name(i: usize) -> String {
    format!("storm-{i:02}")
}

/// Largest number of nodes unschedulable at the same time.
async fn track_cordons(client: Client, max_seen: Arc<Mutex<usize>>) {
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    let mut cordoned = BTreeSet::new();
    while let Ok(Some(node)) = stream.try_next().await {
        if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            cordoned.insert(node.name_any());
        } else {
            cordoned.remove(&node.name_any());
        }
        if let Ok(mut m) = max_seen.lock() {
            *m = (*m).max(cordoned.len());
        }
    }
}

/// When each node's first repair appeared.
async fn track_repairs(client: Client, seen: Arc<Mutex<HashMap<String, Instant>>>) {
    let stream = watcher(
        Api::<SnapshotRepair>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    futures::pin_mut!(stream);
    while let Ok(Some(sr)) = stream.try_next().await {
        if let Ok(mut s) = seen.lock() {
            s.entry(sr.spec.node_name.clone())
                .or_insert_with(Instant::now);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_from_fifty_nodes_gives_one_repair_each_within_the_cordon_cap() {
    let mut cluster = TestCluster::start().await.unwrap();
    let client = cluster.client.clone();
    let nodes: Vec<String> = (0..NODES).map(node_name).collect();
    for node in &nodes {
        register_node(&client, node, &[]).await.unwrap();
    }
    tokio::spawn(renew_helper_leases(
        client.clone(),
        DEFAULT_LEASE_NAMESPACE,
        nodes.clone(),
        "storm-agents",
    ));
    // Every helper present before the first event: a repair on a node whose Lease the first
    // renewal pass has not written yet would rightly fail as HelperUnavailable.
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        DEFAULT_LEASE_NAMESPACE,
    );
    let leases_deadline = Instant::now() + Duration::from_secs(60);
    while leases
        .list(&Default::default())
        .await
        .map_or(0, |l| l.items.len())
        < NODES
    {
        assert!(
            Instant::now() < leases_deadline,
            "helper Leases not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The shared agent double (also the storm benchmark's): Verify finds `/pause` missing,
    // Repair restores it.
    let _agents = storm::answer_requests(
        &client,
        Duration::from_millis(30),
        Duration::from_millis(30),
    );
    let max_cordoned = Arc::new(Mutex::new(0usize));
    tokio::spawn(track_cordons(client.clone(), max_cordoned.clone()));
    let repair_seen = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(track_repairs(client.clone(), repair_seen.clone()));
    let cap = MAX_CORDONED.to_string();
    cluster
        .start_operator(&[
            "--auto-remediate",
            "repair",
            "--cooldown",
            "10m",
            "--helper-timeout",
            "1m",
            "--max-cordoned-nodes",
            &cap,
        ])
        .await
        .unwrap();

    // 200 events, created round-robin over the nodes, then each updated four times: 1,000 writes.
    let first_event: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let storm_started = Instant::now();
    let events = Api::<Event>::namespaced(client.clone(), "default");
    let creations = (0..PODS_PER_NODE).flat_map(|p| nodes.iter().map(move |n| (n.clone(), p)));
    futures::stream::iter(creations)
        .for_each_concurrent(8, |(node, p)| {
            let (events, first_event) = (events.clone(), first_event.clone());
            async move {
                let pod = format!("{node}-web-{p}");
                let event = kubelet_event(
                    "default",
                    &format!("{pod}.1"),
                    &pod,
                    &node,
                    "FailedCreatePodSandBox",
                    PAUSE_GONE,
                    None,
                );
                first_event
                    .lock()
                    .unwrap()
                    .entry(node.clone())
                    .or_insert_with(Instant::now);
                events.create(&PostParams::default(), &event).await.unwrap();
            }
        })
        .await;
    let updates = (2..=UPDATES_PER_EVENT + 1).flat_map(|count| {
        (0..PODS_PER_NODE).flat_map(move |p| {
            (0..NODES).map(move |n| (count, format!("{}-web-{p}.1", node_name(n))))
        })
    });
    futures::stream::iter(updates)
        .for_each_concurrent(8, |(count, name)| {
            let events = events.clone();
            async move {
                let patch =
                    json!({ "count": count, "lastTimestamp": Timestamp::now().to_string() });
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
        })
        .await;
    let storm_took = storm_started.elapsed();

    // Every node gets its repair; then every repair finishes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while repair_seen.lock().unwrap().len() < NODES {
        assert!(
            Instant::now() < deadline,
            "only {} nodes got a repair\n{}",
            repair_seen.lock().unwrap().len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let repairs = cluster.repairs().await.unwrap();
        let done = repairs
            .iter()
            .filter(|sr| {
                sr.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(Phase::is_terminal)
            })
            .count();
        if done == repairs.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done}/{} repairs finished\n{}",
            repairs.len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let repairs = cluster.repairs().await.unwrap();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for sr in &repairs {
        *per_node.entry(sr.spec.node_name.clone()).or_default() += 1;
        assert_eq!(
            sr.status.as_ref().and_then(|s| s.phase),
            Some(Phase::Succeeded),
            "{}: {:?}\n{}",
            sr.name_any(),
            sr.status.as_ref().and_then(|s| s.message.clone()),
            cluster.logs()
        );
    }
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    assert!(
        per_node.values().all(|n| *n == 1),
        "exactly one repair per node: {per_node:?}"
    );
    let max = *max_cordoned.lock().unwrap();
    assert!(
        (1..=MAX_CORDONED).contains(&max),
        "at most {MAX_CORDONED} nodes cordoned at once, saw {max}"
    );

    let first_event = first_event.lock().unwrap().clone();
    let seen = repair_seen.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = nodes
        .iter()
        .map(|n| seen[n].saturating_duration_since(first_event[n]))
        .collect();
    latencies.sort();
    let (p50, p99) = (
        storm::percentile(&latencies, 50.0),
        storm::percentile(&latencies, 99.0),
    );
    let rss_kib = cluster
        .operator
        .as_ref()
        .and_then(|o| o.peak_rss_kib())
        .unwrap_or_default();
    println!(
        "storm: {} events from {NODES} nodes posted in {:.2}s; event->repair p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         operator peak RSS {:.1} MiB; max cordoned at once {max} (cap {MAX_CORDONED})",
        NODES * PODS_PER_NODE * (1 + UPDATES_PER_EVENT as usize),
        storm_took.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        rss_kib as f64 / 1024.0,
    );
    assert!(
        rss_kib > 0 && rss_kib < 100 * 1024,
        "operator peak RSS {rss_kib} KiB"
    );
    assert!(p99 < Duration::from_secs(5), "p99 event->repair {p99:?}");
}
