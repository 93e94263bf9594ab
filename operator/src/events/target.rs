//! Pure resolution of an event to (node, target image): which node's snapshots, which image.
//!
//! Both event APIs are reduced to [`EventFacts`]; the node comes from `source.host`,
//! `reportingInstance` (kubelet's) or the pod's `spec.nodeName`; the target is the node's sandbox
//! image for sandbox failures, or the failing container's image otherwise.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use k8s_openapi::jiff::Timestamp;

/// What the remediation needs from an event, whichever API it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFacts {
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub message: String,
    /// `source.host` (core/v1) or `deprecatedSource.host` (events.k8s.io/v1).
    pub source_host: Option<String>,
    pub reporting_controller: Option<String>,
    pub reporting_instance: Option<String>,
    pub involved_kind: String,
    pub involved_namespace: String,
    pub involved_name: String,
    /// e.g. `spec.containers{app}`.
    pub involved_field_path: Option<String>,
    /// The last time the event was observed (series, lastTimestamp, eventTime, creation).
    pub last_seen: Option<Timestamp>,
    pub count: i32,
}

impl EventFacts {
    /// `<namespace>/<name>`, the value of the trigger-event annotation.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn from_core(e: &CoreEvent) -> EventFacts {
        let series_last = e
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| t.0);
        let last_seen = [
            series_last,
            e.last_timestamp.as_ref().map(|t| t.0),
            e.event_time.as_ref().map(|t| t.0),
            e.first_timestamp.as_ref().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .max()
        // The API server stamps creation itself; only a fallback for events without their own times.
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let count = e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1);
        let mut facts = EventFacts {
            namespace: e.metadata.namespace.clone().unwrap_or_default(),
            name: e.metadata.name.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            source_host: e.source.as_ref().and_then(|s| s.host.clone()),
            reporting_controller: e
                .reporting_component
                .clone()
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone())),
            reporting_instance: e.reporting_instance.clone(),
            last_seen,
            count,
            ..Default::default()
        };
        facts.set_involved(&e.involved_object);
        facts
    }

    pub fn from_events_v1(e: &EventsV1Event) -> EventFacts {
        let last_seen = [
            e.series.as_ref().map(|s| s.last_observed_time.0),
            e.deprecated_last_timestamp.as_ref().map(|t| t.0),
            e.event_time.as_ref().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .max()
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let count = e
            .series
            .as_ref()
            .map(|s| s.count)
            .or(e.deprecated_count)
            .unwrap_or(1);
        let mut facts = EventFacts {
            namespace: e.metadata.namespace.clone().unwrap_or_default(),
            name: e.metadata.name.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.note.clone().unwrap_or_default(),
            source_host: e.deprecated_source.as_ref().and_then(|s| s.host.clone()),
            reporting_controller: e.reporting_controller.clone(),
            reporting_instance: e.reporting_instance.clone(),
            last_seen,
            count,
            ..Default::default()
        };
        if let Some(r) = &e.regarding {
            facts.set_involved(r);
        }
        facts
    }

    fn set_involved(&mut self, r: &ObjectReference) {
        self.involved_kind = r.kind.clone().unwrap_or_default();
        self.involved_namespace = r
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        self.involved_name = r.name.clone().unwrap_or_default();
        self.involved_field_path = r.field_path.clone().filter(|p| !p.is_empty());
    }

    /// The event is about a Pod (kubelet's sandbox and container events are).
    pub fn is_about_pod(&self) -> bool {
        self.involved_kind == "Pod" && !self.involved_name.is_empty()
    }
}

/// Events last seen longer ago than `window` are history, not a signal.
pub fn is_fresh(last_seen: Option<Timestamp>, now: Timestamp, window: Duration) -> bool {
    let Some(seen) = last_seen else {
        return false;
    };
    let age = now.duration_since(seen);
    // Clock skew can put an event slightly in the future; that is fresh.
    age.as_secs_f64() <= window.as_secs_f64()
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The node the event happened on, without looking anything up, if the event says so.
pub fn node_from_event(facts: &EventFacts) -> Option<String> {
    if let Some(host) = non_empty(&facts.source_host) {
        return Some(host.to_string());
    }
    // Only the kubelet reports its node name as reportingInstance; controllers put their pod name.
    let by_kubelet = facts
        .reporting_controller
        .as_deref()
        .is_none_or(|c| c.is_empty() || c == "kubelet");
    if by_kubelet && let Some(instance) = non_empty(&facts.reporting_instance) {
        return Some(instance.to_string());
    }
    None
}

/// The node from the event, else from the pod it is about.
pub fn resolve_node(facts: &EventFacts, pod: Option<&Pod>) -> Option<String> {
    node_from_event(facts).or_else(|| {
        pod.and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    })
}

/// Which image's snapshots to check.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The node's configured sandbox (pause) image.
    SandboxImage,
    /// An image name as containerd records it (tag or digest reference).
    Image(String),
}

impl Target {
    /// The Target column's text (`sandbox` or the image), as in `SnapshotRepairSpec::target`.
    pub fn key(&self) -> String {
        match self {
            Target::SandboxImage => "sandbox".to_string(),
            Target::Image(i) => i.clone(),
        }
    }
}

/// The container an event's `fieldPath` names: `spec.containers{app}` → `app`.
pub fn container_from_field_path(field_path: &str) -> Option<&str> {
    let open = field_path.find('{')?;
    let close = field_path.rfind('}')?;
    (close > open + 1).then(|| &field_path[open + 1..close])
}

/// The target of a failure: the sandbox image for sandboxes; otherwise the failing container's
/// image, preferring the digest reference containerd recorded (`status.containerStatuses[].imageID`)
/// over the spec's name; for pull failures, the image named in the message.
pub fn resolve_target(sandbox: bool, facts: &EventFacts, pod: Option<&Pod>) -> Option<Target> {
    if sandbox {
        return Some(Target::SandboxImage);
    }
    let container = facts
        .involved_field_path
        .as_deref()
        .and_then(container_from_field_path);
    if let (Some(pod), Some(container)) = (pod, container)
        && let Some(image) = container_image(pod, container)
    {
        return Some(Target::Image(image));
    }
    image_named_in_message(&facts.message).map(|i| Target::Image(normalize_image_ref(&i)))
}

fn container_image(pod: &Pod, container: &str) -> Option<String> {
    let status = pod.status.as_ref();
    let recorded = status
        .into_iter()
        .flat_map(|s| {
            [
                s.container_statuses.as_deref(),
                s.init_container_statuses.as_deref(),
                s.ephemeral_container_statuses.as_deref(),
            ]
        })
        .flatten()
        .flatten()
        .find(|cs| cs.name == container)
        .and_then(|cs| digest_reference(&cs.image_id));
    if recorded.is_some() {
        return recorded;
    }
    let spec = pod.spec.as_ref()?;
    let in_spec = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
        .or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == container)
                .and_then(|c| c.image.clone())
        })?;
    Some(normalize_image_ref(&in_spec))
}

/// `containerd://`-less digest reference from an imageID, if it is one (`repo@sha256:…`).
pub fn digest_reference(image_id: &str) -> Option<String> {
    let id = image_id
        .trim()
        .trim_start_matches("docker-pullable://")
        .trim_start_matches("containerd://");
    (id.contains("@sha256:") && !id.starts_with('@')).then(|| normalize_image_ref(id))
}

/// `Failed to pull image "X"` → X.
fn image_named_in_message(message: &str) -> Option<String> {
    let normalized = super::classify::normalize_message(message);
    for marker in ["pull image \"", "unpack image \""] {
        if let Some(i) = normalized.find(marker) {
            let rest = &normalized[i + marker.len()..];
            let end = rest.find('"')?;
            let name = &rest[..end];
            if !name.is_empty() && name != "*" {
                return Some(name.to_string());
            }
        }
    }
    None
}

/// The name containerd's CRI records for a reference: Docker Hub names get `docker.io/` and
/// `library/`, and a missing tag becomes `:latest` (digest references keep their digest).
pub fn normalize_image_ref(reference: &str) -> String {
    let reference = reference.trim();
    let (first, rest) = match reference.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (reference, None),
    };
    let has_domain =
        rest.is_some() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (has_domain, rest) {
        (true, _) => reference.to_string(),
        (false, Some(_)) => format!("docker.io/{reference}"),
        (false, None) => format!("docker.io/library/{reference}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !full.contains('@') && !last.contains(':') {
        full.push_str(":latest");
    }
    full
}

#[cfg(test)]
mod tests;
