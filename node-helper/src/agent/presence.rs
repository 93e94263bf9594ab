//! Helper presence: the Lease `snapmend-node-helper.<node>` that tells the operator this
//! node's agent is alive. Renewed every 10 s; the operator trusts it for 40 s.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use snapmend_crds::labels;
use tracing::{debug, warn};

use snapmend_crds::runtime::retry::RetryPolicy;
use snapmend_crds::runtime::shutdown::Shutdown;

use super::metrics::Metrics;
use super::status::AgentStatus;
use crate::error::{Error, Result};

pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// What the Lease declares; the operator's presence window (contract: 40 s).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Renewal retries after a failure: from 0.5 s, doubling up to the renew interval.
const RETRY: RetryPolicy = RetryPolicy::new(Duration::from_millis(500), RENEW_INTERVAL);

/// The Lease as it must be after renewing `existing` (or creating it) at `now`.
/// Keeps `acquireTime` while the holder stays the same; counts a transition when it changes.
pub fn renewed_lease(
    existing: Option<&Lease>,
    name: &str,
    namespace: &str,
    node: &str,
    holder: &str,
    now: Timestamp,
) -> Lease {
    let old_spec = existing.and_then(|l| l.spec.as_ref());
    let old_holder = old_spec.and_then(|s| s.holder_identity.as_deref());
    let same_holder = old_holder == Some(holder);
    let acquire_time = match old_spec.and_then(|s| s.acquire_time.clone()) {
        Some(t) if same_holder => t,
        _ => MicroTime(now),
    };
    let old_transitions = old_spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let lease_transitions = if old_holder.is_some() && !same_holder {
        old_transitions.saturating_add(1)
    } else {
        old_transitions
    };
    let mut metadata = existing.map(|l| l.metadata.clone()).unwrap_or_default();
    metadata.name = Some(name.to_string());
    metadata.namespace = Some(namespace.to_string());
    let lbls = metadata.labels.get_or_insert_with(BTreeMap::new);
    lbls.insert(
        "app.kubernetes.io/name".into(),
        "snapmend-node-helper".into(),
    );
    lbls.insert(labels::NODE_LABEL.into(), node.to_string());
    Lease {
        metadata: ObjectMeta {
            managed_fields: None,
            ..metadata
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            acquire_time: Some(acquire_time),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(lease_transitions),
            ..old_spec.cloned().unwrap_or_default()
        }),
    }
}

/// Creates or renews the Lease once. Conflicts and races surface as errors; the loop retries.
pub async fn renew_once(api: &Api<Lease>, node: &str, holder: &str) -> Result<()> {
    let name = labels::helper_lease_name(node);
    let namespace = api
        .namespace()
        .unwrap_or(labels::DEFAULT_LEASE_NAMESPACE)
        .to_string();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::kube(format!("get Lease {namespace}/{name}"), source))?;
    let lease = renewed_lease(
        existing.as_ref(),
        &name,
        &namespace,
        node,
        holder,
        Timestamp::now(),
    );
    match existing {
        None => api
            .create(&PostParams::default(), &lease)
            .await
            .map_err(|source| Error::kube(format!("create Lease {namespace}/{name}"), source))?,
        // replace carries the resourceVersion we read: a concurrent writer makes it conflict.
        Some(_) => api
            .replace(&name, &PostParams::default(), &lease)
            .await
            .map_err(|source| Error::kube(format!("renew Lease {namespace}/{name}"), source))?,
    };
    Ok(())
}

/// Keeps the Lease fresh until shutdown; never gives up on transient errors.
pub async fn keep_present(
    api: Api<Lease>,
    node: String,
    holder: String,
    metrics: Metrics,
    status: AgentStatus,
    shutdown: Shutdown,
) {
    let mut retry = RETRY.delays();
    loop {
        let wait = match renew_once(&api, &node, &holder).await {
            Ok(()) => {
                debug!(node, "presence lease renewed");
                metrics.lease_renewed();
                status.lease_renewed();
                retry.reset();
                RENEW_INTERVAL
            }
            Err(error) => {
                let wait = retry.next_delay();
                warn!(node, %error, retry_in = ?wait, "presence lease renewal failed");
                metrics.lease_renew_failed();
                wait
            }
        };
        if shutdown.sleep_or_stop(wait).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid time")
    }

    fn spec(l: &Lease) -> &LeaseSpec {
        l.spec.as_ref().expect("spec")
    }

    #[test]
    fn a_new_lease_is_held_by_us_and_acquired_now() {
        let l = renewed_lease(
            None,
            "snapmend-node-helper.n1",
            "snapmend-system",
            "n1",
            "n1/pod-a",
            at(100),
        );
        assert_eq!(l.metadata.name.as_deref(), Some("snapmend-node-helper.n1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some("snapmend-system"));
        assert_eq!(
            l.metadata
                .labels
                .as_ref()
                .and_then(|m| m.get(labels::NODE_LABEL))
                .map(String::as_str),
            Some("n1")
        );
        let s = spec(&l);
        assert_eq!(s.holder_identity.as_deref(), Some("n1/pod-a"));
        assert_eq!(s.lease_duration_seconds, Some(40));
        assert_eq!(s.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(s.renew_time, Some(MicroTime(at(100))));
        assert_eq!(s.lease_transitions, Some(0));
    }

    #[test]
    fn renewing_our_own_lease_moves_only_renew_time() {
        let first = renewed_lease(None, "l", "ns", "n1", "n1/pod-a", at(100));
        let mut stored = first.clone();
        stored.metadata.resource_version = Some("42".into());
        let again = renewed_lease(Some(&stored), "l", "ns", "n1", "n1/pod-a", at(110));
        assert_eq!(
            again.metadata.resource_version.as_deref(),
            Some("42"),
            "kept for replace"
        );
        assert_eq!(spec(&again).acquire_time, Some(MicroTime(at(100))));
        assert_eq!(spec(&again).renew_time, Some(MicroTime(at(110))));
        assert_eq!(spec(&again).lease_transitions, Some(0));
    }

    #[test]
    fn a_new_pod_on_the_node_takes_over_and_counts_a_transition() {
        let old = renewed_lease(None, "l", "ns", "n1", "n1/pod-a", at(100));
        let new = renewed_lease(Some(&old), "l", "ns", "n1", "n1/pod-b", at(200));
        assert_eq!(spec(&new).holder_identity.as_deref(), Some("n1/pod-b"));
        assert_eq!(spec(&new).acquire_time, Some(MicroTime(at(200))));
        assert_eq!(spec(&new).lease_transitions, Some(1));
    }

    #[test]
    fn an_empty_lease_gets_a_holder_without_a_transition() {
        let empty = Lease {
            metadata: ObjectMeta::default(),
            spec: None,
        };
        let l = renewed_lease(Some(&empty), "l", "ns", "n1", "n1", at(5));
        assert_eq!(spec(&l).lease_transitions, Some(0));
        assert_eq!(spec(&l).acquire_time, Some(MicroTime(at(5))));
    }
}
