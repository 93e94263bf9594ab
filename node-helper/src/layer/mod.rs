//! One layer: its expected entries from the tar (containerd applier semantics), verification
//! against the snapshot `fs`, and repair. Verify and repair share one expected-entry model so
//! that they can never disagree.
//!
//! `header` (tar header as containerd reads it) → `expected` (the model) ← `blob` (one
//! streaming pass) → `pass` (model + byte compare + snapshot walk) → `compare` (findings and
//! needs) → `repair` (staged, atomic restore beneath `fs`, via `safe_fs`) → `confirm` (read
//! back what the repair touched).
//!
//! Interface used by `job` (the image-level orchestration):
//! - `verify_layer(&ResolvedLayer, ContentCheck, Option<&TocCache>) -> LayerReport` (never
//!   panics; blob and snapshot problems are states in the report; keeps a TOC when given a
//!   cache and the blob verified)
//! - `verify_layer_with_toc(&ResolvedLayer, ContentCheck, &TocCache) -> Option<LayerReport>`
//!   (the same verification against a kept TOC, no blob read; `None` without a usable TOC)
//! - `repair_layer(&ResolvedLayer, &RepairOptions, Option<&TocCache>) -> Result<LayerRepair>`
//!   (keeps the TOC of the blob its pass verified when given a cache)

pub mod blob;
pub mod compare;
pub mod confirm;
pub mod expected;
pub mod header;
pub mod observe;
pub mod pass;
pub mod reads;
pub mod repair;
mod root_path;
pub mod safe_fs;
#[cfg(test)]
mod tests;
pub mod toc;
pub mod toc_pass;

use snapmend_crds::report::FINDINGS_CAP;
use snapmend_crds::{BlobState, CheckedWith, ContentCheck, LayerReport, LayerState};

use crate::image::ResolvedLayer;
use pass::{BlobCheck, FsWalk};
use toc::{Lookup, TocCache};

/// How a repair runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairOptions {
    /// Plan only: compute `plan`, write nothing.
    pub dry_run: bool,
    /// How the verification reported in `LayerRepair::report` compares files. The repair's
    /// own pass always compares every byte, because it must never rewrite unverified data.
    pub content: ContentCheck,
}

/// Result of repairing one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRepair {
    /// `Repaired` (something was restored), `Healthy` (nothing to do), `Corrupted` (dry run),
    /// `SnapshotMissing`/`Unrepairable` with nothing written.
    pub report: LayerReport,
    /// One human line per action taken (or, with `dry_run`, planned).
    pub plan: Vec<String>,
    /// Why the layer could not be repaired and what a person can do, when it could not.
    pub reason: Option<String>,
    /// After a repair that wrote something: what is still wrong among the entries it
    /// touched, read back from disk (`Healthy` when nothing is). `None` when nothing was
    /// written.
    pub confirmation: Option<LayerReport>,
}

/// Puts every finding's count and the first `FINDINGS_CAP` findings into a report.
pub(crate) fn set_findings(r: &mut LayerReport, findings: &[snapmend_crds::Finding]) {
    r.findings_total = findings.len() as u64;
    r.findings = findings.iter().take(FINDINGS_CAP).cloned().collect();
}

/// A layer's report before anything was checked: where it is, blob not checked, no findings.
pub(crate) fn empty_report(layer: &ResolvedLayer) -> LayerReport {
    LayerReport {
        index: layer.index,
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        chain_id: layer.chain_id.clone(),
        snapshot_id: layer.snapshot.as_ref().map(|s| s.id.clone()),
        snapshot_path: layer.snapshot.as_ref().map(|s| s.fs.display().to_string()),
        blob: BlobState::NotChecked,
        state: LayerState::Healthy,
        findings_total: 0,
        findings: Vec::new(),
        entries_restored: None,
        leftover_staging: None,
        ..Default::default()
    }
}

/// A layer's report from one pass, plus the reason when the state is not a plain verdict.
pub(crate) fn report_from_pass(
    layer: &ResolvedLayer,
    p: &pass::Pass,
) -> (LayerReport, Option<compare::Diff>, Option<String>) {
    let mut r = empty_report(layer);
    r.blob = p.blob.state();
    if layer.snapshot.is_none() {
        r.state = LayerState::SnapshotMissing;
        return (r, None, Some(repair::no_snapshot_reason(layer)));
    }
    let model = match (&p.blob, &p.model) {
        (BlobCheck::Unusable { reason, .. }, _) => {
            r.state = LayerState::Unrepairable;
            let what = "the snapshot cannot be checked or rebuilt from it; pull the image again (remove it first)";
            return (r, None, Some(format!("{reason}: {what}")));
        }
        (BlobCheck::Verified | BlobCheck::FromToc, Err(e)) => {
            r.state = LayerState::Unrepairable;
            return (r, None, Some(e.to_string()));
        }
        (BlobCheck::Verified | BlobCheck::FromToc, Ok(model)) => model,
    };
    let obs = match &p.fs {
        FsWalk::Unreadable(e) => {
            r.state = LayerState::Unrepairable;
            return (r, None, Some(format!("cannot read the snapshot: {e}")));
        }
        FsWalk::Absent => {
            r.state = LayerState::SnapshotMissing;
            return (
                r,
                None,
                Some("the snapshot's fs directory is missing".into()),
            );
        }
        FsWalk::Walked(obs) => obs,
    };
    let d = compare::diff(model, obs, &p.content, &p.compared_at);
    set_findings(&mut r, &d.findings);
    r.state = if d.is_clean() {
        LayerState::Healthy
    } else {
        LayerState::Corrupted
    };
    (r, Some(d), None)
}

/// `<dir>/snapmend-staging` with its size, when an interrupted repair left it behind.
fn leftover_staging(snapshot_dir: &std::path::Path) -> Option<String> {
    let path = snapshot_dir.join(repair::STAGING_DIR);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    let bytes: u64 = if meta.is_dir() {
        std::fs::read_dir(&path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        meta.len()
    };
    Some(format!("{} ({bytes} bytes)", path.display()))
}

/// Verifies one layer's snapshot against its blob. Never fails: problems are states. With a
/// TOC cache, the model of a verified blob is kept there for later verifications.
#[tracing::instrument(skip_all, fields(layer = layer.index, digest = %layer.digest, content = ?content))]
pub fn verify_layer(
    layer: &ResolvedLayer,
    content: ContentCheck,
    toc: Option<&TocCache>,
) -> LayerReport {
    let started = std::time::Instant::now();
    let keep_toc = toc.is_some() && layer.snapshot.is_some();
    reads::count_blob_pass(layer);
    let mut p = pass::run_pass(layer, content, None, keep_toc);
    if let (Some(cache), Some(bytes)) = (toc, p.toc.take()) {
        keep(cache, layer, &bytes);
    }
    let (mut report, _, reason) = report_from_pass(layer, &p);
    if report.blob == BlobState::Verified {
        report.checked_with = Some(CheckedWith::Blob);
    }
    report.leftover_staging = layer
        .snapshot
        .as_ref()
        .and_then(|s| leftover_staging(&s.dir));
    tracing::info!(blob = ?report.blob, state = ?report.state, findings = report.findings_total, reason = reason.as_deref().unwrap_or(""), ms = started.elapsed().as_millis() as u64, "layer verified");
    report
}

/// Stores a TOC; a failure costs only speed later, so it is logged, never fatal.
fn keep(cache: &TocCache, layer: &ResolvedLayer, bytes: &[u8]) {
    match cache.store(&pass::toc_key(layer), bytes) {
        Ok(path) => {
            tracing::info!(toc = %path.display(), bytes = bytes.len(), diff_id = %layer.diff_id, "TOC kept")
        }
        Err(e) => tracing::warn!(error = %e, diff_id = %layer.diff_id, "cannot keep the TOC"),
    }
}

/// Verifies one layer against its kept TOC, reading no blob: `blob` is `NotChecked` and
/// `checkedWith` is `Toc`. `None` when there is no usable TOC (a damaged, truncated, foreign
/// or outdated one is removed and logged), or no snapshot to check.
#[tracing::instrument(skip_all, fields(layer = layer.index, digest = %layer.digest, content = ?content))]
pub fn verify_layer_with_toc(
    layer: &ResolvedLayer,
    content: ContentCheck,
    cache: &TocCache,
) -> Option<LayerReport> {
    layer.snapshot.as_ref()?;
    let started = std::time::Instant::now();
    let key = pass::toc_key(layer);
    // Most misses are a first verification: known at once, before any walk starts.
    if !cache.probe(&key) {
        return None;
    }
    // The snapshot walk starts while the TOC is read and checked (a rejected TOC wastes
    // that walk; a damaged TOC is rare).
    let load = || match cache.lookup(&key) {
        Lookup::Found(body) => {
            reads::count_toc_load(layer);
            Some(body)
        }
        Lookup::Absent => None,
        Lookup::Rejected { path, why } => {
            tracing::warn!(toc = %path.display(), diff_id = %layer.diff_id, reason = why.reason.label(), detail = %why, "TOC discarded, not trusted; rebuilding it from the blob");
            None
        }
    };
    let (p, timings) = toc_pass::run_toc_pass(layer, content, load)?;
    let comparing = std::time::Instant::now();
    let (mut report, _, reason) = report_from_pass(layer, &p);
    report.checked_with = Some(CheckedWith::Toc);
    report.leftover_staging = layer
        .snapshot
        .as_ref()
        .and_then(|s| leftover_staging(&s.dir));
    tracing::info!(checked_with = "Toc", state = ?report.state, findings = report.findings_total, reason = reason.as_deref().unwrap_or(""), ms = started.elapsed().as_millis() as u64, load_ms = timings.load_ms, walk_ms = timings.walk_ms, hash_ms = timings.hash_ms, compare_ms = comparing.elapsed().as_millis() as u64, "layer verified");
    Some(report)
}

pub use repair::refusal;

/// Repairs one layer's snapshot in place from its verified blob; with `toc`, keeps the TOC of
/// the blob its pass verified (digest and diffID), so that the next verification reads no
/// blob.
pub fn repair_layer(
    layer: &ResolvedLayer,
    opts: &RepairOptions,
    toc: Option<&TocCache>,
) -> crate::Result<LayerRepair> {
    repair::repair(layer, opts, toc)
}
