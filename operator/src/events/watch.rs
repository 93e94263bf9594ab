//! The I/O around the pure decisions: watch kubelet events (core/v1 and events.k8s.io/v1, filtered
//! on the server by reason), look up the pod when needed, create SnapshotRepairs, and follow
//! SnapshotRepairs to know what is in flight and to escalate verifications that found damage.
//! Nodes and SnapshotRepairs come from the operator's shared reflector stores (`caches`), so the
//! whole operator holds one watch per type.
//!
//! Everything runs in one task, one input at a time, so the ledger of repairs is always current:
//! a storm of repeats is settled by [`precheck`] without a single API call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use snapmend_crds::SnapshotRepair;
use snapmend_crds::labels::{DEFAULT_LEASE_NAMESPACE, TRIGGER_EVENT_ANNOTATION};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, instrument, warn};

use super::classify::classify;
use super::decide::{
    AutoRemediate, Candidate, Ledger, NodeView, PlannedRepair, Policy, RepairRecord, Skip,
    TokenBucket, build_repair, decide, decide_escalation, precheck,
};
use super::pull_secrets::pull_secrets_for;
use super::target::{EventFacts, Target, node_from_event, resolve_node, resolve_target};
use crate::caches::{Filled, start_filled};
use crate::error::{Error, kube_context};

/// The reasons kubelet gives for failed sandboxes and containers.
pub const WATCHED_REASONS: [&str; 4] = [
    "FailedCreatePodSandBox",
    "Failed",
    "CreateContainerError",
    "RunContainerError",
];

/// At most this many rate-limited candidates wait; beyond that new ones are dropped (and logged).
const MAX_PENDING: usize = 10_000;

/// How the event remediation runs.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRemediationConfig {
    pub policy: Policy,
    /// Event reasons to watch; one server-side field selector per reason and API.
    pub reasons: Vec<String>,
    /// How often rate-limited candidates are tried again.
    pub retry_every: Duration,
}

impl EventRemediationConfig {
    /// The defaults, with the operator's `--auto-remediate` and `--cooldown`.
    pub fn new(mode: AutoRemediate, cooldown: Duration) -> Self {
        EventRemediationConfig {
            policy: Policy {
                mode,
                cooldown,
                ..Policy::default()
            },
            reasons: WATCHED_REASONS.iter().map(|r| r.to_string()).collect(),
            retry_every: Duration::from_secs(1),
        }
    }
}

enum Input {
    Event(Box<EventFacts>),
    Repair(Arc<SnapshotRepair>),
}

/// What the remediation reads from the operator's shared reflector stores: the SnapshotRepairs
/// (its ledger of what is in flight) with their change stream, and the Nodes (opt-out labels).
/// It opens no watch of its own on either type.
pub struct Shared {
    pub repairs: Store<SnapshotRepair>,
    pub nodes: Store<Node>,
    pub repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
}

/// Watches events and creates automatic SnapshotRepairs until the watches end, on stores of its
/// own (for running it alone, as the in-process tests do; the operator uses
/// [`run_event_remediation_on`] with its shared stores). Returns at once in mode `off`.
pub async fn run_event_remediation(
    client: Client,
    config: EventRemediationConfig,
) -> Result<(), Error> {
    if config.policy.mode == AutoRemediate::Off {
        info!("automatic remediation is off");
        return Ok(());
    }
    // The controller's change streams are dropped (unsubscribed); the reflectors run until
    // this returns.
    let Filled {
        caches,
        remediation_repair_changes,
        reflectors,
        ..
    } = start_filled(&client, DEFAULT_LEASE_NAMESPACE).await?;
    let shared = Shared {
        repairs: caches.repairs,
        nodes: caches.nodes,
        repair_changes: remediation_repair_changes,
    };
    let result = run_event_remediation_on(client, config, shared).await;
    drop(reflectors);
    result
}

/// Watches events and creates automatic SnapshotRepairs until the watches end, reading Nodes and
/// SnapshotRepairs from the filled `shared` stores. Run it only on the leader. Returns at once in
/// mode `off`.
pub async fn run_event_remediation_on(
    client: Client,
    config: EventRemediationConfig,
    shared: Shared,
) -> Result<(), Error> {
    if config.policy.mode == AutoRemediate::Off {
        info!("automatic remediation is off");
        return Ok(());
    }
    info!(
        mode = ?config.policy.mode,
        cooldown_s = config.policy.cooldown.as_secs(),
        reasons = ?config.reasons,
        "watching events for damaged snapshots"
    );
    let mut streams = event_streams(&client, &config.reasons);
    streams.push(shared.repair_changes.map(Input::Repair).boxed());
    let mut inputs = stream::select_all(streams);
    let (created_tx, mut created_rx) = mpsc::unbounded_channel();
    let mut remediation = Remediation::new(
        client,
        config.policy,
        created_tx,
        shared.repairs,
        shared.nodes,
    );
    let mut retry = tokio::time::interval(config.retry_every);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                Some(Input::Event(facts)) => remediation.on_event(&facts).await,
                Some(Input::Repair(sr)) => remediation.on_repair_change(&sr).await,
                None => return Ok(()),
            },
            Some(done) = created_rx.recv() => remediation.on_created(done),
            _ = retry.tick() => {
                remediation.forget_deleted();
                remediation.retry_pending().await;
            }
        }
    }
}

/// One watch per reason and events API, filtered on the server (field selectors have no
/// set form, so the reasons cannot share one watch).
fn event_streams(client: &Client, reasons: &[String]) -> Vec<BoxStream<'static, Input>> {
    let mut streams: Vec<BoxStream<'static, Input>> = Vec::new();
    for reason in reasons {
        let selector = format!("reason={reason}");
        let core = watcher(
            Api::<CoreEvent>::all(client.clone()),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .filter_map(|r| async move {
            applied(r, "core/v1 events").map(|e| Input::Event(Box::new(EventFacts::from_core(&e))))
        });
        streams.push(core.boxed());
        let v1 = watcher(
            Api::<EventsV1Event>::all(client.clone()),
            watcher::Config::default().fields(&selector),
        )
        .default_backoff()
        .filter_map(|r| async move {
            applied(r, "events.k8s.io/v1 events")
                .map(|e| Input::Event(Box::new(EventFacts::from_events_v1(&e))))
        });
        streams.push(v1.boxed());
    }
    streams
}

/// An added or updated object from a watch, or nothing.
fn applied<K>(r: Result<watcher::Event<K>, watcher::Error>, what: &'static str) -> Option<K> {
    match r {
        Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k)) => Some(k),
        Ok(_) => None,
        Err(error) => {
            warn!(%error, watch = what, "event watch failed; retrying");
            None
        }
    }
}

/// The state of the running remediation: what is in flight, the rate limit, what waits.
struct Remediation {
    client: Client,
    policy: Policy,
    /// Every SnapshotRepair, kept from the shared store's changes, plus our creations in flight.
    ledger: Ledger,
    bucket: TokenBucket,
    pending: BTreeMap<(String, String), Candidate>,
    repairs: Store<SnapshotRepair>,
    /// Every node's labels (the opt-out), from the shared store.
    nodes: Store<Node>,
    created: mpsc::UnboundedSender<Created>,
    create_permits: Arc<Semaphore>,
    /// Names of repairs this process created lately, with when.
    recently_created: BTreeMap<String, Instant>,
}

/// How long a repair we created is kept in the ledger even if a relist does not show it.
const RECENT_CREATION: Duration = Duration::from_secs(60);

/// Ledger names of repairs being created (not valid object names, so they never collide).
const PLACEHOLDER_PREFIX: &str = "creating:";
/// At most this many creations in flight at once.
const MAX_CONCURRENT_CREATES: usize = 16;

/// The outcome of one creation, back in the remediation task.
struct Created {
    placeholder: String,
    plan: PlannedRepair,
    last_seen: Option<Timestamp>,
    started: Instant,
    result: Result<SnapshotRepair, kube::Error>,
}

impl Remediation {
    fn new(
        client: Client,
        policy: Policy,
        created: mpsc::UnboundedSender<Created>,
        repairs: Store<SnapshotRepair>,
        nodes: Store<Node>,
    ) -> Self {
        let mut ledger = Ledger::default();
        ledger.replace_all(records_of(&repairs), |_| false);
        Remediation {
            created,
            create_permits: Arc::new(Semaphore::new(MAX_CONCURRENT_CREATES)),
            recently_created: BTreeMap::new(),
            client,
            bucket: TokenBucket::new(policy.rate),
            policy,
            ledger,
            pending: BTreeMap::new(),
            repairs,
            nodes,
        }
    }

    #[instrument(skip_all, fields(event = %facts.key(), reason = %facts.reason, count = facts.count))]
    async fn on_event(&mut self, facts: &EventFacts) {
        let classification = classify(&facts.reason, &facts.message);
        let Some(candidate) = self.candidate(facts, classification).await else {
            return;
        };
        self.try_create(candidate).await;
    }

    /// Classified and resolved to (node, target), or `None` with the reason logged.
    async fn candidate(
        &self,
        facts: &EventFacts,
        classification: super::classify::Classification,
    ) -> Option<Candidate> {
        if super::decide::action_for(self.policy.mode, classification.verdict).is_none() {
            debug!(signature = %classification.signature, "not a snapshot problem");
            return None;
        }
        if !super::target::is_fresh(facts.last_seen, Timestamp::now(), self.policy.max_event_age) {
            debug!(signature = %classification.signature, "event too old");
            return None;
        }
        let node_in_event = node_from_event(facts);
        let needs_pod = node_in_event.is_none() || !classification.sandbox;
        let pod = if needs_pod && facts.is_about_pod() {
            self.get_pod(&facts.involved_namespace, &facts.involved_name)
                .await
        } else {
            None
        };
        let Some(node) = node_in_event.or_else(|| resolve_node(facts, pod.as_ref())) else {
            info!(signature = %classification.signature, "cannot tell the node of this event");
            return None;
        };
        let Some(target) = resolve_target(classification.sandbox, facts, pod.as_ref()) else {
            info!(signature = %classification.signature, node = %node, "cannot tell the image of this event");
            return None;
        };
        // The sandbox image is pulled by containerd with its own configuration, never with a
        // pod's pull secrets; an application image with the pod's (fetched only then).
        let pull_secrets = match (&target, &pod) {
            (Target::Image(_), Some(pod)) => pull_secrets_for(&self.client, pod).await,
            _ => Vec::new(),
        };
        Some(Candidate {
            pull_secrets,
            event: facts.key(),
            node,
            target,
            verdict: classification.verdict,
            signature: classification.signature,
            last_seen: facts.last_seen,
        })
    }

    async fn try_create(&mut self, candidate: Candidate) {
        let now = Timestamp::now();
        if let Err(skip) = precheck(&candidate, &self.ledger, &self.policy, now) {
            self.log_skip(&candidate, &skip);
            return;
        }
        let Some(node) = self.node_view(&candidate.node).await else {
            self.wait(candidate);
            return;
        };
        match decide(
            &candidate,
            node,
            &self.ledger,
            &mut self.bucket,
            &self.policy,
            now,
        ) {
            Ok(plan) => {
                self.pending
                    .remove(&pair_key(&candidate.node, &candidate.target));
                self.create(plan, candidate.last_seen);
            }
            Err(skip) => {
                self.log_skip(&candidate, &skip);
                if skip.is_retryable() {
                    self.wait(candidate);
                }
            }
        }
    }

    /// Try this candidate again on the next retry tick (bounded; one per node and target).
    fn wait(&mut self, candidate: Candidate) {
        let key = pair_key(&candidate.node, &candidate.target);
        if self.pending.len() < MAX_PENDING || self.pending.contains_key(&key) {
            self.pending.insert(key, candidate);
        } else {
            warn!(node = %candidate.node, "too many automatic repairs waiting; dropping one");
        }
    }

    fn log_skip(&self, c: &Candidate, skip: &Skip) {
        match skip {
            Skip::NodeOptedOut | Skip::NodeMissing | Skip::RateLimited => info!(
                node = %c.node, target = %c.target.key(), signature = %c.signature,
                skip = skip.label(), "no automatic SnapshotRepair"
            ),
            _ => debug!(
                node = %c.node, target = %c.target.key(), skip = skip.label(), detail = ?skip,
                "no automatic SnapshotRepair"
            ),
        }
    }

    async fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.pending);
        for (_, candidate) in waiting {
            self.try_create(candidate).await;
        }
    }

    /// A SnapshotRepair was added or changed (the store already holds this state or a newer one).
    async fn on_repair_change(&mut self, sr: &SnapshotRepair) {
        let Some(record) = RepairRecord::from_repair(sr) else {
            return;
        };
        self.ledger.upsert(record.clone());
        self.maybe_escalate(sr, &record).await;
    }

    /// Drops from the ledger the repairs that are gone from the store (the change stream tells
    /// of additions and changes only), but keeps our own creations in flight or just made,
    /// which the store may not show yet: dropping them would let a repeat create a second one.
    fn forget_deleted(&mut self) {
        self.recently_created
            .retain(|_, at| at.elapsed() < RECENT_CREATION);
        let recent = &self.recently_created;
        self.ledger.replace_all(records_of(&self.repairs), |r| {
            r.name.starts_with(PLACEHOLDER_PREFIX) || recent.contains_key(&r.name)
        });
    }

    /// A verification of ours found damage: in `repair` mode, repair it now.
    async fn maybe_escalate(&mut self, sr: &SnapshotRepair, record: &RepairRecord) {
        if !(record.automatic && record.found_damage && !record.is_active()) {
            return;
        }
        let trigger = sr
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRIGGER_EVENT_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        let Some(node) = self.node_view(&record.node).await else {
            return;
        };
        let now = Timestamp::now();
        if let Some(plan) = decide_escalation(
            record,
            &trigger,
            node,
            &self.ledger,
            &mut self.bucket,
            &self.policy,
            now,
        ) {
            info!(verification = %record.name, node = %record.node, target = %record.target, "verification found damage; repairing");
            let plan = PlannedRepair {
                pull_secrets: sr.spec.pull_secrets.clone(),
                ..plan
            };
            self.create(plan, None);
        }
    }

    /// Starts creating the SnapshotRepair without waiting for the API server, so a storm over
    /// many nodes is not serialised behind round trips. A placeholder keeps the (node, target)
    /// busy in the ledger until the result comes back through `created`.
    fn create(&mut self, plan: PlannedRepair, last_seen: Option<Timestamp>) {
        let placeholder = RepairRecord {
            name: format!("{PLACEHOLDER_PREFIX}{}/{}", plan.node, plan.target.key()),
            node: plan.node.clone(),
            target: plan.target.key(),
            action: plan.action,
            automatic: true,
            phase: None,
            finished_at: None,
            found_damage: false,
            escalated_from: plan.escalated_from.clone(),
        };
        let placeholder_name = placeholder.name.clone();
        self.ledger.upsert(placeholder);
        let api = Api::<SnapshotRepair>::all(self.client.clone());
        let (sender, permits) = (self.created.clone(), self.create_permits.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let result = api
                .create(&PostParams::default(), &build_repair(&plan))
                .await;
            let _ = sender.send(Created {
                placeholder: placeholder_name,
                plan,
                last_seen,
                started,
                result,
            });
        });
    }

    #[instrument(skip_all, fields(node = %done.plan.node, target = %done.plan.target.key(), action = ?done.plan.action, signature = %done.plan.signature))]
    fn on_created(&mut self, done: Created) {
        self.ledger.remove(&done.placeholder);
        match done.result {
            Ok(created) => {
                let Some(record) = RepairRecord::from_repair(&created) else {
                    warn!("created SnapshotRepair came back without a name");
                    return;
                };
                let since_event_ms = done
                    .last_seen
                    .map(|t| Timestamp::now().duration_since(t).as_millis())
                    .unwrap_or_default();
                info!(
                    name = %record.name,
                    trigger_event = %done.plan.event,
                    escalated_from = done.plan.escalated_from.as_deref().unwrap_or(""),
                    since_event_ms,
                    api_ms = done.started.elapsed().as_millis() as u64,
                    "created automatic SnapshotRepair"
                );
                self.recently_created
                    .insert(record.name.clone(), Instant::now());
                // The watch may already have delivered a newer state of it; that one wins.
                if !self.ledger.contains(&record.name) {
                    self.ledger.upsert(record);
                }
            }
            Err(source) => {
                let error = kube_context(
                    "create",
                    format!("SnapshotRepair auto-{}-", done.plan.node),
                )(source);
                warn!(%error, "could not create the automatic SnapshotRepair; the next event retries");
            }
        }
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(pod) => pod,
            Err(source) => {
                let error = kube_context("get", format!("Pod {namespace}/{name}"))(source);
                warn!(%error, "cannot look up the pod of an event");
                None
            }
        }
    }

    /// The node's eligibility from the store, else from the API server (a node the store has
    /// not received yet); `None` when it could not be looked up (try again later).
    async fn node_view(&self, name: &str) -> Option<NodeView> {
        if let Some(node) = self.nodes.get(&ObjectRef::new(name)) {
            return Some(NodeView::from_labels(node.metadata.labels.as_ref()));
        }
        let api = Api::<Node>::all(self.client.clone());
        match api.get_opt(name).await {
            Ok(Some(node)) => Some(NodeView::from_labels(node.metadata.labels.as_ref())),
            Ok(None) => Some(NodeView::Missing),
            Err(source) => {
                let error = kube_context("get", format!("Node {name}"))(source);
                warn!(%error, "cannot look up the node; will retry");
                None
            }
        }
    }
}

/// The ledger records of every SnapshotRepair in the store.
fn records_of(repairs: &Store<SnapshotRepair>) -> Vec<RepairRecord> {
    repairs
        .state()
        .iter()
        .filter_map(|sr| RepairRecord::from_repair(sr))
        .collect()
}

fn pair_key(node: &str, target: &Target) -> (String, String) {
    (node.to_string(), target.key())
}
