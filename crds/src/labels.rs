//! Names fixed by the contract: labels, annotations, the finalizer, lease names.

pub const GROUP: &str = "snapmend.io";
/// Label on every SnapshotRepair naming its node.
pub const NODE_LABEL: &str = "snapmend.io/node";
/// Label on automatic SnapshotRepairs (`event`).
pub const TRIGGER_LABEL: &str = "snapmend.io/trigger";
pub const TRIGGER_EVENT: &str = "event";
/// Annotation on automatic SnapshotRepairs naming the event that caused them.
pub const TRIGGER_EVENT_ANNOTATION: &str = "snapmend.io/trigger-event";
pub const FINALIZER: &str = "snapmend.io/cleanup";
/// Annotation on a Node that the operator cordoned; value is the SnapshotRepair name.
pub const CORDONED_BY_ANNOTATION: &str = "snapmend.io/cordoned-by";
/// Opt-out label on a Node (`false` disables automatic remediation).
pub const AUTO_REMEDIATE_LABEL: &str = "snapmend.io/auto-remediate";
/// Prefix of the per-node presence Lease kept by each agent.
pub const HELPER_LEASE_PREFIX: &str = "snapmend-node-helper.";
pub const DEFAULT_LEASE_NAMESPACE: &str = "snapmend-system";

/// Name of the presence Lease of the agent on `node`.
pub fn helper_lease_name(node: &str) -> String {
    format!("{HELPER_LEASE_PREFIX}{node}")
}
