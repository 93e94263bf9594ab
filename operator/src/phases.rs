//! The contract's phase machine as a pure function of what the operator observed.
//!
//! Pending → Verifying (request Verify) → Healthy → Succeeded;
//! Corrupted + action Repair → Cordoning (only if `cordon`) → Repairing (request Repair)
//! → Repaired → Uncordoning (only what the operator cordoned) → Succeeded.
//! Anything that cannot complete → Failed. The node's `snapmend.io/cordoned-by` annotation is the
//! record of what this SnapshotRepair cordoned, so every step is safe to repeat after a restart.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use snapmend_crds::{
    LayerState, Outcome, Phase, RepairAction, RepairCulprit, RepairRequest, Report,
    SnapshotRepairSpec, SnapshotRepairStatus,
};

use crate::conditions::{self, CORDONED, READY, REPAIRED, Status, VERIFIED};
use snapmend_crds::runtime::duration::format_duration;

/// What `--failure-policy` says to do with a node this repair cordoned when it fails.
/// (config.rs parses the flag; this module stays free of the command line.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    #[default]
    KeepCordoned,
    Uncordon,
}

/// The parts of a Node the machine looks at.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeFacts {
    pub unschedulable: bool,
    /// Value of the `snapmend.io/cordoned-by` annotation.
    pub cordoned_by: Option<String>,
}

impl NodeFacts {
    /// Whether the annotation says that SnapshotRepair `name` cordoned this node.
    pub fn cordoned_by_repair(&self, name: &str) -> bool {
        self.cordoned_by.as_deref() == Some(name)
    }
}

/// Is the node's helper there, judged from its presence Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelperPresence {
    Present,
    /// No Lease, or one that was never renewed.
    NoLease,
    /// The Lease was last renewed this long ago (more than the presence window).
    Stale(Duration),
}

/// How many nodes snapmend has cordoned now, and `--max-cordoned-nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CordonBudget {
    pub cordoned_now: u32,
    pub max: u32,
}

impl CordonBudget {
    fn has_room(self) -> bool {
        self.cordoned_now < self.max
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub helper_timeout: Duration,
    pub scan_timeout: Duration,
    pub failure_policy: FailurePolicy,
}

impl Settings {
    /// How long the node helper may take to answer a request for this target, and the flag
    /// that set it.
    pub fn request_timeout(&self, all_images: bool) -> (Duration, &'static str) {
        if all_images {
            (self.scan_timeout, "--scan-timeout")
        } else {
            (self.helper_timeout, "--helper-timeout")
        }
    }
}

/// The registry credentials of `spec.pullSecrets`, as the operator prepared them for the agent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PullSecretState {
    /// `spec.pullSecrets` is empty.
    #[default]
    NotRequested,
    /// The merged copy, by name, in the operator's namespace.
    Ready(String),
    /// A referenced Secret cannot be used; the repair fails with this message.
    Unusable(String),
}

/// Everything the next step depends on.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a SnapshotRepairSpec,
    pub status: &'a SnapshotRepairStatus,
    /// `None`: the node does not exist.
    pub node: Option<&'a NodeFacts>,
    pub helper: HelperPresence,
    pub budget: CordonBudget,
    pub now: Timestamp,
    pub settings: Settings,
    /// Namespace of the presence Leases, for messages.
    pub lease_namespace: &'a str,
    /// Who inherits this repair's cordon (see [`cordon_successor`]).
    pub successor: Option<&'a str>,
    /// The pull secrets' copy that requests name.
    pub pull_secret: PullSecretState,
}

/// What to do with the node before the new status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeIntent {
    Leave,
    /// Set `unschedulable` and annotate `snapmend.io/cordoned-by=<name>`, if still schedulable.
    Cordon,
    /// Clear `unschedulable` and the annotation, only if the annotation names this repair.
    Uncordon,
    /// Keep the node cordoned but name this other repair, still working under the cordon, in
    /// the annotation; only if the annotation names this repair.
    HandOver(String),
}

/// Another SnapshotRepair, as far as sharing a node's cordon is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sibling<'a> {
    pub name: &'a str,
    pub node: &'a str,
    pub phase: Option<Phase>,
    pub action: RepairAction,
    pub cordon: bool,
    pub deleting: bool,
}

/// The repair that takes over `me`'s cordon on `node` when `me` is done: another live repair
/// of that node that is repairing under the cordon (the first by name).
pub fn cordon_successor<'a>(
    me: &str,
    node: &str,
    siblings: impl IntoIterator<Item = Sibling<'a>>,
) -> Option<&'a str> {
    siblings
        .into_iter()
        .filter(|s| {
            s.name != me
                && s.node == node
                && !s.deleting
                && s.action == RepairAction::Repair
                && s.cordon
                && matches!(s.phase, Some(Phase::Cordoning | Phase::Repairing))
        })
        .map(|s| s.name)
        .min()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// A Kubernetes Event to publish about the SnapshotRepair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: EventKind,
    pub reason: &'static str,
    pub note: String,
}

/// The result of one decision: node intent first, then the operator-owned status.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub node: NodeIntent,
    /// Desired status; `report` is carried unchanged and never written by the operator.
    pub status: SnapshotRepairStatus,
    pub events: Vec<Notice>,
    /// Look again after this long even if nothing changes (timeouts, waiting for a slot).
    pub requeue_after: Option<Duration>,
}

/// Reasons in the Ready condition and in events when a repair fails.
pub mod reason {
    pub const HELPER_UNAVAILABLE: &str = "HelperUnavailable";
    pub const NODE_NOT_FOUND: &str = "NodeNotFound";
    pub const UNREPAIRABLE: &str = "Unrepairable";
    pub const REPAIR_INCOMPLETE: &str = "RepairIncomplete";
    pub const HELPER_ERROR: &str = "HelperError";
    pub const WAITING_FOR_CORDON_SLOT: &str = "WaitingForCordonSlot";
    pub const PULL_SECRET_UNUSABLE: &str = "PullSecretUnusable";
}

/// Polling interval while waiting for a free cordon slot or for the node to show a cordon.
const RECHECK: Duration = Duration::from_secs(5);
/// Longest wait between looks while a request is outstanding (the report itself triggers a watch event).
const AGENT_RECHECK: Duration = Duration::from_secs(10);
/// metav1.Time keeps whole seconds.
const TIME_RESOLUTION: Duration = Duration::from_secs(1);
/// Quick look after changing a node, to confirm the change and move on.
const NODE_CONFIRM: Duration = Duration::from_secs(1);

/// Longest stretch of helper-written text copied into a status message or an event: the
/// status must stay small whatever a (possibly broken) helper reports.
pub const HELPER_TEXT_MAX: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..cut]))
}

/// The report that answers the current request, if the helper has written it.
pub fn current_report(status: &SnapshotRepairStatus) -> Option<&Report> {
    let request = status.request.as_ref()?;
    let report = status.report.as_ref()?;
    (report.request_id == request.id).then_some(&report.report)
}

/// `status.culprit` from a report: the guard's attribution on the first damaged layer that
/// carries one (the agent fills `culprit` only on damaged layers; the state is checked again
/// so that a healthy layer never names a culprit).
pub fn report_culprit(report: &Report) -> Option<RepairCulprit> {
    report
        .layers
        .iter()
        .filter(|l| {
            matches!(
                l.state,
                LayerState::Corrupted | LayerState::SnapshotMissing | LayerState::Repaired
            )
        })
        .find_map(|l| {
            let change = l.culprit.clone()?.bounded();
            Some(RepairCulprit {
                summary: change.summary(),
                layer: l.index,
                snapshot_id: l.snapshot_id.clone(),
                change,
            })
        })
}

/// At most this many image names of each kind in a scan's message, each cut to
/// [`IMAGE_NAME_MAX`] bytes.
const NAMED_IMAGES: usize = 3;
const IMAGE_NAME_MAX: usize = 256;

/// The findings as a message says them: the Findings column, and for a scan which images are
/// damaged (or were repaired), the first few by name.
pub fn findings_text(report: &Report) -> String {
    match &report.scan {
        Some(scan) => scan.findings_naming(NAMED_IMAGES, IMAGE_NAME_MAX),
        None => report.findings_summary(),
    }
}

/// Request ids count up from 1; any id that is not a number restarts the count.
pub fn next_request_id(previous: Option<&RepairRequest>) -> String {
    let n = previous.and_then(|r| r.id.parse::<u64>().ok()).unwrap_or(0);
    (n + 1).to_string()
}

/// What deleting the SnapshotRepair must do to its node: undo only its own cordon (or pass it
/// to a sibling still repairing under it).
pub fn cleanup_intent(name: &str, node: Option<&NodeFacts>, successor: Option<&str>) -> NodeIntent {
    match (node, successor) {
        (Some(n), Some(next)) if n.cordoned_by_repair(name) => {
            NodeIntent::HandOver(next.to_string())
        }
        (Some(n), None) if n.cordoned_by_repair(name) => NodeIntent::Uncordon,
        _ => NodeIntent::Leave,
    }
}

/// The next step for the observed state.
pub fn next_step(o: &Observed) -> Step {
    let mut status = o.status.clone();
    status.observed_generation = o.generation;
    status.target = Some(o.spec.target());
    let phase = status.phase.unwrap_or_default();
    status.phase = Some(phase);
    let mut m = Machine {
        o,
        step: Step {
            node: NodeIntent::Leave,
            status,
            events: Vec::new(),
            requeue_after: None,
        },
    };
    match phase {
        Phase::Pending => m.pending(),
        Phase::Verifying => m.verifying(),
        Phase::Cordoning => m.cordoning(),
        Phase::Repairing => m.repairing(),
        Phase::Uncordoning => m.uncordoning(),
        Phase::Succeeded => m.release_leftover_cordon(),
        Phase::Failed => {}
    }
    m.step
}

struct Machine<'a, 'b> {
    o: &'b Observed<'a>,
    step: Step,
}

impl Machine<'_, '_> {
    fn node_name(&self) -> &str {
        &self.o.spec.node_name
    }

    /// The target as messages name it: the image, `sandbox`, or `all images`.
    fn target(&self) -> String {
        if self.o.spec.all_images {
            return "all images".to_string();
        }
        self.o.spec.target()
    }

    /// `is`, or `are` for all images.
    fn is(&self) -> &'static str {
        if self.o.spec.all_images { "are" } else { "is" }
    }

    fn event(&mut self, kind: EventKind, reason: &'static str, note: String) {
        self.step.events.push(Notice { kind, reason, note });
    }

    fn condition(&mut self, type_: &str, status: Status, reason: &str, message: &str) {
        conditions::set(
            &mut self.step.status.conditions,
            type_,
            status,
            reason,
            message,
            self.o.generation,
            self.o.now,
        );
    }

    fn enter(&mut self, phase: Phase, message: String) {
        self.step.status.phase = Some(phase);
        self.step.status.message = Some(message);
    }

    fn issue_request(&mut self, action: RepairAction) {
        let id = next_request_id(self.step.status.request.as_ref());
        self.step.status.request = Some(RepairRequest {
            id,
            action,
            pull_secret: match &self.o.pull_secret {
                PullSecretState::Ready(name) => Some(name.clone()),
                PullSecretState::NotRequested | PullSecretState::Unusable(_) => None,
            },
        });
        self.step.status.request_time = Some(Time(self.o.now));
        let (timeout, _) = self.o.settings.request_timeout(self.o.spec.all_images);
        self.step.requeue_after = Some(timeout.min(AGENT_RECHECK));
    }

    /// The findings summary, and the culprit when the report names one (an earlier one is
    /// kept when it does not: the repair's report may come from an agent without the guard).
    fn record_findings(&mut self, report: &Report) {
        self.step.status.findings = Some(report.findings_summary());
        if let Some(culprit) = report_culprit(report) {
            self.step.status.culprit = Some(culprit);
        }
    }

    /// `; damaged by pid …` for messages about damage, when the culprit is known.
    fn culprit_tail(&self) -> String {
        match &self.step.status.culprit {
            Some(c) => format!("; {}", bounded(&c.summary, HELPER_TEXT_MAX)),
            None => String::new(),
        }
    }

    fn pending(&mut self) {
        if self.o.node.is_none() {
            return self.node_not_found();
        }
        // A repair parked here by the cordon cap keeps its verification and only needs a slot.
        let parked = self.o.spec.action == RepairAction::Repair
            && self
                .o
                .status
                .request
                .as_ref()
                .is_some_and(|r| r.action == RepairAction::Verify)
            && current_report(self.o.status)
                .is_some_and(|r| matches!(r.outcome, Outcome::Corrupted | Outcome::Unrepairable));
        if parked {
            return self.cordon_then_repair();
        }
        if let Some(why) = self.helper_absence() {
            return self.fail(reason::HELPER_UNAVAILABLE, why);
        }
        if let PullSecretState::Unusable(why) = &self.o.pull_secret {
            return self.fail(reason::PULL_SECRET_UNUSABLE, why.clone());
        }
        if self.step.status.start_time.is_none() {
            self.step.status.start_time = Some(Time(self.o.now));
        }
        self.issue_request(RepairAction::Verify);
        let msg = format!("verifying {} on node {}", self.target(), self.node_name());
        self.condition(VERIFIED, Status::Unknown, "Verifying", &msg);
        self.condition(READY, Status::False, "Verifying", &msg);
        self.event(EventKind::Normal, "VerifyRequested", msg.clone());
        self.enter(Phase::Verifying, msg);
    }

    fn verifying(&mut self) {
        if self.o.node.is_none() {
            return self.node_not_found();
        }
        let Some(report) = current_report(self.o.status) else {
            return self.await_helper();
        };
        self.record_findings(report);
        let findings = findings_text(report);
        match report.outcome {
            Outcome::Healthy => {
                let msg = format!(
                    "{} on node {} {} healthy; nothing to repair",
                    self.target(),
                    self.node_name(),
                    self.is()
                );
                self.condition(VERIFIED, Status::True, "Healthy", &msg);
                self.succeed("Healthy", msg);
            }
            Outcome::Corrupted | Outcome::Unrepairable => {
                let verdict = if report.outcome == Outcome::Unrepairable {
                    "Unrepairable"
                } else {
                    "Corrupted"
                };
                let mut msg = format!(
                    "{} on node {} {} damaged: {findings}",
                    self.target(),
                    self.node_name(),
                    self.is()
                );
                // A scan's message repeats its counts; the summary has them.
                if let Some(extra) = report.message.as_ref().filter(|_| report.scan.is_none()) {
                    msg.push_str(&format!(" ({extra})"));
                }
                msg.push_str(&self.culprit_tail());
                self.condition(VERIFIED, Status::False, verdict, &msg);
                self.event(EventKind::Warning, "CorruptionFound", msg.clone());
                match self.o.spec.action {
                    RepairAction::Verify => self.succeed(
                        "Verified",
                        format!("{msg}; not repaired because action is Verify"),
                    ),
                    RepairAction::Repair => self.cordon_then_repair(),
                }
            }
            Outcome::Repaired => self.fail(
                reason::HELPER_ERROR,
                format!(
                    "the node helper answered verify request {} with outcome Repaired",
                    self.request_id()
                ),
            ),
            Outcome::Error => self.fail(reason::HELPER_ERROR, self.helper_error_text(report)),
        }
    }

    /// From a damaged verification: cordon if asked (within the cap), then request the repair.
    fn cordon_then_repair(&mut self) {
        let Some(node) = self.o.node else {
            return self.node_not_found();
        };
        if self.o.spec.action != RepairAction::Repair {
            return self.stop_after_verification(node);
        }
        // No point cordoning (or asking) a node whose helper is gone.
        if let Some(why) = self.helper_absence() {
            return self.fail(reason::HELPER_UNAVAILABLE, why);
        }
        if node.unschedulable && node.cordoned_by_repair(self.o.name) {
            return self.start_repair(true);
        }
        if !self.o.spec.cordon {
            self.condition(
                CORDONED,
                Status::False,
                "NotRequested",
                "spec.cordon is false",
            );
            return self.start_repair(false);
        }
        if node.unschedulable {
            let msg = format!(
                "node {} was already unschedulable; it stays so",
                self.node_name()
            );
            self.condition(CORDONED, Status::True, "AlreadyUnschedulable", &msg);
            return self.start_repair(false);
        }
        if !self.o.budget.has_room() {
            let msg = format!(
                "waiting for a cordon slot: {} of --max-cordoned-nodes {} nodes are cordoned by snapmend",
                self.o.budget.cordoned_now, self.o.budget.max
            );
            if self.o.status.phase != Some(Phase::Pending) {
                self.event(
                    EventKind::Normal,
                    reason::WAITING_FOR_CORDON_SLOT,
                    msg.clone(),
                );
            }
            self.condition(READY, Status::False, reason::WAITING_FOR_CORDON_SLOT, &msg);
            self.enter(Phase::Pending, msg);
            self.step.requeue_after = Some(RECHECK);
            return;
        }
        let msg = format!(
            "cordoning node {} before repairing {}",
            self.node_name(),
            self.target()
        );
        if self.o.status.phase != Some(Phase::Cordoning) {
            self.event(EventKind::Normal, "Cordoning", msg.clone());
        }
        self.condition(READY, Status::False, "Cordoning", &msg);
        self.step.node = NodeIntent::Cordon;
        self.step.requeue_after = Some(NODE_CONFIRM);
        self.enter(Phase::Cordoning, msg);
    }

    /// The spec was changed to `action: Verify` after damage was found: finish with the
    /// verification and give back any cordon taken for the repair.
    fn stop_after_verification(&mut self, node: &NodeFacts) {
        let mut msg = format!(
            "{} on node {} is damaged; not repaired because action is now Verify",
            self.target(),
            self.node_name()
        );
        if node.cordoned_by_repair(self.o.name) {
            let tail = match self.o.successor {
                Some(next) => self.hand_over(next),
                None => {
                    self.step.node = NodeIntent::Uncordon;
                    let m = format!("node {} uncordoned", self.node_name());
                    self.condition(CORDONED, Status::False, "Uncordoned", &m);
                    m
                }
            };
            msg = format!("{msg}; {tail}");
        }
        self.succeed("Verified", msg);
    }

    fn cordoning(&mut self) {
        self.cordon_then_repair();
    }

    fn start_repair(&mut self, cordoned_by_operator: bool) {
        self.step.status.cordoned_by_operator = Some(cordoned_by_operator);
        if cordoned_by_operator {
            let msg = format!("node {} cordoned by snapmend", self.node_name());
            self.condition(CORDONED, Status::True, "CordonedBySnapmend", &msg);
        }
        self.issue_request(RepairAction::Repair);
        let msg = format!("repairing {} on node {}", self.target(), self.node_name());
        self.condition(REPAIRED, Status::Unknown, "Repairing", &msg);
        self.condition(READY, Status::False, "Repairing", &msg);
        self.event(EventKind::Normal, "RepairRequested", msg.clone());
        self.enter(Phase::Repairing, msg);
    }

    fn repairing(&mut self) {
        let Some(node) = self.o.node else {
            return self.node_not_found();
        };
        if node.cordoned_by_repair(self.o.name) && self.o.status.cordoned_by_operator != Some(true)
        {
            // A sibling repair handed its cordon over: releasing it is now this repair's job.
            self.step.status.cordoned_by_operator = Some(true);
            let msg = format!(
                "node {} cordon handed over by another SnapshotRepair",
                self.node_name()
            );
            self.condition(CORDONED, Status::True, "HandedOver", &msg);
        }
        let Some(report) = current_report(self.o.status) else {
            return self.await_helper();
        };
        self.record_findings(report);
        let findings = findings_text(report);
        match report.outcome {
            Outcome::Repaired | Outcome::Healthy => {
                let (why, text) = if report.outcome == Outcome::Repaired {
                    (
                        "Repaired",
                        if report.scan.is_some() {
                            format!(
                                "repaired {} on node {}: {findings}{}",
                                self.target(),
                                self.node_name(),
                                self.culprit_tail()
                            )
                        } else {
                            format!(
                                "repaired {} on node {} ({findings}){}",
                                self.target(),
                                self.node_name(),
                                self.culprit_tail()
                            )
                        },
                    )
                } else {
                    (
                        "NothingToRepair",
                        format!(
                            "{} on node {} {} already healthy at repair time",
                            self.target(),
                            self.node_name(),
                            if self.o.spec.all_images {
                                "were"
                            } else {
                                "was"
                            }
                        ),
                    )
                };
                self.condition(REPAIRED, Status::True, why, &text);
                self.event(EventKind::Normal, why, text.clone());
                if node.cordoned_by_repair(self.o.name)
                    && let Some(next) = self.o.successor
                {
                    let tail = self.hand_over(next);
                    self.succeed(why, format!("{text}; {tail}"));
                } else if node.cordoned_by_repair(self.o.name) {
                    let msg = format!("{text}; uncordoning node {}", self.node_name());
                    self.condition(READY, Status::False, "Uncordoning", &msg);
                    self.step.node = NodeIntent::Uncordon;
                    self.step.requeue_after = Some(NODE_CONFIRM);
                    self.enter(Phase::Uncordoning, msg);
                } else {
                    let tail = self.untouched_node_text(node);
                    self.succeed(why, format!("{text}; {tail}"));
                }
            }
            Outcome::Corrupted => {
                let why = format!(
                    "the repair left damage behind: {findings}{}",
                    self.culprit_tail()
                );
                self.fail(
                    reason::REPAIR_INCOMPLETE,
                    self.with_helper_message(why, report),
                );
            }
            Outcome::Unrepairable => {
                let why = format!(
                    "cannot repair {} on node {}: {findings}",
                    self.target(),
                    self.node_name()
                );
                self.fail(reason::UNREPAIRABLE, self.with_helper_message(why, report));
            }
            Outcome::Error => self.fail(reason::HELPER_ERROR, self.helper_error_text(report)),
        }
    }

    fn uncordoning(&mut self) {
        let repaired = conditions::get(&self.step.status.conditions, REPAIRED)
            .map(|c| c.message.clone())
            .unwrap_or_else(|| format!("repaired {} on node {}", self.target(), self.node_name()));
        let Some(node) = self.o.node else {
            return self.succeed(
                "Repaired",
                format!("{repaired}; node {} no longer exists", self.node_name()),
            );
        };
        if node.cordoned_by_repair(self.o.name) {
            if let Some(next) = self.o.successor {
                let tail = self.hand_over(next);
                return self.succeed("Repaired", format!("{repaired}; {tail}"));
            }
            self.step.node = NodeIntent::Uncordon;
            self.step.requeue_after = Some(NODE_CONFIRM);
            return;
        }
        let msg = format!("node {} uncordoned", self.node_name());
        self.condition(CORDONED, Status::False, "Uncordoned", &msg);
        self.event(EventKind::Normal, "Uncordoned", msg.clone());
        let tail = if node.unschedulable {
            format!(
                "node {} was cordoned again by someone else and stays so",
                self.node_name()
            )
        } else {
            msg
        };
        self.succeed("Repaired", format!("{repaired}; {tail}"));
    }

    fn await_helper(&mut self) {
        if let Some(why) = self.helper_absence() {
            return self.fail(reason::HELPER_UNAVAILABLE, why);
        }
        let (timeout, flag) = self.o.settings.request_timeout(self.o.spec.all_images);
        let Some(issued) = self.o.status.request_time.as_ref() else {
            // A request without a time (written by hand or an older operator): start the clock now.
            self.step.status.request_time = Some(Time(self.o.now));
            self.step.requeue_after = Some(timeout.min(AGENT_RECHECK));
            return;
        };
        // requestTime is stored in whole seconds; never time out before the full timeout.
        let age = Duration::try_from(self.o.now.duration_since(issued.0))
            .unwrap_or(Duration::ZERO)
            .saturating_sub(TIME_RESOLUTION);
        if age >= timeout {
            let why = format!(
                "the node helper on {} did not answer request {} within {flag} {}",
                self.node_name(),
                self.request_id(),
                format_duration(timeout)
            );
            return self.fail(reason::HELPER_UNAVAILABLE, why);
        }
        self.step.requeue_after = Some((timeout - age).min(AGENT_RECHECK));
    }

    fn helper_absence(&self) -> Option<String> {
        let lease = format!(
            "{}/{}",
            self.o.lease_namespace,
            snapmend_crds::labels::helper_lease_name(self.node_name())
        );
        match &self.o.helper {
            HelperPresence::Present => None,
            HelperPresence::NoLease => Some(format!(
                "no node helper is running on {}: presence Lease {lease} does not exist",
                self.node_name()
            )),
            HelperPresence::Stale(age) => Some(format!(
                "no node helper is running on {}: presence Lease {lease} was last renewed {} ago",
                self.node_name(),
                format_duration(*age)
            )),
        }
    }

    fn request_id(&self) -> String {
        self.o
            .status
            .request
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default()
    }

    fn helper_error_text(&self, report: &Report) -> String {
        let base = format!("the node helper on {} could not run", self.node_name());
        self.with_helper_message(base, report)
    }

    fn with_helper_message(&self, text: String, report: &Report) -> String {
        match &report.message {
            Some(m) if !m.is_empty() => format!("{text}: {}", bounded(m, HELPER_TEXT_MAX)),
            _ => text,
        }
    }

    fn untouched_node_text(&self, node: &NodeFacts) -> String {
        if node.unschedulable {
            format!(
                "node {} was already unschedulable and stays so",
                self.node_name()
            )
        } else {
            format!("node {} was not cordoned", self.node_name())
        }
    }

    fn node_not_found(&mut self) {
        let why = format!("node {} does not exist", self.node_name());
        self.fail(reason::NODE_NOT_FOUND, why);
    }

    fn succeed(&mut self, why: &'static str, message: String) {
        self.condition(READY, Status::True, why, &message);
        self.event(EventKind::Normal, "Succeeded", message.clone());
        self.step.status.completion_time = Some(Time(self.o.now));
        self.step.requeue_after = None;
        self.enter(Phase::Succeeded, message);
    }

    /// Passes this repair's cordon to `next`, which is still repairing under it.
    fn hand_over(&mut self, next: &str) -> String {
        self.step.node = NodeIntent::HandOver(next.to_string());
        let msg = format!(
            "node {} stays cordoned for SnapshotRepair {next}, which is still repairing it",
            self.node_name()
        );
        self.condition(CORDONED, Status::False, "HandedOver", &msg);
        self.event(EventKind::Normal, "CordonHandedOver", msg.clone());
        msg
    }

    /// A finished repair never keeps a cordon (a crash could leave one behind).
    fn release_leftover_cordon(&mut self) {
        if self
            .o
            .node
            .is_some_and(|n| n.cordoned_by_repair(self.o.name))
        {
            self.step.node = match self.o.successor {
                Some(next) => NodeIntent::HandOver(next.to_string()),
                None => NodeIntent::Uncordon,
            };
        }
    }

    /// Ends the repair; the node is handled per `--failure-policy` if this repair cordoned it.
    fn fail(&mut self, why: &'static str, text: String) {
        let name = self.node_name().to_string();
        let tail = match self.o.node {
            Some(node) if node.cordoned_by_repair(self.o.name) => {
                match self.o.settings.failure_policy {
                    FailurePolicy::KeepCordoned => format!(
                        "node {name} stays cordoned (--failure-policy keep-cordoned); fix it, then run `kubectl uncordon {name}` or delete this SnapshotRepair"
                    ),
                    FailurePolicy::Uncordon => match self.o.successor {
                        Some(next) => self.hand_over(next),
                        None => {
                            self.step.node = NodeIntent::Uncordon;
                            let msg = format!("node {name} uncordoned (--failure-policy uncordon)");
                            self.condition(CORDONED, Status::False, "Uncordoned", &msg);
                            msg
                        }
                    },
                }
            }
            Some(node) => self.untouched_node_text(node),
            None => format!("node {name} not touched"),
        };
        for step in [VERIFIED, REPAIRED] {
            if conditions::is_in_progress(&self.step.status.conditions, step) {
                self.condition(step, Status::False, why, &text);
            }
        }
        let message = format!("{text}; {tail}");
        self.condition(READY, Status::False, why, &message);
        self.event(EventKind::Warning, why, message.clone());
        self.step.status.completion_time = Some(Time(self.o.now));
        self.step.requeue_after = None;
        self.enter(Phase::Failed, message);
    }
}

#[cfg(test)]
mod tests;
