//! The thin part around `phases`: read the SnapshotRepair, its Node and its helper's Lease from
//! the shared stores (`caches`), decide with `phases::next_step`, then change the node and
//! apply the operator-owned status (server-side apply, field manager `snapmend-operator`).
//!
//! No lock is held across reconciles: repairs of different nodes run in parallel, and the cordon
//! cap is kept by atomic in-memory reservations (`cordon_slots`). Reconciles are woken by
//! watches (the repair itself, its Node, its helper's Lease); the only requeues are deadlines:
//! `--helper-timeout` of an outstanding request, and the helper Lease going stale.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use snapmend_crds::labels::{FINALIZER, NODE_LABEL, helper_lease_name};
use snapmend_crds::{Phase, SnapshotRepair, SnapshotRepairStatus};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, instrument, warn};

use crate::caches::{Caches, repairs_waiting_for_slot};
use crate::conditions::{self, READY};
use crate::config::OperatorConfig;
use crate::cordon::{self, node_facts};
use crate::cordon_slots::{CordonSlots, Reservation};
use crate::error::{Error, kube_context};
use crate::metrics::Metrics;
use crate::node_condition::{self, Finished};
use crate::phases::{
    self, CordonBudget, EventKind, NodeIntent, Notice, Observed, PullSecretState, Settings,
    Sibling, Step, cleanup_intent, cordon_successor, current_report,
};
use crate::presence::{helper_presence, stale_in};
use crate::pull_secrets;

/// Event reporter name and the field manager of the operator's status.
pub const CONTROLLER_NAME: &str = "snapmend-operator";
/// Back-off after a failed reconciliation.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Retry after a write lost a race (409): the store then has the winner's change.
const CONFLICT_RETRY: Duration = Duration::from_millis(500);
/// A store that has not yet delivered this operator's own last status write is asked again
/// after this long (the watch event usually arrives first and wakes the repair anyway).
const STALE_RETRY: Duration = Duration::from_millis(250);
/// After this long a missing watch event is no longer waited for (a re-list may skip it).
const STALE_GIVE_UP: Duration = Duration::from_secs(10);
/// requestTime keeps whole seconds: deadlines are looked at this much late, never early.
const TIME_RESOLUTION: Duration = Duration::from_secs(1);

/// Shared by every reconciliation of one leadership term.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub caches: Caches,
    pub slots: CordonSlots,
    written: WrittenStatus,
    /// Per node, the repair whose `SnapshotsDamaged` verdict this operator last wrote.
    node_verdicts: Mutex<HashMap<String, (String, node_condition::Verdict)>>,
    /// Wakes repairs (e.g. those waiting for a cordon slot when one was given back).
    wake: UnboundedSender<ObjectRef<SnapshotRepair>>,
    /// UIDs of the repairs whose pull secrets this operator has copied for the agent.
    pull_copies: Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
        caches: Caches,
        wake: UnboundedSender<ObjectRef<SnapshotRepair>>,
    ) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: Some(config.env.identity.clone()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            slots: CordonSlots::new(config.args.max_cordoned_nodes),
            client,
            config,
            metrics,
            caches,
            written: WrittenStatus::default(),
            node_verdicts: Mutex::new(HashMap::new()),
            wake,
            pull_copies: Mutex::new(HashSet::new()),
        }
    }

    fn repairs(&self) -> Api<SnapshotRepair> {
        Api::all(self.client.clone())
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn settings(&self) -> Settings {
        Settings {
            helper_timeout: self.config.args.helper_timeout,
            scan_timeout: self.config.args.scan_timeout,
            failure_policy: self.config.args.failure_policy,
        }
    }

    /// A slot was given back without a Node change the Node watch would see: wake the waiters.
    fn wake_slot_waiters(&self) {
        for waiting in repairs_waiting_for_slot(&self.caches.repairs) {
            let _ = self.wake.send(waiting);
        }
    }

    fn pull_copies_lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pull_copies.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_pull_copy(&self, sr: &SnapshotRepair) {
        self.pull_copies_lock()
            .remove(sr.uid().as_deref().unwrap_or_default());
    }

    fn update_cordon_gauge(&self) {
        let in_use = self.slots.in_use(|| self.caches.cordoned_nodes());
        self.metrics.set_nodes_cordoned(in_use);
    }
}

/// The operator-owned status this operator last applied to each repair, until the store shows
/// it: a reconcile woken by another watch (a Lease renewal, say) must not decide on a copy
/// older than its own last write. Kept as JSON, the form the store's copy went through
/// (timestamps keep whole seconds there).
#[derive(Default)]
struct WrittenStatus(Mutex<HashMap<String, (serde_json::Value, Instant)>>);

fn as_written(status: &SnapshotRepairStatus) -> serde_json::Value {
    serde_json::to_value(operator_fields(status)).unwrap_or_default()
}

impl WrittenStatus {
    fn record(&self, name: &str, status: &SnapshotRepairStatus) {
        self.lock()
            .insert(name.to_string(), (as_written(status), Instant::now()));
    }

    /// Whether the store's copy of `name` predates this operator's last status write.
    fn is_behind(&self, name: &str, stored: &SnapshotRepairStatus) -> bool {
        let mut written = self.lock();
        let Some((status, at)) = written.get(name) else {
            return false;
        };
        if *status == as_written(stored) || at.elapsed() > STALE_GIVE_UP {
            written.remove(name);
            return false;
        }
        true
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (serde_json::Value, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Entry point for the Controller: the finalizer helper around apply and cleanup.
#[instrument(skip_all, fields(repair = %sr.name_any(), node = %sr.spec.node_name))]
pub async fn reconcile(sr: Arc<SnapshotRepair>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The controller starts only once every store holds the whole cluster (run.rs).
    let started = Instant::now();
    let name = sr.name_any();
    let api = ctx.repairs();
    let result = finalizer(&api, FINALIZER, sr, |event| {
        let ctx = ctx.clone();
        async move {
            match event {
                FinalizerEvent::Apply(sr) => apply(&sr, &ctx).await,
                FinalizerEvent::Cleanup(sr) => cleanup(&sr, &ctx).await,
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer {
        finalizer: FINALIZER,
        name,
        source: Box::new(e),
    });
    ctx.metrics.reconciled(started.elapsed());
    result
}

pub fn error_policy(sr: Arc<SnapshotRepair>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(repair = %sr.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics.reconcile_error(error.metric_label());
    if error.is_conflict() {
        return Action::requeue(CONFLICT_RETRY);
    }
    Action::requeue(ERROR_RETRY)
}

async fn apply(sr: &SnapshotRepair, ctx: &Context) -> Result<Action, Error> {
    let name = sr.name_any();
    let status = sr.status.clone().unwrap_or_default();
    if ctx.written.is_behind(&name, &status) {
        debug!("store has not caught up with the last status write yet");
        return Ok(Action::requeue(STALE_RETRY));
    }
    let resource_version = ensure_node_label(&ctx.repairs(), sr).await?;
    let before = status.phase;
    if before == Some(Phase::Failed) {
        ctx.metrics.set_phase(&name, before);
        report_to_node(ctx, &name, &sr.spec.node_name, &status).await?;
        return Ok(Action::await_change());
    }

    let node_name = sr.spec.node_name.as_str();
    let node = ctx.caches.node(node_name);
    let facts = node.as_deref().map(node_facts);
    let lease = ctx.caches.lease(&helper_lease_name(node_name));
    let successor = successor_of(sr, &ctx.caches.repairs());
    let pull_secret = pull_secret_state(sr, &status, ctx).await?;
    let max = ctx.slots.max();
    let now = Timestamp::now();
    let observed = Observed {
        name: &name,
        generation: sr.metadata.generation,
        spec: &sr.spec,
        status: &status,
        node: facts.as_ref(),
        helper: helper_presence(lease.as_deref(), now),
        budget: CordonBudget {
            cordoned_now: ctx
                .slots
                .held_elsewhere(node_name, || ctx.caches.cordoned_nodes()),
            max,
        },
        now,
        settings: ctx.settings(),
        lease_namespace: &ctx.config.env.namespace,
        successor: successor.as_deref(),
        pull_secret,
    };
    let mut step = phases::next_step(&observed);
    if step.node == NodeIntent::Cordon
        && let Reservation::Full { held_elsewhere } =
            ctx.slots
                .try_reserve(node_name, &name, || ctx.caches.cordoned_nodes())
    {
        // Another reconcile took the last slot since the budget was counted: wait instead.
        step = phases::next_step(&Observed {
            budget: CordonBudget {
                cordoned_now: held_elsewhere.max(max),
                max,
            },
            ..observed.clone()
        });
    }
    if step.node != NodeIntent::Cordon
        && !facts.as_ref().is_some_and(|f| f.cordoned_by_repair(&name))
    {
        // No cordon of this repair is pending or held: nothing to reserve a slot for.
        ctx.slots.release(node_name, &name);
    }
    apply_node_intent(ctx, &name, node_name, node.as_deref(), &step.node).await?;
    ctx.update_cordon_gauge();
    let finishing = step.status.phase.is_some_and(Phase::is_terminal)
        && !before.is_some_and(Phase::is_terminal);
    if finishing && !sr.spec.pull_secrets.is_empty() {
        // Before the final status: should the delete fail, the retry still sees a live repair.
        pull_secrets::delete_copy(&ctx.client, &name, &ctx.config.env.namespace).await?;
        ctx.forget_pull_copy(sr);
    }
    if operator_fields(&status) != operator_fields(&step.status) {
        write_status(
            &ctx.repairs(),
            &name,
            resource_version.as_deref(),
            &step.status,
        )
        .await?;
        ctx.written.record(&name, &step.status);
    }
    report_to_node(ctx, &name, node_name, &step.status).await?;
    record_transition(ctx, &name, &status, &step);
    for notice in &step.events {
        publish(ctx, sr, notice).await;
    }
    let after = step.status.phase;
    if before != after {
        info!(from = ?before, to = ?after, message = step.status.message.as_deref().unwrap_or(""), "phase changed");
    }
    Ok(next_look(
        &step.status,
        ctx.settings().request_timeout(sr.spec.all_images).0,
        lease.as_deref(),
        now,
    ))
}

/// The copy of `spec.pullSecrets` that requests name: made once, before the first request
/// (phase Pending); later phases name the copy made then.
async fn pull_secret_state(
    sr: &SnapshotRepair,
    status: &SnapshotRepairStatus,
    ctx: &Context,
) -> Result<PullSecretState, Error> {
    if sr.spec.pull_secrets.is_empty() {
        return Ok(PullSecretState::NotRequested);
    }
    let copy = snapmend_crds::labels::pull_secret_copy_name(&sr.name_any());
    let uid = sr.uid().unwrap_or_default();
    let first_request = matches!(status.phase, None | Some(Phase::Pending));
    if !first_request || ctx.pull_copies_lock().contains(&uid) {
        return Ok(PullSecretState::Ready(copy));
    }
    let state = pull_secrets::prepare(&ctx.client, sr, &ctx.config.env.namespace).await?;
    if matches!(state, PullSecretState::Ready(_)) {
        ctx.pull_copies_lock().insert(uid);
    }
    Ok(state)
}

/// Writes the node's `SnapshotsDamaged` condition once `name` has finished, if it is the last
/// finished repair of the node and the node does not show its verdict yet (a strategic merge
/// patch of `nodes/status` with this one condition, the way node-problem-detector does it).
async fn report_to_node(
    ctx: &Context,
    name: &str,
    node_name: &str,
    status: &SnapshotRepairStatus,
) -> Result<(), Error> {
    let Some(verdict) = node_condition::decide(name, status) else {
        return Ok(());
    };
    let Some(node) = ctx.caches.node(node_name) else {
        return Ok(());
    };
    let already = ctx
        .node_verdicts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(node_name)
        .is_some_and(|(sr, v)| sr == name && *v == verdict);
    if already {
        return Ok(());
    }
    let repairs = ctx.caches.repairs();
    let others = repairs
        .iter()
        .filter(|s| s.spec.node_name == node_name)
        .filter_map(|s| {
            let st = s.status.as_ref()?;
            let other = s.metadata.name.as_deref()?;
            node_condition::decide(other, st)?;
            Some(Finished {
                name: other,
                completion: st.completion_time.as_ref(),
            })
        });
    let me = Finished {
        name,
        completion: status.completion_time.as_ref(),
    };
    if !node_condition::speaks_for_node(me, others) {
        return Ok(());
    }
    let current = node_condition::current(&node);
    if node_condition::needs_write(&verdict, status.completion_time.as_ref(), current) {
        let condition = node_condition::condition(&verdict, current, Timestamp::now());
        let params = PatchParams {
            field_manager: Some(CONTROLLER_NAME.to_string()),
            ..Default::default()
        };
        ctx.nodes()
            .patch_status(
                node_name,
                &params,
                &Patch::Strategic(node_condition::status_patch(&condition)),
            )
            .await
            .map_err(kube_context("node_condition", format!("node {node_name}")))?;
        info!(
            status = verdict.status(),
            reason = verdict.reason,
            "node condition SnapshotsDamaged written"
        );
    }
    ctx.node_verdicts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(node_name.to_string(), (name.to_string(), verdict));
    Ok(())
}

/// When to look again without a watch event: only at a deadline. An outstanding request is
/// looked at when `--helper-timeout` runs out or when the helper's Lease would go stale
/// (a renewal or the report wakes it sooner). Everything else waits for a watch event.
pub fn next_look(
    status: &SnapshotRepairStatus,
    helper_timeout: Duration,
    lease: Option<&Lease>,
    now: Timestamp,
) -> Action {
    let outstanding = matches!(status.phase, Some(Phase::Verifying | Phase::Repairing))
        && status.request.is_some()
        && current_report(status).is_none();
    if !outstanding {
        return Action::await_change();
    }
    let age = status
        .request_time
        .as_ref()
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or(Duration::ZERO);
    let timeout_in = helper_timeout.saturating_sub(age) + TIME_RESOLUTION;
    let deadline = match stale_in(lease, now) {
        Some(stale) => timeout_in.min(stale + TIME_RESOLUTION),
        None => timeout_in,
    };
    Action::requeue(deadline)
}

async fn apply_node_intent(
    ctx: &Context,
    name: &str,
    node_name: &str,
    node: Option<&Node>,
    intent: &NodeIntent,
) -> Result<(), Error> {
    let api = ctx.nodes();
    match (intent, node) {
        (NodeIntent::Leave, _) | (_, None) => {
            if *intent == NodeIntent::Cordon {
                ctx.slots.release(node_name, name);
            }
        }
        (NodeIntent::Cordon, Some(node)) => {
            // On an error the reservation stays: the patch may have landed (a 409 from a stale
            // store often means it did), and the next reconcile sees what the node is.
            if !cordon::cordon(&api, node, name).await? {
                // Someone else's unschedulable node: no slot of ours is used.
                ctx.slots.release(node_name, name);
                ctx.wake_slot_waiters();
            }
        }
        (NodeIntent::Uncordon, Some(node)) => {
            cordon::uncordon(&api, node, name).await?;
            ctx.slots.release(node_name, name);
        }
        (NodeIntent::HandOver(next), Some(node)) => {
            cordon::hand_over(&api, node, name, next).await?;
        }
    }
    Ok(())
}

/// The sibling repair that inherits `sr`'s cordon, if any.
fn successor_of(sr: &SnapshotRepair, all: &[Arc<SnapshotRepair>]) -> Option<String> {
    let me = sr.name_any();
    let siblings = all.iter().map(|s| Sibling {
        name: s.metadata.name.as_deref().unwrap_or_default(),
        node: &s.spec.node_name,
        phase: s.status.as_ref().and_then(|st| st.phase),
        action: s.spec.action,
        cordon: s.spec.cordon,
        deleting: s.metadata.deletion_timestamp.is_some(),
    });
    cordon_successor(&me, &sr.spec.node_name, siblings).map(str::to_string)
}

/// Deleting a SnapshotRepair undoes its own cordon, whatever phase it was in.
async fn cleanup(sr: &SnapshotRepair, ctx: &Context) -> Result<Action, Error> {
    let name = sr.name_any();
    let node_name = &sr.spec.node_name;
    let node = ctx.caches.node(node_name);
    let facts = node.as_deref().map(node_facts);
    let successor = successor_of(sr, &ctx.caches.repairs());
    let api = ctx.nodes();
    let note = match (
        cleanup_intent(&name, facts.as_ref(), successor.as_deref()),
        node,
    ) {
        (NodeIntent::Uncordon, Some(node)) if cordon::uncordon(&api, &node, &name).await? => Some(
            format!("SnapshotRepair deleted; node {node_name} uncordoned"),
        ),
        (NodeIntent::HandOver(next), Some(node))
            if cordon::hand_over(&api, &node, &name, &next).await? =>
        {
            Some(format!(
                "SnapshotRepair deleted; node {node_name} stays cordoned for SnapshotRepair {next}"
            ))
        }
        _ => None,
    };
    if !sr.spec.pull_secrets.is_empty() {
        // Garbage collection would remove it with the repair too; the operator does not wait.
        pull_secrets::delete_copy(&ctx.client, &name, &ctx.config.env.namespace).await?;
        ctx.forget_pull_copy(sr);
    }
    ctx.slots.release(node_name, &name);
    ctx.written.forget(&name);
    ctx.update_cordon_gauge();
    if let Some(note) = note {
        info!(node = %sr.spec.node_name, "{note}");
        publish(
            ctx,
            sr,
            &Notice {
                kind: EventKind::Normal,
                reason: "Uncordoned",
                note,
            },
        )
        .await;
    }
    ctx.metrics.set_phase(&name, None);
    Ok(Action::await_change())
}

/// `snapmend.io/node=<node>` on every SnapshotRepair, so agents can select their own. Returns
/// the resourceVersion the status write must match (the label patch changes it).
async fn ensure_node_label(
    api: &Api<SnapshotRepair>,
    sr: &SnapshotRepair,
) -> Result<Option<String>, Error> {
    let node = sr.spec.node_name.as_str();
    if sr.labels().get(NODE_LABEL).map(String::as_str) == Some(node) {
        return Ok(sr.resource_version());
    }
    if !is_label_value(node) {
        warn!(
            node,
            "node name is not a valid label value; SnapshotRepair left unlabeled"
        );
        return Ok(sr.resource_version());
    }
    let name = sr.name_any();
    let patch = json!({ "metadata": { "labels": { NODE_LABEL: node } } });
    let labelled = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_context("label", format!("SnapshotRepair {name}")))?;
    debug!(node, "labelled");
    Ok(labelled.resource_version())
}

/// Kubernetes label value syntax: at most 63 characters, alphanumerics and `-_.` inside.
pub fn is_label_value(v: &str) -> bool {
    let ok_edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    v.len() <= 63
        && (v.is_empty()
            || (ok_edge(v.chars().next())
                && ok_edge(v.chars().last())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))))
}

/// The status without the agent-owned report: what the operator compares and writes.
pub fn operator_fields(status: &SnapshotRepairStatus) -> SnapshotRepairStatus {
    SnapshotRepairStatus {
        report: None,
        ..status.clone()
    }
}

/// The operator's apply configuration for the status subresource: every operator-owned field
/// it sets, never `report` (the agent's). A field it set before and leaves out now is removed
/// by the API server (server-side apply prunes what a manager stops applying), so no list of
/// keys to clear has to be kept. `resourceVersion` makes it fail with a conflict if the
/// decision was made on a copy that has changed since.
pub fn status_apply(
    name: &str,
    resource_version: Option<&str>,
    status: &SnapshotRepairStatus,
) -> serde_json::Value {
    let status = serde_json::to_value(operator_fields(status)).unwrap_or_else(|_| json!({}));
    json!({
        "apiVersion": SnapshotRepair::api_version(&()),
        "kind": SnapshotRepair::kind(&()),
        "metadata": { "name": name, "resourceVersion": resource_version },
        "status": status,
    })
}

async fn write_status(
    api: &Api<SnapshotRepair>,
    name: &str,
    resource_version: Option<&str>,
    status: &SnapshotRepairStatus,
) -> Result<(), Error> {
    let body = status_apply(name, resource_version, status);
    // Forced: these fields are the operator's; an older operator may have written them by patch.
    api.patch_status(
        name,
        &PatchParams::apply(CONTROLLER_NAME).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_context(
        "apply_status",
        format!("SnapshotRepair {name}"),
    ))?;
    Ok(())
}

fn record_transition(ctx: &Context, name: &str, before: &SnapshotRepairStatus, step: &Step) {
    let after = &step.status;
    ctx.metrics.set_phase(name, after.phase);
    if before.phase == Some(Phase::Verifying)
        && after.phase != Some(Phase::Verifying)
        && let Some(report) = phases::current_report(before)
    {
        ctx.metrics.add_findings(report.findings_total());
    }
    let finished = after.phase.filter(|p| p.is_terminal());
    if let Some(phase) = finished
        && before.phase != after.phase
    {
        let outcome = conditions::get(&after.conditions, READY)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let seconds = match (&after.start_time, &after.completion_time) {
            (Some(s), Some(c)) => Some(c.0.duration_since(s.0).as_secs_f64().max(0.0)),
            _ => None,
        };
        ctx.metrics.finished(phase, &outcome, seconds);
    }
}

/// Events are best effort: a failure to record one never fails the repair.
async fn publish(ctx: &Context, sr: &SnapshotRepair, notice: &Notice) {
    let mut note = notice.note.clone();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = Event {
        type_: match notice.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: notice.reason.to_string(),
        note: Some(note),
        action: sr
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Reconcile".into()),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &sr.object_ref(&())).await {
        warn!(reason = notice.reason, %error, "could not record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapmend_crds::{Outcome, RepairAction, RepairRequest, Report, RequestReport};

    fn status_with_report() -> SnapshotRepairStatus {
        SnapshotRepairStatus {
            phase: Some(Phase::Verifying),
            request: Some(RepairRequest {
                id: "1".into(),
                action: RepairAction::Verify,
                pull_secret: None,
            }),
            report: Some(RequestReport {
                request_id: "1".into(),
                report: Report {
                    outcome: Outcome::Healthy,
                    ..Default::default()
                },
            }),
            message: Some("verifying".into()),
            ..Default::default()
        }
    }

    #[test]
    fn status_apply_never_carries_the_report() {
        let body = status_apply("sr", Some("7"), &status_with_report());
        let status = body["status"].as_object().unwrap();
        assert!(!status.contains_key("report"));
        assert_eq!(status["phase"], "Verifying");
        assert_eq!(status["request"]["id"], "1");
        assert_eq!(status["message"], "verifying");
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["kind"], "SnapshotRepair");
        assert_eq!(body["apiVersion"], "snapmend.io/v1alpha1");
    }

    #[test]
    fn status_apply_sends_only_set_fields() {
        // Absent fields are left out, not nulled: the server prunes what is no longer applied.
        let body = status_apply("sr", None, &status_with_report());
        let keys: Vec<_> = body["status"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["message", "phase", "request"]);
    }

    #[test]
    fn only_outstanding_requests_have_a_deadline() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut status = status_with_report();
        // Answered: nothing to wait for.
        assert_eq!(
            next_look(&status, Duration::from_secs(60), None, now),
            Action::await_change()
        );
        status.report = None;
        status.request_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_800_000_000 - 20).unwrap(),
        ));
        assert_eq!(
            next_look(&status, Duration::from_secs(60), None, now),
            Action::requeue(Duration::from_secs(41))
        );
        let lease = Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    Timestamp::from_second(1_800_000_000 - 30).unwrap(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            next_look(&status, Duration::from_secs(60), Some(&lease), now),
            Action::requeue(Duration::from_secs(11)),
            "the Lease goes stale first"
        );
        status.phase = Some(Phase::Cordoning);
        assert_eq!(
            next_look(&status, Duration::from_secs(60), None, now),
            Action::await_change()
        );
    }

    #[test]
    fn a_store_behind_the_last_write_is_recognised() {
        let written = WrittenStatus::default();
        let old = status_with_report();
        let mut new = old.clone();
        new.phase = Some(Phase::Repairing);
        written.record("sr", &new);
        assert!(written.is_behind("sr", &old));
        assert!(!written.is_behind("other", &old));
        // The agent's report does not matter; the operator's fields do.
        let mut caught_up = new.clone();
        caught_up.report = None;
        assert!(!written.is_behind("sr", &caught_up));
        assert!(!written.is_behind("sr", &old), "forgotten once caught up");
        // Sub-second timestamps are compared as stored (whole seconds).
        let mut precise = new.clone();
        precise.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_800_000_000).unwrap() + std::time::Duration::from_millis(300),
        ));
        written.record("sr", &precise);
        let stored: SnapshotRepairStatus =
            serde_json::from_value(serde_json::to_value(&precise).unwrap()).unwrap();
        assert!(!written.is_behind("sr", &stored));
    }

    #[test]
    fn operator_fields_ignore_the_report() {
        let a = status_with_report();
        let mut b = a.clone();
        b.report = None;
        assert_eq!(operator_fields(&a), operator_fields(&b));
        b.message = Some("other".into());
        assert_ne!(operator_fields(&a), operator_fields(&b));
    }

    #[test]
    fn label_values_follow_kubernetes_syntax() {
        for ok in ["node-a", "ip-10-0-0-1.ec2.internal", "a", "", "n_1"] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a-", "a/b", &"x".repeat(64), "a b"] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
