//! Reflector stores of everything a reconcile reads, started once per leadership term and
//! shared through the Context: SnapshotRepairs, Nodes (status and managedFields stripped, so
//! 5,000 Nodes with their image lists cost little memory), and the helpers' Leases in the
//! operator's namespace. Reconciles read them instead of GETting and LISTing; their watch
//! streams also trigger the reconciles of the SnapshotRepairs a change affects.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Client, Resource, ResourceExt};
use snapmend_crds::labels::{CORDONED_BY_ANNOTATION, HELPER_LEASE_PREFIX};
use snapmend_crds::{Phase, SnapshotRepair};
use tracing::warn;

use crate::conditions::{self, READY};
use crate::error::Error;
use crate::node_condition::SNAPSHOTS_DAMAGED;
use crate::phases::reason::WAITING_FOR_CORDON_SLOT;

/// Events buffered per subscriber before a reflector waits for the controller to catch up.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Read handles of the three stores.
#[derive(Clone)]
pub struct Caches {
    pub repairs: Store<SnapshotRepair>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub lease_namespace: String,
}

/// What starting the stores gives the operator: the stores, the change streams the controller
/// and the automatic remediation follow, and the future that keeps all three stores up to date
/// (it must be polled for anything to happen). A change stream nobody wants is dropped, which
/// unsubscribes it (a subscriber that is kept but never read would stall its reflector).
pub struct Started {
    pub caches: Caches,
    pub repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
    pub node_changes: BoxStream<'static, Arc<Node>>,
    pub lease_changes: BoxStream<'static, Arc<Lease>>,
    /// SnapshotRepair changes for the automatic remediation's ledger and escalations.
    pub remediation_repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
    /// SnapshotRepair changes that wake the SnapshotScans owning them.
    pub scan_repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
    pub drive: BoxFuture<'static, ()>,
}

/// Nodes per LIST page at start-up. A real Node is 10–30 KB of JSON, almost all of it status
/// that `slim_node` drops; a page is held whole while it is decoded, so a small page keeps the
/// operator's peak memory low (kube's default of 500 is 5–15 MB of Nodes at once).
const NODE_LIST_PAGE: u32 = 100;

/// Starts the reflectors (nothing is requested until `drive` is polled). The whole operator
/// (controller and automatic remediation) reads these: one watch per type.
pub fn start(client: &Client, lease_namespace: &str) -> Option<Started> {
    let (repairs, repairs_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
    let (nodes, nodes_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
    let (leases, leases_writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
    let repair_changes = repairs_writer.subscribe()?;
    let remediation_repair_changes = repairs_writer.subscribe()?;
    let scan_repair_changes = repairs_writer.subscribe()?;
    let node_changes = nodes_writer.subscribe()?;
    let lease_changes = leases_writer.subscribe()?;
    let drive_repairs = reflect(
        Api::<SnapshotRepair>::all(client.clone()),
        watcher::Config::default().any_semantic(),
        repairs_writer,
        |sr: &mut SnapshotRepair| sr.managed_fields_mut().clear(),
    );
    let drive_nodes = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default()
            .any_semantic()
            .page_size(NODE_LIST_PAGE),
        nodes_writer,
        slim_node,
    );
    let drive_leases = reflect(
        Api::<Lease>::namespaced(client.clone(), lease_namespace),
        watcher::Config::default().any_semantic(),
        leases_writer,
        |l: &mut Lease| l.managed_fields_mut().clear(),
    );
    let drive = async move {
        tokio::join!(drive_repairs, drive_nodes, drive_leases);
    };
    Some(Started {
        caches: Caches {
            repairs,
            nodes,
            leases,
            lease_namespace: lease_namespace.to_string(),
        },
        repair_changes: repair_changes.boxed(),
        node_changes: node_changes.boxed(),
        lease_changes: lease_changes.boxed(),
        remediation_repair_changes: remediation_repair_changes.boxed(),
        scan_repair_changes: scan_repair_changes.boxed(),
        drive: drive.boxed(),
    })
}

/// The stores once every one holds its first full list, with the change streams; the
/// reflectors run in their own task, which ends when this is dropped.
pub struct Filled {
    pub caches: Caches,
    pub repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
    pub node_changes: BoxStream<'static, Arc<Node>>,
    pub lease_changes: BoxStream<'static, Arc<Lease>>,
    pub remediation_repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
    pub scan_repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
    /// Keep until the stores are no longer needed.
    pub reflectors: Reflectors,
}

/// Starts the stores and waits for their first full lists. Nothing is decided before (the
/// cordon cap is always counted from the whole cluster); waiting here, once per store, also
/// keeps to one waiter at a time, since kube-runtime's readiness future wakes only the last of
/// several concurrent waiters. Cancel by dropping the future.
pub async fn start_filled(client: &Client, lease_namespace: &str) -> Result<Filled, Error> {
    let started = start(client, lease_namespace)
        .ok_or(Error::Caches("cannot subscribe to the reflector stores"))?;
    let reflectors = Reflectors(tokio::spawn(started.drive));
    if !started.caches.wait_until_ready().await {
        return Err(Error::Caches(
            "reflectors stopped before the stores were filled",
        ));
    }
    Ok(Filled {
        caches: started.caches,
        repair_changes: started.repair_changes,
        node_changes: started.node_changes,
        lease_changes: started.lease_changes,
        remediation_repair_changes: started.remediation_repair_changes,
        scan_repair_changes: started.scan_repair_changes,
        reflectors,
    })
}

/// The reflectors' task, aborted when dropped, so a leadership term's watches end with it.
pub struct Reflectors(tokio::task::JoinHandle<()>);

impl Drop for Reflectors {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One watch (one LIST at start, then WATCH, resuming from the last resourceVersion) feeding
/// a store; `slim` drops what no reconcile reads before it is kept.
async fn reflect<K>(api: Api<K>, config: watcher::Config, writer: Writer<K>, slim: fn(&mut K))
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K: Send + Sync + 'static,
{
    let kind = K::kind(&()).to_string();
    watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect_shared(writer)
        .for_each(|event| {
            if let Err(error) = event {
                warn!(%kind, %error, "watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}

/// A Node as the store keeps it: metadata without managedFields, spec, and of the status only
/// the operator's own `SnapshotsDamaged` condition. The rest (images, the kubelet's
/// conditions, addresses: most of a real Node's size) is never read by the operator.
pub fn slim_node(node: &mut Node) {
    let ours: Vec<NodeCondition> = node
        .status
        .take()
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ == SNAPSHOTS_DAMAGED)
        .collect();
    node.status = (!ours.is_empty()).then(|| NodeStatus {
        conditions: Some(ours),
        ..Default::default()
    });
    node.metadata.managed_fields = None;
}

impl Caches {
    /// Waits until every store has its first full list. Reconciles decide nothing before,
    /// so the cordon cap is always counted from the whole cluster. Call from one task only:
    /// kube-runtime's readiness future wakes just the last of concurrent waiters.
    pub async fn wait_until_ready(&self) -> bool {
        self.repairs.wait_until_ready().await.is_ok()
            && self.nodes.wait_until_ready().await.is_ok()
            && self.leases.wait_until_ready().await.is_ok()
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    pub fn lease(&self, name: &str) -> Option<Arc<Lease>> {
        self.leases
            .get(&ObjectRef::new(name).within(&self.lease_namespace))
    }

    pub fn repairs(&self) -> Vec<Arc<SnapshotRepair>> {
        self.repairs.state()
    }

    /// Nodes snapmend holds cordoned now: unschedulable and annotated. A node a person
    /// uncordoned by hand no longer counts, even if the annotation is still there.
    pub fn cordoned_nodes(&self) -> BTreeSet<String> {
        self.nodes
            .state()
            .iter()
            .filter(|n| is_cordoned_by_snapmend(n))
            .map(|n| n.name_any())
            .collect()
    }
}

pub fn is_cordoned_by_snapmend(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
        && node.annotations().contains_key(CORDONED_BY_ANNOTATION)
}

fn unfinished(sr: &SnapshotRepair) -> bool {
    !sr.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(Phase::is_terminal)
}

/// Whether `sr` waits in Pending for a free cordon slot.
pub fn waits_for_slot(sr: &SnapshotRepair) -> bool {
    sr.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Pending)
            && conditions::get(&s.conditions, READY)
                .is_some_and(|c| c.reason == WAITING_FOR_CORDON_SLOT)
    })
}

/// The SnapshotRepairs of `node` that a change of it (or of its helper's Lease) can move on.
/// Finished repairs are included only while the node is annotated for them (a leftover cordon).
pub fn repairs_on_node(
    repairs: &Store<SnapshotRepair>,
    node: &str,
) -> Vec<ObjectRef<SnapshotRepair>> {
    repairs
        .state()
        .iter()
        .filter(|sr| sr.spec.node_name == node)
        .map(|sr| ObjectRef::from_obj(sr.as_ref()))
        .collect()
}

/// Repairs waiting for a cordon slot, woken when one may have been freed.
pub fn repairs_waiting_for_slot(repairs: &Store<SnapshotRepair>) -> Vec<ObjectRef<SnapshotRepair>> {
    repairs
        .state()
        .iter()
        .filter(|sr| waits_for_slot(sr))
        .map(|sr| ObjectRef::from_obj(sr.as_ref()))
        .collect()
}

/// Maps Node changes to the repairs they affect: the node's own repairs, and, when the node
/// stopped being cordoned by snapmend, the repairs waiting for a slot.
pub struct NodeMapper {
    repairs: Store<SnapshotRepair>,
    cordoned: std::sync::Mutex<BTreeSet<String>>,
}

impl NodeMapper {
    pub fn new(repairs: Store<SnapshotRepair>) -> Self {
        NodeMapper {
            repairs,
            cordoned: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    pub fn map(&self, node: &Node) -> Vec<ObjectRef<SnapshotRepair>> {
        let name = node.name_any();
        let now = is_cordoned_by_snapmend(node);
        let freed = {
            let mut cordoned = self.cordoned.lock().unwrap_or_else(|p| p.into_inner());
            if now {
                cordoned.insert(name.clone());
                false
            } else {
                cordoned.remove(&name)
            }
        };
        let mut out = repairs_on_node(&self.repairs, &name);
        if freed {
            out.extend(repairs_waiting_for_slot(&self.repairs));
        }
        out
    }
}

/// Maps a helper Lease change to the unfinished repairs of its node.
pub fn repairs_for_lease(
    repairs: &Store<SnapshotRepair>,
    lease: &Lease,
) -> Vec<ObjectRef<SnapshotRepair>> {
    let name = lease.name_any();
    let Some(node) = name.strip_prefix(HELPER_LEASE_PREFIX) else {
        return Vec::new();
    };
    repairs
        .state()
        .iter()
        .filter(|sr| sr.spec.node_name == node && unfinished(sr))
        .map(|sr| ObjectRef::from_obj(sr.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerImage, NodeSpec};
    use kube::api::ObjectMeta;

    #[test]
    fn slim_nodes_keep_what_the_operator_reads() {
        let mut node = Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                annotations: Some([(CORDONED_BY_ANNOTATION.to_string(), "sr".to_string())].into()),
                managed_fields: Some(vec![Default::default()]),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(true),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                images: Some(vec![ContainerImage {
                    names: Some(vec!["registry.k8s.io/pause:3.10".into()]),
                    size_bytes: Some(1),
                }]),
                ..Default::default()
            }),
        };
        slim_node(&mut node);
        assert!(node.status.is_none());
        assert!(node.metadata.managed_fields.is_none());
        assert!(is_cordoned_by_snapmend(&node));
    }

    #[test]
    fn slim_nodes_keep_only_the_snapshots_damaged_condition() {
        let condition = |type_: &str| NodeCondition {
            type_: type_.into(),
            status: "True".into(),
            ..Default::default()
        };
        let mut node = Node {
            status: Some(NodeStatus {
                conditions: Some(vec![condition("Ready"), condition(SNAPSHOTS_DAMAGED)]),
                images: Some(vec![ContainerImage::default()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        slim_node(&mut node);
        let status = node.status.expect("our condition kept");
        assert_eq!(status.conditions, Some(vec![condition(SNAPSHOTS_DAMAGED)]));
        assert!(status.images.is_none());
    }
}
