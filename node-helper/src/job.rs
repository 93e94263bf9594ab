//! Image-level jobs shared by the CLI and the agent: resolve the target image, verify or
//! repair each layer, count live mounts, and assemble the Report.
//!
//! Both entry points always return a Report; failures to run are `Outcome::Error` with
//! `message` set.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use snapmend_crds::{
    BlobState, CheckedWith, ContentCheck, LayerReport, LayerState, Outcome, Report,
};

use crate::error::{Error, Result};
use crate::image::{Platform, ResolvedImage, ResolvedLayer};
use crate::layer::toc::TocCache;
use crate::layer::{self, LayerRepair, RepairOptions};
use crate::registry::layer_blob;
use crate::registry::{BlobFetcher, FetchOptions};
use crate::store::config::ContainerdConfig;
use crate::store::mountinfo::{self, SnapshotFs};
use crate::store::{Store, StoreLayout};
use crate::workers::run_workers;

pub const DEFAULT_ROOT: &str = "/var/lib/containerd";
pub const DEFAULT_NAMESPACE: &str = "k8s.io";
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";

/// Layers verified at the same time. Each layer's verification streams its blob and already
/// uses its own threads, so a few suffice and memory stays bounded.
const MAX_PARALLEL_LAYERS: usize = 4;

/// Which image a job works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An image name as containerd records it (a tag or a digest reference).
    Image(String),
    /// The sandbox (pause) image configured in containerd's config.toml.
    SandboxImage,
}

/// Everything a verify or repair job needs; built by the CLI and by the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOptions {
    /// containerd's root directory (e.g. `/var/lib/containerd`); see [`effective_root`].
    pub root: PathBuf,
    /// containerd namespace, `k8s.io` for CRI.
    pub namespace: String,
    /// containerd's config.toml (read for the sandbox image and the overlayfs root).
    pub config_path: PathBuf,
    pub target: Target,
    pub content: ContentCheck,
    /// Repair only: plan, but write nothing.
    pub dry_run: bool,
    /// Blobs the node lacks: from which registry, with which credentials, cached where.
    pub fetch: FetchOptions,
    /// Where tables of contents of verified layers are kept (`--toc-cache`); `None` = off.
    pub toc: Option<TocCache>,
}

/// containerd's root: an explicit `--root`, else config.toml's `root`, else the default.
pub fn effective_root(explicit: Option<&Path>, config: &ContainerdConfig) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| config.root.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// [`effective_root`] reading the config file (missing file = defaults).
pub fn root_from(explicit: Option<&Path>, config_path: &Path) -> Result<PathBuf> {
    match explicit {
        Some(root) => Ok(root.to_path_buf()),
        None => Ok(effective_root(None, &ContainerdConfig::load(config_path)?)),
    }
}

/// Verifies every layer of the target image against its blob.
#[tracing::instrument(skip_all, fields(target = ?opts.target, root = %opts.root.display()))]
pub fn verify(opts: &JobOptions) -> Report {
    timed(opts, |image, fetcher| {
        let layers = verify_layers(&image.layers, opts.content, fetcher, opts.toc.as_ref());
        let outcome = verify_outcome(&layers);
        let refusals: Vec<Option<String>> = image.layers.iter().map(layer::refusal).collect();
        let message = verify_message(&layers, &refusals, opts);
        (layers, outcome, message)
    })
}

/// Repairs every damaged layer of the target image (bottom first), then verifies the repaired
/// layers again.
#[tracing::instrument(skip_all, fields(target = ?opts.target, root = %opts.root.display(), dry_run = opts.dry_run))]
pub fn repair(opts: &JobOptions) -> Report {
    timed(opts, |image, fetcher| repair_image(image, opts, fetcher))
}

/// Runs `body` on the resolved image and fills in the common report fields.
fn timed(
    opts: &JobOptions,
    body: impl FnOnce(
        &ResolvedImage,
        Option<&BlobFetcher>,
    ) -> (Vec<LayerReport>, Outcome, Option<String>),
) -> Report {
    let started = Instant::now();
    let mut report = match resolve(opts) {
        Ok((store, image)) => {
            let fetcher = blob_fetcher(
                &opts.fetch,
                &opts.config_path,
                &opts.namespace,
                &store,
                &image,
            );
            // A bug in a layer engine must not take the agent down with it: report it instead.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                body(&image, fetcher.as_ref())
            }));
            let (layers, outcome, message) = ran.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown panic");
                tracing::error!(panic = what, "job panicked");
                (
                    Vec::new(),
                    Outcome::Error,
                    Some(format!("internal error: {what}")),
                )
            });
            Report {
                image: image.name.clone(),
                manifest_digest: image.manifest_digest.clone(),
                outcome,
                layers,
                mounts: count_mounts(&store, &image),
                duration_ms: 0,
                message,
                scan: None,
            }
        }
        Err(e) => {
            tracing::info!(error = %e, "could not run");
            Report {
                image: requested_name(&opts.target, &e),
                outcome: Outcome::Error,
                message: Some(error_message(&e)),
                ..Default::default()
            }
        }
    };
    report.duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    tracing::info!(outcome = ?report.outcome, duration_ms = report.duration_ms, "job finished");
    crate::stage_profile::log_job();
    report
}

/// The image a failed job was about: the requested name, or the sandbox image looked for.
fn requested_name(target: &Target, error: &Error) -> String {
    match (target, error) {
        (Target::Image(name), _) => name.clone(),
        (Target::SandboxImage, Error::ImageNotFound { reference, .. }) => reference.clone(),
        (Target::SandboxImage, _) => String::new(),
    }
}

pub(crate) fn error_message(e: &Error) -> String {
    match e {
        Error::ImageNotFound { .. } => {
            format!(
                "{e}; list the known images with `ctr -n <namespace> images ls` or `crictl images`"
            )
        }
        Error::Io { path, source }
            if source.kind() == std::io::ErrorKind::NotFound && path.ends_with("meta.db") =>
        {
            format!("{e}; is this containerd's root (--root, or `root` in config.toml)?")
        }
        _ => e.to_string(),
    }
}

/// The fetcher for blobs the node lacks, with every registry source the image names: its
/// name, and the `containerd.io/distribution.source.*` labels of its manifest, config and
/// layer blobs (the manifest's and config's survive `discard_unpacked_layers`).
pub(crate) fn blob_fetcher(
    fetch: &FetchOptions,
    config_path: &Path,
    namespace: &str,
    store: &Store,
    image: &ResolvedImage,
) -> Option<BlobFetcher> {
    let mut labels = store.meta.content_labels(namespace, &image.manifest_digest);
    labels.extend(store.meta.content_labels(namespace, &image.config_digest));
    for layer in &image.layers {
        labels.extend(store.meta.content_labels(namespace, &layer.digest));
    }
    let sources = crate::registry::image_sources(&image.name, &labels);
    BlobFetcher::new(fetch, config_path, sources)
}

/// Opens the store and resolves the target for this node's platform.
fn resolve(opts: &JobOptions) -> Result<(Store, ResolvedImage)> {
    let config = ContainerdConfig::load(&opts.config_path)?;
    let layout = StoreLayout::new(&opts.root, config.overlay_root.as_deref());
    let store = Store::open(layout)?;
    let reference = match &opts.target {
        Target::Image(name) => name.clone(),
        Target::SandboxImage => sandbox_reference(&store, &opts.namespace, &config)?,
    };
    let image = store.resolve_image(&opts.namespace, &reference, &Platform::host())?;
    tracing::debug!(image = %image.name, manifest = %image.manifest_digest, layers = image.layers.len(), "resolved");
    Ok((store, image))
}

/// The configured sandbox image, or the first of containerd's defaults that the store holds.
fn sandbox_reference(store: &Store, namespace: &str, config: &ContainerdConfig) -> Result<String> {
    let candidates = config.sandbox_image_candidates();
    for candidate in &candidates {
        if store.find_image(namespace, candidate)?.is_some() {
            return Ok(candidate.clone());
        }
    }
    Err(Error::ImageNotFound {
        reference: candidates.first().cloned().unwrap_or_default(),
        namespace: namespace.to_string(),
    })
}

/// Verifies layers on a few threads; results come back in layer order.
fn verify_layers(
    layers: &[ResolvedLayer],
    content: ContentCheck,
    fetcher: Option<&BlobFetcher>,
    toc: Option<&TocCache>,
) -> Vec<LayerReport> {
    for_each_layer(layers, |layer| {
        layer_blob::verify_layer(layer, content, fetcher, toc)
    })
}

pub(crate) fn for_each_layer<T: Send>(
    layers: &[ResolvedLayer],
    work: impl Fn(&ResolvedLayer) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..layers.len()).map(|_| None).collect());
    run_workers(layers.len().clamp(1, MAX_PARALLEL_LAYERS), |_| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(layer) = layers.get(i) else { break };
            let _span =
                tracing::info_span!("layer", index = layer.index, digest = %layer.digest).entered();
            let result = work(layer);
            if let Ok(mut slots) = results.lock() {
                slots[i] = Some(result);
            }
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// The snapshot was compared with a trustworthy reference: the blob it just verified, or the
/// TOC kept from an earlier pass over the verified blob.
pub(crate) fn reference_ok(l: &LayerReport) -> bool {
    l.blob == BlobState::Verified || l.checked_with == Some(CheckedWith::Toc)
}

pub(crate) fn layer_ok(l: &LayerReport) -> bool {
    !l.needs_attention()
}

/// Healthy iff every layer is Healthy, checked against its verified blob or its TOC.
pub fn verify_outcome(layers: &[LayerReport]) -> Outcome {
    if !layers.is_empty() && layers.iter().all(layer_ok) {
        Outcome::Healthy
    } else {
        Outcome::Corrupted
    }
}

/// What a person should read next to a verification result. `refusals[i]` is why a repair
/// would not touch layer i (`layer::refusal`), so verify promises only what repair does.
pub(crate) fn verify_message(
    layers: &[LayerReport],
    refusals: &[Option<String>],
    opts: &JobOptions,
) -> Option<String> {
    if layers.is_empty() {
        return Some("the image has no layers".into());
    }
    let mut notes = blob_notes(layers);
    for l in layers {
        if let Some(staging) = &l.leftover_staging {
            notes.push(format!(
                "layer {}: an interrupted repair left {staging}; `{}` finishes the repair and removes it",
                l.index,
                repair_hint(opts)
            ));
        }
    }
    let damaged: Vec<(&LayerReport, Option<&String>)> = layers
        .iter()
        .zip(
            refusals
                .iter()
                .map(Option::as_ref)
                .chain(std::iter::repeat(None)),
        )
        .filter(|(l, _)| l.state != LayerState::Healthy)
        .collect();
    for (l, refusal) in &damaged {
        if let Some(why) = refusal
            && reference_ok(l)
        {
            notes.push(format!("layer {}: {why}", l.index));
        }
    }
    if !damaged.is_empty() {
        let repairable = damaged
            .iter()
            .all(|(l, refusal)| reference_ok(l) && refusal.is_none());
        notes.push(format!(
            "{} of {} layers differ from their blobs{}",
            damaged.len(),
            layers.len(),
            if repairable {
                // Checked with a TOC, no blob was read: the repair still needs one.
                let from_toc = damaged
                    .iter()
                    .any(|(l, _)| l.checked_with == Some(CheckedWith::Toc));
                format!(
                    "; `{}` restores them{}",
                    repair_hint(opts),
                    if from_toc {
                        " (from the layer blob: the content store's, or fetched from the registry)"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            }
        ));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn repair_hint(opts: &JobOptions) -> String {
    let target = match &opts.target {
        Target::Image(name) => format!("--image {name}"),
        Target::SandboxImage => "--sandbox-image".into(),
    };
    format!(
        "snapmend-node-helper repair --root {} --namespace {} {target}",
        opts.root.display(),
        opts.namespace
    )
}

/// One note per layer whose blob cannot serve as the reference, with what a person can do.
fn blob_notes(layers: &[LayerReport]) -> Vec<String> {
    let advice = "remove the image and pull it again (e.g. `crictl rmi` then `crictl pull`)";
    layers
        .iter()
        .filter_map(|l| {
            let why = match l.blob {
                BlobState::Verified | BlobState::NotChecked => return None,
                BlobState::Missing => "is missing from the content store (garbage-collected, or CRI discard_unpacked_layers)",
                BlobState::DigestMismatch => "does not match its digest (the blob itself is corrupt)",
                BlobState::DiffIdMismatch => "does not decompress to its diffID",
                BlobState::Unreadable => "cannot be read",
            };
            let registry = l
                .blob_detail
                .as_deref()
                .map(|d| format!(" (tried: {d})"))
                .unwrap_or_default();
            Some(format!("layer {} blob {} {why}{registry}, so it cannot be used to check or restore the snapshot; {advice}", l.index, l.digest))
        })
        .collect()
}

/// Per-layer result of a repair attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
// One per layer of one image, built once and read in place: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum LayerAttempt {
    Done(LayerRepair),
    /// The repair stopped with an error; the snapshot may be partly restored.
    Failed {
        report: LayerReport,
        error: String,
    },
    /// Another repair holds the snapshot: this one could not run and touched nothing.
    Busy {
        report: LayerReport,
        error: String,
    },
}

impl LayerAttempt {
    fn report(&self) -> &LayerReport {
        match self {
            LayerAttempt::Done(r) => &r.report,
            LayerAttempt::Failed { report, .. } | LayerAttempt::Busy { report, .. } => report,
        }
    }
}

/// The repair outcome from each layer's attempt and `post_verify`, the confirmations of the
/// layers that were restored (what they wrote, read back from disk). Pure.
pub fn repair_outcome(
    attempts: &[LayerAttempt],
    post_verify: &[LayerReport],
    dry_run: bool,
) -> Outcome {
    if attempts.is_empty() {
        return Outcome::Corrupted;
    }
    // Could not run (the contract's exit 2), not "still corrupted".
    if attempts
        .iter()
        .any(|a| matches!(a, LayerAttempt::Busy { .. }))
    {
        return Outcome::Error;
    }
    if attempts
        .iter()
        .any(|a| a.report().state == LayerState::Unrepairable)
    {
        return Outcome::Unrepairable;
    }
    if attempts
        .iter()
        .any(|a| matches!(a, LayerAttempt::Failed { .. }))
    {
        return Outcome::Corrupted;
    }
    let needed = attempts.iter().any(|a| !layer_ok(a.report()));
    if !needed {
        return Outcome::Healthy;
    }
    if dry_run {
        return Outcome::Corrupted;
    }
    // Repaired only when every restored layer's confirmation is clean and every other layer was healthy.
    let confirmed = |a: &LayerAttempt| {
        let r = a.report();
        match r.state {
            LayerState::Repaired => post_verify
                .iter()
                .any(|p| p.index == r.index && layer_ok(p)),
            _ => layer_ok(r),
        }
    };
    let restored = attempts
        .iter()
        .any(|a| a.report().state == LayerState::Repaired);
    if restored && attempts.iter().all(confirmed) {
        Outcome::Repaired
    } else {
        Outcome::Corrupted
    }
}

fn repair_image(
    image: &ResolvedImage,
    opts: &JobOptions,
    fetcher: Option<&BlobFetcher>,
) -> (Vec<LayerReport>, Outcome, Option<String>) {
    let ropts = RepairOptions {
        dry_run: opts.dry_run,
        content: opts.content,
    };
    // Bottom layer first, one at a time: an upper layer's implicitly created directories take
    // their attributes from the lower layers, which must be restored before they are read.
    let attempts: Vec<LayerAttempt> = image
        .layers
        .iter()
        .map(|layer| attempt_repair(layer, &ropts, fetcher, opts.toc.as_ref()))
        .collect();
    settle_repair(&attempts, opts.dry_run)
}

/// Repairs one layer; a failure to run becomes an attempt, never an early return.
pub(crate) fn attempt_repair(
    layer: &ResolvedLayer,
    ropts: &RepairOptions,
    fetcher: Option<&BlobFetcher>,
    toc: Option<&TocCache>,
) -> LayerAttempt {
    let _span = tracing::info_span!("layer", index = layer.index, digest = %layer.digest).entered();
    match layer_blob::repair_layer(layer, ropts, fetcher, toc) {
        Ok(done) => LayerAttempt::Done(done),
        Err(e) => {
            tracing::warn!(index = layer.index, error = %e, "layer repair failed");
            let busy = matches!(e, Error::Busy { .. });
            let report = LayerReport {
                state: LayerState::Corrupted,
                ..layer::empty_report(layer)
            };
            let error = e.to_string();
            if busy {
                LayerAttempt::Busy { report, error }
            } else {
                LayerAttempt::Failed { report, error }
            }
        }
    }
}

/// A layer that verification found healthy, as a repair attempt that had nothing to do.
pub(crate) fn nothing_to_repair(report: LayerReport) -> LayerAttempt {
    LayerAttempt::Done(LayerRepair {
        report,
        plan: Vec::new(),
        reason: None,
        confirmation: None,
    })
}

/// Layer reports, outcome and message of one image's repair attempts (bottom layer first).
pub(crate) fn settle_repair(
    attempts: &[LayerAttempt],
    dry_run: bool,
) -> (Vec<LayerReport>, Outcome, Option<String>) {
    // Each repaired layer read back what it wrote; the rest was verified by its own pass.
    let post: Vec<LayerReport> = attempts
        .iter()
        .filter_map(|a| match a {
            LayerAttempt::Done(LayerRepair {
                confirmation: Some(c),
                ..
            }) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let outcome = repair_outcome(attempts, &post, dry_run);
    let message = repair_message(attempts, &post, outcome, dry_run);

    let layers = attempts
        .iter()
        .map(|a| {
            let mut r = a.report().clone();
            // A repaired layer whose confirmation still finds damage is reported with it.
            if let Some(p) = post.iter().find(|p| p.index == r.index)
                && !layer_ok(p)
            {
                let restored = r.entries_restored;
                r = p.clone();
                r.state = LayerState::Corrupted;
                r.entries_restored = restored;
            }
            r
        })
        .collect();
    (layers, outcome, message)
}

fn repair_message(
    attempts: &[LayerAttempt],
    post: &[LayerReport],
    outcome: Outcome,
    dry_run: bool,
) -> Option<String> {
    let reports: Vec<LayerReport> = attempts.iter().map(|a| a.report().clone()).collect();
    let mut notes = Vec::new();
    for a in attempts {
        // The layer engine's own reason is the most precise; else say what the blob state means.
        match a {
            LayerAttempt::Done(LayerRepair {
                report,
                reason: Some(reason),
                ..
            }) => {
                notes.push(format!("layer {}: {reason}", report.index));
            }
            other => notes.extend(blob_notes(std::slice::from_ref(other.report()))),
        }
        match a {
            LayerAttempt::Failed { report, error } => notes.push(format!(
                "layer {} repair stopped: {error}. Every entry is either as it was or restored; rerun the repair when the cause is fixed",
                report.index
            )),
            LayerAttempt::Busy { report, error } => {
                notes.push(format!("layer {}: {error}", report.index))
            }
            LayerAttempt::Done(_) => {}
        }
    }
    match outcome {
        Outcome::Repaired => {
            let n: u64 = reports.iter().filter_map(|r| r.entries_restored).sum();
            notes.push(format!("restored {n} entries; the layers verify healthy"));
        }
        Outcome::Corrupted if dry_run => {
            let plan: Vec<&String> = attempts
                .iter()
                .filter_map(|a| match a {
                    LayerAttempt::Done(r) => Some(&r.plan),
                    LayerAttempt::Failed { .. } | LayerAttempt::Busy { .. } => None,
                })
                .flatten()
                .collect();
            let shown: Vec<&str> = plan.iter().take(10).map(|s| s.as_str()).collect();
            notes.push(format!(
                "dry run, nothing written; {} actions planned: {}{}",
                plan.len(),
                shown.join("; "),
                if plan.len() > shown.len() {
                    "; …"
                } else {
                    ""
                }
            ));
        }
        Outcome::Corrupted if post.iter().any(|p| !layer_ok(p)) => {
            notes.push("damage remains after the repair; see the layers' findings".into());
        }
        _ => {}
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// Mounts (overlays and binds, host mountinfo) that use any snapshot of the image.
pub(crate) fn count_mounts(store: &Store, image: &ResolvedImage) -> u32 {
    let targets: Vec<SnapshotFs> = image
        .layers
        .iter()
        .filter_map(|l| l.snapshot.as_ref())
        .map(|s| SnapshotFs {
            device: mountinfo::device_of(&s.fs),
            fs: s.fs.clone(),
        })
        .collect();
    match mountinfo::read_host_mountinfo() {
        Ok(text) => mountinfo::count_mounts_using(
            &mountinfo::parse_mountinfo(&text),
            &store.layout.snapshots_dir(),
            &targets,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read mountinfo; reporting 0 mounts");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(index: u32, blob: BlobState, state: LayerState) -> LayerReport {
        LayerReport {
            index,
            digest: format!("sha256:{index}"),
            blob,
            state,
            ..Default::default()
        }
    }

    fn done(report: LayerReport) -> LayerAttempt {
        LayerAttempt::Done(LayerRepair {
            report,
            plan: vec!["restore /pause".into()],
            reason: None,
            confirmation: None,
        })
    }

    use BlobState::*;
    use LayerState::*;

    #[test]
    fn verify_is_healthy_only_when_every_layer_and_blob_is() {
        assert_eq!(
            verify_outcome(&[layer(0, Verified, Healthy), layer(1, Verified, Healthy)]),
            Outcome::Healthy
        );
        assert_eq!(
            verify_outcome(&[
                layer(0, Verified, Healthy),
                layer(1, Verified, LayerState::Corrupted)
            ]),
            Outcome::Corrupted
        );
        assert_eq!(
            verify_outcome(&[layer(0, Missing, Healthy)]),
            Outcome::Corrupted
        );
        assert_eq!(
            verify_outcome(&[layer(0, NotChecked, Healthy)]),
            Outcome::Corrupted
        );
        assert_eq!(
            verify_outcome(&[layer(0, Verified, SnapshotMissing)]),
            Outcome::Corrupted
        );
        assert_eq!(verify_outcome(&[]), Outcome::Corrupted);
    }

    #[test]
    fn repair_of_a_healthy_image_is_healthy() {
        let a = [
            done(layer(0, Verified, Healthy)),
            done(layer(1, Verified, Healthy)),
        ];
        assert_eq!(repair_outcome(&a, &[], false), Outcome::Healthy);
        assert_eq!(repair_outcome(&a, &[], true), Outcome::Healthy);
    }

    #[test]
    fn repair_is_repaired_only_after_a_healthy_post_verify() {
        let a = [
            done(layer(0, Verified, Healthy)),
            done(layer(1, Verified, Repaired)),
        ];
        let healthy = [layer(0, Verified, Healthy), layer(1, Verified, Healthy)];
        assert_eq!(repair_outcome(&a, &healthy, false), Outcome::Repaired);
        let still = [
            layer(0, Verified, Healthy),
            layer(1, Verified, LayerState::Corrupted),
        ];
        assert_eq!(repair_outcome(&a, &still, false), Outcome::Corrupted);
        assert_eq!(
            repair_outcome(&a, &[], false),
            Outcome::Corrupted,
            "no post-verify, no claim"
        );
    }

    #[test]
    fn only_the_restored_layers_need_a_post_verify_and_every_other_layer_must_be_healthy() {
        let a = [
            done(layer(0, Verified, Healthy)),
            done(layer(1, Verified, Repaired)),
        ];
        assert_eq!(
            repair_outcome(&a, &[layer(1, Verified, Healthy)], false),
            Outcome::Repaired
        );
        assert_eq!(
            repair_outcome(&a, &[layer(0, Verified, Healthy)], false),
            Outcome::Corrupted,
            "the restored layer itself was not re-verified"
        );
        let left = [
            done(layer(0, Verified, LayerState::Corrupted)),
            done(layer(1, Verified, Repaired)),
        ];
        assert_eq!(
            repair_outcome(&left, &[layer(1, Verified, Healthy)], false),
            Outcome::Corrupted
        );
    }

    #[test]
    fn an_impossible_repair_is_unrepairable() {
        let a = [
            done(layer(0, Missing, Unrepairable)),
            done(layer(1, Verified, Repaired)),
        ];
        assert_eq!(
            repair_outcome(&a, &[layer(1, Verified, Healthy)], false),
            Outcome::Unrepairable
        );
    }

    #[test]
    fn a_failed_or_dry_run_repair_is_corrupted() {
        let failed = LayerAttempt::Failed {
            report: layer(0, Verified, LayerState::Corrupted),
            error: "EIO".into(),
        };
        assert_eq!(repair_outcome(&[failed], &[], false), Outcome::Corrupted);
        let planned = [done(layer(0, Verified, LayerState::Corrupted))];
        assert_eq!(repair_outcome(&planned, &[], true), Outcome::Corrupted);
        let msg = repair_message(&planned, &[], Outcome::Corrupted, true).unwrap();
        assert!(
            msg.contains("dry run, nothing written; 1 actions planned: restore /pause"),
            "{msg}"
        );
    }

    #[test]
    fn verify_promises_a_repair_only_where_repair_would_act() {
        let root = Path::new("/r");
        let opts = options(root, Target::Image("img".into()));
        let layers = [
            layer(0, Verified, Healthy),
            layer(1, Verified, SnapshotMissing),
        ];
        let recorded = verify_message(&layers, &[None, None], &opts).unwrap();
        assert!(recorded.contains("restores them"), "{recorded}");
        let unrecorded = [
            None,
            Some("containerd has no snapshot for chain x; pull".into()),
        ];
        let m = verify_message(&layers, &unrecorded, &opts).unwrap();
        assert!(!m.contains("restores them"), "{m}");
        assert!(
            m.contains("layer 1: containerd has no snapshot for chain x"),
            "{m}"
        );
    }

    #[test]
    fn a_layer_checked_with_its_toc_counts_as_verified_and_its_repair_needs_the_blob() {
        let toc = |index, state| LayerReport {
            checked_with: Some(CheckedWith::Toc),
            ..layer(index, BlobState::NotChecked, state)
        };
        assert_eq!(
            verify_outcome(&[toc(0, Healthy), layer(1, Verified, Healthy)]),
            Outcome::Healthy
        );
        // NotChecked without a TOC is no verification at all.
        assert_eq!(
            verify_outcome(&[layer(0, BlobState::NotChecked, Healthy)]),
            Outcome::Corrupted
        );
        let opts = options(Path::new("/r"), Target::Image("img".into()));
        let damaged = [toc(0, LayerState::Corrupted)];
        let m = verify_message(&damaged, &[None], &opts).unwrap();
        assert!(m.contains("restores them (from the layer blob"), "{m}");
        assert!(!m.contains("cannot be used"), "no blob note for a TOC: {m}");
    }

    #[test]
    fn a_repair_that_lost_the_lock_could_not_run() {
        let busy = LayerAttempt::Busy {
            report: layer(1, Verified, LayerState::Corrupted),
            error: "snapshot /s/2: another repair of this snapshot is running".into(),
        };
        let a = [done(layer(0, Verified, Healthy)), busy];
        assert_eq!(repair_outcome(&a, &[], false), Outcome::Error);
        let msg = repair_message(&a, &[], Outcome::Error, false).unwrap();
        assert!(
            msg.contains("layer 1: snapshot /s/2: another repair"),
            "{msg}"
        );
    }

    #[test]
    fn blob_problems_say_what_a_person_can_do() {
        let notes = blob_notes(&[layer(0, Verified, Healthy), layer(3, Missing, Unrepairable)]);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("layer 3 blob sha256:3 is missing")
                && notes[0].contains("pull it again"),
            "{}",
            notes[0]
        );
    }

    #[test]
    fn root_comes_from_the_flag_then_the_config_then_the_default() {
        let with_root = ContainerdConfig {
            root: Some("/cfg".into()),
            ..Default::default()
        };
        assert_eq!(
            effective_root(Some(Path::new("/flag")), &with_root),
            PathBuf::from("/flag")
        );
        assert_eq!(effective_root(None, &with_root), PathBuf::from("/cfg"));
        assert_eq!(
            effective_root(None, &ContainerdConfig::default()),
            PathBuf::from(DEFAULT_ROOT)
        );
    }

    fn options(root: &Path, target: Target) -> JobOptions {
        JobOptions {
            root: root.to_path_buf(),
            namespace: "k8s.io".into(),
            config_path: root.join("no-config.toml"),
            target,
            content: ContentCheck::Full,
            dry_run: false,
            fetch: FetchOptions::default(),
            toc: None,
        }
    }

    #[test]
    fn an_unknown_image_is_an_error_report() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store");
        let r = verify(&options(
            &root,
            Target::Image("snapmend.test/nope:1".into()),
        ));
        assert_eq!(r.outcome, Outcome::Error);
        assert_eq!(r.exit_code(), 2);
        assert_eq!(r.image, "snapmend.test/nope:1");
        assert!(r.message.unwrap().contains("is not known to containerd"));
    }

    #[test]
    fn a_missing_sandbox_image_names_the_default_it_looked_for() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store");
        let r = repair(&options(&root, Target::SandboxImage));
        assert_eq!(r.outcome, Outcome::Error);
        assert_eq!(r.image, "registry.k8s.io/pause:3.8");
        assert!(r.message.unwrap().contains("registry.k8s.io/pause:3.8"));
    }

    #[test]
    fn a_wrong_root_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let r = verify(&options(dir.path(), Target::Image("x".into())));
        assert_eq!(r.outcome, Outcome::Error);
        let m = r.message.unwrap();
        assert!(
            m.contains("meta.db") && m.contains("is this containerd's root"),
            "{m}"
        );
    }

    #[test]
    fn a_garbage_store_is_an_error_report() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("io.containerd.metadata.v1.bolt/meta.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(&db, b"not a bolt file at all").unwrap();
        let r = verify(&options(dir.path(), Target::Image("x".into())));
        assert_eq!(r.outcome, Outcome::Error);
        assert!(r.message.unwrap().contains("not a valid bolt database"));
    }

    #[test]
    fn a_panicking_layer_engine_becomes_an_error_report() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store");
        let opts = options(&root, Target::Image("snapmend.test/pause:schema2".into()));
        let r = timed(&opts, |_, _| panic!("engine bug"));
        assert_eq!(r.outcome, Outcome::Error);
        assert_eq!(r.image, "snapmend.test/pause:schema2");
        assert_eq!(r.message.as_deref(), Some("internal error: engine bug"));
    }

    #[test]
    fn a_resolved_image_without_snapshots_gets_layer_reports_in_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store");
        let r = verify(&options(
            &root,
            Target::Image("snapmend.test/multi:1".into()),
        ));
        assert_eq!(r.image, "snapmend.test/multi:1");
        assert_eq!(r.layers.len(), 2);
        assert_eq!(
            r.layers.iter().map(|l| l.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // the fixture keeps no snapshot directories, so nothing can verify healthy
        assert_eq!(r.outcome, Outcome::Corrupted);
        assert!(!r.manifest_digest.is_empty());
    }
}
