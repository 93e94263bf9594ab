//! The `SnapshotScan` custom resource (snapmend.io/v1alpha1, cluster-scoped, short name `sscan`):
//! a cron schedule that verifies (or repairs) every image of the selected nodes, one `allImages`
//! SnapshotRepair per node and run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::snapshot_repair::{ContentCheck, RepairAction};

/// Scan the snapshot stores of a set of nodes on a schedule.
// Repeated `type_ = "..."` in printcolumn(...) are separate columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "snapmend.io",
    version = "v1alpha1",
    kind = "SnapshotScan",
    plural = "snapshotscans",
    shortname = "sscan",
    category = "snapmend",
    status = "SnapshotScanStatus",
    derive = "PartialEq",
    doc = "Verify (or repair) every image of the selected nodes on a cron schedule, one allImages SnapshotRepair per node and run",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.lastRun.startTime",
        description = "when the last run started"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.lastRun.nodes",
        description = "nodes of the last run"
    ),
    printcolumn(
        name = "Damaged",
        type_ = "integer",
        json_path = ".status.lastRun.damaged",
        description = "nodes of the last run with damage that was not repaired"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScanSpec {
    /// When to run: a standard 5-field cron expression (minute hour day-of-month month
    /// day-of-week), evaluated in UTC. When both day fields are restricted, either matches.
    // CEL cannot parse cron: the schema checks the shape (five fields), the operator parses it
    // and reports a bad one with a condition and a Warning event.
    #[schemars(length(min = 9, max = 256), regex(pattern = r"^\s*\S+(\s+\S+){4}\s*$"))]
    pub schedule: String,
    /// The nodes to scan; absent or empty: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Verify (read-only) or Repair what a scan finds damaged.
    #[serde(default = "verify")]
    pub action: RepairAction,
    #[serde(default = "metadata_check")]
    pub content_check: ContentCheck,
    /// At most this many nodes of a run are scanned at a time.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_nodes: u32,
    /// true: no scheduled runs (a run in progress finishes; `snapmend.io/run-now` still starts one).
    #[serde(default)]
    pub suspend: bool,
    /// The SnapshotRepairs of this many most recent runs are kept; older ones are deleted.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn verify() -> RepairAction {
    RepairAction::Verify
}

fn metadata_check() -> ContentCheck {
    ContentCheck::Metadata
}

fn one() -> u32 {
    1
}

fn three() -> u32 {
    3
}

/// One run of a scan: its nodes and what their SnapshotRepairs found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanRun {
    /// Sortable: the UTC time the run stands for, `YYYYMMDD-hhmmss`.
    pub id: String,
    pub start_time: Time,
    /// Absent while the run is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Nodes in the run (one SnapshotRepair each).
    pub nodes: u32,
    /// Finished, nothing found.
    pub healthy: u32,
    /// Damage found and not repaired.
    pub damaged: u32,
    /// Damage found and repaired.
    pub repaired: u32,
    /// The SnapshotRepair failed.
    pub failed: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScanStatus {
    /// The scheduled time (UTC) the operator last acted on: ran, or recorded as missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ScanRun>,
    /// The last `snapmend.io/run-now` annotation value acted on; the same value never runs twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now_handled: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl SnapshotScanStatus {
    /// The last run, while it is still in progress.
    pub fn active_run(&self) -> Option<&ScanRun> {
        self.last_run
            .as_ref()
            .filter(|r| r.completion_time.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_scan_takes_the_contract_defaults() {
        let scan: SnapshotScanSpec =
            serde_json::from_value(serde_json::json!({"schedule": "0 3 * * *"})).expect("spec");
        assert_eq!(scan.action, RepairAction::Verify);
        assert_eq!(scan.content_check, ContentCheck::Metadata);
        assert_eq!(scan.max_concurrent_nodes, 1);
        assert!(!scan.suspend);
        assert_eq!(scan.history_limit, 3);
        assert_eq!(scan.node_selector, None);
    }

    #[test]
    fn only_an_unfinished_last_run_is_active() {
        let start = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut status = SnapshotScanStatus {
            last_run: Some(ScanRun {
                id: "19700101-000000".into(),
                start_time: start.clone(),
                completion_time: None,
                nodes: 1,
                healthy: 0,
                damaged: 0,
                repaired: 0,
                failed: 0,
            }),
            ..Default::default()
        };
        assert!(status.active_run().is_some());
        if let Some(run) = status.last_run.as_mut() {
            run.completion_time = Some(start);
        }
        assert!(status.active_run().is_none());
    }
}
