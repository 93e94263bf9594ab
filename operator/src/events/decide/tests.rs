use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use snapmend_crds::{Report, RequestReport, SnapshotRepairStatus};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

const NOW: &str = "2026-01-01T12:00:00Z";

fn now() -> Timestamp {
    ts(NOW)
}

fn policy(mode: AutoRemediate) -> Policy {
    Policy {
        mode,
        ..Policy::default()
    }
}

fn candidate(node: &str, verdict: Verdict) -> Candidate {
    Candidate {
        event: "default/web-0.17a1".into(),
        node: node.into(),
        target: Target::SandboxImage,
        verdict,
        signature: Signature::SandboxEntrypointBroken,
        last_seen: Some(ts("2026-01-01T11:59:58Z")),
        pull_secrets: Vec::new(),
    }
}

fn record(name: &str, node: &str, phase: Option<Phase>, finished: Option<&str>) -> RepairRecord {
    RepairRecord {
        name: name.into(),
        node: node.into(),
        target: "sandbox".into(),
        action: RepairAction::Repair,
        automatic: true,
        phase,
        finished_at: finished.map(ts),
        found_damage: false,
        escalated_from: None,
    }
}

fn bucket() -> TokenBucket {
    TokenBucket::new(RateLimit::default())
}

#[test]
fn action_follows_mode_and_verdict_exhaustively() {
    use AutoRemediate::Off;
    use Verdict::Ignore;
    let table = [
        (Off, Ignore, None),
        (Off, Verdict::Verify, None),
        (Off, Verdict::Repair, None),
        (AutoRemediate::Verify, Ignore, None),
        (
            AutoRemediate::Verify,
            Verdict::Verify,
            Some(RepairAction::Verify),
        ),
        (
            AutoRemediate::Verify,
            Verdict::Repair,
            Some(RepairAction::Verify),
        ),
        (AutoRemediate::Repair, Ignore, None),
        (
            AutoRemediate::Repair,
            Verdict::Verify,
            Some(RepairAction::Verify),
        ),
        (
            AutoRemediate::Repair,
            Verdict::Repair,
            Some(RepairAction::Repair),
        ),
    ];
    for (mode, verdict, want) in table {
        assert_eq!(action_for(mode, verdict), want, "{mode:?} {verdict:?}");
    }
}

#[test]
fn a_fresh_strong_event_on_an_eligible_node_creates_a_repair() {
    let plan = decide(
        &candidate("node-a", Verdict::Repair),
        NodeView::Eligible,
        &Ledger::default(),
        &mut bucket(),
        &policy(AutoRemediate::Repair),
        now(),
    )
    .expect("create");
    assert_eq!(plan.node, "node-a");
    assert_eq!(plan.target, Target::SandboxImage);
    assert_eq!(plan.action, RepairAction::Repair);
    assert_eq!(plan.event, "default/web-0.17a1");
    assert_eq!(plan.signature, "sandbox-entrypoint-broken");
}

#[test]
fn every_skip_reason() {
    let p = policy(AutoRemediate::Repair);
    let mut stale = candidate("node-a", Verdict::Repair);
    stale.last_seen = Some(ts("2026-01-01T11:50:00Z"));
    let mut unknown_time = candidate("node-a", Verdict::Repair);
    unknown_time.last_seen = None;
    let cases: Vec<(Candidate, NodeView, Policy, Skip)> = vec![
        (
            candidate("node-a", Verdict::Ignore),
            NodeView::Eligible,
            p,
            Skip::NoAction,
        ),
        (
            candidate("node-a", Verdict::Repair),
            NodeView::Eligible,
            policy(AutoRemediate::Off),
            Skip::NoAction,
        ),
        (stale, NodeView::Eligible, p, Skip::Stale),
        (unknown_time, NodeView::Eligible, p, Skip::Stale),
        (
            candidate("node-a", Verdict::Repair),
            NodeView::Missing,
            p,
            Skip::NodeMissing,
        ),
        (
            candidate("node-a", Verdict::Repair),
            NodeView::OptedOut,
            p,
            Skip::NodeOptedOut,
        ),
    ];
    for (c, node, pol, want) in cases {
        let got = decide(&c, node, &Ledger::default(), &mut bucket(), &pol, now());
        assert_eq!(got, Err(want));
    }
}

#[test]
fn at_most_one_active_repair_per_node_and_target() {
    let mut ledger = Ledger::default();
    for phase in [
        None,
        Some(Phase::Pending),
        Some(Phase::Verifying),
        Some(Phase::Cordoning),
        Some(Phase::Repairing),
        Some(Phase::Uncordoning),
    ] {
        ledger.upsert(record("auto-node-a-x", "node-a", phase, None));
        let got = decide(
            &candidate("node-a", Verdict::Repair),
            NodeView::Eligible,
            &ledger,
            &mut bucket(),
            &policy(AutoRemediate::Repair),
            now(),
        );
        assert_eq!(
            got,
            Err(Skip::Active {
                repair: "auto-node-a-x".into()
            }),
            "{phase:?}"
        );
    }
    // Another node, or another image on the same node, is independent.
    assert!(
        decide(
            &candidate("node-b", Verdict::Repair),
            NodeView::Eligible,
            &ledger,
            &mut bucket(),
            &policy(AutoRemediate::Repair),
            now()
        )
        .is_ok()
    );
    let mut other_image = candidate("node-a", Verdict::Repair);
    other_image.target = Target::Image("docker.io/library/app:1".into());
    assert!(
        decide(
            &other_image,
            NodeView::Eligible,
            &ledger,
            &mut bucket(),
            &policy(AutoRemediate::Repair),
            now()
        )
        .is_ok()
    );
}

#[test]
fn manual_repairs_count_as_active_too() {
    let mut ledger = Ledger::default();
    let mut manual = record("node-a-pause", "node-a", Some(Phase::Repairing), None);
    manual.automatic = false;
    ledger.upsert(manual);
    let got = decide(
        &candidate("node-a", Verdict::Repair),
        NodeView::Eligible,
        &ledger,
        &mut bucket(),
        &policy(AutoRemediate::Repair),
        now(),
    );
    assert_eq!(
        got,
        Err(Skip::Active {
            repair: "node-a-pause".into()
        })
    );
}

#[test]
fn cooldown_after_completion_then_allowed_again() {
    let p = Policy {
        cooldown: Duration::from_secs(600),
        ..policy(AutoRemediate::Repair)
    };
    for phase in [Phase::Succeeded, Phase::Failed] {
        let mut ledger = Ledger::default();
        ledger.upsert(record(
            "old",
            "node-a",
            Some(Phase::Failed),
            Some("2026-01-01T10:00:00Z"),
        ));
        ledger.upsert(record(
            "recent",
            "node-a",
            Some(phase),
            Some("2026-01-01T11:55:00Z"),
        ));
        let got = decide(
            &candidate("node-a", Verdict::Repair),
            NodeView::Eligible,
            &ledger,
            &mut bucket(),
            &p,
            now(),
        );
        assert_eq!(
            got,
            Err(Skip::CoolingDown {
                repair: "recent".into(),
                until: ts("2026-01-01T12:05:00Z")
            })
        );
        let later = ts("2026-01-01T12:05:00Z");
        let mut c = candidate("node-a", Verdict::Repair);
        c.last_seen = Some(later);
        assert!(decide(&c, NodeView::Eligible, &ledger, &mut bucket(), &p, later).is_ok());
    }
}

#[test]
fn rate_limit_defers_and_refills() {
    let p = Policy {
        rate: RateLimit {
            burst: 2,
            per_minute: 6,
        },
        ..policy(AutoRemediate::Repair)
    };
    let mut b = TokenBucket::new(p.rate);
    let ledger = Ledger::default();
    let d = |b: &mut TokenBucket, node: &str, at: Timestamp| {
        let mut c = candidate(node, Verdict::Repair);
        c.last_seen = Some(at);
        decide(&c, NodeView::Eligible, &ledger, b, &p, at)
    };
    assert!(d(&mut b, "n1", now()).is_ok());
    assert!(d(&mut b, "n2", now()).is_ok());
    let limited = d(&mut b, "n3", now());
    assert_eq!(limited, Err(Skip::RateLimited));
    assert!(Skip::RateLimited.is_retryable());
    // 6 per minute: one token every 10 s.
    assert_eq!(
        d(&mut b, "n3", ts("2026-01-01T12:00:09Z")),
        Err(Skip::RateLimited)
    );
    assert!(d(&mut b, "n3", ts("2026-01-01T12:00:10Z")).is_ok());
}

#[test]
fn skipped_candidates_take_no_token() {
    let p = Policy {
        rate: RateLimit {
            burst: 1,
            per_minute: 1,
        },
        ..policy(AutoRemediate::Repair)
    };
    let mut b = TokenBucket::new(p.rate);
    let ledger = Ledger::default();
    assert_eq!(
        decide(
            &candidate("n1", Verdict::Repair),
            NodeView::OptedOut,
            &ledger,
            &mut b,
            &p,
            now()
        ),
        Err(Skip::NodeOptedOut)
    );
    assert!(
        decide(
            &candidate("n1", Verdict::Repair),
            NodeView::Eligible,
            &ledger,
            &mut b,
            &p,
            now()
        )
        .is_ok()
    );
}

#[test]
fn verify_mode_only_verifies() {
    let plan = decide(
        &candidate("n", Verdict::Repair),
        NodeView::Eligible,
        &Ledger::default(),
        &mut bucket(),
        &policy(AutoRemediate::Verify),
        now(),
    )
    .expect("plan");
    assert_eq!(plan.action, RepairAction::Verify);
}

#[test]
fn a_storm_of_repeats_gives_one_repair_per_node() {
    let p = policy(AutoRemediate::Repair);
    let mut ledger = Ledger::default();
    let mut b = bucket();
    let mut created = 0;
    for i in 0..1000 {
        let node = format!("node-{}", i % 50);
        if let Ok(plan) = decide(
            &candidate(&node, Verdict::Repair),
            NodeView::Eligible,
            &ledger,
            &mut b,
            &p,
            now(),
        ) {
            created += 1;
            ledger.upsert(record(
                &format!("auto-{}-{created}", plan.node),
                &plan.node,
                None,
                None,
            ));
        }
    }
    assert_eq!(created, 50);
    assert_eq!(ledger.len(), 50);
}

fn damaged_verification() -> RepairRecord {
    RepairRecord {
        action: RepairAction::Verify,
        found_damage: true,
        ..record(
            "auto-node-a-v1",
            "node-a",
            Some(Phase::Succeeded),
            Some("2026-01-01T11:59:00Z"),
        )
    }
}

#[test]
fn a_verification_that_found_damage_is_escalated_once_in_repair_mode() {
    let p = policy(AutoRemediate::Repair);
    let v = damaged_verification();
    let mut ledger = Ledger::default();
    ledger.upsert(v.clone());
    let plan = decide_escalation(
        &v,
        "ns/ev",
        NodeView::Eligible,
        &ledger,
        &mut bucket(),
        &p,
        now(),
    )
    .expect("escalate");
    assert_eq!(plan.action, RepairAction::Repair);
    assert_eq!(plan.escalated_from.as_deref(), Some("auto-node-a-v1"));
    assert_eq!(plan.target, Target::SandboxImage);
    // Once the repair exists (active or finished), no second escalation.
    let mut repair = record("auto-node-a-r1", "node-a", None, None);
    repair.escalated_from = Some(v.name.clone());
    ledger.upsert(repair.clone());
    assert_eq!(
        decide_escalation(
            &v,
            "ns/ev",
            NodeView::Eligible,
            &ledger,
            &mut bucket(),
            &p,
            now()
        ),
        None
    );
    repair.phase = Some(Phase::Succeeded);
    repair.finished_at = Some(now());
    ledger.upsert(repair);
    assert_eq!(
        decide_escalation(
            &v,
            "ns/ev",
            NodeView::Eligible,
            &ledger,
            &mut bucket(),
            &p,
            now()
        ),
        None
    );
}

#[test]
fn no_escalation_without_damage_or_outside_repair_mode() {
    let base = damaged_verification();
    let variants: Vec<(RepairRecord, AutoRemediate, NodeView)> = vec![
        (
            RepairRecord {
                found_damage: false,
                ..base.clone()
            },
            AutoRemediate::Repair,
            NodeView::Eligible,
        ),
        (base.clone(), AutoRemediate::Verify, NodeView::Eligible),
        (base.clone(), AutoRemediate::Off, NodeView::Eligible),
        (base.clone(), AutoRemediate::Repair, NodeView::OptedOut),
        (base.clone(), AutoRemediate::Repair, NodeView::Missing),
        (
            RepairRecord {
                automatic: false,
                ..base.clone()
            },
            AutoRemediate::Repair,
            NodeView::Eligible,
        ),
        (
            RepairRecord {
                action: RepairAction::Repair,
                ..base.clone()
            },
            AutoRemediate::Repair,
            NodeView::Eligible,
        ),
        (
            RepairRecord {
                phase: Some(Phase::Failed),
                ..base.clone()
            },
            AutoRemediate::Repair,
            NodeView::Eligible,
        ),
        (
            RepairRecord {
                phase: Some(Phase::Verifying),
                ..base.clone()
            },
            AutoRemediate::Repair,
            NodeView::Eligible,
        ),
    ];
    for (r, mode, node) in variants {
        let mut ledger = Ledger::default();
        ledger.upsert(r.clone());
        assert_eq!(
            decide_escalation(
                &r,
                "ns/ev",
                node,
                &ledger,
                &mut bucket(),
                &policy(mode),
                now()
            ),
            None,
            "{r:?} {mode:?} {node:?}"
        );
    }
}

#[test]
fn node_opt_out_label() {
    let l = |v: &str| BTreeMap::from([(AUTO_REMEDIATE_LABEL.to_string(), v.to_string())]);
    assert_eq!(NodeView::from_labels(Some(&l("false"))), NodeView::OptedOut);
    assert_eq!(NodeView::from_labels(Some(&l("False"))), NodeView::OptedOut);
    assert_eq!(NodeView::from_labels(Some(&l("true"))), NodeView::Eligible);
    assert_eq!(
        NodeView::from_labels(Some(&BTreeMap::new())),
        NodeView::Eligible
    );
    assert_eq!(NodeView::from_labels(None), NodeView::Eligible);
}

#[test]
fn built_repairs_carry_the_contract_labels_and_annotations() {
    let plan = PlannedRepair {
        node: "node-a".into(),
        target: Target::SandboxImage,
        action: RepairAction::Repair,
        event: "default/web-0.17a1".into(),
        signature: "sandbox-entrypoint-broken".into(),
        escalated_from: None,
        pull_secrets: Vec::new(),
    };
    let sr = build_repair(&plan);
    assert_eq!(sr.metadata.generate_name.as_deref(), Some("auto-node-a-"));
    assert_eq!(sr.metadata.name, None);
    let labels = sr.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels.get(TRIGGER_LABEL).map(String::as_str), Some("event"));
    assert_eq!(labels.get(NODE_LABEL).map(String::as_str), Some("node-a"));
    let ann = sr.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(
        ann.get(TRIGGER_EVENT_ANNOTATION).map(String::as_str),
        Some("default/web-0.17a1")
    );
    assert_eq!(
        ann.get(TRIGGER_SIGNATURE_ANNOTATION).map(String::as_str),
        Some("sandbox-entrypoint-broken")
    );
    assert!(sr.spec.sandbox_image && sr.spec.image.is_none() && sr.spec.cordon);
    assert_eq!(sr.spec.target(), "sandbox");

    let image = build_repair(&PlannedRepair {
        target: Target::Image("docker.io/library/app@sha256:ab".into()),
        escalated_from: Some("auto-node-a-v1".into()),
        action: RepairAction::Verify,
        ..plan.clone()
    });
    assert_eq!(
        image.spec.image.as_deref(),
        Some("docker.io/library/app@sha256:ab")
    );
    assert!(!image.spec.sandbox_image);
    assert_eq!(image.spec.action, RepairAction::Verify);
    assert!(image.spec.pull_secrets.is_empty());
    let with_secrets = build_repair(&PlannedRepair {
        target: Target::Image("reg.example/app:1".into()),
        pull_secrets: vec![snapmend_crds::PullSecretRef {
            namespace: "default".into(),
            name: "regcred".into(),
        }],
        ..plan.clone()
    });
    assert_eq!(
        with_secrets.spec.pull_secrets[0].to_string(),
        "default/regcred",
        "the failed pod's pull secrets go into the spec"
    );
    assert_eq!(
        image
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ESCALATED_FROM_ANNOTATION))
            .map(String::as_str),
        Some("auto-node-a-v1")
    );
}

#[test]
fn long_node_names_are_kept_within_api_limits() {
    let node = format!("{}.example.internal", "n".repeat(240));
    let sr = build_repair(&PlannedRepair {
        node: node.clone(),
        target: Target::SandboxImage,
        action: RepairAction::Repair,
        event: "a/b".into(),
        signature: "s".into(),
        escalated_from: None,
        pull_secrets: Vec::new(),
    });
    assert!(sr.metadata.generate_name.as_ref().expect("prefix").len() <= 201);
    assert!(
        !sr.metadata
            .labels
            .as_ref()
            .expect("labels")
            .contains_key(NODE_LABEL)
    );
    assert_eq!(sr.spec.node_name, node);
}

#[test]
fn records_are_read_from_snapshot_repairs() {
    let mut sr = build_repair(&PlannedRepair {
        node: "node-a".into(),
        target: Target::SandboxImage,
        action: RepairAction::Verify,
        event: "a/b".into(),
        signature: "s".into(),
        escalated_from: None,
        pull_secrets: Vec::new(),
    });
    sr.metadata.name = Some("auto-node-a-xyz12".into());
    sr.metadata.creation_timestamp = Some(Time(ts("2026-01-01T11:00:00Z")));
    let r = RepairRecord::from_repair(&sr).expect("record");
    assert!(r.automatic && r.is_active() && !r.found_damage);
    assert_eq!((r.target.as_str(), r.finished_at), ("sandbox", None));

    sr.status = Some(SnapshotRepairStatus {
        phase: Some(Phase::Succeeded),
        report: Some(RequestReport {
            request_id: "1".into(),
            report: Report {
                outcome: Outcome::Corrupted,
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let r = RepairRecord::from_repair(&sr).expect("record");
    assert!(!r.is_active() && r.found_damage);
    assert_eq!(
        r.finished_at,
        Some(ts("2026-01-01T11:00:00Z")),
        "no completionTime: creation time"
    );

    sr.metadata.name = None;
    assert_eq!(RepairRecord::from_repair(&sr), None);
}

#[test]
fn a_relist_keeps_what_we_are_creating_and_drops_the_rest() {
    let mut ledger = Ledger::default();
    ledger.upsert(record("creating:node-a/sandbox", "node-a", None, None));
    ledger.upsert(record("auto-node-b-1", "node-b", None, None));
    ledger.upsert(record("deleted-meanwhile", "node-c", None, None));
    let listed = vec![record(
        "auto-node-b-1",
        "node-b",
        Some(Phase::Succeeded),
        Some(NOW),
    )];
    ledger.replace_all(listed, |r| r.name.starts_with("creating:"));
    assert_eq!(ledger.len(), 2);
    assert!(
        ledger.active_for("node-a", "sandbox").is_some(),
        "placeholder kept"
    );
    assert!(
        ledger.active_for("node-b", "sandbox").is_none(),
        "the list's newer state wins"
    );
    assert!(!ledger.contains("deleted-meanwhile"));
}
