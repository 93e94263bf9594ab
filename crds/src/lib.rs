//! The shared vocabulary of snapmend: the `SnapshotRepair` custom resource and the
//! node-helper `Report`, which the agent writes into `status.report`; the `SnapshotScan`
//! schedule; with feature `runtime`, the process helpers the operator and the agent share
//! (`runtime`).

pub mod culprit;
pub mod labels;
pub mod report;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod scan_report;
pub mod scan_summary;
pub mod snapshot_repair;
pub mod snapshot_scan;

pub use culprit::{Culprit, CulpritProcess, RepairCulprit};
pub use report::{
    BlobSource, BlobState, CheckedWith, Finding, FindingKind, LayerReport, LayerState, Outcome,
    Report,
};
pub use scan_report::{LayerReads, ScanReport, StoreFindings, StoreSnapshot};
pub use scan_summary::{
    CheckedWithCounts, ImageSummary, OutcomeCounts, ScanSummary, StoreSummary, bounded_report,
};
pub use snapshot_repair::{
    ContentCheck, Phase, PullSecretRef, RepairAction, RepairRequest, RequestReport, SnapshotRepair,
    SnapshotRepairSpec, SnapshotRepairStatus,
};
pub use snapshot_scan::{ScanRun, SnapshotScan, SnapshotScanSpec, SnapshotScanStatus};

use kube::CustomResourceExt;

/// The CRD manifest exactly as it is committed in `crds/snapshotrepair.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    generated_yaml::<SnapshotRepair>()
}

/// The CRD manifest exactly as it is committed in `crds/snapshotscan.yaml`.
pub fn scan_crd_yaml() -> Result<String, serde_yaml::Error> {
    generated_yaml::<SnapshotScan>()
}

fn generated_yaml<K: CustomResourceExt>() -> Result<String, serde_yaml::Error> {
    let crd = K::crd();
    Ok(format!(
        "# Generated from the Rust types in crds/src; do not edit. Regenerate with `make crds`.\n{}",
        serde_yaml::to_string(&crd)?
    ))
}
