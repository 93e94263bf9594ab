//! One layer: its expected entries from the tar (containerd applier semantics), verification
//! against the snapshot `fs`, and repair. Verify and repair share one expected-entry model so
//! that they can never disagree.
//!
//! Interface used by `job` (the image-level orchestration):
//! - `verify_layer(&ResolvedLayer, ContentCheck) -> LayerReport` (never panics; blob and
//!   snapshot problems are states in the report)
//! - `repair_layer(&ResolvedLayer, &RepairOptions) -> Result<LayerRepair>`

use snapmend_crds::{BlobState, ContentCheck, LayerReport, LayerState};

use crate::image::ResolvedLayer;

/// How a repair runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairOptions {
    /// Plan only: compute `plan`, write nothing.
    pub dry_run: bool,
    /// How the verification before (and after) the repair compares regular files.
    pub content: ContentCheck,
}

/// Result of repairing one layer: the report after the repair (state `Repaired`, `Healthy`
/// when nothing had to change, or `Unrepairable`) and the human plan of what was (or, with
/// `dry_run`, would be) changed, one line per action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRepair {
    pub report: LayerReport,
    pub plan: Vec<String>,
}

/// Verifies one layer's snapshot against its blob. Never fails: problems are states.
pub fn verify_layer(layer: &ResolvedLayer, content: ContentCheck) -> LayerReport {
    let _ = content;
    // Transient until the engine lands (replaced before the final commit).
    LayerReport {
        index: layer.index,
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        chain_id: layer.chain_id.clone(),
        blob: BlobState::NotChecked,
        state: LayerState::Unrepairable,
        ..Default::default()
    }
}

/// Repairs one layer's snapshot in place from its verified blob.
pub fn repair_layer(layer: &ResolvedLayer, opts: &RepairOptions) -> crate::Result<LayerRepair> {
    Ok(LayerRepair { report: verify_layer(layer, opts.content), plan: Vec::new() })
}
