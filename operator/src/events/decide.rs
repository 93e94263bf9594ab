//! Pure decisions of automatic remediation: given a classified, resolved event and what snapmend
//! already has in flight, create a SnapshotRepair or say exactly why not.
//!
//! Rules: `--auto-remediate off|verify|repair`; fresh events only; the node's opt-out label; at
//! most one active SnapshotRepair per (node, target); `--cooldown` after one completes; a
//! cluster-wide token-bucket rate limit (a limited candidate waits, it is not dropped). A
//! verification that found damage is escalated to a repair in `repair` mode: ambiguous signals
//! stay cheap (read-only) and cordoning happens only after damage was found.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use snapmend_crds::labels::{
    AUTO_REMEDIATE_LABEL, NODE_LABEL, TRIGGER_EVENT, TRIGGER_EVENT_ANNOTATION, TRIGGER_LABEL,
};
use snapmend_crds::{
    ContentCheck, Outcome, Phase, PullSecretRef, RepairAction, SnapshotRepair, SnapshotRepairSpec,
};

use super::classify::{Signature, Verdict};
use super::target::Target;

/// Annotation on automatic SnapshotRepairs: the classifier signature that triggered them.
pub const TRIGGER_SIGNATURE_ANNOTATION: &str = "snapmend.io/trigger-signature";
/// Annotation on a repair created because an automatic verification found damage.
pub const ESCALATED_FROM_ANNOTATION: &str = "snapmend.io/escalated-from";

/// What the operator does on its own about FailedCreatePodSandBox events
/// (`--auto-remediate off|verify|repair`; config.rs parses the flag into it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoRemediate {
    #[default]
    Off,
    Verify,
    Repair,
}

/// The action for a classified event in a mode, or none.
pub fn action_for(mode: AutoRemediate, verdict: Verdict) -> Option<RepairAction> {
    match (mode, verdict) {
        (AutoRemediate::Off, _) | (_, Verdict::Ignore) => None,
        (AutoRemediate::Verify, _) | (AutoRemediate::Repair, Verdict::Verify) => {
            Some(RepairAction::Verify)
        }
        (AutoRemediate::Repair, Verdict::Repair) => Some(RepairAction::Repair),
    }
}

/// The knobs of automatic remediation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub mode: AutoRemediate,
    /// No new automatic repair for a (node, target) this long after the last one completed.
    pub cooldown: Duration,
    /// Events last seen longer ago than this are ignored.
    pub max_event_age: Duration,
    pub rate: RateLimit,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: AutoRemediate::default(),
            cooldown: Duration::from_secs(600),
            max_event_age: Duration::from_secs(300),
            rate: RateLimit::default(),
        }
    }
}

/// Cluster-wide limit on automatic SnapshotRepair creations: `burst` at once, then `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Default for RateLimit {
    /// Enough for one repair on each of 100 nodes at once; a runaway is held to one a second.
    fn default() -> Self {
        RateLimit {
            burst: 100,
            per_minute: 60,
        }
    }
}

/// Token bucket for [`RateLimit`]; time is passed in so it stays deterministic.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Option<Timestamp>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            refilled_at: None,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        if let Some(then) = self.refilled_at {
            let elapsed = now.duration_since(then).as_secs_f64().max(0.0);
            let rate = f64::from(self.limit.per_minute) / 60.0;
            self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.limit.burst));
        }
        self.refilled_at = Some(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What snapmend knows about one SnapshotRepair (from the watch, or just created).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairRecord {
    pub name: String,
    pub node: String,
    /// `sandbox` or the image, as [`Target::key`].
    pub target: String,
    pub action: RepairAction,
    /// Created by this event remediation (`snapmend.io/trigger=event`).
    pub automatic: bool,
    pub phase: Option<Phase>,
    /// Completion time, or creation time for a terminal repair without one.
    pub finished_at: Option<Timestamp>,
    /// The node helper's last report said Corrupted.
    pub found_damage: bool,
    pub escalated_from: Option<String>,
}

impl RepairRecord {
    pub fn is_active(&self) -> bool {
        !self.phase.is_some_and(Phase::is_terminal)
    }

    /// Reads the record from a SnapshotRepair as the API server returns it.
    pub fn from_repair(sr: &SnapshotRepair) -> Option<RepairRecord> {
        let name = sr.metadata.name.clone()?;
        let status = sr.status.as_ref();
        let phase = status.and_then(|s| s.phase);
        let created = sr.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let finished_at = if phase.is_some_and(Phase::is_terminal) {
            status
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0)
                .or(created)
        } else {
            None
        };
        let labels = sr.metadata.labels.as_ref();
        let annotations = sr.metadata.annotations.as_ref();
        Some(RepairRecord {
            name,
            node: sr.spec.node_name.clone(),
            target: sr.spec.target(),
            action: sr.spec.action,
            automatic: labels
                .and_then(|l| l.get(TRIGGER_LABEL))
                .is_some_and(|v| v == TRIGGER_EVENT),
            phase,
            finished_at,
            found_damage: status
                .and_then(|s| s.report.as_ref())
                .is_some_and(|r| r.report.outcome == Outcome::Corrupted),
            escalated_from: annotations
                .and_then(|a| a.get(ESCALATED_FROM_ANNOTATION))
                .cloned(),
        })
    }
}

/// Every SnapshotRepair snapmend knows of, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    records: BTreeMap<String, RepairRecord>,
}

impl Ledger {
    pub fn upsert(&mut self, record: RepairRecord) {
        self.records.insert(record.name.clone(), record);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.records.contains_key(name)
    }

    pub fn remove(&mut self, name: &str) {
        self.records.remove(name);
    }

    /// Replaces everything with a fresh list (after a watch relist), but keeps the records
    /// `keep` selects: repairs this process is creating or has just created, which a list that
    /// started earlier cannot show yet. Dropping them would let a repeat create a second repair.
    pub fn replace_all(
        &mut self,
        records: impl IntoIterator<Item = RepairRecord>,
        keep: impl Fn(&RepairRecord) -> bool,
    ) {
        let mut fresh: BTreeMap<String, RepairRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        for (name, record) in std::mem::take(&mut self.records) {
            if keep(&record) && !fresh.contains_key(&name) {
                fresh.insert(name, record);
            }
        }
        self.records = fresh;
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn is_pair(r: &RepairRecord, node: &str, target: &str) -> bool {
        r.node == node && r.target == target
    }

    pub fn active_for(&self, node: &str, target: &str) -> Option<&RepairRecord> {
        self.records
            .values()
            .find(|r| Self::is_pair(r, node, target) && r.is_active())
    }

    pub fn last_finished_for(&self, node: &str, target: &str) -> Option<&RepairRecord> {
        self.records
            .values()
            .filter(|r| Self::is_pair(r, node, target) && r.finished_at.is_some())
            .max_by_key(|r| r.finished_at)
    }

    fn escalation_of(&self, name: &str) -> Option<&RepairRecord> {
        self.records
            .values()
            .find(|r| r.escalated_from.as_deref() == Some(name))
    }
}

/// A classified event resolved to a node and a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `<namespace>/<name>` of the event.
    pub event: String,
    pub node: String,
    pub target: Target,
    pub verdict: Verdict,
    pub signature: Signature,
    pub last_seen: Option<Timestamp>,
    /// The failed pod's pull secrets (see `pull_secrets`), for `spec.pullSecrets`.
    pub pull_secrets: Vec<PullSecretRef>,
}

/// The node as far as the decision cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeView {
    Missing,
    OptedOut,
    Eligible,
}

impl NodeView {
    /// From a node's labels: `snapmend.io/auto-remediate=false` opts out.
    pub fn from_labels(labels: Option<&BTreeMap<String, String>>) -> NodeView {
        let opted_out = labels
            .and_then(|l| l.get(AUTO_REMEDIATE_LABEL))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        if opted_out {
            NodeView::OptedOut
        } else {
            NodeView::Eligible
        }
    }
}

/// Why no SnapshotRepair was created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The mode or the classification gives no action.
    NoAction,
    Stale,
    NodeMissing,
    NodeOptedOut,
    /// A SnapshotRepair for this (node, target) is still running.
    Active {
        repair: String,
    },
    CoolingDown {
        repair: String,
        until: Timestamp,
    },
    /// The cluster-wide rate limit is exhausted; try again later.
    RateLimited,
}

impl Skip {
    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NoAction => "no-action",
            Skip::Stale => "stale",
            Skip::NodeMissing => "node-missing",
            Skip::NodeOptedOut => "node-opted-out",
            Skip::Active { .. } => "active",
            Skip::CoolingDown { .. } => "cooling-down",
            Skip::RateLimited => "rate-limited",
        }
    }

    /// Worth retrying later without a new event.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Skip::RateLimited)
    }
}

/// A SnapshotRepair to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRepair {
    pub node: String,
    pub target: Target,
    pub action: RepairAction,
    /// `<namespace>/<name>` of the triggering event.
    pub event: String,
    pub signature: String,
    pub escalated_from: Option<String>,
    pub pull_secrets: Vec<PullSecretRef>,
}

/// The checks that need no lookups: mode, freshness, in-flight and cooldown. The watcher runs this
/// first so that a storm of repeats costs no API calls.
pub fn precheck(
    candidate: &Candidate,
    ledger: &Ledger,
    policy: &Policy,
    now: Timestamp,
) -> Result<RepairAction, Skip> {
    let action = action_for(policy.mode, candidate.verdict).ok_or(Skip::NoAction)?;
    if !super::target::is_fresh(candidate.last_seen, now, policy.max_event_age) {
        return Err(Skip::Stale);
    }
    let target = candidate.target.key();
    if let Some(active) = ledger.active_for(&candidate.node, &target) {
        return Err(Skip::Active {
            repair: active.name.clone(),
        });
    }
    if let Some(last) = ledger.last_finished_for(&candidate.node, &target)
        && let Some(finished) = last.finished_at
    {
        let until = finished
            .checked_add(policy.cooldown)
            .unwrap_or(Timestamp::MAX);
        if now < until {
            return Err(Skip::CoolingDown {
                repair: last.name.clone(),
                until,
            });
        }
    }
    Ok(action)
}

/// The whole decision for one event. Takes a rate-limit token only when everything else allows.
pub fn decide(
    candidate: &Candidate,
    node: NodeView,
    ledger: &Ledger,
    bucket: &mut TokenBucket,
    policy: &Policy,
    now: Timestamp,
) -> Result<PlannedRepair, Skip> {
    let action = precheck(candidate, ledger, policy, now)?;
    match node {
        NodeView::Missing => return Err(Skip::NodeMissing),
        NodeView::OptedOut => return Err(Skip::NodeOptedOut),
        NodeView::Eligible => {}
    }
    if !bucket.try_take(now) {
        return Err(Skip::RateLimited);
    }
    Ok(PlannedRepair {
        node: candidate.node.clone(),
        target: candidate.target.clone(),
        action,
        event: candidate.event.clone(),
        signature: candidate.signature.name().to_string(),
        escalated_from: None,
        pull_secrets: candidate.pull_secrets.clone(),
    })
}

/// After an automatic verification found damage, in `repair` mode: the repair that follows it
/// (not subject to the cooldown its own completion started, but to everything else).
pub fn decide_escalation(
    finished: &RepairRecord,
    trigger_event: &str,
    node: NodeView,
    ledger: &Ledger,
    bucket: &mut TokenBucket,
    policy: &Policy,
    now: Timestamp,
) -> Option<PlannedRepair> {
    let eligible = policy.mode == AutoRemediate::Repair
        && finished.automatic
        && finished.action == RepairAction::Verify
        && finished.phase == Some(Phase::Succeeded)
        && finished.found_damage
        && node == NodeView::Eligible
        && ledger
            .active_for(&finished.node, &finished.target)
            .is_none()
        && ledger.escalation_of(&finished.name).is_none();
    if !eligible || !bucket.try_take(now) {
        return None;
    }
    let target = if finished.target == "sandbox" {
        Target::SandboxImage
    } else {
        Target::Image(finished.target.clone())
    };
    Some(PlannedRepair {
        node: finished.node.clone(),
        target,
        action: RepairAction::Repair,
        event: trigger_event.to_string(),
        signature: "verification-found-damage".to_string(),
        escalated_from: Some(finished.name.clone()),
        // The verification's own pull secrets are added by the watcher (they are in its spec).
        pull_secrets: Vec::new(),
    })
}

/// Longest `generateName` prefix we use, leaving room for the API server's random suffix.
const MAX_GENERATE_NAME_PREFIX: usize = 200;
/// Label values are limited to 63 characters.
const MAX_LABEL_VALUE: usize = 63;

/// The SnapshotRepair object for a plan: generateName `auto-<node>-`, trigger and node labels,
/// trigger-event annotation.
pub fn build_repair(plan: &PlannedRepair) -> SnapshotRepair {
    let mut prefix = format!("auto-{}", plan.node);
    prefix.truncate(MAX_GENERATE_NAME_PREFIX);
    prefix.push('-');
    let mut labels = BTreeMap::from([(TRIGGER_LABEL.to_string(), TRIGGER_EVENT.to_string())]);
    if plan.node.len() <= MAX_LABEL_VALUE {
        labels.insert(NODE_LABEL.to_string(), plan.node.clone());
    }
    let mut annotations = BTreeMap::from([
        (TRIGGER_EVENT_ANNOTATION.to_string(), plan.event.clone()),
        (
            TRIGGER_SIGNATURE_ANNOTATION.to_string(),
            plan.signature.clone(),
        ),
    ]);
    if let Some(from) = &plan.escalated_from {
        annotations.insert(ESCALATED_FROM_ANNOTATION.to_string(), from.clone());
    }
    let (image, sandbox_image) = match &plan.target {
        Target::SandboxImage => (None, true),
        Target::Image(i) => (Some(i.clone()), false),
    };
    let mut sr = SnapshotRepair::new(
        "",
        SnapshotRepairSpec {
            node_name: plan.node.clone(),
            image,
            sandbox_image,
            all_images: false,
            action: plan.action,
            cordon: true,
            content_check: ContentCheck::Full,
            pull_secrets: plan.pull_secrets.clone(),
        },
    );
    sr.metadata = ObjectMeta {
        generate_name: Some(prefix),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    };
    sr
}

#[cfg(test)]
mod tests;
