//! The pure parts of a SnapshotScan run: its id, the deterministic names and the objects of its
//! SnapshotRepairs, what each finished repair counts as, which nodes get a repair next (at most
//! `maxConcurrentNodes` unfinished at a time), and which old runs are pruned.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;
use kube::{Resource, ResourceExt};
use snapmend_crds::labels::{NODE_LABEL, SCAN_LABEL, SCAN_RUN_LABEL, bounded_name};
use snapmend_crds::{Outcome, Phase, SnapshotRepair, SnapshotRepairSpec, SnapshotScan};

use crate::reconcile::is_label_value;

/// Run ids are the UTC time a run stands for, sortable as text.
const RUN_ID_FORMAT: &str = "%Y%m%d-%H%M%S";

/// The id of a run standing for `scheduled`: its time, or one second after the previous run's
/// when that is not earlier (two run-now requests within a second), so ids stay unique and sorted.
pub fn run_id(scheduled: Timestamp, previous: Option<&str>) -> String {
    let mut t = super::schedule::whole_second(scheduled);
    if let Some(prev) = previous.and_then(parse_run_id)
        && prev >= t
    {
        t = prev + k8s_openapi::jiff::SignedDuration::from_secs(1);
    }
    t.to_zoned(TimeZone::UTC)
        .strftime(RUN_ID_FORMAT)
        .to_string()
}

fn parse_run_id(id: &str) -> Option<Timestamp> {
    DateTime::strptime(RUN_ID_FORMAT, id)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// `<scan>-<run id>-<node>`, cut and hashed when longer than an object name may be: the same
/// node of the same run always has the same name, so a restart mid-run creates no duplicates.
pub fn repair_name(scan: &str, run: &str, node: &str) -> String {
    bounded_name(format!("{scan}-{run}-{node}"))
}

/// The `allImages` SnapshotRepair of `node` in run `run` of `scan`.
pub fn build_repair(scan: &SnapshotScan, run: &str, node: &str) -> SnapshotRepair {
    let scan_name = scan.name_any();
    let mut labels = BTreeMap::from([(SCAN_RUN_LABEL.to_string(), run.to_string())]);
    // Names too long for a label value go without; the ownerReference still says.
    for (key, value) in [(SCAN_LABEL, scan_name.as_str()), (NODE_LABEL, node)] {
        if is_label_value(value) {
            labels.insert(key.to_string(), value.to_string());
        }
    }
    let owner = OwnerReference {
        api_version: SnapshotScan::api_version(&()).to_string(),
        kind: SnapshotScan::kind(&()).to_string(),
        name: scan_name.clone(),
        uid: scan.uid().unwrap_or_default(),
        controller: Some(true),
        // blockOwnerDeletion would need update on snapshotscans/finalizers; not worth the RBAC.
        block_owner_deletion: None,
    };
    let mut sr = SnapshotRepair::new(
        &repair_name(&scan_name, run, node),
        SnapshotRepairSpec {
            node_name: node.to_string(),
            image: None,
            sandbox_image: false,
            all_images: true,
            action: scan.spec.action,
            cordon: true,
            content_check: scan.spec.content_check,
            pull_secrets: Vec::new(),
        },
    );
    sr.metadata = ObjectMeta {
        name: sr.metadata.name.take(),
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    sr
}

/// What one SnapshotRepair of a run counts as in `status.lastRun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Unfinished,
    /// Succeeded, nothing found.
    Healthy,
    /// Damage found and not repaired (action Verify, or found unrepairable).
    Damaged,
    Repaired,
    /// Failed phase (or a finished repair with no usable report).
    Failed,
}

/// From `status.phase` and `status.report.outcome` only.
pub fn verdict(sr: &SnapshotRepair) -> Verdict {
    let Some(status) = &sr.status else {
        return Verdict::Unfinished;
    };
    match status.phase {
        Some(Phase::Failed) => Verdict::Failed,
        Some(Phase::Succeeded) => match status.report.as_ref().map(|r| r.report.outcome) {
            Some(Outcome::Healthy) => Verdict::Healthy,
            Some(Outcome::Corrupted | Outcome::Unrepairable) => Verdict::Damaged,
            Some(Outcome::Repaired) => Verdict::Repaired,
            Some(Outcome::Error) | None => Verdict::Failed,
        },
        _ => Verdict::Unfinished,
    }
}

/// Counts of a run's repairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub unfinished: u32,
    pub healthy: u32,
    pub damaged: u32,
    pub repaired: u32,
    pub failed: u32,
}

impl Tally {
    pub fn of(verdicts: impl IntoIterator<Item = Verdict>) -> Tally {
        let mut t = Tally::default();
        for v in verdicts {
            match v {
                Verdict::Unfinished => t.unfinished += 1,
                Verdict::Healthy => t.healthy += 1,
                Verdict::Damaged => t.damaged += 1,
                Verdict::Repaired => t.repaired += 1,
                Verdict::Failed => t.failed += 1,
            }
        }
        t
    }

    /// The run's result for metrics and events: the worst that happened.
    pub fn result(&self) -> RunResult {
        if self.failed > 0 {
            RunResult::Failed
        } else if self.damaged > 0 {
            RunResult::Damaged
        } else if self.repaired > 0 {
            RunResult::Repaired
        } else {
            RunResult::Healthy
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResult {
    Healthy,
    Repaired,
    Damaged,
    Failed,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Healthy => "healthy",
            RunResult::Repaired => "repaired",
            RunResult::Damaged => "damaged",
            RunResult::Failed => "failed",
        }
    }
}

/// The next step of a run in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// Nodes whose repair is created now (in name order).
    pub create: Vec<String>,
    pub tally: Tally,
    /// Nodes in the run: those with a repair, and those still waiting for one.
    pub nodes: u32,
    /// Every node has a finished repair.
    pub complete: bool,
}

/// `repairs`: the node and verdict of each repair the run has; `eligible`: the nodes selected for
/// it (name order). A node with a repair is never given a second one; a selected node without
/// one gets it when fewer than `max_concurrent` repairs are unfinished.
pub fn plan_run(
    max_concurrent: u32,
    repairs: &BTreeMap<String, Verdict>,
    eligible: &BTreeSet<String>,
) -> RunPlan {
    let tally = Tally::of(repairs.values().copied());
    let waiting: Vec<&String> = eligible
        .iter()
        .filter(|n| !repairs.contains_key(*n))
        .collect();
    let room = max_concurrent.max(1).saturating_sub(tally.unfinished) as usize;
    RunPlan {
        create: waiting.iter().take(room).map(|n| n.to_string()).collect(),
        tally,
        nodes: u32::try_from(repairs.len() + waiting.len()).unwrap_or(u32::MAX),
        complete: tally.unfinished == 0 && waiting.is_empty(),
    }
}

/// The runs whose repairs are deleted: all but the newest `keep` (ids sort by time). The run
/// in progress is always among the kept, being the newest.
pub fn runs_to_prune(runs: &BTreeSet<String>, keep: u32) -> Vec<String> {
    runs.iter()
        .rev()
        .skip(keep.max(1) as usize)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapmend_crds::{
        ContentCheck, RepairAction, Report, RequestReport, SnapshotRepairStatus, SnapshotScanSpec,
    };

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn run_ids_sort_by_time_and_never_repeat() {
        let a = run_id(t("2026-12-07T09:30:00Z"), None);
        assert_eq!(a, "20261207-093000");
        let b = run_id(t("2026-12-07T09:30:00.400Z"), Some(&a));
        assert_eq!(b, "20261207-093001", "same second: one later");
        let c = run_id(t("2026-12-07T10:00:00Z"), Some(&b));
        assert_eq!(c, "20261207-100000");
        assert!(a < b && b < c);
        assert_eq!(run_id(t("2026-12-07T10:00:00Z"), Some("garbage")), c);
    }

    #[test]
    fn repair_names_are_deterministic_valid_and_bounded() {
        assert_eq!(
            repair_name("nightly", "20261207-093000", "node-a"),
            "nightly-20261207-093000-node-a"
        );
        let scan = "s".repeat(200);
        let (n1, n2) = ("a".repeat(200), "b".repeat(200));
        let (x, y) = (
            repair_name(&scan, "20261207-093000", &n1),
            repair_name(&scan, "20261207-093000", &n2),
        );
        assert!(x.len() <= 253 && y.len() <= 253);
        assert_ne!(x, y);
        assert_eq!(x, repair_name(&scan, "20261207-093000", &n1));
        assert!(x.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    fn scan(name: &str) -> SnapshotScan {
        let mut s = SnapshotScan::new(
            name,
            SnapshotScanSpec {
                schedule: "0 3 * * *".into(),
                node_selector: None,
                action: RepairAction::Repair,
                content_check: ContentCheck::Full,
                max_concurrent_nodes: 1,
                suspend: false,
                history_limit: 3,
            },
        );
        s.metadata.uid = Some("uid-1".into());
        s
    }

    #[test]
    fn repairs_are_all_images_owned_and_labelled() {
        let sr = build_repair(&scan("nightly"), "20261207-093000", "node-a");
        assert_eq!(sr.name_any(), "nightly-20261207-093000-node-a");
        assert!(sr.spec.all_images && sr.spec.image.is_none() && !sr.spec.sandbox_image);
        assert_eq!(sr.spec.action, RepairAction::Repair);
        assert_eq!(sr.spec.content_check, ContentCheck::Full);
        assert_eq!(sr.spec.target(), "all");
        let labels = sr.labels();
        assert_eq!(labels[SCAN_LABEL], "nightly");
        assert_eq!(labels[SCAN_RUN_LABEL], "20261207-093000");
        assert_eq!(labels[NODE_LABEL], "node-a");
        let owner = &sr.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("SnapshotScan", "uid-1")
        );
        assert_eq!(owner.api_version, "snapmend.io/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        // A name too long for a label value is left off, not cut.
        let long = build_repair(&scan(&"s".repeat(70)), "20261207-093000", "node-a");
        assert!(!long.labels().contains_key(SCAN_LABEL));
        assert_eq!(long.labels()[SCAN_RUN_LABEL], "20261207-093000");
    }

    fn finished(phase: Option<Phase>, outcome: Option<Outcome>) -> SnapshotRepair {
        let mut sr = build_repair(&scan("s"), "r", "n");
        sr.status = Some(SnapshotRepairStatus {
            phase,
            report: outcome.map(|outcome| RequestReport {
                request_id: "1".into(),
                report: Report {
                    outcome,
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
        sr
    }

    #[test]
    fn verdicts_come_from_phase_and_outcome() {
        let cases = [
            (None, None, Verdict::Unfinished),
            (Some(Phase::Pending), None, Verdict::Unfinished),
            (
                Some(Phase::Verifying),
                Some(Outcome::Corrupted),
                Verdict::Unfinished,
            ),
            (
                Some(Phase::Repairing),
                Some(Outcome::Corrupted),
                Verdict::Unfinished,
            ),
            (
                Some(Phase::Succeeded),
                Some(Outcome::Healthy),
                Verdict::Healthy,
            ),
            (
                Some(Phase::Succeeded),
                Some(Outcome::Corrupted),
                Verdict::Damaged,
            ),
            (
                Some(Phase::Succeeded),
                Some(Outcome::Unrepairable),
                Verdict::Damaged,
            ),
            (
                Some(Phase::Succeeded),
                Some(Outcome::Repaired),
                Verdict::Repaired,
            ),
            (
                Some(Phase::Succeeded),
                Some(Outcome::Error),
                Verdict::Failed,
            ),
            (Some(Phase::Succeeded), None, Verdict::Failed),
            (Some(Phase::Failed), Some(Outcome::Healthy), Verdict::Failed),
            (Some(Phase::Failed), None, Verdict::Failed),
        ];
        for (phase, outcome, want) in cases {
            assert_eq!(
                verdict(&finished(phase, outcome)),
                want,
                "{phase:?} {outcome:?}"
            );
        }
        let mut no_status = finished(None, None);
        no_status.status = None;
        assert_eq!(verdict(&no_status), Verdict::Unfinished);
    }

    #[test]
    fn the_worst_verdict_is_the_run_result() {
        use Verdict::*;
        assert_eq!(Tally::of([]).result(), RunResult::Healthy);
        assert_eq!(Tally::of([Healthy, Repaired]).result(), RunResult::Repaired);
        assert_eq!(
            Tally::of([Repaired, Damaged, Healthy]).result(),
            RunResult::Damaged
        );
        assert_eq!(Tally::of([Damaged, Failed]).result(), RunResult::Failed);
        let t = Tally::of([Healthy, Healthy, Damaged, Unfinished]);
        assert_eq!(
            (t.healthy, t.damaged, t.unfinished, t.failed, t.repaired),
            (2, 1, 1, 0, 0)
        );
    }

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn repairs(entries: &[(&str, Verdict)]) -> BTreeMap<String, Verdict> {
        entries.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn a_run_creates_at_most_max_concurrent_unfinished_repairs() {
        let all = nodes(&["a", "b", "c"]);
        let start = plan_run(1, &repairs(&[]), &all);
        assert_eq!(start.create, ["a"]);
        assert_eq!((start.nodes, start.complete), (3, false));
        let busy = plan_run(1, &repairs(&[("a", Verdict::Unfinished)]), &all);
        assert!(busy.create.is_empty(), "one unfinished: wait");
        let next = plan_run(1, &repairs(&[("a", Verdict::Healthy)]), &all);
        assert_eq!(next.create, ["b"]);
        let two = plan_run(2, &repairs(&[("a", Verdict::Unfinished)]), &all);
        assert_eq!(two.create, ["b"]);
        let wide = plan_run(10, &repairs(&[]), &all);
        assert_eq!(wide.create, ["a", "b", "c"]);
        let zero = plan_run(0, &repairs(&[]), &all);
        assert_eq!(zero.create, ["a"], "0 is taken as 1");
    }

    #[test]
    fn a_run_completes_when_every_node_has_a_finished_repair() {
        let all = nodes(&["a", "b"]);
        let done = plan_run(
            1,
            &repairs(&[("a", Verdict::Damaged), ("b", Verdict::Failed)]),
            &all,
        );
        assert!(done.complete && done.create.is_empty());
        assert_eq!(
            (done.tally.damaged, done.tally.failed, done.nodes),
            (1, 1, 2)
        );
        // A node that left the selection after its repair was made still counts; one that
        // left before is not waited for.
        let left = plan_run(1, &repairs(&[("a", Verdict::Healthy)]), &nodes(&["b"]));
        assert_eq!(left.create, ["b"]);
        assert_eq!(left.nodes, 2);
        let empty = plan_run(1, &repairs(&[]), &nodes(&[]));
        assert!(empty.complete);
        assert_eq!(empty.nodes, 0);
    }

    #[test]
    fn only_the_newest_runs_are_kept() {
        let runs: BTreeSet<String> = ["20261201-000000", "20261202-000000", "20261203-000000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(runs_to_prune(&runs, 3), Vec::<String>::new());
        assert_eq!(runs_to_prune(&runs, 2), ["20261201-000000"]);
        assert_eq!(
            runs_to_prune(&runs, 1),
            ["20261202-000000", "20261201-000000"]
        );
        assert_eq!(runs_to_prune(&runs, 0).len(), 2, "0 is taken as 1");
    }
}
