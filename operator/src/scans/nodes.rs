//! Which nodes a run covers: the scan's label selector over the operator's Node cache (no LIST
//! per reconcile), frozen at the run's start for nodes that join later.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

/// The scan's `nodeSelector`; absent or empty selects every node.
pub fn node_selector(selector: Option<&LabelSelector>) -> Result<Selector, String> {
    Selector::try_from(selector.cloned().unwrap_or_default())
        .map_err(|e| format!("spec.nodeSelector is not a valid label selector: {e}"))
}

/// The nodes of a run that started at `run_start`: selected, not being deleted, and created
/// before the run started (a node that joins mid-run waits for the next one).
pub fn eligible_nodes(
    selector: &Selector,
    nodes: &[Arc<Node>],
    run_start: Timestamp,
) -> BTreeSet<String> {
    let empty = BTreeMap::new();
    nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            n.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 <= run_start)
        })
        .filter(|n| selector.matches(n.metadata.labels.as_ref().unwrap_or(&empty)))
        .map(|n| n.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
    use kube::api::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], created: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                creation_timestamp: Some(Time(created.parse().expect("time"))),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn absent_or_empty_selectors_select_every_node() {
        let nodes = [
            node("b", &[], "2026-01-01T00:00:00Z"),
            node("a", &[("pool", "gpu")], "2026-01-01T00:00:00Z"),
        ];
        let now = t("2026-12-01T00:00:00Z");
        for sel in [None, Some(LabelSelector::default())] {
            let s = node_selector(sel.as_ref()).expect("valid");
            assert_eq!(
                eligible_nodes(&s, &nodes, now)
                    .into_iter()
                    .collect::<Vec<_>>(),
                ["a", "b"]
            );
        }
    }

    #[test]
    fn labels_and_expressions_select() {
        let nodes = [
            node("gpu-1", &[("pool", "gpu")], "2026-01-01T00:00:00Z"),
            node("cpu-1", &[("pool", "cpu")], "2026-01-01T00:00:00Z"),
            node("bare", &[], "2026-01-01T00:00:00Z"),
        ];
        let now = t("2026-12-01T00:00:00Z");
        let by_label = LabelSelector {
            match_labels: Some([("pool".to_string(), "gpu".to_string())].into()),
            ..Default::default()
        };
        let s = node_selector(Some(&by_label)).expect("valid");
        assert_eq!(
            eligible_nodes(&s, &nodes, now)
                .into_iter()
                .collect::<Vec<_>>(),
            ["gpu-1"]
        );
        let not_gpu = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "pool".into(),
                operator: "NotIn".into(),
                values: Some(vec!["gpu".into()]),
            }]),
            ..Default::default()
        };
        let s = node_selector(Some(&not_gpu)).expect("valid");
        assert_eq!(
            eligible_nodes(&s, &nodes, now)
                .into_iter()
                .collect::<Vec<_>>(),
            ["bare", "cpu-1"]
        );
    }

    #[test]
    fn an_invalid_selector_is_refused_with_a_reason() {
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "pool".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let err = node_selector(Some(&bad)).expect_err("invalid");
        assert!(err.contains("spec.nodeSelector"), "{err}");
    }

    #[test]
    fn nodes_created_after_the_run_started_or_being_deleted_are_left_out() {
        let mut leaving = (*node("leaving", &[], "2026-01-01T00:00:00Z")).clone();
        leaving.metadata.deletion_timestamp = Some(Time(t("2026-12-01T00:00:00Z")));
        let nodes = [
            node("old", &[], "2026-01-01T00:00:00Z"),
            node("new", &[], "2026-12-02T00:00:00Z"),
            Arc::new(leaving),
        ];
        let s = node_selector(None).expect("valid");
        assert_eq!(
            eligible_nodes(&s, &nodes, t("2026-12-01T12:00:00Z"))
                .into_iter()
                .collect::<Vec<_>>(),
            ["old"]
        );
    }
}
