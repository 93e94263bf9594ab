//! The node helper's ScanReport (`snapmend-node-helper scan --json`): every image of the
//! scanned namespaces, plus what is wrong with the snapshot store itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::{Outcome, Report};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    pub outcome: Outcome,
    /// One Report per image, in namespace then name order. Layers shared by several images
    /// were verified once and appear in each.
    #[serde(default)]
    pub images: Vec<Report>,
    #[serde(default)]
    pub snapshots: StoreFindings,
    /// Unique layers (by namespace and chainID) that were verified.
    #[serde(default)]
    pub layers_checked: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What this scan read of each layer it verified: blob passes and TOC loads. A layer
    /// shared by many images is read once (the sum is 1); a repair's own passes are not
    /// counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_reads: Vec<LayerReads>,
}

/// Reads of one layer during a scan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerReads {
    pub chain_id: String,
    pub diff_id: String,
    /// Passes over the blob (inflated, digest and diffID checked).
    pub blob: u64,
    /// Verifications with the layer's TOC, no blob read.
    pub toc: u64,
}

/// The snapshot store against the snapshotter's `metadata.db`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreFindings {
    /// Recorded snapshots whose `snapshots/<id>` directory is gone (damage).
    #[serde(default)]
    pub missing: Vec<StoreSnapshot>,
    /// Directories under `snapshots/` that no record names (report only).
    #[serde(default)]
    pub orphaned: Vec<StoreSnapshot>,
    /// Committed snapshots of the scanned namespaces that no image uses (report only).
    #[serde(default)]
    pub unreferenced: Vec<StoreSnapshot>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreSnapshot {
    /// The directory name under `snapshots/` (a decimal id for recorded snapshots).
    pub id: String,
    /// The snapshotter's backend key (`<namespace>/<N>/<name>`), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Committed`, `Active`, `View` or `Unknown`, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub path: String,
}

impl ScanReport {
    /// Exit status as for verify: 0 healthy (or repaired), 1 damage found or left, 2 could not run.
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_report_json_is_camel_case_as_in_the_contract() {
        let r = ScanReport {
            outcome: Outcome::Corrupted,
            snapshots: StoreFindings {
                missing: vec![StoreSnapshot {
                    id: "7".into(),
                    key: Some("k8s.io/7/sha256:a".into()),
                    kind: Some("Committed".into()),
                    path: "/r/snapshots/7".into(),
                }],
                ..Default::default()
            },
            duration_ms: 3,
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "Corrupted");
        assert_eq!(v["snapshots"]["missing"][0]["key"], "k8s.io/7/sha256:a");
        assert!(v["snapshots"]["orphaned"].as_array().unwrap().is_empty());
        assert_eq!(v["durationMs"], 3);
        assert_eq!(v["images"], serde_json::json!([]));
        assert_eq!(r.exit_code(), 1);
    }
}
