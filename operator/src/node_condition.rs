//! The Node condition `SnapshotsDamaged`: what the last finished SnapshotRepair on a node found,
//! shown where other tools look (node-problem-detector writes its own conditions the same way).
//!
//! Pure decisions here; `reconcile` writes the result with a strategic merge patch of
//! `nodes/status` that carries this one condition only (conditions merge by `type`, so the
//! kubelet's Ready, MemoryPressure, ... and other writers' conditions are never touched).

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use snapmend_crds::SnapshotRepairStatus;

use crate::conditions::{self, REPAIRED, VERIFIED};

pub const SNAPSHOTS_DAMAGED: &str = "SnapshotsDamaged";
pub const DAMAGE_FOUND: &str = "SnapshotDamageFound";
pub const VERIFIED_HEALTHY: &str = "SnapshotsVerified";
pub const REPAIRED_OK: &str = "SnapshotsRepaired";

/// The SnapshotRepair's own `Verified` reasons that mean damage was found.
const DAMAGE_VERDICTS: [&str; 2] = ["Corrupted", "Unrepairable"];

/// What one finished SnapshotRepair says about its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub damaged: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn status(&self) -> &'static str {
        if self.damaged { "True" } else { "False" }
    }
}

/// The node's verdict from a SnapshotRepair `name` with `status`; None while it runs, and for a
/// repair that ended without learning anything about the snapshots (the helper never answered,
/// the node is gone): that must not overwrite what an earlier repair found.
pub fn decide(name: &str, status: &SnapshotRepairStatus) -> Option<Verdict> {
    if !status.phase.is_some_and(|p| p.is_terminal()) {
        return None;
    }
    let target = match status.target.as_deref() {
        Some(snapmend_crds::scan_summary::ALL_IMAGES) => "all images",
        Some(target) => target,
        None => "its target",
    };
    let findings = status.findings.as_deref().unwrap_or("none");
    let verified = conditions::get(&status.conditions, VERIFIED);
    let repaired = conditions::get(&status.conditions, REPAIRED);
    let verdict = |damaged, reason, message: String| {
        Some(Verdict {
            damaged,
            reason,
            message,
        })
    };
    match (verified, repaired) {
        (_, Some(r)) if r.status == "True" && r.reason == "Repaired" => verdict(
            false,
            REPAIRED_OK,
            format!("SnapshotRepair {name} repaired {target}; findings: {findings}"),
        ),
        (_, Some(r)) if r.status == "True" => verdict(
            false,
            VERIFIED_HEALTHY,
            format!(
                "SnapshotRepair {name} found {target} healthy at repair time; findings: {findings}"
            ),
        ),
        (Some(v), _) if v.status == "False" && DAMAGE_VERDICTS.contains(&v.reason.as_str()) => {
            let why = match conditions::get(&status.conditions, conditions::READY) {
                Some(ready) if ready.status == "True" => "not repaired (action Verify)".to_string(),
                Some(ready) => format!("not repaired ({})", ready.reason),
                None => "not repaired".to_string(),
            };
            verdict(
                true,
                DAMAGE_FOUND,
                format!(
                    "SnapshotRepair {name} found {target} damaged, {why}; findings: {findings}"
                ),
            )
        }
        (Some(v), _) if v.status == "True" => verdict(
            false,
            VERIFIED_HEALTHY,
            format!("SnapshotRepair {name} verified {target} healthy; findings: {findings}"),
        ),
        _ => None,
    }
}

/// A finished repair with a verdict, as `speaks_for_node` compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished<'a> {
    pub name: &'a str,
    pub completion: Option<&'a Time>,
}

impl Finished<'_> {
    fn key(&self) -> (Option<Timestamp>, &str) {
        (self.completion.map(|t| t.0), self.name)
    }
}

/// Whether `me` is the last finished repair (with a verdict) of its node: only that one writes
/// the condition, so an older repair reconciled later (after a restart, say) never overwrites
/// a newer finding. Ties in the whole-second completion time go to the greater name.
pub fn speaks_for_node<'a>(
    me: Finished<'a>,
    others: impl IntoIterator<Item = Finished<'a>>,
) -> bool {
    others
        .into_iter()
        .filter(|o| o.name != me.name)
        .all(|o| o.key() <= me.key())
}

/// The node's current `SnapshotsDamaged` condition.
pub fn current(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == SNAPSHOTS_DAMAGED)
}

/// Whether the node must be told: not when it already shows this verdict (written once per
/// finished repair, not on every reconcile), and not when the condition was written after
/// this repair finished (a newer repair, since deleted, spoke last).
pub fn needs_write(
    verdict: &Verdict,
    completion: Option<&Time>,
    current: Option<&NodeCondition>,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let same = current.status == verdict.status()
        && current.reason.as_deref() == Some(verdict.reason)
        && current.message.as_deref() == Some(verdict.message.as_str());
    if same {
        return false;
    }
    match (&current.last_heartbeat_time, completion) {
        (Some(written), Some(finished)) => written.0 <= finished.0,
        _ => true,
    }
}

/// The condition to write: `lastTransitionTime` moves only when the status changes,
/// `lastHeartbeatTime` on every write.
pub fn condition(
    verdict: &Verdict,
    current: Option<&NodeCondition>,
    now: Timestamp,
) -> NodeCondition {
    let transition = match current {
        Some(c) if c.status == verdict.status() && c.last_transition_time.is_some() => {
            c.last_transition_time.clone()
        }
        _ => Some(Time(now)),
    };
    NodeCondition {
        type_: SNAPSHOTS_DAMAGED.to_string(),
        status: verdict.status().to_string(),
        reason: Some(verdict.reason.to_string()),
        message: Some(verdict.message.clone()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: transition,
    }
}

/// The strategic merge patch of `nodes/status` carrying this one condition (merged by `type`).
pub fn status_patch(condition: &NodeCondition) -> serde_json::Value {
    json!({ "status": { "conditions": [condition] } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{READY, Status, set};
    use k8s_openapi::api::core::v1::NodeStatus;
    use snapmend_crds::Phase;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// A status with `phase` and the given (type, status, reason) conditions.
    fn status(phase: Option<Phase>, conds: &[(&str, Status, &str)]) -> SnapshotRepairStatus {
        let mut s = SnapshotRepairStatus {
            phase,
            target: Some("registry.k8s.io/pause:3.10".into()),
            findings: Some("1 missing".into()),
            completion_time: Some(Time(t(0))),
            ..Default::default()
        };
        for (type_, st, reason) in conds {
            set(&mut s.conditions, type_, *st, reason, "", None, t(0));
        }
        s
    }

    use Status::{False, True, Unknown};

    /// A phase, the repair's conditions, and the expected (damaged, reason).
    type Case = (
        Option<Phase>,
        Vec<(&'static str, Status, &'static str)>,
        Option<(bool, &'static str)>,
    );

    #[test]
    fn every_way_a_repair_ends_maps_to_one_verdict() {
        let s = Some(Phase::Succeeded);
        let f = Some(Phase::Failed);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Verify or Repair action, found healthy.
            (s, vec![(VERIFIED, True, "Healthy"), (READY, True, "Healthy")], Some((false, VERIFIED_HEALTHY))),
            // Verify action found damage: not repaired.
            (s, vec![(VERIFIED, False, "Corrupted"), (READY, True, "Verified")], Some((true, DAMAGE_FOUND))),
            (s, vec![(VERIFIED, False, "Unrepairable"), (READY, True, "Verified")], Some((true, DAMAGE_FOUND))),
            // Repaired, or already healthy when the repair ran.
            (s, vec![(VERIFIED, False, "Corrupted"), (REPAIRED, True, "Repaired"), (READY, True, "Repaired")], Some((false, REPAIRED_OK))),
            (s, vec![(VERIFIED, False, "Corrupted"), (REPAIRED, True, "NothingToRepair"), (READY, True, "NothingToRepair")], Some((false, VERIFIED_HEALTHY))),
            // Failed repairs of found damage: damage stays.
            (f, vec![(VERIFIED, False, "Corrupted"), (REPAIRED, False, "Unrepairable"), (READY, False, "Unrepairable")], Some((true, DAMAGE_FOUND))),
            (f, vec![(VERIFIED, False, "Corrupted"), (REPAIRED, False, "RepairIncomplete"), (READY, False, "RepairIncomplete")], Some((true, DAMAGE_FOUND))),
            (f, vec![(VERIFIED, False, "Corrupted"), (REPAIRED, False, "HelperUnavailable"), (READY, False, "HelperUnavailable")], Some((true, DAMAGE_FOUND))),
            (f, vec![(VERIFIED, False, "Unrepairable"), (READY, False, "NodeNotFound")], Some((true, DAMAGE_FOUND))),
            // Repaired, then failed uncordoning: the snapshots are repaired.
            (f, vec![(VERIFIED, False, "Corrupted"), (REPAIRED, True, "Repaired"), (READY, False, "HelperError")], Some((false, REPAIRED_OK))),
            // Failed before anything was learned: the node keeps what it showed.
            (f, vec![(VERIFIED, False, "HelperError"), (READY, False, "HelperError")], None),
            (f, vec![(VERIFIED, False, "HelperUnavailable"), (READY, False, "HelperUnavailable")], None),
            (f, vec![(READY, False, "NodeNotFound")], None),
            (f, vec![], None),
            // Still running: nothing to say yet, whatever the conditions already show.
            (None, vec![], None),
            (Some(Phase::Pending), vec![], None),
            (Some(Phase::Verifying), vec![(VERIFIED, Unknown, "Verifying")], None),
            (Some(Phase::Cordoning), vec![(VERIFIED, False, "Corrupted")], None),
            (Some(Phase::Repairing), vec![(VERIFIED, False, "Corrupted"), (REPAIRED, Unknown, "Repairing")], None),
            (Some(Phase::Uncordoning), vec![(VERIFIED, False, "Corrupted"), (REPAIRED, True, "Repaired")], None),
        ];
        for (phase, conds, want) in cases {
            let got = decide("sr-1", &status(phase, &conds));
            assert_eq!(
                got.as_ref().map(|v| (v.damaged, v.reason)),
                want,
                "{phase:?} {conds:?}"
            );
            if let Some(v) = got {
                assert!(v.message.contains("SnapshotRepair sr-1"), "{}", v.message);
                assert!(
                    v.message.contains("registry.k8s.io/pause:3.10"),
                    "{}",
                    v.message
                );
                assert!(v.message.ends_with("findings: 1 missing"), "{}", v.message);
                assert_eq!(v.status(), if v.damaged { "True" } else { "False" });
            }
        }
    }

    #[test]
    fn a_scan_of_all_images_names_them_so() {
        let mut st = status(
            Some(Phase::Succeeded),
            &[(VERIFIED, False, "Corrupted"), (READY, True, "Verified")],
        );
        st.target = Some("all".into());
        st.findings = Some("2/14 images damaged".into());
        let v = decide("node-a-scan", &st).unwrap();
        assert_eq!((v.damaged, v.reason), (true, DAMAGE_FOUND));
        assert_eq!(
            v.message,
            "SnapshotRepair node-a-scan found all images damaged, not repaired (action Verify); findings: 2/14 images damaged"
        );
    }

    #[test]
    fn messages_say_why_damage_was_left() {
        let verify = decide(
            "v",
            &status(
                Some(Phase::Succeeded),
                &[(VERIFIED, False, "Corrupted"), (READY, True, "Verified")],
            ),
        )
        .unwrap();
        assert!(
            verify.message.contains("not repaired (action Verify)"),
            "{}",
            verify.message
        );
        let failed = decide(
            "r",
            &status(
                Some(Phase::Failed),
                &[
                    (VERIFIED, False, "Corrupted"),
                    (READY, False, "Unrepairable"),
                ],
            ),
        )
        .unwrap();
        assert!(
            failed.message.contains("not repaired (Unrepairable)"),
            "{}",
            failed.message
        );
    }

    fn done<'a>(name: &'a str, at: Option<&'a Time>) -> Finished<'a> {
        Finished {
            name,
            completion: at,
        }
    }

    #[test]
    fn only_the_last_finished_repair_speaks() {
        let (a, b) = (Time(t(10)), Time(t(20)));
        assert!(speaks_for_node(done("x", Some(&b)), [done("y", Some(&a))]));
        assert!(!speaks_for_node(done("y", Some(&a)), [done("x", Some(&b))]));
        assert!(speaks_for_node(done("x", Some(&a)), []), "alone");
        assert!(
            speaks_for_node(done("x", Some(&a)), [done("x", Some(&b))]),
            "its own older copy does not count"
        );
        // Same second: the greater name, so exactly one of the two writes.
        assert!(speaks_for_node(done("b", Some(&a)), [done("a", Some(&a))]));
        assert!(!speaks_for_node(done("a", Some(&a)), [done("b", Some(&a))]));
        // A completion time beats none.
        assert!(speaks_for_node(done("a", Some(&a)), [done("z", None)]));
        assert!(!speaks_for_node(done("z", None), [done("a", Some(&a))]));
    }

    fn verdict(damaged: bool, reason: &'static str, message: &str) -> Verdict {
        Verdict {
            damaged,
            reason,
            message: message.into(),
        }
    }

    #[test]
    fn a_verdict_is_written_once_and_never_over_a_newer_one() {
        let v = verdict(true, DAMAGE_FOUND, "SnapshotRepair a ...");
        let finished = Time(t(10));
        assert!(needs_write(&v, Some(&finished), None), "no condition yet");
        let written = condition(&v, None, t(11));
        assert!(
            !needs_write(&v, Some(&finished), Some(&written)),
            "already shown"
        );
        // Another repair's verdict written before this one finished: replace it.
        let older = condition(&verdict(false, VERIFIED_HEALTHY, "b"), None, t(5));
        assert!(needs_write(&v, Some(&finished), Some(&older)));
        // Written in the same second this one finished: still replace.
        let same_second = condition(&verdict(false, VERIFIED_HEALTHY, "b"), None, t(10));
        assert!(needs_write(&v, Some(&finished), Some(&same_second)));
        // Written after this one finished, by a newer repair: leave it.
        let newer = condition(&verdict(false, REPAIRED_OK, "c"), None, t(12));
        assert!(!needs_write(&v, Some(&finished), Some(&newer)));
        // Heartbeat unknown (written by hand, say): this repair's verdict wins.
        let mut by_hand = newer.clone();
        by_hand.last_heartbeat_time = None;
        assert!(needs_write(&v, Some(&finished), Some(&by_hand)));
        // Same status and reason but another repair's message: written (it names the repair).
        let other = condition(&verdict(true, DAMAGE_FOUND, "SnapshotRepair z"), None, t(9));
        assert!(needs_write(&v, Some(&finished), Some(&other)));
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let damaged = verdict(true, DAMAGE_FOUND, "a");
        let first = condition(&damaged, None, t(1));
        assert_eq!(first.type_, SNAPSHOTS_DAMAGED);
        assert_eq!(first.status, "True");
        assert_eq!(first.reason.as_deref(), Some(DAMAGE_FOUND));
        assert_eq!(first.message.as_deref(), Some("a"));
        assert_eq!(first.last_transition_time, Some(Time(t(1))));
        assert_eq!(first.last_heartbeat_time, Some(Time(t(1))));
        let again = condition(&verdict(true, DAMAGE_FOUND, "b"), Some(&first), t(5));
        assert_eq!(again.last_transition_time, Some(Time(t(1))), "still True");
        assert_eq!(again.last_heartbeat_time, Some(Time(t(5))));
        let repaired = condition(&verdict(false, REPAIRED_OK, "c"), Some(&again), t(9));
        assert_eq!(repaired.status, "False");
        assert_eq!(repaired.last_transition_time, Some(Time(t(9))));
        assert_eq!(repaired.last_heartbeat_time, Some(Time(t(9))));
        let mut no_time = repaired.clone();
        no_time.last_transition_time = None;
        let healthy = condition(
            &verdict(false, VERIFIED_HEALTHY, "d"),
            Some(&no_time),
            t(12),
        );
        assert_eq!(
            healthy.last_transition_time,
            Some(Time(t(12))),
            "a missing time is set"
        );
    }

    #[test]
    fn the_patch_carries_only_this_condition() {
        let c = condition(&verdict(true, DAMAGE_FOUND, "m"), None, t(1));
        let patch = status_patch(&c);
        assert_eq!(patch.as_object().unwrap().len(), 1);
        let status = patch["status"].as_object().unwrap();
        assert_eq!(status.len(), 1);
        let conds = status["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0]["type"], SNAPSHOTS_DAMAGED);
        assert_eq!(conds[0]["status"], "True");
        assert_eq!(conds[0]["reason"], DAMAGE_FOUND);
        assert!(conds[0]["lastHeartbeatTime"].is_string());
        assert!(conds[0]["lastTransitionTime"].is_string());
    }

    #[test]
    fn current_finds_the_condition_among_the_kubelets() {
        let mut node = Node::default();
        assert!(current(&node).is_none());
        let ours = condition(&verdict(false, REPAIRED_OK, "m"), None, t(1));
        node.status = Some(NodeStatus {
            conditions: Some(vec![
                NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                },
                ours.clone(),
            ]),
            ..Default::default()
        });
        assert_eq!(current(&node), Some(&ours));
    }
}
