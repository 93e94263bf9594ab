//! The thin part around `phases`: observe the SnapshotRepair, its Node and its helper's Lease,
//! decide with `phases::next_step`, then change the node and write the operator-owned status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use snapmend_crds::labels::{FINALIZER, NODE_LABEL, helper_lease_name};
use snapmend_crds::{Phase, SnapshotRepair, SnapshotRepairStatus};
use tracing::{debug, info, instrument, warn};

use crate::conditions::{self, READY};
use crate::config::OperatorConfig;
use crate::cordon::{self, count_cordoned_by_snapmend, node_facts};
use crate::error::{Error, kube_context};
use crate::metrics::Metrics;
use crate::phases::{
    self, CordonBudget, EventKind, NodeIntent, Notice, Observed, Settings, Sibling, Step,
    cleanup_intent, cordon_successor,
};
use crate::presence::helper_presence;

/// Field manager and event reporter name.
pub const CONTROLLER_NAME: &str = "snapmend-operator";
/// Safety net: look again this often at a repair that waits for nothing in particular.
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// Back-off after a failed reconciliation.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Retry after a write lost a race (409): the next read sees the winner's change.
const CONFLICT_RETRY: Duration = Duration::from_millis(500);

/// Shared by every reconciliation: the client, configuration, event recorder and metrics.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Counting cordoned nodes, deciding and cordoning happen under this lock, so that
    /// concurrent reconciliations cannot together exceed `--max-cordoned-nodes`.
    cordon_lock: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: Some(config.env.identity.clone()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            cordon_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn repairs(&self) -> Api<SnapshotRepair> {
        Api::all(self.client.clone())
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.config.env.namespace)
    }

    fn settings(&self) -> Settings {
        Settings {
            helper_timeout: self.config.args.helper_timeout,
            failure_policy: self.config.args.failure_policy,
        }
    }
}

/// Entry point for the Controller: the finalizer helper around apply and cleanup.
#[instrument(skip_all, fields(repair = %sr.name_any(), node = %sr.spec.node_name))]
pub async fn reconcile(sr: Arc<SnapshotRepair>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = sr.name_any();
    let api = ctx.repairs();
    finalizer(&api, FINALIZER, sr, |event| {
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
    })
}

pub fn error_policy(sr: Arc<SnapshotRepair>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(repair = %sr.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics.reconcile_error(error.metric_label());
    if error.is_conflict() {
        return Action::requeue(CONFLICT_RETRY);
    }
    Action::requeue(ERROR_RETRY)
}

async fn apply(cached: &SnapshotRepair, ctx: &Context) -> Result<Action, Error> {
    let name = cached.name_any();
    let api = ctx.repairs();
    // The controller's cache can lag behind our own last status write; decide on a fresh read.
    let Some(sr) = api
        .get_opt(&name)
        .await
        .map_err(kube_context("get", format!("SnapshotRepair {name}")))?
    else {
        return Ok(Action::await_change());
    };
    ensure_node_label(&api, &sr).await?;
    let status = sr.status.clone().unwrap_or_default();
    let before = status.phase;
    if before == Some(Phase::Failed) {
        ctx.metrics.set_phase(&name, before);
        return Ok(Action::await_change());
    }

    // Held until the status is written: another repair deciding about the same cordon (the
    // cap, or a hand-over) must see this one's outcome.
    let guard = ctx.cordon_lock.lock().await;
    let nodes = cordon::list_nodes(&ctx.nodes()).await?;
    let cordoned_now = count_cordoned_by_snapmend(&nodes);
    ctx.metrics.set_nodes_cordoned(cordoned_now);
    let node = nodes
        .iter()
        .find(|n| n.name_any() == sr.spec.node_name)
        .map(node_facts);
    let lease_name = helper_lease_name(&sr.spec.node_name);
    let lease = ctx
        .leases()
        .get_opt(&lease_name)
        .await
        .map_err(kube_context(
            "get",
            format!("Lease {}/{lease_name}", ctx.config.env.namespace),
        ))?;
    let siblings = list_repairs(&api).await?;
    let successor = successor_of(&sr, &siblings);
    let now = Timestamp::now();
    let step = phases::next_step(&Observed {
        name: &name,
        generation: sr.metadata.generation,
        spec: &sr.spec,
        status: &status,
        node: node.as_ref(),
        helper: helper_presence(lease.as_ref(), now),
        budget: CordonBudget {
            cordoned_now,
            max: ctx.config.args.max_cordoned_nodes,
        },
        now,
        settings: ctx.settings(),
        lease_namespace: &ctx.config.env.namespace,
        successor: successor.as_deref(),
    });
    apply_node_intent(ctx, &sr, &step.node, cordoned_now).await?;
    if operator_fields(&status) != operator_fields(&step.status) {
        write_status(&api, &name, &step.status).await?;
    }
    drop(guard);
    record_transition(ctx, &name, &status, &step);
    for notice in &step.events {
        publish(ctx, &sr, notice).await;
    }
    let after = step.status.phase;
    if before != after {
        info!(from = ?before, to = ?after, message = step.status.message.as_deref().unwrap_or(""), "phase changed");
    }
    Ok(match step.requeue_after {
        Some(d) => Action::requeue(d),
        None if after.is_some_and(Phase::is_terminal) => Action::await_change(),
        None => Action::requeue(IDLE_RECHECK),
    })
}

async fn apply_node_intent(
    ctx: &Context,
    sr: &SnapshotRepair,
    intent: &NodeIntent,
    cordoned_now: u32,
) -> Result<(), Error> {
    let name = sr.name_any();
    let node = &sr.spec.node_name;
    match intent {
        NodeIntent::Leave => {}
        NodeIntent::Cordon => {
            if cordon::cordon(&ctx.nodes(), node, &name).await? {
                ctx.metrics.set_nodes_cordoned(cordoned_now + 1);
            }
        }
        NodeIntent::Uncordon => {
            if cordon::uncordon(&ctx.nodes(), node, &name).await? {
                ctx.metrics
                    .set_nodes_cordoned(cordoned_now.saturating_sub(1));
            }
        }
        NodeIntent::HandOver(next) => {
            cordon::hand_over(&ctx.nodes(), node, &name, next).await?;
        }
    }
    Ok(())
}

async fn list_repairs(api: &Api<SnapshotRepair>) -> Result<Vec<SnapshotRepair>, Error> {
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_context("list", "snapshotrepairs".to_string()))?;
    Ok(list.items)
}

/// The sibling repair that inherits `sr`'s cordon, if any.
fn successor_of(sr: &SnapshotRepair, all: &[SnapshotRepair]) -> Option<String> {
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
    let _guard = ctx.cordon_lock.lock().await;
    let node = cordon::get_node(&ctx.nodes(), &sr.spec.node_name).await?;
    let facts = node.as_ref().map(node_facts);
    let successor = successor_of(sr, &list_repairs(&ctx.repairs()).await?);
    let node_name = &sr.spec.node_name;
    let note = match cleanup_intent(&name, facts.as_ref(), successor.as_deref()) {
        NodeIntent::Uncordon if cordon::uncordon(&ctx.nodes(), node_name, &name).await? => Some(
            format!("SnapshotRepair deleted; node {node_name} uncordoned"),
        ),
        NodeIntent::HandOver(next)
            if cordon::hand_over(&ctx.nodes(), node_name, &name, &next).await? =>
        {
            Some(format!(
                "SnapshotRepair deleted; node {node_name} stays cordoned for SnapshotRepair {next}"
            ))
        }
        _ => None,
    };
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

/// `snapmend.io/node=<node>` on every SnapshotRepair, so agents can select their own.
async fn ensure_node_label(api: &Api<SnapshotRepair>, sr: &SnapshotRepair) -> Result<(), Error> {
    let node = sr.spec.node_name.as_str();
    if sr.labels().get(NODE_LABEL).map(String::as_str) == Some(node) {
        return Ok(());
    }
    if !is_label_value(node) {
        warn!(
            node,
            "node name is not a valid label value; SnapshotRepair left unlabeled"
        );
        return Ok(());
    }
    let name = sr.name_any();
    let patch = json!({ "metadata": { "labels": { NODE_LABEL: node } } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_context("label", format!("SnapshotRepair {name}")))?;
    debug!(node, "labelled");
    Ok(())
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

/// Operator-owned status keys; absent ones are sent as null so that they are cleared.
const OPERATOR_KEYS: [&str; 11] = [
    "phase",
    "observedGeneration",
    "target",
    "request",
    "requestTime",
    "cordonedByOperator",
    "conditions",
    "findings",
    "message",
    "startTime",
    "completionTime",
];

/// A merge patch for the status subresource that never touches `status.report`.
pub fn status_patch(status: &SnapshotRepairStatus) -> serde_json::Value {
    let mut fields = match serde_json::to_value(operator_fields(status)) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    fields.remove("report");
    for key in OPERATOR_KEYS {
        fields.entry(key).or_insert(serde_json::Value::Null);
    }
    json!({ "status": fields })
}

async fn write_status(
    api: &Api<SnapshotRepair>,
    name: &str,
    status: &SnapshotRepairStatus,
) -> Result<(), Error> {
    let patch = status_patch(status);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_context(
            "patch_status",
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
    fn status_patch_never_carries_the_report() {
        let patch = status_patch(&status_with_report());
        let status = patch["status"].as_object().unwrap();
        assert!(!status.contains_key("report"));
        assert_eq!(status["phase"], "Verifying");
        assert_eq!(status["request"]["id"], "1");
        assert_eq!(status["message"], "verifying");
    }

    #[test]
    fn status_patch_clears_absent_operator_fields() {
        let patch = status_patch(&status_with_report());
        for key in [
            "completionTime",
            "cordonedByOperator",
            "findings",
            "conditions",
        ] {
            assert!(patch["status"][key].is_null(), "{key}");
            assert!(
                patch["status"].as_object().unwrap().contains_key(key),
                "{key} sent as null"
            );
        }
        assert_eq!(
            patch["status"].as_object().unwrap().len(),
            OPERATOR_KEYS.len()
        );
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
