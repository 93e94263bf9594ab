//! The SnapshotScan controller: the thin part around `schedule` and `runs`. It reads the scan
//! (a fresh GET: the decision must not act on a copy older than its own last write), the
//! scan's SnapshotRepairs and the Nodes from the operator's stores, decides, writes the status
//! with a resourceVersion precondition (a decision made on a stale copy fails with 409 and is
//! made again), then creates the next repairs, prunes old runs and records events.
//!
//! Woken by changes of the scan, of the repairs it owns, and at the next scheduled time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use snapmend_crds::labels::{RUN_NOW_ANNOTATION, SCAN_RUN_LABEL};
use snapmend_crds::{ScanRun, SnapshotRepair, SnapshotScan, SnapshotScanStatus};
use tracing::{Instrument, debug, info, info_span, warn};

use super::nodes::{eligible_nodes, node_selector};
use super::runs::{self, RunPlan, Verdict, plan_run, run_id, runs_to_prune};
use super::schedule::{Decision, Missed, Schedule, ScheduleState, Trigger, decide, whole_second};
use crate::caches::Caches;
use crate::conditions::{self, READY, Status};
use crate::error::{Error, kube_context};
use crate::metrics::Metrics;

/// Condition on a SnapshotScan: True while a run is in progress.
pub const RUNNING: &str = "Running";
/// While a run is in progress, look again at least this often (a node removed from the
/// selection mid-run triggers nothing by itself).
const RUN_RECHECK: Duration = Duration::from_secs(30);
/// After a write lost a race (409), decide again on the current object.
const CONFLICT_RETRY: Duration = Duration::from_millis(300);
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// A repair created here and not yet in the store is counted as unfinished for this long.
const CREATED_GRACE: Duration = Duration::from_secs(10);
/// Kubernetes Events take notes up to 1 kB.
const NOTE_MAX: usize = 1000;

/// Shared by every scan reconciliation of one leadership term.
pub struct ScanContext {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub caches: Caches,
    /// Repairs this operator created that its store may not show yet, by name.
    created: Mutex<HashMap<String, Created>>,
}

struct Created {
    scan_uid: String,
    run: String,
    node: String,
    at: Instant,
}

impl ScanContext {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>, caches: Caches) -> Self {
        ScanContext {
            client,
            recorder,
            metrics,
            caches,
            created: Mutex::new(HashMap::new()),
        }
    }

    /// Per run id, the verdict of each node's repair of scan `uid` (from the store, plus those
    /// created here that it does not show yet), and the names of each run's repairs.
    fn runs_of(&self, uid: &str) -> (BTreeMap<String, BTreeMap<String, Verdict>>, RunRepairs) {
        let mut runs: BTreeMap<String, BTreeMap<String, Verdict>> = BTreeMap::new();
        let mut names = RunRepairs::new();
        let stored = self.caches.repairs();
        for sr in stored.iter().filter(|sr| owned_by(sr, uid)) {
            let Some(run) = sr.labels().get(SCAN_RUN_LABEL) else {
                continue;
            };
            runs.entry(run.clone())
                .or_default()
                .insert(sr.spec.node_name.clone(), runs::verdict(sr));
            if sr.meta().deletion_timestamp.is_none() {
                names.entry(run.clone()).or_default().push(sr.name_any());
            }
        }
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        created.retain(|name, c| {
            c.at.elapsed() < CREATED_GRACE && !stored.iter().any(|sr| sr.name_any() == *name)
        });
        for c in created.values().filter(|c| c.scan_uid == uid) {
            runs.entry(c.run.clone())
                .or_default()
                .entry(c.node.clone())
                .or_insert(Verdict::Unfinished);
        }
        (runs, names)
    }

    fn remember_created(&self, sr: &SnapshotRepair, scan_uid: &str, run: &str) {
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                sr.name_any(),
                Created {
                    scan_uid: scan_uid.to_string(),
                    run: run.to_string(),
                    node: sr.spec.node_name.clone(),
                    at: Instant::now(),
                },
            );
    }
}

type RunRepairs = BTreeMap<String, Vec<String>>;

fn owned_by(sr: &SnapshotRepair, uid: &str) -> bool {
    sr.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.kind == SnapshotScan::kind(&()))
}

/// The SnapshotScans that own `sr` (their changes wake them).
pub fn scans_owning(sr: &SnapshotRepair) -> Vec<ObjectRef<SnapshotScan>> {
    sr.owner_references()
        .iter()
        .filter(|o| {
            o.kind == SnapshotScan::kind(&()) && o.api_version == SnapshotScan::api_version(&())
        })
        .map(|o| ObjectRef::new(&o.name))
        .collect()
}

/// An event and, once the status that caused it is written, a metric.
struct Notice {
    type_: EventType,
    reason: &'static str,
    note: String,
    effect: Effect,
}

enum Effect {
    None,
    /// A run started (trigger label), standing also for this many earlier missed times.
    Started(&'static str, u32),
    Finished(&'static str),
    Missed(u32),
}

/// Entry point for the Controller.
pub async fn reconcile_scan(
    scan: Arc<SnapshotScan>,
    ctx: Arc<ScanContext>,
) -> Result<Action, Error> {
    let name = scan.name_any();
    let span = info_span!("scan", scan = %name, run = tracing::field::Empty);
    reconcile_fresh(&name, &ctx).instrument(span).await
}

pub fn scan_error_policy(scan: Arc<SnapshotScan>, error: &Error, ctx: Arc<ScanContext>) -> Action {
    warn!(scan = %scan.name_any(), %error, "SnapshotScan reconcile failed; retrying");
    ctx.metrics.reconcile_error(error.metric_label());
    if error.is_conflict() {
        return Action::requeue(CONFLICT_RETRY);
    }
    Action::requeue(ERROR_RETRY)
}

async fn reconcile_fresh(name: &str, ctx: &ScanContext) -> Result<Action, Error> {
    let api: Api<SnapshotScan> = Api::all(ctx.client.clone());
    let Some(scan) = api
        .get_opt(name)
        .await
        .map_err(kube_context("get", format!("SnapshotScan {name}")))?
    else {
        return Ok(Action::await_change());
    };
    if scan.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let uid = scan.uid().unwrap_or_default();
    let (runs, run_repairs) = ctx.runs_of(&uid);
    let step = step(&scan, &runs, &ctx.caches.nodes.state(), now);
    if let Some(run) = step.status.last_run.as_ref() {
        tracing::Span::current().record("run", run.id.as_str());
    }

    let old = scan.status.clone().unwrap_or_default();
    if step.status != old {
        match write_status(&api, &scan, &step.status).await {
            Err(Error::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.is_conflict() => {
                debug!("the scan changed since it was read; deciding again");
                return Ok(Action::requeue(CONFLICT_RETRY));
            }
            other => other?,
        }
    }
    create_repairs(ctx, &scan, &uid, &step).await?;
    prune_history(ctx, &scan, &step, &run_repairs).await;
    for notice in &step.notices {
        publish(ctx, &scan, notice).await;
    }
    Ok(step.next)
}

/// What one reconciliation decided.
struct Step {
    status: SnapshotScanStatus,
    /// Run id and the nodes whose repairs are created now.
    create: Option<(String, Vec<String>)>,
    notices: Vec<Notice>,
    next: Action,
}

/// The whole decision, from the scan, its repairs by run, the Nodes and the time.
fn step(
    scan: &SnapshotScan,
    runs: &BTreeMap<String, BTreeMap<String, Verdict>>,
    nodes: &[Arc<k8s_openapi::api::core::v1::Node>],
    now: Timestamp,
) -> Step {
    let spec = &scan.spec;
    let generation = scan.metadata.generation;
    let mut status = scan.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let mut notices = Vec::new();
    let mut create = None;
    let selector = node_selector(spec.node_selector.as_ref());
    let empty = BTreeMap::new();

    // The run in progress moves on.
    if let Some(run) = status
        .last_run
        .as_mut()
        .filter(|r| r.completion_time.is_none())
    {
        let eligible = match &selector {
            Ok(sel) => eligible_nodes(sel, nodes, run.start_time.0),
            Err(_) => BTreeSet::new(),
        };
        let plan = plan_run(
            spec.max_concurrent_nodes,
            runs.get(&run.id).unwrap_or(&empty),
            &eligible,
        );
        record_progress(run, &plan);
        if plan.complete {
            run.completion_time = Some(Time(whole_second(now)));
            notices.push(finished_notice(run, &plan));
        } else if !plan.create.is_empty() {
            create = Some((run.id.clone(), plan.create.clone()));
        }
    }

    // Then the schedule.
    let mut next_look = None;
    let ready = match (Schedule::parse(&spec.schedule), &selector) {
        (Err(why), _) => Err(("InvalidSchedule", why)),
        (_, Err(why)) => Err(("InvalidNodeSelector", why.clone())),
        (Ok(schedule), Ok(sel)) => {
            let state = ScheduleState {
                suspend: spec.suspend,
                last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
                created: scan
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(now, |t| t.0),
                run_now: scan
                    .annotations()
                    .get(RUN_NOW_ANNOTATION)
                    .map(String::as_str),
                run_now_handled: status.run_now_handled.as_deref(),
                run_in_progress: status.active_run().is_some(),
                now,
            };
            let next = (!spec.suspend).then(|| schedule.next_after(now)).flatten();
            match decide(&schedule, &state) {
                Decision::Start {
                    scheduled,
                    trigger,
                    covers,
                } => {
                    let id = run_id(scheduled, status.last_run.as_ref().map(|r| r.id.as_str()));
                    // The same instant later steps select nodes by (status keeps whole seconds).
                    let start = whole_second(now);
                    let eligible = eligible_nodes(sel, nodes, start);
                    let run = ScanRun {
                        id,
                        start_time: Time(start),
                        completion_time: None,
                        nodes: u32::try_from(eligible.len()).unwrap_or(u32::MAX),
                        healthy: 0,
                        damaged: 0,
                        repaired: 0,
                        failed: 0,
                    };
                    notices.push(started_notice(scan, &run, &trigger, covers.as_ref(), now));
                    if let Some(missed) = covers {
                        status.last_schedule_time = Some(Time(missed.latest));
                    }
                    if let Trigger::RunNow(value) = trigger {
                        status.run_now_handled = Some(value);
                    }
                    status.last_run = Some(run);
                }
                Decision::Skip { missed, .. } => {
                    status.last_schedule_time = Some(Time(missed.latest));
                    let busy = status.last_run.as_ref().map_or("", |r| r.id.as_str());
                    notices.push(Notice {
                        type_: EventType::Warning,
                        reason: "MissedSchedule",
                        note: format!(
                            "scheduled time {} not run: run {busy} is still in progress (overlapping runs are forbidden); {} scheduled time(s) missed",
                            missed.latest,
                            missed.count_text()
                        ),
                        effect: Effect::Missed(missed.count),
                    });
                }
                Decision::Wait { .. } => {}
            }
            next_look = next;
            Ok(match next {
                Some(t) => ("Scheduled", format!("next scheduled run at {t} (UTC)")),
                None if spec.suspend => (
                    "Suspended",
                    format!(
                        "suspended: no scheduled runs; the {RUN_NOW_ANNOTATION} annotation still starts one"
                    ),
                ),
                None => (
                    "NoNextTime",
                    "the schedule names no future time".to_string(),
                ),
            })
        }
    };
    let was = conditions::get(&status.conditions, READY).cloned();
    match ready {
        Ok((reason, message)) => set(&mut status, READY, Status::True, reason, &message, now),
        Err((reason, message)) => {
            let repeated = was
                .as_ref()
                .is_some_and(|c| c.reason == reason && c.message == message);
            if !repeated {
                notices.push(Notice {
                    type_: EventType::Warning,
                    reason,
                    note: message.clone(),
                    effect: Effect::None,
                });
            }
            set(&mut status, READY, Status::False, reason, &message, now);
        }
    }
    match status.active_run() {
        Some(run) => {
            let done = run.healthy + run.damaged + run.repaired + run.failed;
            let message = format!("run {}: {done} of {} nodes done", run.id, run.nodes);
            set(
                &mut status,
                RUNNING,
                Status::True,
                "RunInProgress",
                &message,
                now,
            );
        }
        None => {
            let message = match &status.last_run {
                Some(run) => format!("last run {} finished", run.id),
                None => "no run yet".to_string(),
            };
            set(&mut status, RUNNING, Status::False, "Idle", &message, now);
        }
    }

    let next = if status.active_run().is_some() {
        // A new run's first repairs are created once its status is written (the write
        // triggers the next reconcile); a run in progress is also looked at now and then.
        Action::requeue(RUN_RECHECK)
    } else {
        match next_look {
            Some(t) => Action::requeue(until(now, t)),
            None => Action::await_change(),
        }
    };
    Step {
        status,
        create,
        notices,
        next,
    }
}

fn set(
    status: &mut SnapshotScanStatus,
    type_: &str,
    value: Status,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let generation = status.observed_generation;
    conditions::set(
        &mut status.conditions,
        type_,
        value,
        reason,
        message,
        generation,
        now,
    );
}

fn record_progress(run: &mut ScanRun, plan: &RunPlan) {
    run.nodes = plan.nodes;
    run.healthy = plan.tally.healthy;
    run.damaged = plan.tally.damaged;
    run.repaired = plan.tally.repaired;
    run.failed = plan.tally.failed;
}

/// How long from `now` until `t`, rounded up to whole seconds (never 0: the time has passed
/// only once it is reached).
fn until(now: Timestamp, t: Timestamp) -> Duration {
    let ms = t
        .as_millisecond()
        .saturating_sub(now.as_millisecond())
        .max(0);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0)) + Duration::from_millis(50)
}

fn started_notice(
    scan: &SnapshotScan,
    run: &ScanRun,
    trigger: &Trigger,
    covers: Option<&Missed>,
    now: Timestamp,
) -> Notice {
    let (why, label) = match (trigger, covers) {
        (Trigger::RunNow(value), _) => (format!("{RUN_NOW_ANNOTATION}={value}"), "run_now"),
        (Trigger::Schedule, Some(m)) if m.count > 1 || m.capped => (
            format!(
                "catch-up for scheduled time {}: {} scheduled times were missed (only the most recent runs)",
                m.latest,
                m.count_text()
            ),
            "catch_up",
        ),
        (Trigger::Schedule, Some(m)) => {
            let late = now.as_second() - m.latest.as_second();
            if late > 60 {
                (
                    format!("catch-up for scheduled time {}, {late}s late", m.latest),
                    "catch_up",
                )
            } else {
                (format!("scheduled time {}", m.latest), "schedule")
            }
        }
        (Trigger::Schedule, None) => ("schedule".to_string(), "schedule"),
    };
    let missed = covers.map_or(0, |m| m.count.saturating_sub(1));
    Notice {
        type_: EventType::Normal,
        reason: "RunStarted",
        note: format!(
            "run {} started ({why}): {} nodes, action {:?}, at most {} at a time",
            run.id, run.nodes, scan.spec.action, scan.spec.max_concurrent_nodes
        ),
        effect: Effect::Started(label, missed),
    }
}

fn finished_notice(run: &ScanRun, plan: &RunPlan) -> Notice {
    let result = plan.tally.result();
    let type_ = if run.damaged > 0 || run.failed > 0 {
        EventType::Warning
    } else {
        EventType::Normal
    };
    Notice {
        type_,
        reason: "RunFinished",
        note: format!(
            "run {} finished: {} nodes: {} healthy, {} damaged, {} repaired, {} failed",
            run.id, run.nodes, run.healthy, run.damaged, run.repaired, run.failed
        ),
        effect: Effect::Finished(result.as_str()),
    }
}

/// The whole status, replaced only if the scan is still the version the decision was made on.
async fn write_status(
    api: &Api<SnapshotScan>,
    scan: &SnapshotScan,
    status: &SnapshotScanStatus,
) -> Result<(), Error> {
    let name = scan.name_any();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": scan.resource_version()},
        {"op": "add", "path": "/status", "value": status},
    ]))
    .map_err(|e| Error::Encode {
        what: format!("status of SnapshotScan {name}"),
        source: e,
    })?;
    api.patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(kube_context(
            "write status of",
            format!("SnapshotScan {name}"),
        ))?;
    Ok(())
}

async fn create_repairs(
    ctx: &ScanContext,
    scan: &SnapshotScan,
    uid: &str,
    step: &Step,
) -> Result<(), Error> {
    let Some((run, nodes)) = &step.create else {
        return Ok(());
    };
    let api: Api<SnapshotRepair> = Api::all(ctx.client.clone());
    for node in nodes {
        let sr = runs::build_repair(scan, run, node);
        let name = sr.name_any();
        match api.create(&PostParams::default(), &sr).await {
            Ok(_) => info!(repair = %name, node = %node, "created the run's SnapshotRepair"),
            // Made before a restart, or by a reconcile whose store had not shown it yet.
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                debug!(repair = %name, "already exists");
            }
            Err(source) => {
                return Err(Error::Kube {
                    action: "create",
                    object: format!("SnapshotRepair {name}"),
                    source,
                });
            }
        }
        ctx.remember_created(&sr, uid, run);
    }
    Ok(())
}

/// Deletes the repairs of runs older than the newest `historyLimit`. Best effort: a failure is
/// logged and tried again at the next reconcile.
async fn prune_history(ctx: &ScanContext, scan: &SnapshotScan, step: &Step, repairs: &RunRepairs) {
    let mut ids: BTreeSet<String> = repairs.keys().cloned().collect();
    if let Some(run) = &step.status.last_run {
        ids.insert(run.id.clone());
    }
    let api: Api<SnapshotRepair> = Api::all(ctx.client.clone());
    for run in runs_to_prune(&ids, scan.spec.history_limit) {
        for name in repairs.get(&run).into_iter().flatten() {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => info!(repair = %name, %run, "pruned a SnapshotRepair of an old run"),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(error) => {
                    warn!(repair = %name, %error, "pruning an old run's SnapshotRepair failed")
                }
            }
        }
    }
}

async fn publish(ctx: &ScanContext, scan: &SnapshotScan, notice: &Notice) {
    match &notice.effect {
        Effect::None => {}
        Effect::Started(trigger, missed) => {
            ctx.metrics.scans.run_started(trigger);
            ctx.metrics.scans.missed(*missed);
        }
        Effect::Finished(result) => ctx.metrics.scans.run_finished(result),
        Effect::Missed(n) => ctx.metrics.scans.missed(*n),
    }
    match notice.type_ {
        EventType::Warning => warn!(reason = notice.reason, note = %notice.note, "scan event"),
        EventType::Normal => info!(reason = notice.reason, note = %notice.note, "scan event"),
    }
    let mut note = notice.note.clone();
    if note.len() > NOTE_MAX {
        let mut cut = NOTE_MAX;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = Event {
        type_: notice.type_,
        reason: notice.reason.to_string(),
        note: Some(note),
        action: notice.reason.to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &scan.object_ref(&())).await {
        warn!(%error, reason = notice.reason, "could not record an event on the SnapshotScan");
    }
}

#[cfg(test)]
mod tests;
