//! Verify or repair one layer with its blob from wherever it is: the content store first; when
//! the store lacks it or its bytes are not the blob, snapmend's cache, then the registry. The
//! layer engine runs unchanged on the fetched file, so every rule of a local blob holds (digest
//! and diffID checked before anything is written; staging; confirmation).

use snapmend_crds::{BlobSource, BlobState, ContentCheck, LayerReport, LayerState};

use super::fetch::{BlobFetcher, Obtained};
use crate::image::ResolvedLayer;
use crate::layer::toc::TocCache;
use crate::layer::{self, LayerRepair, RepairOptions};

/// Local blob states that another copy of the same digest can cure. (A blob whose digest
/// matched but whose diffID did not would be fetched byte for byte the same.)
pub fn refetch_helps(state: BlobState) -> bool {
    matches!(
        state,
        BlobState::Missing | BlobState::DigestMismatch | BlobState::Unreadable
    )
}

/// Sets where the bytes came from on a report.
fn mark(r: &mut LayerReport, source: BlobSource, from: Option<&str>, detail: Option<&str>) {
    if r.blob != BlobState::Missing && r.blob != BlobState::NotChecked {
        r.blob_source = Some(source);
        r.fetched_from = from.map(str::to_string);
    }
    r.blob_detail = detail.filter(|d| !d.is_empty()).map(str::to_string);
}

/// What the blob's first source said, when a later one was used.
fn local_note(state: BlobState) -> String {
    format!("content store: {state:?}")
}

/// A layer engine's result: a report to mark, or an error (nothing to mark).
pub trait BlobOutcome {
    fn report_mut(&mut self) -> Option<&mut LayerReport>;
}

impl BlobOutcome for LayerReport {
    fn report_mut(&mut self) -> Option<&mut LayerReport> {
        Some(self)
    }
}

impl BlobOutcome for crate::Result<LayerRepair> {
    fn report_mut(&mut self) -> Option<&mut LayerReport> {
        self.as_mut().ok().map(|r| &mut r.report)
    }
}

fn blob_of<T: BlobOutcome>(out: &mut T) -> Option<BlobState> {
    out.report_mut().map(|r| r.blob)
}

/// Runs `run` with the blob from the cache or the registry; `Err` carries (some registry
/// served other bytes, the blob detail).
fn run_fetched<T: BlobOutcome>(
    layer: &ResolvedLayer,
    fetcher: &BlobFetcher,
    mut prior: Vec<String>,
    run: &dyn Fn(&ResolvedLayer) -> T,
) -> Result<T, (bool, String)> {
    let attempt = |obtained: &Obtained, prior: &[String]| -> T {
        let mut fetched = layer.clone();
        fetched.blob_path = obtained.path.clone();
        let mut out = run(&fetched);
        let mut notes: Vec<String> = prior.to_vec();
        notes.extend(obtained.notes.iter().cloned());
        if let Some(r) = out.report_mut() {
            mark(
                r,
                obtained.source,
                obtained.fetched_from.as_deref(),
                Some(&notes.join("; ")),
            );
        }
        out
    };
    if let Some(cached) = fetcher.cached(&layer.digest) {
        let mut out = attempt(&cached, &prior);
        match blob_of(&mut out) {
            Some(BlobState::Verified) | None => return Ok(out),
            Some(state) => {
                // A cached file that no longer verifies is dropped and fetched again.
                tracing::warn!(digest = %layer.digest, blob = ?state, "cached blob unusable; fetching again");
                fetcher.forget(&layer.digest);
                prior.push(format!("cache: {state:?}"));
            }
        }
    }
    match fetcher.fetch(&layer.digest, layer.size) {
        Ok(obtained) => Ok(attempt(&obtained, &prior)),
        Err(failure) => {
            prior.push(failure.detail);
            Err((failure.digest_mismatch, prior.join("; ")))
        }
    }
}

/// Verifies a layer against its kept TOC when there is one (no blob read, none fetched),
/// else against its blob, fetching it when the content store cannot serve it (and keeping a
/// TOC of the verified blob).
pub fn verify_layer(
    layer: &ResolvedLayer,
    content: ContentCheck,
    fetcher: Option<&BlobFetcher>,
    toc: Option<&TocCache>,
) -> LayerReport {
    if let Some(cache) = toc
        && let Some(report) = layer::verify_layer_with_toc(layer, content, cache)
    {
        return report;
    }
    with_blob(layer, fetcher, &|l: &ResolvedLayer| {
        layer::verify_layer(l, content, toc)
    })
}

/// Repairs a layer, fetching its blob when the content store cannot serve it. Nothing is
/// written from a blob that failed its digest or diffID: the engine checks before writing.
/// A layer its TOC finds healthy byte for byte (and with no interrupted repair to finish) is
/// left alone without reading the blob.
pub fn repair_layer(
    layer: &ResolvedLayer,
    opts: &RepairOptions,
    fetcher: Option<&BlobFetcher>,
    toc: Option<&TocCache>,
) -> crate::Result<LayerRepair> {
    if let Some(cache) = toc
        && let Some(report) = layer::verify_layer_with_toc(layer, ContentCheck::Full, cache)
        && report.state == LayerState::Healthy
        && report.leftover_staging.is_none()
    {
        return Ok(LayerRepair {
            report,
            plan: Vec::new(),
            reason: None,
            confirmation: None,
        });
    }
    let mut out = with_blob(layer, fetcher, &|l: &ResolvedLayer| {
        layer::repair_layer(l, opts, toc)
    });
    if let Ok(repair) = &mut out {
        // The confirmation (read back after writing) is about the same bytes.
        if let Some(c) = &mut repair.confirmation {
            c.blob_source = repair.report.blob_source;
            c.fetched_from = repair.report.fetched_from.clone();
        }
        if let (Some(detail), Some(reason)) = (&repair.report.blob_detail, &mut repair.reason)
            && !reason.contains(detail.as_str())
        {
            reason.push_str("; ");
            reason.push_str(detail);
        }
    }
    out
}

/// The content store first; the cache and the registry when it cannot serve the blob.
pub fn with_blob<T: BlobOutcome>(
    layer: &ResolvedLayer,
    fetcher: Option<&BlobFetcher>,
    run: &dyn Fn(&ResolvedLayer) -> T,
) -> T {
    // Without a snapshot there is nothing to check or restore: no reason to download.
    let fetcher = fetcher.filter(|_| layer.snapshot.is_some());
    let local = match fetcher {
        Some(_) if !layer.blob_path.exists() => None,
        _ => {
            let mut out = run(layer);
            let Some(r) = out.report_mut() else {
                return out;
            };
            mark(r, BlobSource::Local, None, None);
            if fetcher.is_none() || !refetch_helps(r.blob) {
                return out;
            }
            Some(out)
        }
    };
    let Some(fetcher) = fetcher else {
        return local.unwrap_or_else(|| run(layer));
    };
    let mut local = local;
    let prior = vec![local_note(
        local
            .as_mut()
            .and_then(blob_of)
            .unwrap_or(BlobState::Missing),
    )];
    match run_fetched(layer, fetcher, prior, run) {
        Ok(out) => out,
        Err((mismatch, detail)) => {
            let mut out = local.unwrap_or_else(|| run(layer));
            if let Some(r) = out.report_mut() {
                r.blob_detail = Some(detail);
                if mismatch && r.blob == BlobState::Missing {
                    r.blob = BlobState::DigestMismatch;
                }
            }
            out
        }
    }
}
