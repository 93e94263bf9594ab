//! SnapshotScans through snapmend-sim with the real `snapmend-operator` binary and the fake
//! agent of the operator tests: a run started by the run-now annotation creates one `allImages`
//! SnapshotRepair per node, never more than `maxConcurrentNodes` unfinished at once; lastRun
//! counts what they found; old runs are pruned to `historyLimit`; a Repair scan waits for the
//! cordon cap; a restart after missed schedules produces exactly one catch-up run; a schedule
//! cron cannot parse is reported.

mod operator_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use operator_support::*;
use serde_json::json;
use snapmend_crds::labels::{NODE_LABEL, RUN_NOW_ANNOTATION, SCAN_LABEL, SCAN_RUN_LABEL};
use snapmend_crds::{
    ContentCheck, Phase, RepairAction, ScanRun, SnapshotRepair, SnapshotScan, SnapshotScanSpec,
};
use tokio::task::JoinHandle;

const RUN: Duration = Duration::from_secs(30);

fn scan_spec(schedule: &str, action: RepairAction, concurrent: u32, keep: u32) -> SnapshotScanSpec {
    SnapshotScanSpec {
        schedule: schedule.into(),
        node_selector: None,
        action,
        content_check: ContentCheck::Metadata,
        max_concurrent_nodes: concurrent,
        suspend: false,
        history_limit: keep,
    }
}

async fn create_scan(client: &Client, name: &str, spec: SnapshotScanSpec, run_now: Option<&str>) {
    let mut scan = SnapshotScan::new(name, spec);
    if let Some(v) = run_now {
        scan.metadata.annotations = Some([(RUN_NOW_ANNOTATION.to_string(), v.to_string())].into());
    }
    Api::<SnapshotScan>::all(client.clone())
        .create(&PostParams::default(), &scan)
        .await
        .expect("create SnapshotScan");
}

async fn run_now(client: &Client, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {RUN_NOW_ANNOTATION: value}}});
    Api::<SnapshotScan>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
}

async fn scan(client: &Client, name: &str) -> SnapshotScan {
    Api::<SnapshotScan>::all(client.clone())
        .get(name)
        .await
        .expect("get SnapshotScan")
}

/// Waits until a run of `name` other than those in `not` has finished; returns it.
async fn wait_run_finished(client: &Client, name: &str, not: &BTreeSet<String>) -> ScanRun {
    wait_for(&format!("a new run of {name} finished"), RUN, || async {
        let s = scan(client, name).await;
        s.status
            .and_then(|st| st.last_run)
            .filter(|r| r.completion_time.is_some() && !not.contains(&r.id))
    })
    .await
}

async fn scan_repairs(client: &Client, scan: &str) -> Vec<SnapshotRepair> {
    Api::<SnapshotRepair>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{SCAN_LABEL}={scan}")))
        .await
        .expect("list")
        .items
}

/// The largest number of a scan's SnapshotRepairs unfinished at the same time, as the API
/// server's watch reported them.
struct Concurrency {
    max: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Concurrency {
    fn watch(client: &Client, scan: &str) -> Self {
        let max = Arc::new(Mutex::new(0));
        let api: Api<SnapshotRepair> = Api::all(client.clone());
        let config = watcher::Config::default().labels(&format!("{SCAN_LABEL}={scan}"));
        let seen = max.clone();
        let task = tokio::spawn(async move {
            let mut unfinished: BTreeMap<String, bool> = BTreeMap::new();
            let mut stream = watcher(api, config).boxed();
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(sr) | watcher::Event::InitApply(sr) => {
                        let done = phase_of(&sr).is_some_and(Phase::is_terminal);
                        unfinished.insert(sr.name_any(), !done);
                    }
                    watcher::Event::Delete(sr) => {
                        unfinished.remove(&sr.name_any());
                    }
                    _ => {}
                }
                let now = unfinished.values().filter(|u| **u).count();
                let mut m = seen.lock().expect("max");
                *m = (*m).max(now);
            }
        });
        Concurrency { max, task }
    }

    fn max(&self) -> usize {
        *self.max.lock().expect("max")
    }
}

impl Drop for Concurrency {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_scans_every_node_one_at_a_time_counts_and_prunes_old_runs() {
    let nodes = ["scan-a", "scan-b", "scan-c"];
    let (sim, client) = start_cluster(&nodes).await;
    // Answers take a moment, so two unfinished repairs at once would be seen.
    let delay = Duration::from_millis(300);
    let _a = FakeAgent::start(&client, "scan-a", NodeState::Healthy, delay);
    let _b = FakeAgent::start(&client, "scan-b", NodeState::Incident, delay);
    let _c = FakeAgent::start(&client, "scan-c", NodeState::Healthy, delay);
    let op = OperatorProcess::spawn(&sim, "op-1", &[]);
    let concurrency = Concurrency::watch(&client, "nightly");
    // 03:00 UTC daily: not due during the test; the annotation starts the run.
    create_scan(
        &client,
        "nightly",
        scan_spec("0 3 * * *", RepairAction::Verify, 1, 2),
        Some("first"),
    )
    .await;

    let first = wait_run_finished(&client, "nightly", &BTreeSet::new()).await;
    assert_eq!(
        (
            first.nodes,
            first.healthy,
            first.damaged,
            first.repaired,
            first.failed
        ),
        (3, 2, 1, 0, 0),
        "{first:?}"
    );
    assert_eq!(concurrency.max(), 1, "maxConcurrentNodes 1");
    let repairs = scan_repairs(&client, "nightly").await;
    let mut per_node: Vec<(String, String)> = repairs
        .iter()
        .map(|sr| (sr.spec.node_name.clone(), sr.name_any()))
        .collect();
    per_node.sort();
    assert_eq!(
        per_node,
        nodes
            .iter()
            .map(|n| (n.to_string(), format!("nightly-{}-{n}", first.id)))
            .collect::<Vec<_>>(),
        "one deterministic allImages repair per node"
    );
    for sr in &repairs {
        assert!(sr.spec.all_images, "{}", sr.name_any());
        assert_eq!(sr.spec.action, RepairAction::Verify);
        assert_eq!(sr.spec.content_check, ContentCheck::Metadata);
        assert_eq!(sr.labels()[SCAN_RUN_LABEL], first.id);
        assert_eq!(sr.labels()[NODE_LABEL], sr.spec.node_name);
        let owner = &sr.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("SnapshotScan", "nightly")
        );
        assert_eq!(phase_of(sr), Some(Phase::Succeeded));
    }
    wait_events(&client, "nightly", &["RunStarted", "RunFinished"]).await;
    op.wait_metric(
        r#"snapmend_scan_runs_started_total{trigger="run_now"}"#,
        1.0,
    )
    .await;
    op.wait_metric(
        r#"snapmend_scan_runs_finished_total{result="damaged"}"#,
        1.0,
    )
    .await;
    let status = scan(&client, "nightly").await.status.expect("status");
    assert_eq!(status.run_now_handled.as_deref(), Some("first"));

    // The same value again is no new run.
    run_now(&client, "nightly", "first").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = scan(&client, "nightly")
        .await
        .status
        .and_then(|s| s.last_run);
    assert_eq!(
        last.map(|r| r.id),
        Some(first.id.clone()),
        "handled values never run twice"
    );

    // Two more runs with historyLimit 2: the first run's repairs are deleted.
    let mut seen = BTreeSet::from([first.id.clone()]);
    for value in ["second", "third"] {
        run_now(&client, "nightly", value).await;
        let run = wait_run_finished(&client, "nightly", &seen).await;
        assert_eq!((run.nodes, run.healthy, run.damaged), (3, 2, 1));
        seen.insert(run.id);
    }
    let kept: BTreeSet<String> = wait_for("the first run pruned", RUN, || async {
        let runs: BTreeSet<String> = scan_repairs(&client, "nightly")
            .await
            .iter()
            .map(|sr| sr.labels()[SCAN_RUN_LABEL].clone())
            .collect();
        (!runs.contains(&first.id)).then_some(runs)
    })
    .await;
    assert_eq!(
        kept,
        seen.iter().skip(1).cloned().collect(),
        "the newest 2 runs kept"
    );
    assert_eq!(concurrency.max(), 1);
    op.wait_metric(
        r#"snapmend_scan_runs_started_total{trigger="run_now"}"#,
        3.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_scan_waits_for_the_cordon_cap() {
    let (sim, client) = start_cluster(&["cap-a", "cap-b"]).await;
    let history = NodeHistory::start(&client);
    let a = FakeAgent::start(&client, "cap-a", NodeState::Incident, Duration::ZERO);
    let b = FakeAgent::start(&client, "cap-b", NodeState::Incident, Duration::ZERO);
    // Whichever node is cordoned first holds the only slot until released.
    a.hold_repairs(true);
    b.hold_repairs(true);
    let op = OperatorProcess::spawn(&sim, "op-1", &["--max-cordoned-nodes", "1"]);
    create_scan(
        &client,
        "repair-all",
        scan_spec("0 3 * * *", RepairAction::Repair, 2, 3),
        Some("now"),
    )
    .await;
    // Both repairs of the run exist at once (maxConcurrentNodes 2); one holds the cordon, the
    // other waits for a slot instead of cordoning a second node.
    let waiting = wait_for("one repair waiting for a cordon slot", RUN, || async {
        let repairs = scan_repairs(&client, "repair-all").await;
        let waiting: Vec<SnapshotRepair> = repairs
            .into_iter()
            .filter(|sr| {
                sr.status.as_ref().is_some_and(|s| {
                    s.phase == Some(Phase::Pending)
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.reason == "WaitingForCordonSlot")
                })
            })
            .collect();
        waiting.into_iter().next()
    })
    .await;
    assert_eq!(history.max_unschedulable_at_once(), 1);
    a.hold_repairs(false);
    b.hold_repairs(false);
    let run = wait_run_finished(&client, "repair-all", &BTreeSet::new()).await;
    assert_eq!(
        (run.nodes, run.repaired, run.damaged, run.failed),
        (2, 2, 0, 0),
        "{run:?}"
    );
    assert_eq!(
        history.max_unschedulable_at_once(),
        1,
        "never more than --max-cordoned-nodes"
    );
    let waited = get_repair(&client, &waiting.name_any())
        .await
        .expect("kept");
    assert_eq!(phase_of(&waited), Some(Phase::Succeeded));
    op.wait_metric(
        r#"snapmend_scan_runs_finished_total{result="repaired"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_missed_schedules_runs_one_catch_up() {
    // Hourly at minute 0: keep clear of the hour's turn, when a legitimate run would be due.
    let now = Timestamp::now();
    let into_hour = now.as_second().rem_euclid(3600);
    if into_hour > 3600 - 40 {
        tokio::time::sleep(Duration::from_secs((3600 - into_hour + 2) as u64)).await;
    }
    let (sim, client) = start_cluster(&["late-a", "late-b"]).await;
    let _a = FakeAgent::start(&client, "late-a", NodeState::Healthy, Duration::ZERO);
    let _b = FakeAgent::start(&client, "late-b", NodeState::Healthy, Duration::ZERO);
    let mut op = OperatorProcess::spawn(&sim, "op-1", &[]);
    op.wait_leader().await;
    create_scan(
        &client,
        "hourly",
        scan_spec("0 * * * *", RepairAction::Verify, 1, 3),
        None,
    )
    .await;
    wait_for("the scan scheduled", RUN, || async {
        let s = scan(&client, "hourly").await;
        s.status
            .filter(|st| st.conditions.iter().any(|c| c.reason == "Scheduled"))
            .map(|_| ())
    })
    .await;
    assert!(
        scan_repairs(&client, "hourly").await.is_empty(),
        "nothing due yet"
    );
    // A schedule the schema's shape check lets through but cron cannot parse: a false Ready
    // condition naming the reason, and a Warning event.
    create_scan(
        &client,
        "broken",
        scan_spec("61 * * * *", RepairAction::Verify, 1, 3),
        Some("now"),
    )
    .await;
    let ready = wait_for("the invalid schedule reported", RUN, || async {
        scan(&client, "broken")
            .await
            .status
            .and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Ready"))
    })
    .await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSchedule")
    );
    assert!(
        ready.message.contains("not a valid cron expression"),
        "{}",
        ready.message
    );
    wait_events(&client, "broken", &["InvalidSchedule"]).await;
    assert!(
        scan_repairs(&client, "broken").await.is_empty(),
        "nothing runs"
    );

    // The operator is down for five scheduled times: its last record is from 5 h ago.
    op.kill();
    let top_of_hour =
        Timestamp::from_second(Timestamp::now().as_second() / 3600 * 3600).expect("time");
    let five_ago = top_of_hour - SignedDuration::from_hours(5);
    let patch = json!({"status": {"lastScheduleTime": five_ago.to_string()}});
    Api::<SnapshotScan>::all(client.clone())
        .patch_status("hourly", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("status");
    op.restart();

    let run = wait_run_finished(&client, "hourly", &BTreeSet::new()).await;
    let expected_id = top_of_hour
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .strftime("%Y%m%d-%H%M%S")
        .to_string();
    assert_eq!(run.id, expected_id, "the most recent missed time");
    assert_eq!((run.nodes, run.healthy), (2, 2));
    let status = scan(&client, "hourly").await.status.expect("status");
    assert_eq!(
        status.last_schedule_time.map(|t| t.0),
        Some(top_of_hour),
        "all five recorded"
    );
    wait_events(&client, "hourly", &["RunStarted", "RunFinished"]).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RunStarted"))
        .filter_map(|e| e.note)
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("5 scheduled times were missed"),
        "{notes:?}"
    );
    // No burst: a moment later there is still one run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs: BTreeSet<String> = scan_repairs(&client, "hourly")
        .await
        .iter()
        .map(|sr| sr.labels()[SCAN_RUN_LABEL].clone())
        .collect();
    assert_eq!(runs, BTreeSet::from([expected_id]));
    op.wait_metric(
        r#"snapmend_scan_runs_started_total{trigger="catch_up"}"#,
        1.0,
    )
    .await;
    op.wait_metric("snapmend_scan_missed_schedules_total", 4.0)
        .await;
}

/// deploy/'s RBAC is enough for scans: `snapmend-sim --auth` with `kubectl apply -k deploy/`, the
/// operator on a token of its ServiceAccount; two runs with historyLimit 1 (so the first run's
/// repairs are deleted) and not one request refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_run_on_the_operators_own_least_privilege_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, admin) = start_auth_sim_with_deploy(dir.path());
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: op-1\n  namespace: {NAMESPACE}\nspec:\n  serviceAccountName: snapmend-operator\n  containers:\n  - name: operator\n    image: snapmend/operator\n"),
    )
    .expect("pod");
    kubectl(&admin, &["apply", "-f", pod.to_str().expect("utf-8")]);
    let token =
        snapmend_tests::kubectl::bound_token(&admin, NAMESPACE, "snapmend-operator", "op-1")
            .unwrap_or_else(|e| panic!("{e}"));
    let client = Client::try_from(sim.server().kube_config().expect("config")).expect("client");
    for node in ["rbac-a", "rbac-b"] {
        add_node(&client, node, false).await;
    }
    let _a = FakeAgent::start(&client, "rbac-a", NodeState::Healthy, Duration::ZERO);
    let _b = FakeAgent::start(&client, "rbac-b", NodeState::Incident, Duration::ZERO);
    let op = OperatorProcess::spawn_with_kubeconfig(
        sim.server().kubeconfig_yaml_with_token(Some(&token)),
        "op-1",
        &[],
    );
    op.wait_leader().await;
    create_scan(
        &client,
        "rbac",
        scan_spec("0 3 * * *", RepairAction::Verify, 2, 1),
        Some("1"),
    )
    .await;
    let first = wait_run_finished(&client, "rbac", &BTreeSet::new()).await;
    assert_eq!((first.nodes, first.healthy, first.damaged), (2, 1, 1));
    run_now(&client, "rbac", "2").await;
    let second = wait_run_finished(&client, "rbac", &BTreeSet::from([first.id.clone()])).await;
    wait_for("the first run pruned", RUN, || async {
        let repairs = scan_repairs(&client, "rbac").await;
        repairs
            .iter()
            .all(|sr| sr.labels()[SCAN_RUN_LABEL] == second.id)
            .then_some(())
    })
    .await;
    wait_events(&client, "rbac", &["RunStarted", "RunFinished"]).await;
    let refused = sim.server().refused_requests();
    assert!(refused.is_empty(), "refused requests: {refused:#?}");
    drop(op);
    let _ = std::thread::spawn(move || drop(sim)).join();
}
