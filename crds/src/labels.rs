//! Names fixed by the contract: labels, annotations, the finalizer, lease names.

pub const GROUP: &str = "snapmend.io";
/// Label on every SnapshotRepair naming its node.
pub const NODE_LABEL: &str = "snapmend.io/node";
/// Label on automatic SnapshotRepairs (`event`).
pub const TRIGGER_LABEL: &str = "snapmend.io/trigger";
pub const TRIGGER_EVENT: &str = "event";
/// Annotation on automatic SnapshotRepairs naming the event that caused them.
pub const TRIGGER_EVENT_ANNOTATION: &str = "snapmend.io/trigger-event";
/// Label on the SnapshotRepairs of a SnapshotScan: the scan's name (left off when the name is
/// too long for a label value; the ownerReference still says).
pub const SCAN_LABEL: &str = "snapmend.io/scan";
/// Label on the SnapshotRepairs of a SnapshotScan: the run id.
pub const SCAN_RUN_LABEL: &str = "snapmend.io/scan-run";
/// Annotation on a SnapshotScan: a value not yet handled starts a run at once.
pub const RUN_NOW_ANNOTATION: &str = "snapmend.io/run-now";
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

/// Label on the operator's copy of a repair's pull secrets; value: the SnapshotRepair's name
/// (left off when the name is too long for a label value; the ownerReference still says).
pub const PULL_SECRET_FOR_LABEL: &str = "snapmend.io/pull-secret-for";
const PULL_SECRET_PREFIX: &str = "snapmend-pull-";
/// Object names (DNS subdomains) are at most this long.
const MAX_NAME: usize = 253;

/// Name of the Secret, in the operator's namespace, holding the merged docker config of the
/// pull secrets of SnapshotRepair `repair`. Unique per repair: a name too long to prefix is cut
/// and made unique again by a hash of the whole name.
pub fn pull_secret_copy_name(repair: &str) -> String {
    bounded_name(format!("{PULL_SECRET_PREFIX}{repair}"))
}

/// `full` when it is short enough for an object name (a DNS subdomain, at most 253
/// characters); otherwise cut, and made unique again by a hash of the whole of `full`.
pub fn bounded_name(full: String) -> String {
    if full.len() <= MAX_NAME {
        return full;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let suffix = format!("-{hash:016x}");
    let mut head = full[..MAX_NAME - suffix.len()].to_string();
    // A DNS subdomain ends with an alphanumeric before the suffix's `-`.
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secret_copies_are_named_after_the_repair() {
        assert_eq!(
            pull_secret_copy_name("auto-n1-x7"),
            "snapmend-pull-auto-n1-x7"
        );
        let long = format!("{}-{}", "a".repeat(230), "b".repeat(20));
        let other = format!("{}-{}", "a".repeat(230), "c".repeat(20));
        let (a, b) = (pull_secret_copy_name(&long), pull_secret_copy_name(&other));
        assert!(a.len() <= 253 && b.len() <= 253, "{a}");
        assert_ne!(a, b, "cut names stay unique");
        assert!(a.starts_with("snapmend-pull-aaa"));
        let dotted = format!("{}.{}", "a".repeat(221), "b".repeat(40));
        let cut = pull_secret_copy_name(&dotted);
        assert!(!cut.contains(".-"), "{cut}");
        assert!(cut.len() < 253, "the dot before the suffix was dropped");
    }
}
