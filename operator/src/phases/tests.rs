//! Every phase against every kind of observation, plus whole flows driven through the machine.

use super::*;
use snapmend_crds::{ContentCheck, LayerReport, LayerState, RequestReport};
use snapmend_crds::{Finding, FindingKind};

const NAME: &str = "node-a-pause";
const NODE: &str = "node-a";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn spec() -> SnapshotRepairSpec {
    SnapshotRepairSpec {
        node_name: NODE.into(),
        image: Some("registry.k8s.io/pause:3.10".into()),
        sandbox_image: false,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: ContentCheck::Full,
        pull_secrets: Vec::new(),
    }
}

fn report(outcome: Outcome) -> Report {
    let damaged = matches!(
        outcome,
        Outcome::Corrupted | Outcome::Unrepairable | Outcome::Repaired
    );
    let findings = if damaged {
        vec![Finding {
            path: "/pause".into(),
            kind: FindingKind::Missing,
            detail: String::new(),
        }]
    } else {
        vec![]
    };
    Report {
        image: "registry.k8s.io/pause:3.10".into(),
        outcome,
        layers: vec![LayerReport {
            findings_total: findings.len() as u64,
            findings,
            state: match outcome {
                Outcome::Corrupted => LayerState::Corrupted,
                Outcome::Unrepairable => LayerState::Unrepairable,
                Outcome::Repaired => LayerState::Repaired,
                _ => LayerState::Healthy,
            },
            ..Default::default()
        }],
        message: (outcome == Outcome::Unrepairable || outcome == Outcome::Error)
            .then(|| "blob sha256:abc has the wrong digest".to_string()),
        ..Default::default()
    }
}

/// One observation, with builders for each dimension.
#[derive(Clone)]
struct World {
    spec: SnapshotRepairSpec,
    status: SnapshotRepairStatus,
    node: Option<NodeFacts>,
    helper: HelperPresence,
    budget: CordonBudget,
    now: Timestamp,
    settings: Settings,
    successor: Option<&'static str>,
    pull_secret: PullSecretState,
}

impl World {
    fn new() -> Self {
        World {
            spec: spec(),
            status: SnapshotRepairStatus::default(),
            node: Some(NodeFacts::default()),
            helper: HelperPresence::Present,
            budget: CordonBudget {
                cordoned_now: 0,
                max: 1,
            },
            now: t(0),
            settings: Settings {
                helper_timeout: Duration::from_secs(300),
                scan_timeout: Duration::from_secs(3600),
                failure_policy: FailurePolicy::KeepCordoned,
            },
            successor: None,
            pull_secret: PullSecretState::NotRequested,
        }
    }

    fn pull_secret(mut self, state: PullSecretState) -> Self {
        self.pull_secret = state;
        self
    }

    fn successor(mut self, next: &'static str) -> Self {
        self.successor = Some(next);
        self
    }

    fn decide(&self) -> Step {
        next_step(&Observed {
            name: NAME,
            generation: Some(1),
            spec: &self.spec,
            status: &self.status,
            node: self.node.as_ref(),
            helper: self.helper.clone(),
            budget: self.budget,
            now: self.now,
            settings: self.settings,
            successor: self.successor,
            lease_namespace: "snapmend-system",
            pull_secret: self.pull_secret.clone(),
        })
    }

    fn in_phase(mut self, phase: Phase, request: Option<(&str, RepairAction)>) -> Self {
        self.status.phase = Some(phase);
        self.status.start_time = Some(Time(t(0)));
        if let Some((id, action)) = request {
            self.status.request = Some(RepairRequest {
                id: id.into(),
                action,
                pull_secret: None,
            });
            self.status.request_time = Some(Time(t(0)));
        }
        // The conditions the machine would have set on the way to this phase.
        let c = &mut self.status.conditions;
        match phase {
            Phase::Verifying => {
                conditions::set(c, VERIFIED, Status::Unknown, "Verifying", "", None, t(0))
            }
            Phase::Cordoning | Phase::Repairing | Phase::Uncordoning => {
                conditions::set(c, VERIFIED, Status::False, "Corrupted", "", None, t(0))
            }
            _ => {}
        }
        if phase == Phase::Repairing {
            conditions::set(c, REPAIRED, Status::Unknown, "Repairing", "", None, t(0));
        }
        self
    }

    fn answered(mut self, id: &str, outcome: Outcome) -> Self {
        self.status.report = Some(RequestReport {
            request_id: id.into(),
            report: report(outcome),
        });
        self
    }

    /// The report names the culprit guard's attribution on every layer.
    fn with_culprit(mut self) -> Self {
        if let Some(r) = self.status.report.as_mut() {
            for l in &mut r.report.layers {
                l.snapshot_id = Some("1".into());
                l.culprit = Some(cron_cleanup());
            }
        }
        self
    }

    fn at(mut self, secs: i64) -> Self {
        self.now = t(secs);
        self
    }

    fn node(mut self, unschedulable: bool, cordoned_by: Option<&str>) -> Self {
        self.node = Some(NodeFacts {
            unschedulable,
            cordoned_by: cordoned_by.map(str::to_string),
        });
        self
    }

    fn no_node(mut self) -> Self {
        self.node = None;
        self
    }

    fn ours(self) -> Self {
        self.node(true, Some(NAME))
    }

    fn helper(mut self, h: HelperPresence) -> Self {
        self.helper = h;
        self
    }

    fn budget(mut self, now: u32, max: u32) -> Self {
        self.budget = CordonBudget {
            cordoned_now: now,
            max,
        };
        self
    }

    fn action(mut self, a: RepairAction) -> Self {
        self.spec.action = a;
        self
    }

    fn no_cordon(mut self) -> Self {
        self.spec.cordon = false;
        self
    }

    fn policy(mut self, p: FailurePolicy) -> Self {
        self.settings.failure_policy = p;
        self
    }
}

fn phase(s: &Step) -> Phase {
    s.status.phase.unwrap()
}

fn cond<'a>(
    s: &'a Step,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions::get(&s.status.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

fn reasons(s: &Step) -> Vec<&'static str> {
    s.events.iter().map(|e| e.reason).collect()
}

fn message(s: &Step) -> &str {
    s.status.message.as_deref().unwrap()
}

fn request(s: &Step) -> (String, RepairAction) {
    let r = s.status.request.as_ref().unwrap();
    (r.id.clone(), r.action)
}

fn assert_failed(s: &Step, why: &str) {
    assert_eq!(phase(s), Phase::Failed, "{:?}", s.status.message);
    let ready = cond(s, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", why)
    );
    assert!(
        s.events
            .iter()
            .any(|e| e.kind == EventKind::Warning && e.reason == why),
        "{:?}",
        s.events
    );
    assert!(s.status.completion_time.is_some());
    assert_eq!(s.requeue_after, None);
}

// ---- helpers ----

#[test]
fn request_ids_count_up_and_survive_odd_values() {
    assert_eq!(next_request_id(None), "1");
    let r = |id: &str| RepairRequest {
        id: id.into(),
        action: RepairAction::Verify,
        pull_secret: None,
    };
    assert_eq!(next_request_id(Some(&r("1"))), "2");
    assert_eq!(next_request_id(Some(&r("41"))), "42");
    assert_eq!(next_request_id(Some(&r("abc"))), "1");
}

#[test]
fn current_report_only_answers_the_current_request() {
    let w = World::new().in_phase(Phase::Verifying, Some(("2", RepairAction::Verify)));
    assert!(current_report(&w.status).is_none());
    let old = w.clone().answered("1", Outcome::Healthy);
    assert!(current_report(&old.status).is_none());
    let now = w.answered("2", Outcome::Healthy);
    assert_eq!(
        current_report(&now.status).unwrap().outcome,
        Outcome::Healthy
    );
}

#[test]
fn cleanup_uncordons_only_its_own_cordon() {
    let ours = NodeFacts {
        unschedulable: true,
        cordoned_by: Some(NAME.into()),
    };
    let other = NodeFacts {
        unschedulable: true,
        cordoned_by: Some("other".into()),
    };
    let manual = NodeFacts {
        unschedulable: true,
        cordoned_by: None,
    };
    assert_eq!(
        cleanup_intent(NAME, Some(&ours), None),
        NodeIntent::Uncordon
    );
    assert_eq!(
        cleanup_intent(NAME, Some(&ours), Some("sibling")),
        NodeIntent::HandOver("sibling".into())
    );
    for successor in [None, Some("sibling")] {
        assert_eq!(
            cleanup_intent(NAME, Some(&other), successor),
            NodeIntent::Leave
        );
        assert_eq!(
            cleanup_intent(NAME, Some(&manual), successor),
            NodeIntent::Leave
        );
        assert_eq!(
            cleanup_intent(NAME, Some(&NodeFacts::default()), successor),
            NodeIntent::Leave
        );
        assert_eq!(cleanup_intent(NAME, None, successor), NodeIntent::Leave);
    }
}

// ---- Pending ----

#[test]
fn pending_requests_a_verification() {
    let s = World::new().decide();
    assert_eq!(phase(&s), Phase::Verifying);
    assert_eq!(request(&s), ("1".to_string(), RepairAction::Verify));
    assert_eq!(s.status.request_time, Some(Time(t(0))));
    assert_eq!(s.status.start_time, Some(Time(t(0))));
    assert_eq!(
        s.status.target.as_deref(),
        Some("registry.k8s.io/pause:3.10")
    );
    assert_eq!(s.status.observed_generation, Some(1));
    assert_eq!(s.node, NodeIntent::Leave);
    assert_eq!(cond(&s, VERIFIED).status, "Unknown");
    assert_eq!(cond(&s, READY).reason, "Verifying");
    assert_eq!(reasons(&s), ["VerifyRequested"]);
    assert!(s.requeue_after.unwrap() <= Duration::from_secs(10));
}

#[test]
fn requests_name_the_pull_secret_copy() {
    let copy = PullSecretState::Ready("snapmend-pull-node-a-pause".into());
    let s = World::new().pull_secret(copy.clone()).decide();
    let pull = |s: &Step| {
        s.status
            .request
            .as_ref()
            .and_then(|r| r.pull_secret.clone())
    };
    assert_eq!(phase(&s), Phase::Verifying);
    assert_eq!(pull(&s).as_deref(), Some("snapmend-pull-node-a-pause"));
    // The repair request after a damaged verification names it too.
    let s = World::new()
        .in_phase(Phase::Verifying, Some(("1", RepairAction::Verify)))
        .answered("1", Outcome::Corrupted)
        .no_cordon()
        .pull_secret(copy)
        .decide();
    assert_eq!(request(&s), ("2".to_string(), RepairAction::Repair));
    assert_eq!(pull(&s).as_deref(), Some("snapmend-pull-node-a-pause"));
    assert_eq!(pull(&World::new().decide()), None);
}

#[test]
fn an_unusable_pull_secret_fails_before_any_request() {
    let why = "pull secret app/regcred not found";
    let s = World::new()
        .pull_secret(PullSecretState::Unusable(why.into()))
        .decide();
    assert_failed(&s, reason::PULL_SECRET_UNUSABLE);
    assert!(message(&s).starts_with(why), "{}", message(&s));
    assert_eq!(s.status.request, None, "the agent is never asked");
    assert_eq!(s.node, NodeIntent::Leave);
}

#[test]
fn sandbox_target_is_named_sandbox() {
    let mut w = World::new();
    w.spec.image = None;
    w.spec.sandbox_image = true;
    assert_eq!(w.decide().status.target.as_deref(), Some("sandbox"));
}

#[test]
fn pending_without_node_fails() {
    let s = World::new().no_node().decide();
    assert_failed(&s, reason::NODE_NOT_FOUND);
    assert!(message(&s).contains("node node-a does not exist"));
    assert!(s.status.request.is_none());
}

#[test]
fn pending_without_helper_lease_fails_helper_unavailable() {
    let s = World::new().helper(HelperPresence::NoLease).decide();
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert!(
        message(&s).contains("snapmend-system/snapmend-node-helper.node-a does not exist"),
        "{}",
        message(&s)
    );
    assert!(
        s.status.request.is_none(),
        "no request is sent to an absent helper"
    );
    assert_eq!(s.node, NodeIntent::Leave);
}

#[test]
fn pending_with_stale_lease_fails_and_says_how_old() {
    let s = World::new()
        .helper(HelperPresence::Stale(Duration::from_secs(75)))
        .decide();
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert!(
        message(&s).contains("last renewed 1m15s ago"),
        "{}",
        message(&s)
    );
}

#[test]
fn pending_continues_request_numbering() {
    let w = World::new().in_phase(Phase::Pending, Some(("7", RepairAction::Repair)));
    assert_eq!(request(&w.decide()).0, "8");
}

#[test]
fn pending_parked_by_cap_cordons_when_a_slot_frees() {
    let w = World::new()
        .in_phase(Phase::Pending, Some(("1", RepairAction::Verify)))
        .answered("1", Outcome::Corrupted);
    let s = w.clone().budget(0, 1).decide();
    assert_eq!(phase(&s), Phase::Cordoning);
    assert_eq!(s.node, NodeIntent::Cordon);
    assert_eq!(request(&s).0, "1", "no new verification");
    assert_eq!(reasons(&s), ["Cordoning"]);
    let still = w.budget(1, 1).decide();
    assert_eq!(phase(&still), Phase::Pending);
    assert_eq!(still.node, NodeIntent::Leave);
    assert!(still.events.is_empty(), "no event while still waiting");
    assert_eq!(still.requeue_after, Some(Duration::from_secs(5)));
}

#[test]
fn pending_with_a_verify_action_and_an_old_report_verifies_again() {
    let w = World::new()
        .action(RepairAction::Verify)
        .in_phase(Phase::Pending, Some(("1", RepairAction::Verify)))
        .answered("1", Outcome::Corrupted);
    let s = w.decide();
    assert_eq!(phase(&s), Phase::Verifying);
    assert_eq!(request(&s), ("2".to_string(), RepairAction::Verify));
}

// ---- Verifying ----

fn verifying() -> World {
    World::new().in_phase(Phase::Verifying, Some(("1", RepairAction::Verify)))
}

#[test]
fn verifying_waits_for_the_helper_and_requeues_before_the_timeout() {
    let s = verifying().at(296).decide();
    assert_eq!(phase(&s), Phase::Verifying);
    assert_eq!(s.status, verifying().at(296).decide().status);
    assert!(s.events.is_empty());
    assert_eq!(s.requeue_after, Some(Duration::from_secs(5)));
    // requestTime has whole seconds: one second of slack, never an early timeout.
    assert_eq!(phase(&verifying().at(300).decide()), Phase::Verifying);
    assert_eq!(
        verifying().at(10).decide().requeue_after,
        Some(Duration::from_secs(10))
    );
}

#[test]
fn verifying_ignores_a_report_for_an_older_request() {
    let s = verifying().answered("0", Outcome::Healthy).decide();
    assert_eq!(phase(&s), Phase::Verifying);
}

#[test]
fn verifying_unanswered_past_the_timeout_fails_helper_unavailable() {
    let s = verifying().at(301).decide();
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert!(
        message(&s).contains("did not answer request 1 within --helper-timeout 5m"),
        "{}",
        message(&s)
    );
    assert_eq!(cond(&s, VERIFIED).status, "False");
}

#[test]
fn an_all_images_request_has_the_scan_timeout_not_the_helper_timeout() {
    let scan = |at: i64| {
        let mut w = verifying().at(at);
        w.spec.image = None;
        w.spec.all_images = true;
        w.decide()
    };
    assert_eq!(
        phase(&scan(301)),
        Phase::Verifying,
        "5m is not a scan's limit"
    );
    assert_eq!(scan(301).requeue_after, Some(Duration::from_secs(10)));
    assert_eq!(phase(&scan(3600)), Phase::Verifying);
    let s = scan(3601);
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert!(
        message(&s).contains("did not answer request 1 within --scan-timeout 1h"),
        "{}",
        message(&s)
    );
}

#[test]
fn verifying_with_the_helper_gone_fails_at_once() {
    for h in [
        HelperPresence::NoLease,
        HelperPresence::Stale(Duration::from_secs(41)),
    ] {
        let s = verifying().helper(h).at(5).decide();
        assert_failed(&s, reason::HELPER_UNAVAILABLE);
    }
}

#[test]
fn verifying_without_request_time_starts_the_clock() {
    let mut w = verifying().at(50);
    w.status.request_time = None;
    let s = w.decide();
    assert_eq!(phase(&s), Phase::Verifying);
    assert_eq!(s.status.request_time, Some(Time(t(50))));
}

#[test]
fn verifying_healthy_succeeds_without_cordon() {
    let s = verifying().answered("1", Outcome::Healthy).decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::Leave);
    assert_eq!(s.status.findings.as_deref(), Some("none"));
    assert_eq!(cond(&s, VERIFIED).status, "True");
    assert_eq!(cond(&s, READY).status, "True");
    assert!(s.status.cordoned_by_operator.is_none());
    assert!(s.status.completion_time.is_some());
    assert!(reasons(&s).contains(&"Succeeded"));
}

#[test]
fn verify_action_never_cordons_even_when_damaged() {
    for outcome in [Outcome::Corrupted, Outcome::Unrepairable] {
        let s = verifying()
            .action(RepairAction::Verify)
            .answered("1", outcome)
            .decide();
        assert_eq!(phase(&s), Phase::Succeeded, "{outcome:?}");
        assert_eq!(s.node, NodeIntent::Leave);
        assert_eq!(cond(&s, VERIFIED).status, "False");
        assert_eq!(s.status.findings.as_deref(), Some("1 missing"));
        assert!(message(&s).contains("not repaired because action is Verify"));
        assert_eq!(request(&s).1, RepairAction::Verify, "no repair request");
        assert!(reasons(&s).contains(&"CorruptionFound"));
    }
}

#[test]
fn verifying_corrupted_cordons_first() {
    let s = verifying().answered("1", Outcome::Corrupted).decide();
    assert_eq!(phase(&s), Phase::Cordoning);
    assert_eq!(s.node, NodeIntent::Cordon);
    assert_eq!(s.status.findings.as_deref(), Some("1 missing"));
    assert_eq!(cond(&s, VERIFIED).reason, "Corrupted");
    assert_eq!(reasons(&s), ["CorruptionFound", "Cordoning"]);
    assert_eq!(s.requeue_after, Some(Duration::from_secs(1)));
}

#[test]
fn verifying_unrepairable_still_tries_the_repair_path() {
    let s = verifying().answered("1", Outcome::Unrepairable).decide();
    assert_eq!(phase(&s), Phase::Cordoning);
    assert_eq!(cond(&s, VERIFIED).reason, "Unrepairable");
    assert!(message(&s).contains("cordoning"));
}

#[test]
fn verifying_corrupted_without_cordon_repairs_directly() {
    let s = verifying()
        .no_cordon()
        .answered("1", Outcome::Corrupted)
        .decide();
    assert_eq!(phase(&s), Phase::Repairing);
    assert_eq!(s.node, NodeIntent::Leave);
    assert_eq!(request(&s), ("2".to_string(), RepairAction::Repair));
    assert_eq!(s.status.cordoned_by_operator, Some(false));
    assert_eq!(cond(&s, CORDONED).reason, "NotRequested");
}

#[test]
fn verifying_corrupted_on_a_pre_cordoned_node_leaves_it_alone() {
    for by in [None, Some("someone-else")] {
        let s = verifying()
            .node(true, by)
            .answered("1", Outcome::Corrupted)
            .decide();
        assert_eq!(phase(&s), Phase::Repairing);
        assert_eq!(s.node, NodeIntent::Leave);
        assert_eq!(s.status.cordoned_by_operator, Some(false));
        assert_eq!(cond(&s, CORDONED).reason, "AlreadyUnschedulable");
        assert_eq!(request(&s).1, RepairAction::Repair);
    }
}

#[test]
fn verifying_corrupted_at_the_cap_waits_in_pending() {
    let s = verifying()
        .budget(1, 1)
        .answered("1", Outcome::Corrupted)
        .decide();
    assert_eq!(phase(&s), Phase::Pending);
    assert_eq!(s.node, NodeIntent::Leave);
    assert!(
        message(&s).contains("waiting for a cordon slot: 1 of --max-cordoned-nodes 1"),
        "{}",
        message(&s)
    );
    assert_eq!(cond(&s, READY).reason, reason::WAITING_FOR_CORDON_SLOT);
    assert_eq!(
        reasons(&s),
        ["CorruptionFound", reason::WAITING_FOR_CORDON_SLOT]
    );
    assert_eq!(s.requeue_after, Some(Duration::from_secs(5)));
    // A pre-cordoned node needs no slot.
    let pre = verifying()
        .budget(1, 1)
        .node(true, None)
        .answered("1", Outcome::Corrupted)
        .decide();
    assert_eq!(phase(&pre), Phase::Repairing);
}

#[test]
fn verifying_corrupted_with_our_cordon_already_in_place_repairs() {
    let s = verifying()
        .ours()
        .budget(1, 1)
        .answered("1", Outcome::Corrupted)
        .decide();
    assert_eq!(phase(&s), Phase::Repairing);
    assert_eq!(s.status.cordoned_by_operator, Some(true));
}

#[test]
fn verifying_helper_error_or_odd_outcome_fails() {
    let s = verifying().answered("1", Outcome::Error).decide();
    assert_failed(&s, reason::HELPER_ERROR);
    assert!(message(&s).contains("blob sha256:abc has the wrong digest"));
    let s = verifying().answered("1", Outcome::Repaired).decide();
    assert_failed(&s, reason::HELPER_ERROR);
}

#[test]
fn verifying_on_a_deleted_node_fails() {
    assert_failed(&verifying().no_node().decide(), reason::NODE_NOT_FOUND);
}

// ---- Cordoning ----

fn cordoning() -> World {
    World::new()
        .in_phase(Phase::Cordoning, Some(("1", RepairAction::Verify)))
        .answered("1", Outcome::Corrupted)
}

#[test]
fn cordoning_with_our_cordon_visible_requests_the_repair() {
    let s = cordoning().ours().budget(1, 1).decide();
    assert_eq!(phase(&s), Phase::Repairing);
    assert_eq!(s.node, NodeIntent::Leave);
    assert_eq!(request(&s), ("2".to_string(), RepairAction::Repair));
    assert_eq!(s.status.request_time, Some(Time(t(0))));
    assert_eq!(s.status.cordoned_by_operator, Some(true));
    assert_eq!(cond(&s, CORDONED).reason, "CordonedBySnapmend");
    assert_eq!(cond(&s, REPAIRED).status, "Unknown");
    assert_eq!(reasons(&s), ["RepairRequested"]);
}

#[test]
fn cordoning_before_the_cordon_shows_cordons_again_quietly() {
    let s = cordoning().decide();
    assert_eq!(phase(&s), Phase::Cordoning);
    assert_eq!(s.node, NodeIntent::Cordon);
    assert!(s.events.is_empty());
    // Our annotation without unschedulable (someone uncordoned by hand) is not a cordon.
    let s = cordoning().node(false, Some(NAME)).decide();
    assert_eq!(s.node, NodeIntent::Cordon);
}

#[test]
fn cordoning_without_a_slot_goes_back_to_pending() {
    let s = cordoning().budget(2, 1).decide();
    assert_eq!(phase(&s), Phase::Pending);
    assert_eq!(s.node, NodeIntent::Leave);
}

#[test]
fn cordoning_when_someone_else_cordoned_does_not_claim_it() {
    let s = cordoning().node(true, None).decide();
    assert_eq!(phase(&s), Phase::Repairing);
    assert_eq!(s.status.cordoned_by_operator, Some(false));
}

#[test]
fn cordoning_on_a_deleted_node_fails() {
    assert_failed(&cordoning().no_node().decide(), reason::NODE_NOT_FOUND);
}

// ---- Repairing ----

fn repairing() -> World {
    let mut w = World::new()
        .in_phase(Phase::Repairing, Some(("2", RepairAction::Repair)))
        .ours();
    w.status.cordoned_by_operator = Some(true);
    conditions::set(
        &mut w.status.conditions,
        CORDONED,
        Status::True,
        "CordonedBySnapmend",
        "",
        None,
        t(0),
    );
    w
}

#[test]
fn repairing_waits_for_the_helper() {
    let s = repairing().at(100).decide();
    assert_eq!(phase(&s), Phase::Repairing);
    assert_eq!(s.node, NodeIntent::Leave);
    assert!(s.events.is_empty());
    assert!(s.requeue_after.is_some());
}

#[test]
fn repairing_repaired_uncordons_our_cordon() {
    let s = repairing().answered("2", Outcome::Repaired).decide();
    assert_eq!(phase(&s), Phase::Uncordoning);
    assert_eq!(s.node, NodeIntent::Uncordon);
    assert_eq!(cond(&s, REPAIRED).status, "True");
    assert_eq!(reasons(&s), ["Repaired"]);
}

#[test]
fn repairing_repaired_on_a_node_we_did_not_cordon_succeeds_and_leaves_it() {
    let mut w = repairing()
        .node(true, None)
        .answered("2", Outcome::Repaired);
    w.status.cordoned_by_operator = Some(false);
    let s = w.decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::Leave);
    assert!(
        message(&s).contains("already unschedulable and stays so"),
        "{}",
        message(&s)
    );
    let s = repairing()
        .no_cordon()
        .node(false, None)
        .answered("2", Outcome::Repaired)
        .decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert!(message(&s).contains("was not cordoned"));
}

#[test]
fn repairing_healthy_means_nothing_was_left_to_repair() {
    let s = repairing().answered("2", Outcome::Healthy).decide();
    assert_eq!(phase(&s), Phase::Uncordoning);
    assert_eq!(cond(&s, REPAIRED).reason, "NothingToRepair");
}

#[test]
fn repairing_unrepairable_keeps_the_node_cordoned_by_default() {
    let s = repairing().answered("2", Outcome::Unrepairable).decide();
    assert_failed(&s, reason::UNREPAIRABLE);
    assert_eq!(s.node, NodeIntent::Leave);
    assert!(message(&s).contains("wrong digest"), "{}", message(&s));
    assert!(
        message(&s).contains("stays cordoned (--failure-policy keep-cordoned)"),
        "{}",
        message(&s)
    );
    assert_eq!(cond(&s, REPAIRED).status, "False");
    assert_eq!(cond(&s, CORDONED).status, "True");
}

#[test]
fn repairing_unrepairable_with_uncordon_policy_uncordons() {
    let s = repairing()
        .policy(FailurePolicy::Uncordon)
        .answered("2", Outcome::Unrepairable)
        .decide();
    assert_failed(&s, reason::UNREPAIRABLE);
    assert_eq!(s.node, NodeIntent::Uncordon);
    assert!(message(&s).contains("uncordoned (--failure-policy uncordon)"));
    assert_eq!(cond(&s, CORDONED).status, "False");
}

#[test]
fn repairing_failure_never_uncordons_a_node_it_did_not_cordon() {
    for by in [None, Some("other-repair")] {
        let s = repairing()
            .node(true, by)
            .policy(FailurePolicy::Uncordon)
            .answered("2", Outcome::Unrepairable)
            .decide();
        assert_failed(&s, reason::UNREPAIRABLE);
        assert_eq!(s.node, NodeIntent::Leave);
        assert!(message(&s).contains("already unschedulable and stays so"));
    }
}

#[test]
fn repairing_incomplete_or_error_fails() {
    let s = repairing().answered("2", Outcome::Corrupted).decide();
    assert_failed(&s, reason::REPAIR_INCOMPLETE);
    assert!(message(&s).contains("1 missing"));
    assert_failed(
        &repairing().answered("2", Outcome::Error).decide(),
        reason::HELPER_ERROR,
    );
}

#[test]
fn repairing_timeout_or_lost_helper_fails_per_policy() {
    let s = repairing().at(301).decide();
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert_eq!(s.node, NodeIntent::Leave);
    let s = repairing()
        .policy(FailurePolicy::Uncordon)
        .helper(HelperPresence::NoLease)
        .decide();
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert_eq!(s.node, NodeIntent::Uncordon);
}

#[test]
fn repairing_on_a_deleted_node_fails() {
    assert_failed(&repairing().no_node().decide(), reason::NODE_NOT_FOUND);
}

// ---- Uncordoning ----

fn uncordoning() -> World {
    let mut w = repairing().answered("2", Outcome::Repaired);
    w.status.phase = Some(Phase::Uncordoning);
    conditions::set(
        &mut w.status.conditions,
        REPAIRED,
        Status::True,
        "Repaired",
        "repaired it (1 missing)",
        None,
        t(0),
    );
    w
}

#[test]
fn uncordoning_repeats_the_uncordon_until_it_shows() {
    let s = uncordoning().decide();
    assert_eq!(phase(&s), Phase::Uncordoning);
    assert_eq!(s.node, NodeIntent::Uncordon);
    assert!(s.events.is_empty());
}

#[test]
fn uncordoning_done_succeeds() {
    let s = uncordoning().node(false, None).decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::Leave);
    assert_eq!(cond(&s, CORDONED).reason, "Uncordoned");
    assert!(
        message(&s).starts_with("repaired it (1 missing); node node-a uncordoned"),
        "{}",
        message(&s)
    );
    assert_eq!(reasons(&s), ["Uncordoned", "Succeeded"]);
}

#[test]
fn uncordoning_does_not_fight_a_new_cordon_by_someone_else() {
    let s = uncordoning().node(true, None).decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::Leave);
    assert!(message(&s).contains("cordoned again by someone else"));
}

#[test]
fn uncordoning_a_deleted_node_succeeds() {
    let s = uncordoning().no_node().decide();
    assert_eq!(phase(&s), Phase::Succeeded);
}

// ---- terminal ----

#[test]
fn terminal_phases_never_change_under_any_observation() {
    for p in [Phase::Succeeded, Phase::Failed] {
        let base = World::new().in_phase(p, Some(("2", RepairAction::Repair)));
        let variants = [
            base.clone(),
            base.clone().no_node(),
            base.clone().ours(),
            base.clone().helper(HelperPresence::NoLease),
            base.clone().at(10_000),
            base.clone().budget(5, 1),
            base.clone().answered("2", Outcome::Corrupted),
        ];
        for w in variants {
            let s = w.decide();
            assert_eq!(phase(&s), p);
            let holds = w.node.as_ref().is_some_and(|n| n.cordoned_by_repair(NAME));
            // A Succeeded repair never keeps a cordon; a Failed one keeps it per policy.
            let expected = if holds && p == Phase::Succeeded {
                NodeIntent::Uncordon
            } else {
                NodeIntent::Leave
            };
            assert_eq!(s.node, expected);
            assert!(s.events.is_empty());
            assert_eq!(s.requeue_after, None);
            assert_eq!(s.status.request, w.status.request);
        }
    }
}

// ---- whole flows: a tiny world that applies node intents and a fake helper ----

struct Flow {
    world: World,
    /// unschedulable after every step, to check the cordon history
    history: Vec<bool>,
    events: Vec<&'static str>,
}

impl Flow {
    fn new(world: World) -> Self {
        Flow {
            world,
            history: Vec::new(),
            events: Vec::new(),
        }
    }

    fn apply_node(&mut self, intent: NodeIntent) {
        let Some(node) = self.world.node.as_mut() else {
            return;
        };
        match intent {
            NodeIntent::Leave => {}
            NodeIntent::Cordon if !node.unschedulable => {
                node.unschedulable = true;
                node.cordoned_by = Some(NAME.into());
            }
            NodeIntent::Cordon => {}
            NodeIntent::Uncordon if node.cordoned_by_repair(NAME) => {
                node.unschedulable = false;
                node.cordoned_by = None;
            }
            NodeIntent::Uncordon => {}
            NodeIntent::HandOver(next) if node.cordoned_by_repair(NAME) => {
                node.cordoned_by = Some(next);
            }
            NodeIntent::HandOver(_) => {}
        }
    }

    /// Runs to a terminal phase. `helper` answers each request; `crash_after_node` drops every
    /// other status write, as if the operator died between changing the node and writing status.
    fn run(self, helper: impl Fn(RepairAction) -> Outcome, crash_after_node: bool) -> Self {
        self.run_with(|action| report(helper(action)), crash_after_node)
    }

    /// [`Flow::run`] with the helper's whole report.
    fn run_with(mut self, helper: impl Fn(RepairAction) -> Report, crash_after_node: bool) -> Self {
        for i in 0..40 {
            let step = self.world.decide();
            self.apply_node(step.node.clone());
            self.events.extend(step.events.iter().map(|e| e.reason));
            let crashed = crash_after_node && i % 2 == 0 && step.node != NodeIntent::Leave;
            if !crashed {
                self.world.status = step.status;
            }
            self.history
                .push(self.world.node.as_ref().is_some_and(|n| n.unschedulable));
            if self.world.status.phase.is_some_and(Phase::is_terminal) {
                return self;
            }
            if let Some(req) = self.world.status.request.clone() {
                let answered = current_report(&self.world.status).is_some();
                if !answered {
                    self.world.status.report = Some(RequestReport {
                        request_id: req.id.clone(),
                        report: helper(req.action),
                    });
                }
            }
            self.world.now = self.world.now.checked_add(Duration::from_secs(1)).unwrap();
        }
        panic!("no terminal phase after 40 steps: {:?}", self.world.status);
    }

    fn phase(&self) -> Phase {
        self.world.status.phase.unwrap()
    }
}

/// The events of a repair that cordons, repairs and uncordons.
const REPAIR_EVENTS: [&str; 7] = [
    "VerifyRequested",
    "CorruptionFound",
    "Cordoning",
    "RepairRequested",
    "Repaired",
    "Uncordoned",
    "Succeeded",
];

fn incident(action: RepairAction) -> Outcome {
    match action {
        RepairAction::Verify => Outcome::Corrupted,
        RepairAction::Repair => Outcome::Repaired,
    }
}

#[test]
fn flow_incident_cordons_repairs_and_uncordons() {
    for crash in [false, true] {
        let f = Flow::new(World::new()).run(incident, crash);
        assert_eq!(f.phase(), Phase::Succeeded, "crash={crash}");
        assert!(
            f.history.contains(&true),
            "the node was unschedulable in between"
        );
        assert_eq!(f.history.last(), Some(&false), "and schedulable at the end");
        assert_eq!(f.world.node.as_ref().unwrap().cordoned_by, None);
        assert_eq!(f.world.status.cordoned_by_operator, Some(true));
        assert_eq!(
            f.world.status.request.as_ref().unwrap().action,
            RepairAction::Repair
        );
    }
    let f = Flow::new(World::new()).run(incident, false);
    assert_eq!(f.events, REPAIR_EVENTS);
}

#[test]
fn flow_healthy_never_cordons() {
    let f = Flow::new(World::new()).run(|_| Outcome::Healthy, false);
    assert_eq!(f.phase(), Phase::Succeeded);
    assert!(f.history.iter().all(|u| !u));
}

#[test]
fn flow_verify_only_never_cordons() {
    let f = Flow::new(World::new().action(RepairAction::Verify)).run(incident, false);
    assert_eq!(f.phase(), Phase::Succeeded);
    assert!(f.history.iter().all(|u| !u));
    assert_eq!(
        f.world.status.request.as_ref().unwrap().action,
        RepairAction::Verify
    );
}

#[test]
fn flow_pre_cordoned_node_stays_cordoned() {
    let f = Flow::new(World::new().node(true, None)).run(incident, false);
    assert_eq!(f.phase(), Phase::Succeeded);
    assert!(f.history.iter().all(|u| *u));
    assert_eq!(f.world.status.cordoned_by_operator, Some(false));
}

#[test]
fn flow_corrupt_blob_fails_per_policy() {
    let unrepairable = |a| match a {
        RepairAction::Verify => Outcome::Corrupted,
        RepairAction::Repair => Outcome::Unrepairable,
    };
    for crash in [false, true] {
        let keep = Flow::new(World::new()).run(unrepairable, crash);
        assert_eq!(keep.phase(), Phase::Failed);
        assert_eq!(keep.history.last(), Some(&true));
        let unc = Flow::new(World::new().policy(FailurePolicy::Uncordon)).run(unrepairable, crash);
        assert_eq!(unc.phase(), Phase::Failed);
        assert_eq!(unc.history.last(), Some(&false));
        assert_eq!(unc.world.node.as_ref().unwrap().cordoned_by, None);
    }
}

#[test]
fn a_step_that_changes_nothing_emits_nothing() {
    // Every state a flow passes through, decided twice with the node as it then is: the second
    // decision must not repeat events when the status did not move.
    let mut w = World::new();
    for _ in 0..10 {
        let first = w.decide();
        let mut again = w.clone();
        again.status = first.status.clone();
        if first.node == NodeIntent::Leave {
            let second = again.decide();
            if second.status.phase == first.status.phase
                && second.status.request == first.status.request
            {
                assert!(
                    second.events.is_empty(),
                    "{:?} repeated {:?}",
                    first.status.phase,
                    second.events
                );
            }
        }
        w.status = first.status;
        if let Some(req) = w.status.request.clone() {
            w.status.report = Some(RequestReport {
                request_id: req.id,
                report: report(incident(req.action)),
            });
        }
        if w.status.phase == Some(Phase::Cordoning) {
            w.node = Some(NodeFacts {
                unschedulable: true,
                cordoned_by: Some(NAME.into()),
            });
        }
        if w.status.phase == Some(Phase::Uncordoning) {
            w.node = Some(NodeFacts::default());
        }
    }
}

// ---- sharing a cordon between repairs of the same node ----

fn sibling(name: &str, phase: Option<Phase>) -> Sibling<'_> {
    Sibling {
        name,
        node: NODE,
        phase,
        action: RepairAction::Repair,
        cordon: true,
        deleting: false,
    }
}

#[test]
fn the_successor_is_a_live_repair_of_the_same_node_working_under_the_cordon() {
    let repairing = Some(Phase::Repairing);
    assert_eq!(
        cordon_successor(NAME, NODE, [sibling("b", repairing)]),
        Some("b")
    );
    assert_eq!(
        cordon_successor(
            NAME,
            NODE,
            [
                sibling("c", repairing),
                sibling("b", Some(Phase::Cordoning))
            ]
        ),
        Some("b"),
        "the first by name"
    );
    assert_eq!(
        cordon_successor(NAME, NODE, [sibling(NAME, repairing)]),
        None,
        "not itself"
    );
    for phase in [
        None,
        Some(Phase::Pending),
        Some(Phase::Verifying),
        Some(Phase::Uncordoning),
        Some(Phase::Succeeded),
        Some(Phase::Failed),
    ] {
        assert_eq!(
            cordon_successor(NAME, NODE, [sibling("b", phase)]),
            None,
            "{phase:?}"
        );
    }
    let other_node = Sibling {
        node: "node-b",
        ..sibling("b", repairing)
    };
    let verify_only = Sibling {
        action: RepairAction::Verify,
        ..sibling("b", repairing)
    };
    let no_cordon = Sibling {
        cordon: false,
        ..sibling("b", repairing)
    };
    let deleting = Sibling {
        deleting: true,
        ..sibling("b", repairing)
    };
    for s in [other_node, verify_only, no_cordon, deleting] {
        assert_eq!(cordon_successor(NAME, NODE, [s]), None, "{s:?}");
    }
}

#[test]
fn a_finished_repair_hands_its_cordon_to_a_sibling_instead_of_uncordoning() {
    let s = repairing()
        .successor("sibling")
        .answered("2", Outcome::Repaired)
        .decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::HandOver("sibling".into()));
    assert_eq!(cond(&s, CORDONED).reason, "HandedOver");
    assert!(
        message(&s).contains("stays cordoned for SnapshotRepair sibling"),
        "{}",
        message(&s)
    );
    assert!(reasons(&s).contains(&"CordonHandedOver"));
    let s = uncordoning().successor("sibling").decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::HandOver("sibling".into()));
    let s = World::new()
        .in_phase(Phase::Succeeded, None)
        .ours()
        .successor("sibling")
        .decide();
    assert_eq!(s.node, NodeIntent::HandOver("sibling".into()));
}

#[test]
fn a_failed_repair_hands_over_under_uncordon_policy_and_keeps_it_otherwise() {
    let s = repairing()
        .successor("sibling")
        .policy(FailurePolicy::Uncordon)
        .answered("2", Outcome::Unrepairable)
        .decide();
    assert_failed(&s, reason::UNREPAIRABLE);
    assert_eq!(s.node, NodeIntent::HandOver("sibling".into()));
    let s = repairing()
        .successor("sibling")
        .answered("2", Outcome::Unrepairable)
        .decide();
    assert_eq!(
        s.node,
        NodeIntent::Leave,
        "keep-cordoned keeps its own cordon"
    );
}

#[test]
fn a_repair_that_inherits_a_cordon_owns_releasing_it() {
    let mut w = repairing();
    w.status.cordoned_by_operator = Some(false);
    let s = w.clone().decide();
    assert_eq!(phase(&s), Phase::Repairing);
    assert_eq!(s.status.cordoned_by_operator, Some(true));
    assert_eq!(cond(&s, CORDONED).reason, "HandedOver");
    let done = w.answered("2", Outcome::Repaired).decide();
    assert_eq!(phase(&done), Phase::Uncordoning);
    assert_eq!(done.node, NodeIntent::Uncordon);
}

// ---- the whole observation space: invariants that hold in every combination ----

/// Every phase × node state × helper state × report × cap × spec × policy × successor.
fn every_world() -> Vec<World> {
    let phases = [
        (Phase::Pending, None),
        (Phase::Pending, Some(("1", RepairAction::Verify))),
        (Phase::Verifying, Some(("1", RepairAction::Verify))),
        (Phase::Cordoning, Some(("1", RepairAction::Verify))),
        (Phase::Repairing, Some(("2", RepairAction::Repair))),
        (Phase::Uncordoning, Some(("2", RepairAction::Repair))),
        (Phase::Succeeded, Some(("2", RepairAction::Repair))),
        (Phase::Failed, Some(("2", RepairAction::Repair))),
    ];
    let nodes: [Option<(bool, Option<&str>)>; 6] = [
        None,
        Some((false, None)),
        Some((true, None)),
        Some((true, Some(NAME))),
        Some((false, Some(NAME))),
        Some((true, Some("other-repair"))),
    ];
    let helpers = [
        HelperPresence::Present,
        HelperPresence::NoLease,
        HelperPresence::Stale(Duration::from_secs(90)),
    ];
    let outcomes = [
        None,
        Some(Outcome::Healthy),
        Some(Outcome::Corrupted),
        Some(Outcome::Repaired),
        Some(Outcome::Unrepairable),
        Some(Outcome::Error),
    ];
    let mut all = Vec::new();
    for (phase, request) in phases {
        for node in nodes {
            for helper in &helpers {
                for outcome in outcomes {
                    for (budget_now, at) in [(0, 0), (1, 0), (0, 400)] {
                        for action in [RepairAction::Verify, RepairAction::Repair] {
                            for cordon in [true, false] {
                                for policy in [FailurePolicy::KeepCordoned, FailurePolicy::Uncordon]
                                {
                                    for successor in [None, Some("sibling")] {
                                        let mut w = World::new()
                                            .in_phase(phase, request)
                                            .helper(helper.clone())
                                            .budget(budget_now, 1)
                                            .at(at)
                                            .action(action)
                                            .policy(policy);
                                        w.spec.cordon = cordon;
                                        w.successor = successor;
                                        w.node = node.map(|(u, by)| NodeFacts {
                                            unschedulable: u,
                                            cordoned_by: by.map(str::to_string),
                                        });
                                        if let (Some(o), Some((id, _))) = (outcome, request) {
                                            w = w.answered(id, o);
                                        }
                                        all.push(w);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    all
}

fn allowed(from: Phase, to: Phase) -> bool {
    use Phase::*;
    from == to
        || matches!(
            (from, to),
            (Pending, Verifying | Cordoning | Repairing | Failed)
                | (
                    Verifying,
                    Pending | Cordoning | Repairing | Succeeded | Failed
                )
                | (Cordoning, Pending | Repairing | Succeeded | Failed)
                | (Repairing, Uncordoning | Succeeded | Failed)
                | (Uncordoning, Succeeded)
        )
}

#[test]
fn invariants_hold_for_every_observation() {
    let worlds = every_world();
    assert!(worlds.len() > 40_000, "{}", worlds.len());
    for w in &worlds {
        let s = w.decide();
        let from = w.status.phase.unwrap();
        let to = phase(&s);
        let ctx = || {
            format!(
                "{w:?}",
                w = (
                    &w.status.phase,
                    &w.node,
                    &w.helper,
                    &w.spec.action,
                    w.spec.cordon,
                    w.budget,
                    w.successor,
                    current_report(&w.status).map(|r| r.outcome)
                )
            )
        };
        assert!(allowed(from, to), "{from:?} -> {to:?} in {}", ctx());
        // Deciding is pure: same observation, same step.
        assert_eq!(s, w.decide());
        let node = w.node.as_ref();
        let ours = node.is_some_and(|n| n.cordoned_by_repair(NAME));
        match &s.node {
            NodeIntent::Leave => {}
            NodeIntent::Cordon => {
                assert_eq!(
                    w.spec.action,
                    RepairAction::Repair,
                    "Verify never cordons: {}",
                    ctx()
                );
                assert!(w.spec.cordon, "cordon=false never cordons: {}", ctx());
                assert!(
                    !node.unwrap().unschedulable,
                    "only a schedulable node: {}",
                    ctx()
                );
                assert!(
                    w.budget.cordoned_now < w.budget.max,
                    "never over the cap: {}",
                    ctx()
                );
                assert_eq!(
                    w.helper,
                    HelperPresence::Present,
                    "never without a helper: {}",
                    ctx()
                );
                assert_eq!(to, Phase::Cordoning, "{}", ctx());
            }
            NodeIntent::Uncordon => {
                assert!(ours, "only its own cordon is undone: {}", ctx());
                assert!(
                    w.successor.is_none(),
                    "a sibling inherits instead: {}",
                    ctx()
                );
            }
            NodeIntent::HandOver(next) => {
                assert!(ours, "only its own cordon is passed on: {}", ctx());
                assert_eq!(Some(next.as_str()), w.successor, "{}", ctx());
            }
        }
        if to == Phase::Failed && from != Phase::Failed {
            let ready = cond(&s, READY);
            assert_eq!(ready.status, "False");
            assert!(
                s.events.iter().any(|e| e.kind == EventKind::Warning),
                "{}",
                ctx()
            );
            if ours && w.settings.failure_policy == FailurePolicy::KeepCordoned {
                assert_eq!(
                    s.node,
                    NodeIntent::Leave,
                    "keep-cordoned keeps it: {}",
                    ctx()
                );
                assert!(message(&s).contains("stays cordoned"), "{}", ctx());
            }
        }
        if to.is_terminal() && !from.is_terminal() {
            assert!(s.status.completion_time.is_some());
            assert_eq!(s.requeue_after, None);
        }
        if !to.is_terminal() {
            assert!(
                s.requeue_after.is_some(),
                "a live repair is looked at again: {}",
                ctx()
            );
        }
        if s.status.request != w.status.request {
            let new = s.status.request.as_ref().unwrap();
            assert_eq!(
                new.id,
                next_request_id(w.status.request.as_ref()),
                "{}",
                ctx()
            );
            assert_eq!(s.status.request_time, Some(Time(w.now)));
            if new.action == RepairAction::Repair {
                assert_eq!(
                    w.spec.action,
                    RepairAction::Repair,
                    "Verify never writes: {}",
                    ctx()
                );
            }
        }
        if s.status.cordoned_by_operator == Some(true)
            && w.status.cordoned_by_operator != Some(true)
        {
            assert!(
                ours,
                "claims only a cordon the annotation gives it: {}",
                ctx()
            );
        }
    }
}

#[test]
fn changing_the_action_to_verify_mid_repair_gives_back_the_cordon() {
    let s = cordoning().ours().action(RepairAction::Verify).decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert_eq!(s.node, NodeIntent::Uncordon);
    assert!(
        message(&s).contains("not repaired because action is now Verify"),
        "{}",
        message(&s)
    );
    assert_eq!(request(&s).1, RepairAction::Verify, "no repair request");
    let s = cordoning().action(RepairAction::Verify).decide();
    assert_eq!(
        s.node,
        NodeIntent::Leave,
        "nothing taken, nothing to give back"
    );
}

#[test]
fn damage_found_but_helper_gone_fails_before_cordoning() {
    let s = verifying()
        .helper(HelperPresence::NoLease)
        .answered("1", Outcome::Corrupted)
        .decide();
    assert_failed(&s, reason::HELPER_UNAVAILABLE);
    assert_eq!(s.node, NodeIntent::Leave);
    assert_eq!(
        s.status.findings.as_deref(),
        Some("1 missing"),
        "the findings stay visible"
    );
}

#[test]
fn helper_text_is_bounded_on_a_character_boundary() {
    assert_eq!(bounded("short", 10), "short");
    let long = "é".repeat(400);
    let cut = bounded(&long, HELPER_TEXT_MAX);
    assert!(cut.len() <= HELPER_TEXT_MAX + "…".len());
    assert!(cut.ends_with('…'));
}

fn cron_cleanup() -> snapmend_crds::Culprit {
    snapmend_crds::Culprit {
        time: "2026-12-07T03:12:09.25Z".into(),
        path: "/pause".into(),
        op: "delete".into(),
        count: 1,
        process: snapmend_crds::CulpritProcess {
            pid: 4711,
            cmdline: Some("/bin/sh /etc/cron.daily/cleanup".into()),
            systemd_unit: Some("cron.service".into()),
            ..Default::default()
        },
    }
}

const CRON_SUMMARY: &str = "damaged by pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service) at 2026-12-07T03:12:09Z (delete /pause)";

#[test]
fn damage_found_with_a_culprit_names_it_in_status_message_and_event() {
    let s = verifying()
        .answered("1", Outcome::Corrupted)
        .with_culprit()
        .decide();
    let c = s.status.culprit.clone().expect("status.culprit");
    assert_eq!(c.summary, CRON_SUMMARY);
    assert_eq!(c.layer, 0);
    assert_eq!(c.snapshot_id.as_deref(), Some("1"));
    assert_eq!(c.change, cron_cleanup());
    assert!(
        cond(&s, VERIFIED)
            .message
            .ends_with(&format!("; {CRON_SUMMARY}"))
    );
    let found = s
        .events
        .iter()
        .find(|e| e.reason == "CorruptionFound")
        .expect("CorruptionFound event");
    assert!(found.note.contains(CRON_SUMMARY), "{}", found.note);
}

#[test]
fn a_verify_only_repair_names_the_culprit_in_its_final_message() {
    let s = verifying()
        .action(RepairAction::Verify)
        .answered("1", Outcome::Corrupted)
        .with_culprit()
        .decide();
    assert_eq!(phase(&s), Phase::Succeeded);
    assert!(message(&s).contains(CRON_SUMMARY), "{}", message(&s));
    assert!(s.status.culprit.is_some());
}

#[test]
fn a_repair_names_the_culprit_in_its_repaired_message_and_event() {
    let s = repairing()
        .answered("2", Outcome::Repaired)
        .with_culprit()
        .decide();
    assert_eq!(
        s.status.culprit.as_ref().map(|c| c.summary.as_str()),
        Some(CRON_SUMMARY)
    );
    assert_eq!(
        cond(&s, REPAIRED).message,
        format!("repaired registry.k8s.io/pause:3.10 on node node-a (1 missing); {CRON_SUMMARY}")
    );
    let repaired = s
        .events
        .iter()
        .find(|e| e.reason == "Repaired")
        .expect("event");
    assert!(repaired.note.contains(CRON_SUMMARY));
}

#[test]
fn an_incomplete_repair_names_the_culprit_in_its_failure() {
    let s = repairing()
        .answered("2", Outcome::Corrupted)
        .with_culprit()
        .decide();
    assert_failed(&s, "RepairIncomplete");
    assert!(message(&s).contains(CRON_SUMMARY), "{}", message(&s));
}

#[test]
fn a_culprit_found_earlier_is_kept_when_the_repair_report_has_none() {
    let mut w = repairing().answered("2", Outcome::Repaired);
    let earlier = verifying()
        .answered("1", Outcome::Corrupted)
        .with_culprit()
        .decide()
        .status
        .culprit;
    w.status.culprit = earlier.clone();
    let s = w.decide();
    assert_eq!(s.status.culprit, earlier);
    assert!(cond(&s, REPAIRED).message.contains(CRON_SUMMARY));
}

#[test]
fn without_a_culprit_nothing_is_said_about_one() {
    let s = verifying().answered("1", Outcome::Corrupted).decide();
    assert!(s.status.culprit.is_none());
    assert!(!cond(&s, VERIFIED).message.contains("damaged by"));
    let s = repairing().answered("2", Outcome::Repaired).decide();
    assert!(s.status.culprit.is_none());
    assert!(!cond(&s, REPAIRED).message.contains("damaged by"));
}

#[test]
fn only_a_damaged_layer_names_the_culprit_and_the_first_one_wins() {
    let mut r = report(Outcome::Healthy);
    r.layers[0].culprit = Some(cron_cleanup());
    assert_eq!(report_culprit(&r), None, "a healthy layer names no culprit");
    let s = verifying()
        .answered("1", Outcome::Healthy)
        .with_culprit()
        .decide();
    assert!(s.status.culprit.is_none());
    assert_eq!(phase(&s), Phase::Succeeded);

    let mut second = cron_cleanup();
    second.process.pid = 99;
    let mut r = report(Outcome::Corrupted);
    let mut unrepairable = r.layers[0].clone();
    unrepairable.index = 0;
    unrepairable.state = LayerState::Unrepairable;
    unrepairable.culprit = Some(cron_cleanup());
    let mut missing = r.layers[0].clone();
    missing.index = 1;
    missing.state = LayerState::SnapshotMissing;
    missing.snapshot_id = Some("7".into());
    missing.culprit = Some(second);
    let mut corrupted = r.layers[0].clone();
    corrupted.index = 2;
    corrupted.culprit = Some(cron_cleanup());
    r.layers = vec![unrepairable, missing, corrupted];
    let c = report_culprit(&r).expect("culprit");
    assert_eq!((c.layer, c.change.process.pid), (1, 99));
    assert_eq!(c.snapshot_id.as_deref(), Some("7"));
}

#[test]
fn a_huge_culprit_is_bounded_in_messages() {
    let mut w = verifying().answered("1", Outcome::Corrupted).with_culprit();
    if let Some(r) = w.status.report.as_mut() {
        let c = r.report.layers[0].culprit.as_mut().expect("culprit");
        c.process.cmdline = Some("x".repeat(100_000));
    }
    let s = w.decide();
    let c = s.status.culprit.clone().expect("culprit");
    assert_eq!(
        c.change.process.cmdline.map(|s| s.len()),
        Some(snapmend_crds::culprit::TEXT_MAX)
    );
    assert!(cond(&s, VERIFIED).message.len() < 2 * HELPER_TEXT_MAX);
}

// ---- allImages: a scan of every image ----

/// What the agent reports for a scan of 14 images, two of them damaged (or repaired).
fn scan_report(action: RepairAction) -> Report {
    use snapmend_crds::{ScanReport, bounded_report};
    let images = (0..14)
        .map(|i| {
            let damaged = i == 3 || i == 9;
            let outcome = match (damaged, action) {
                (false, _) => Outcome::Healthy,
                (true, RepairAction::Verify) => Outcome::Corrupted,
                (true, RepairAction::Repair) => Outcome::Repaired,
            };
            let mut r = report(outcome);
            r.image = format!("registry.example/app-{i}:1");
            r.layers[0].chain_id = format!("sha256:{i}");
            r.message = None;
            r
        })
        .collect();
    bounded_report(&ScanReport {
        outcome: match action {
            RepairAction::Verify => Outcome::Corrupted,
            RepairAction::Repair => Outcome::Repaired,
        },
        images,
        layers_checked: 14,
        ..Default::default()
    })
}

fn all_images() -> World {
    let mut w = World::new();
    w.spec.image = None;
    w.spec.all_images = true;
    w
}

#[test]
fn all_images_target_is_all_and_messages_say_all_images() {
    let s = all_images().decide();
    assert_eq!(s.status.target.as_deref(), Some("all"));
    assert_eq!(message(&s), "verifying all images on node node-a");
    assert_eq!(request(&s), ("1".to_string(), RepairAction::Verify));
}

#[test]
fn all_images_verify_names_the_damaged_images_and_never_cordons() {
    let f = Flow::new(all_images().action(RepairAction::Verify)).run_with(scan_report, false);
    assert_eq!(f.phase(), Phase::Succeeded);
    assert!(f.history.iter().all(|u| !u));
    let st = &f.world.status;
    assert_eq!(st.findings.as_deref(), Some("2/14 images damaged"));
    let msg = st.message.as_deref().unwrap();
    assert_eq!(
        msg,
        "all images on node node-a are damaged: 2/14 images damaged (registry.example/app-3:1, registry.example/app-9:1); not repaired because action is Verify"
    );
    let verified = conditions::get(&st.conditions, VERIFIED).unwrap();
    assert_eq!(
        (verified.status.as_str(), verified.reason.as_str()),
        ("False", "Corrupted")
    );
}

#[test]
fn all_images_repair_cordons_repairs_and_uncordons() {
    let f = Flow::new(all_images()).run_with(scan_report, false);
    assert_eq!(f.phase(), Phase::Succeeded);
    assert!(f.history.contains(&true));
    assert_eq!(f.history.last(), Some(&false));
    assert_eq!(f.events, REPAIR_EVENTS);
    let st = &f.world.status;
    assert_eq!(st.findings.as_deref(), Some("2/14 images repaired"));
    let repaired = conditions::get(&st.conditions, REPAIRED).unwrap();
    assert_eq!(
        repaired.message,
        "repaired all images on node node-a: 2/14 images repaired (registry.example/app-3:1, registry.example/app-9:1)"
    );
}

#[test]
fn all_images_healthy_reads_healthy_with_the_image_count() {
    let healthy = |_| {
        let mut r = scan_report(RepairAction::Verify);
        let scan = r.scan.as_mut().unwrap();
        scan.outcomes.healthy += scan.outcomes.corrupted;
        scan.outcomes.corrupted = 0;
        for i in &mut scan.images {
            i.outcome = Outcome::Healthy;
        }
        r.outcome = Outcome::Healthy;
        r.layers.clear();
        r
    };
    let f = Flow::new(all_images()).run_with(healthy, false);
    assert_eq!(f.phase(), Phase::Succeeded);
    assert!(f.history.iter().all(|u| !u));
    assert_eq!(
        f.world.status.findings.as_deref(),
        Some("healthy (14 images)")
    );
    assert_eq!(
        f.world.status.message.as_deref(),
        Some("all images on node node-a are healthy; nothing to repair")
    );
}

#[test]
fn findings_text_names_at_most_three_images_and_counts_the_rest() {
    let mut r = scan_report(RepairAction::Verify);
    let scan = r.scan.as_mut().unwrap();
    for i in &mut scan.images {
        i.outcome = Outcome::Corrupted;
    }
    scan.outcomes.corrupted = 14;
    scan.outcomes.healthy = 0;
    assert_eq!(
        findings_text(&r),
        "14/14 images damaged (registry.example/app-3:1, registry.example/app-9:1, registry.example/app-0:1, 11 more)"
    );
    // A single image's report is unchanged.
    assert_eq!(findings_text(&report(Outcome::Corrupted)), "1 missing");
}
