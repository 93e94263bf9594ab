//! The scan controller's decision (`step`) over scans, repairs and Nodes, without a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use snapmend_crds::labels::RUN_NOW_ANNOTATION;
use snapmend_crds::{ContentCheck, RepairAction, ScanRun, SnapshotScan, SnapshotScanSpec};

use super::*;

fn t(s: &str) -> Timestamp {
    s.parse().expect("time")
}

fn scan(schedule: &str) -> SnapshotScan {
    let mut s = SnapshotScan::new(
        "nightly",
        SnapshotScanSpec {
            schedule: schedule.into(),
            node_selector: None,
            action: RepairAction::Verify,
            content_check: ContentCheck::Metadata,
            max_concurrent_nodes: 1,
            suspend: false,
            history_limit: 3,
        },
    );
    s.metadata.creation_timestamp = Some(Time(t("2026-12-01T00:00:00Z")));
    s.metadata.generation = Some(1);
    s.metadata.uid = Some("uid-1".into());
    s
}

fn nodes(names: &[&str]) -> Vec<Arc<Node>> {
    names
        .iter()
        .map(|n| {
            Arc::new(Node {
                metadata: ObjectMeta {
                    name: Some(n.to_string()),
                    creation_timestamp: Some(Time(t("2026-11-01T00:00:00Z"))),
                    ..Default::default()
                },
                ..Default::default()
            })
        })
        .collect()
}

fn run(id: &str, start: &str) -> ScanRun {
    ScanRun {
        id: id.into(),
        start_time: Time(t(start)),
        completion_time: None,
        nodes: 3,
        healthy: 0,
        damaged: 0,
        repaired: 0,
        failed: 0,
    }
}

fn in_progress(mut s: SnapshotScan, r: ScanRun) -> SnapshotScan {
    let status = s.status.get_or_insert_with(Default::default);
    status.last_schedule_time = Some(Time(t("2026-12-07T03:00:00Z")));
    status.last_run = Some(r);
    s
}

fn reasons(step: &Step) -> Vec<&'static str> {
    step.notices.iter().map(|n| n.reason).collect()
}

type Runs = BTreeMap<String, BTreeMap<String, Verdict>>;

fn runs(id: &str, verdicts: &[(&str, Verdict)]) -> Runs {
    BTreeMap::from([(
        id.to_string(),
        verdicts.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
    )])
}

#[test]
fn run_now_starts_a_run_over_the_selected_nodes_once() {
    let mut s = scan("0 3 * * *");
    s.metadata.annotations = Some([(RUN_NOW_ANNOTATION.to_string(), "1".to_string())].into());
    s.metadata.creation_timestamp = Some(Time(t("2026-12-07T09:00:00Z")));
    let now = t("2026-12-07T09:30:12Z");
    let step = step(&s, &Runs::new(), &nodes(&["c", "a", "b"]), now);
    let r = step.status.last_run.as_ref().expect("a run");
    assert_eq!(r.id, "20261207-093012");
    assert_eq!((r.nodes, r.completion_time.as_ref()), (3, None));
    assert_eq!(step.status.run_now_handled.as_deref(), Some("1"));
    assert_eq!(
        step.status.last_schedule_time, None,
        "no scheduled time was due"
    );
    assert_eq!(reasons(&step), ["RunStarted"]);
    assert!(step.notices[0].note.contains("snapmend.io/run-now=1"));
    assert!(
        step.create.is_none(),
        "repairs only once the run is recorded"
    );
    let running = conditions::get(&step.status.conditions, RUNNING).expect("Running");
    assert_eq!(
        (running.status.as_str(), running.reason.as_str()),
        ("True", "RunInProgress")
    );
    // The same value again, after the run: nothing.
    let mut done = s.clone();
    let mut status = step.status.clone();
    if let Some(r) = status.last_run.as_mut() {
        r.completion_time = Some(Time(now));
    }
    done.status = Some(status);
    let again = super::step(&done, &Runs::new(), &nodes(&["a"]), now);
    assert!(again.notices.is_empty(), "{:?}", reasons(&again));
}

#[test]
fn a_run_creates_one_repair_at_a_time_and_counts_them() {
    let s = in_progress(
        scan("0 3 * * *"),
        run("20261207-030000", "2026-12-07T03:00:01Z"),
    );
    let all = nodes(&["a", "b", "c"]);
    let now = t("2026-12-07T03:05:00Z");
    let first = step(&s, &Runs::new(), &all, now);
    assert_eq!(
        first.create,
        Some(("20261207-030000".to_string(), vec!["a".to_string()]))
    );
    let busy = step(
        &s,
        &runs("20261207-030000", &[("a", Verdict::Unfinished)]),
        &all,
        now,
    );
    assert_eq!(busy.create, None);
    let second = step(
        &s,
        &runs("20261207-030000", &[("a", Verdict::Healthy)]),
        &all,
        now,
    );
    assert_eq!(
        second.create,
        Some(("20261207-030000".to_string(), vec!["b".to_string()]))
    );
    assert_eq!(second.status.last_run.as_ref().map(|r| r.healthy), Some(1));
    assert!(second.notices.is_empty());
}

#[test]
fn a_finished_run_records_its_counts_and_warns_about_damage() {
    let s = in_progress(
        scan("0 3 * * *"),
        run("20261207-030000", "2026-12-07T03:00:01Z"),
    );
    let done = runs(
        "20261207-030000",
        &[
            ("a", Verdict::Healthy),
            ("b", Verdict::Damaged),
            ("c", Verdict::Repaired),
        ],
    );
    let now = t("2026-12-07T03:10:00Z");
    let step = step(&s, &done, &nodes(&["a", "b", "c"]), now);
    let r = step.status.last_run.as_ref().expect("run");
    assert_eq!(
        (r.nodes, r.healthy, r.damaged, r.repaired, r.failed),
        (3, 1, 1, 1, 0)
    );
    assert_eq!(r.completion_time, Some(Time(now)));
    assert_eq!(reasons(&step), ["RunFinished"]);
    assert_eq!(step.notices[0].type_, EventType::Warning);
    assert!(
        step.notices[0]
            .note
            .contains("1 healthy, 1 damaged, 1 repaired, 0 failed"),
        "{}",
        step.notices[0].note
    );
    let running = conditions::get(&step.status.conditions, RUNNING).expect("Running");
    assert_eq!(running.status, "False");
}

#[test]
fn a_scheduled_time_during_a_run_is_recorded_as_missed() {
    let s = in_progress(
        scan("0 * * * *"),
        run("20261207-030000", "2026-12-07T03:00:01Z"),
    );
    let step = step(
        &s,
        &runs("20261207-030000", &[("a", Verdict::Unfinished)]),
        &nodes(&["a", "b"]),
        t("2026-12-07T04:00:02Z"),
    );
    assert_eq!(reasons(&step), ["MissedSchedule"]);
    assert_eq!(
        step.status.last_schedule_time,
        Some(Time(t("2026-12-07T04:00:00Z")))
    );
    assert_eq!(
        step.status.last_run.as_ref().map(|r| r.id.as_str()),
        Some("20261207-030000"),
        "no second run"
    );
}

#[test]
fn a_restart_after_missed_times_starts_one_catch_up_run() {
    let mut s = scan("*/10 * * * *");
    let mut old = run("20261207-030000", "2026-12-07T03:00:01Z");
    old.completion_time = Some(Time(t("2026-12-07T03:01:00Z")));
    s = in_progress(s, old);
    let now = t("2026-12-07T04:05:00Z");
    let step = step(&s, &Runs::new(), &nodes(&["a"]), now);
    assert_eq!(reasons(&step), ["RunStarted"]);
    assert_eq!(
        step.status.last_run.as_ref().map(|r| r.id.as_str()),
        Some("20261207-040000")
    );
    assert!(
        step.notices[0]
            .note
            .contains("6 scheduled times were missed"),
        "{}",
        step.notices[0].note
    );
    assert!(matches!(
        step.notices[0].effect,
        Effect::Started("catch_up", 5)
    ));
    // Requeued for 04:10.
    assert_eq!(step.next, Action::requeue(RUN_RECHECK));
}

#[test]
fn an_invalid_schedule_is_a_false_ready_condition_and_one_warning() {
    let s = scan("61 * * * *");
    let now = t("2026-12-07T04:05:00Z");
    let first = step(&s, &Runs::new(), &nodes(&["a"]), now);
    let ready = conditions::get(&first.status.conditions, READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSchedule")
    );
    assert!(
        ready.message.contains("not a valid cron"),
        "{}",
        ready.message
    );
    assert_eq!(reasons(&first), ["InvalidSchedule"]);
    assert!(first.status.last_run.is_none());
    assert_eq!(first.next, Action::await_change());
    let mut again = s.clone();
    again.status = Some(first.status.clone());
    let second = step(&again, &Runs::new(), &nodes(&["a"]), now);
    assert!(second.notices.is_empty(), "warned once");
}

#[test]
fn an_idle_scan_waits_for_its_next_time_and_says_when() {
    let mut s = scan("0 3 * * *");
    s.metadata.creation_timestamp = Some(Time(t("2026-12-07T01:00:00Z")));
    let now = t("2026-12-07T02:59:00Z");
    let step = step(&s, &Runs::new(), &nodes(&["a"]), now);
    assert!(step.notices.is_empty());
    let ready = conditions::get(&step.status.conditions, READY).expect("Ready");
    assert_eq!(ready.reason, "Scheduled");
    assert!(
        ready.message.contains("2026-12-07T03:00:00Z"),
        "{}",
        ready.message
    );
    assert_eq!(step.next, Action::requeue(Duration::from_millis(60_050)));
    let mut suspended = s.clone();
    suspended.spec.suspend = true;
    let step = super::step(&suspended, &Runs::new(), &nodes(&["a"]), now);
    let ready = conditions::get(&step.status.conditions, READY).expect("Ready");
    assert_eq!(ready.reason, "Suspended");
    assert_eq!(step.next, Action::await_change());
}
