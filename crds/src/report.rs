//! The node helper's Report: printed by `--json` and written to `status.report`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::culprit::Culprit;
use crate::scan_summary::ScanSummary;

/// At most this many findings are listed per layer; `findingsTotal` stays exact.
pub const FINDINGS_CAP: usize = 100;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The image name as containerd records it.
    pub image: String,
    #[serde(default)]
    pub manifest_digest: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub layers: Vec<LayerReport>,
    /// How many mounted overlays use any of these snapshots (from mountinfo).
    #[serde(default)]
    pub mounts: u32,
    #[serde(default)]
    pub duration_ms: u64,
    /// Why the outcome is what it is, and what a person can do, when that is not obvious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A scan of every image (`allImages`): exact counts and the first images and store
    /// findings. Then `layers` lists only the damaged (or repaired) layers, each once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanSummary>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Outcome {
    Healthy,
    Corrupted,
    Repaired,
    Unrepairable,
    #[default]
    Error,
}

impl Outcome {
    /// The node-helper CLI's exit status (contract: 0 healthy/repaired, 1 corruption found or
    /// not fully repaired, 2 could not run).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Healthy | Outcome::Repaired => 0,
            Outcome::Corrupted | Outcome::Unrepairable => 1,
            Outcome::Error => 2,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    pub index: u32,
    pub digest: String,
    pub diff_id: String,
    pub chain_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_path: Option<String>,
    pub blob: BlobState,
    pub state: LayerState,
    #[serde(default)]
    pub findings_total: u64,
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Entries rewritten by a repair (absent for a verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_restored: Option<u64>,
    /// A staging directory that an interrupted repair left beside `fs` (its path and size);
    /// `repair` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leftover_staging: Option<String>,
    /// Where the blob's bytes came from: the content store, a registry, or snapmend's cache
    /// of verified fetched blobs (absent when no blob was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_source: Option<BlobSource>,
    /// `host/repository` the blob was fetched from (never credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_from: Option<String>,
    /// Why a blob could not be used or fetched, per source (e.g. `127.0.0.1:5443: 401 Unauthorized`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_detail: Option<String>,
    /// The last change the agent's culprit guard attributed to a process on this layer's
    /// snapshot; only on a layer that was found damaged (absent outside the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    /// What the snapshot was checked against: the layer blob, or the table of contents kept
    /// from an earlier check against the blob (then `blob` is `NotChecked`: no blob was read).
    /// Absent when nothing was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_with: Option<CheckedWith>,
}

/// The reference a layer's snapshot was compared with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CheckedWith {
    /// The layer blob, its digest and diffID verified in the same pass.
    Blob,
    /// The TOC cache: the expected entries saved after an earlier pass over the verified blob.
    Toc,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BlobSource {
    /// containerd's content store on the node.
    Local,
    /// Fetched from a registry or mirror in this run.
    Registry,
    /// snapmend's cache of blobs fetched and verified earlier (`--cache-dir`).
    Cache,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BlobState {
    Verified,
    Missing,
    DigestMismatch,
    DiffIdMismatch,
    Unreadable,
    #[default]
    NotChecked,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum LayerState {
    #[default]
    Healthy,
    Corrupted,
    Repaired,
    SnapshotMissing,
    Unrepairable,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Absolute path inside the layer, e.g. `/etc/passwd`.
    pub path: String,
    pub kind: FindingKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum FindingKind {
    Missing,
    Extra,
    TypeMismatch,
    ContentMismatch,
    SizeMismatch,
    ModeMismatch,
    OwnerMismatch,
    LinkTargetMismatch,
    HardlinkMismatch,
    DeviceMismatch,
    XattrMismatch,
}

impl FindingKind {
    pub const ALL: [FindingKind; 11] = [
        FindingKind::Missing,
        FindingKind::Extra,
        FindingKind::TypeMismatch,
        FindingKind::ContentMismatch,
        FindingKind::SizeMismatch,
        FindingKind::ModeMismatch,
        FindingKind::OwnerMismatch,
        FindingKind::LinkTargetMismatch,
        FindingKind::HardlinkMismatch,
        FindingKind::DeviceMismatch,
        FindingKind::XattrMismatch,
    ];

    /// Lower-case words used in the short summary ("1 missing, 2 mode").
    pub fn summary_word(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::Extra => "extra",
            FindingKind::TypeMismatch => "type",
            FindingKind::ContentMismatch => "content",
            FindingKind::SizeMismatch => "size",
            FindingKind::ModeMismatch => "mode",
            FindingKind::OwnerMismatch => "owner",
            FindingKind::LinkTargetMismatch => "link target",
            FindingKind::HardlinkMismatch => "hardlink",
            FindingKind::DeviceMismatch => "device",
            FindingKind::XattrMismatch => "xattr",
        }
    }
}

impl LayerReport {
    /// Damaged, repaired, or not compared with a trustworthy reference (the verified blob or
    /// the TOC kept from one): a layer a person must hear about.
    pub fn needs_attention(&self) -> bool {
        let reference_ok =
            self.blob == BlobState::Verified || self.checked_with == Some(CheckedWith::Toc);
        self.state != LayerState::Healthy || !reference_ok
    }
}

impl Report {
    /// Total findings over all layers (exact, not capped; for a scan, over every damaged layer,
    /// listed or not).
    pub fn findings_total(&self) -> u64 {
        match &self.scan {
            Some(scan) => scan.findings_total,
            None => self.layers.iter().map(|l| l.findings_total).sum(),
        }
    }

    /// Short human summary for the Findings printer column, e.g. `1 missing` or `none`; for a
    /// scan `2/14 images damaged` or `healthy (14 images)`.
    /// Counts come from the listed findings; when the list was capped the exact total is appended.
    pub fn findings_summary(&self) -> String {
        if let Some(scan) = &self.scan {
            // A scan that could not run at all (an unreadable store) found nothing either way.
            if self.outcome == Outcome::Error {
                return "not checked".to_string();
            }
            return scan.findings_column();
        }
        let mut counts = std::collections::BTreeMap::<FindingKind, u64>::new();
        let mut missing_snapshots = 0u64;
        let mut unusable_blobs = 0u64;
        for layer in &self.layers {
            if layer.state == LayerState::SnapshotMissing {
                missing_snapshots += 1;
            }
            // A bad blob means the snapshot could not be checked at all: never summarise that as "none".
            if matches!(
                layer.blob,
                BlobState::Missing
                    | BlobState::DigestMismatch
                    | BlobState::DiffIdMismatch
                    | BlobState::Unreadable
            ) {
                unusable_blobs += 1;
            }
            for f in &layer.findings {
                *counts.entry(f.kind).or_default() += 1;
            }
        }
        let listed: u64 = counts.values().sum();
        let mut parts: Vec<String> = Vec::new();
        if missing_snapshots > 0 {
            parts.push(format!("{missing_snapshots} snapshot missing"));
        }
        if unusable_blobs > 0 {
            parts.push(format!("{unusable_blobs} blob unusable, not checked"));
        }
        parts.extend(
            counts
                .iter()
                .map(|(k, n)| format!("{n} {}", k.summary_word())),
        );
        let total = self.findings_total();
        if total > listed {
            parts.push(format!("{total} in all"));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// Exit status of the node-helper CLI for this report (contract: 0 healthy/repaired,
    /// 1 corruption or not fully repaired, 2 could not run).
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(findings: Vec<Finding>, total: u64, state: LayerState) -> LayerReport {
        LayerReport {
            index: 0,
            digest: "sha256:a".into(),
            diff_id: "sha256:b".into(),
            chain_id: "sha256:b".into(),
            snapshot_id: Some("1".into()),
            snapshot_path: None,
            blob: BlobState::Verified,
            state,
            findings_total: total,
            findings,
            entries_restored: None,
            leftover_staging: None,
            ..Default::default()
        }
    }

    fn finding(path: &str, kind: FindingKind) -> Finding {
        Finding {
            path: path.into(),
            kind,
            detail: String::new(),
        }
    }

    #[test]
    fn summary_of_a_healthy_report_is_none() {
        let r = Report {
            outcome: Outcome::Healthy,
            layers: vec![layer(vec![], 0, LayerState::Healthy)],
            ..Default::default()
        };
        assert_eq!(r.findings_summary(), "none");
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn summary_counts_kinds_and_notes_the_cap() {
        let r = Report {
            outcome: Outcome::Corrupted,
            layers: vec![layer(
                vec![
                    finding("/pause", FindingKind::Missing),
                    finding("/a", FindingKind::ModeMismatch),
                    finding("/b", FindingKind::Missing),
                ],
                250,
                LayerState::Corrupted,
            )],
            ..Default::default()
        };
        assert_eq!(r.findings_summary(), "2 missing, 1 mode, 250 in all");
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn summary_of_an_unusable_blob_is_never_none() {
        for blob in [
            BlobState::Missing,
            BlobState::DigestMismatch,
            BlobState::DiffIdMismatch,
            BlobState::Unreadable,
        ] {
            let mut l = layer(vec![], 0, LayerState::Unrepairable);
            l.blob = blob;
            let r = Report {
                outcome: Outcome::Unrepairable,
                layers: vec![l],
                ..Default::default()
            };
            assert_eq!(
                r.findings_summary(),
                "1 blob unusable, not checked",
                "{blob:?}"
            );
        }
    }

    #[test]
    fn summary_names_missing_snapshots() {
        let r = Report {
            outcome: Outcome::Corrupted,
            layers: vec![layer(vec![], 0, LayerState::SnapshotMissing)],
            ..Default::default()
        };
        assert_eq!(r.findings_summary(), "1 snapshot missing");
    }

    #[test]
    fn report_json_is_camel_case_as_in_the_contract() {
        let r = Report {
            image: "registry.k8s.io/pause:3.10".into(),
            manifest_digest: "sha256:m".into(),
            outcome: Outcome::Corrupted,
            layers: vec![layer(
                vec![finding("/pause", FindingKind::Missing)],
                1,
                LayerState::Corrupted,
            )],
            mounts: 3,
            duration_ms: 41,
            message: None,
            scan: None,
        };
        let v = serde_json::to_value(&r).expect("serialize");
        assert_eq!(v["manifestDigest"], "sha256:m");
        assert_eq!(v["durationMs"], 41);
        assert_eq!(v["layers"][0]["diffId"], "sha256:b");
        assert_eq!(v["layers"][0]["findingsTotal"], 1);
        assert_eq!(v["layers"][0]["findings"][0]["kind"], "Missing");
        assert_eq!(v["layers"][0]["blob"], "Verified");
        let back: Report = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, r);
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        for (o, code) in [
            (Outcome::Healthy, 0),
            (Outcome::Repaired, 0),
            (Outcome::Corrupted, 1),
            (Outcome::Unrepairable, 1),
            (Outcome::Error, 2),
        ] {
            let r = Report {
                outcome: o,
                ..Default::default()
            };
            assert_eq!(r.exit_code(), code, "{o:?}");
        }
    }
}
