//! Cordon bookkeeping on Nodes: `spec.unschedulable` plus the `snapmend.io/cordoned-by` annotation,
//! which records which SnapshotRepair cordoned the node, so nothing else is ever uncordoned.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use snapmend_crds::labels::CORDONED_BY_ANNOTATION;
use tracing::{info, instrument};

use crate::error::{Error, kube_context};
use crate::phases::NodeFacts;

/// What the phase machine needs to know about a Node.
pub fn node_facts(node: &Node) -> NodeFacts {
    NodeFacts {
        unschedulable: is_unschedulable(node),
        cordoned_by: node.annotations().get(CORDONED_BY_ANNOTATION).cloned(),
    }
}

fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// The merge patch that cordons `node` for `repair`, guarded by the resourceVersion that was read.
pub fn cordon_patch(resource_version: Option<&str>, repair: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { CORDONED_BY_ANNOTATION: repair },
        },
        "spec": { "unschedulable": true },
    })
}

/// The merge patch that undoes `cordon_patch`.
pub fn uncordon_patch(resource_version: Option<&str>) -> serde_json::Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { CORDONED_BY_ANNOTATION: null },
        },
        "spec": { "unschedulable": null },
    })
}

/// Cordons `node` (as the Node store has it) unless it is already unschedulable (then it is
/// someone else's and stays so). The patch is guarded by the store's resourceVersion, so a
/// stale store fails with a conflict rather than overwriting a newer change. Returns whether
/// this call cordoned it.
#[instrument(skip(api, node), fields(node = %node.name_any(), repair = %repair))]
pub async fn cordon(api: &Api<Node>, node: &Node, repair: &str) -> Result<bool, Error> {
    if is_unschedulable(node) {
        return Ok(false);
    }
    let name = node.name_any();
    let patch = cordon_patch(node.resource_version().as_deref(), repair);
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_context("cordon", format!("node {name}")))?;
    info!("cordoned node");
    Ok(true)
}

/// Uncordons the node only if its annotation names `repair`. Returns whether it did.
#[instrument(skip(api, node), fields(node = %node.name_any(), repair = %repair))]
pub async fn uncordon(api: &Api<Node>, node: &Node, repair: &str) -> Result<bool, Error> {
    if !node_facts(node).cordoned_by_repair(repair) {
        return Ok(false);
    }
    let name = node.name_any();
    let patch = uncordon_patch(node.resource_version().as_deref());
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_context("uncordon", format!("node {name}")))?;
    info!("uncordoned node");
    Ok(true)
}

/// Renames the holder of `repair`'s cordon to `next` (the node stays cordoned), only if the
/// annotation names `repair`. Returns whether it did.
#[instrument(skip(api, node), fields(node = %node.name_any(), repair = %repair, next = %next))]
pub async fn hand_over(
    api: &Api<Node>,
    node: &Node,
    repair: &str,
    next: &str,
) -> Result<bool, Error> {
    if !node_facts(node).cordoned_by_repair(repair) {
        return Ok(false);
    }
    let name = node.name_any();
    let patch = hand_over_patch(node.resource_version().as_deref(), next);
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_context("hand_over", format!("node {name}")))?;
    info!("cordon handed over");
    Ok(true)
}

/// The merge patch that passes a cordon on: the annotation changes, `unschedulable` stays.
pub fn hand_over_patch(resource_version: Option<&str>, next: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { CORDONED_BY_ANNOTATION: next },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(unschedulable: Option<bool>, by: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                annotations: by
                    .map(|b| [(CORDONED_BY_ANNOTATION.to_string(), b.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn facts_read_unschedulable_and_the_annotation() {
        assert_eq!(node_facts(&node(None, None)), NodeFacts::default());
        assert_eq!(
            node_facts(&node(Some(true), Some("sr-1"))),
            NodeFacts {
                unschedulable: true,
                cordoned_by: Some("sr-1".into())
            }
        );
        assert!(!node_facts(&Node::default()).unschedulable);
    }

    #[test]
    fn only_annotated_unschedulable_nodes_count() {
        let nodes = [
            node(Some(true), Some("a")),
            node(Some(true), None),
            node(Some(false), Some("b")),
            node(None, None),
            node(Some(true), Some("c")),
        ];
        let counted = nodes
            .iter()
            .filter(|n| crate::caches::is_cordoned_by_snapmend(n))
            .count();
        assert_eq!(counted, 2);
    }

    #[test]
    fn patches_set_and_clear_exactly_the_cordon() {
        let c = cordon_patch(Some("42"), "sr-1");
        assert_eq!(c["spec"]["unschedulable"], true);
        assert_eq!(c["metadata"]["annotations"][CORDONED_BY_ANNOTATION], "sr-1");
        assert_eq!(c["metadata"]["resourceVersion"], "42");
        let h = hand_over_patch(Some("44"), "sr-2");
        assert_eq!(h["metadata"]["annotations"][CORDONED_BY_ANNOTATION], "sr-2");
        assert!(h.get("spec").is_none(), "unschedulable untouched");
        let u = uncordon_patch(Some("43"));
        assert!(u["spec"]["unschedulable"].is_null());
        assert!(u["metadata"]["annotations"][CORDONED_BY_ANNOTATION].is_null());
        assert_eq!(u["metadata"]["resourceVersion"], "43");
    }
}
