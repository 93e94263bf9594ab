//! `snapmend-bench storm` at a tiny scale, so that the benchmark does not rot: 20 realistic
//! Nodes, an event storm on 4 of them (each event updated 4 times), then 3 repairs one after
//! another on 20 Nodes and on one. Asserts counts, never times: one Succeeded repair per storm
//! node, no LIST after start-up, every latency sample taken.

use std::time::Duration;

use snapmend_tests::bench::storm::{StormOptions, render_storm_markdown, run_storm};
use snapmend_tests::kubelet::scenario::workspace_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_storm_repairs_each_node_once_without_a_list_after_start_up() {
    let operator = workspace_binary("snapmend-operator", "SNAPMEND_OPERATOR").expect("operator");
    let opts = StormOptions {
        operator,
        nodes: 20,
        storm_nodes: 4,
        updates: 4,
        batch_repairs: 3,
        batch_cluster_nodes: 20,
        max_cordoned: 2,
        verify_time: Duration::from_millis(20),
        repair_time: Duration::from_millis(50),
    };
    let report = run_storm(&opts).await.expect("storm");
    println!(
        "{}",
        render_storm_markdown(&report, "test", "operator_storm")
    );

    assert_eq!(report.event_writes, 4 * 5);
    assert_eq!(
        report.repairs_per_node.len(),
        4,
        "{:?}",
        report.repairs_per_node
    );
    assert!(
        report.repairs_per_node.values().all(|n| *n == 1),
        "exactly one repair per node: {:?}",
        report.repairs_per_node
    );
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    assert_eq!(report.event_to_repair.count, 4);
    assert_eq!(report.event_to_succeeded.count, 4);
    assert_eq!(
        report.after_startup.lists, 0,
        "the operator listed after start-up: {:?}",
        report.after_startup.by_key
    );
    assert!(
        report
            .after_startup
            .by_key
            .get("create snapshotrepairs")
            .is_some_and(|n| *n == 4),
        "the operator created the repairs after start-up: {:?}",
        report.after_startup.by_key
    );
    assert!(report.after_startup.response_bytes > 0);
    assert!(report.peak_rss_kib > 0);
    assert_eq!(report.batch_large.count, 3);
    assert_eq!(report.batch_one_node.count, 3);
    assert_eq!(report.batch_cluster_nodes, 20);
}
