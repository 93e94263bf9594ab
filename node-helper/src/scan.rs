//! `scan`: every image of the scanned namespaces and the snapshot store itself. Each layer
//! (namespace + chainID) is verified once however many images share it; `--repair` repairs
//! what the scan found damaged, lower layers first, with the same rules and code as `repair`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use snapmend_crds::{
    ContentCheck, LayerReport, Outcome, Report, ScanReport, StoreFindings, StoreSnapshot,
};

use crate::error::Result;
use crate::image::{Platform, ResolvedImage, ResolvedLayer, SnapshotKind};
use crate::job::{self, JobOptions, LayerAttempt, Target};
use crate::layer::{self, RepairOptions};
use crate::registry::layer_blob;
use crate::store::config::ContainerdConfig;
use crate::store::snapshotter_db::SnapshotterDb;
use crate::store::{Store, StoreLayout};

/// Which containerd namespaces a scan covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    One(String),
    All,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    pub root: PathBuf,
    pub namespaces: Namespaces,
    pub config_path: PathBuf,
    pub content: ContentCheck,
    pub repair: bool,
    /// With `repair`: plan, write nothing.
    pub dry_run: bool,
    /// Blobs the node lacks: fetched from each image's registry (contract: scan takes the
    /// fetch flags too).
    pub fetch: crate::registry::FetchOptions,
    /// Where tables of contents of verified layers are kept (`--toc-cache`); `None` = off.
    pub toc: Option<crate::layer::toc::TocCache>,
}

/// A layer is the same layer in every image of one namespace that names its chainID.
type LayerKey = (String, String);

fn key_of(namespace: &str, layer: &ResolvedLayer) -> LayerKey {
    (namespace.to_string(), layer.chain_id.clone())
}

/// One image found in the store, resolved or not.
struct Found {
    namespace: String,
    name: String,
    image: Result<ResolvedImage>,
}

/// Scans; `progress(done, total)` is called after each image. Never fails: a store that
/// cannot be read is an `Error` ScanReport.
#[tracing::instrument(skip_all, fields(root = %opts.root.display(), repair = opts.repair))]
pub fn scan(opts: &ScanOptions, progress: &mut dyn FnMut(usize, usize)) -> ScanReport {
    let started = Instant::now();
    let mut report = scan_store(opts, progress).unwrap_or_else(|e| {
        tracing::info!(error = %e, "scan could not run");
        ScanReport {
            outcome: Outcome::Error,
            message: Some(job::error_message(&e)),
            ..Default::default()
        }
    });
    report.duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    tracing::info!(outcome = ?report.outcome, images = report.images.len(), layers = report.layers_checked, duration_ms = report.duration_ms, "scan finished");
    report
}

fn scan_store(opts: &ScanOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<ScanReport> {
    let config = ContainerdConfig::load(&opts.config_path)?;
    let store = Store::open(StoreLayout::new(&opts.root, config.overlay_root.as_deref()))?;
    let namespaces = match &opts.namespaces {
        Namespaces::One(ns) => vec![ns.clone()],
        Namespaces::All => store.meta.namespaces(),
    };
    let host = Platform::host();
    let found: Vec<Found> = namespaces
        .iter()
        .flat_map(|ns| {
            store.meta.image_names(ns).into_iter().map(|name| Found {
                image: store.resolve_image(ns, &name, &host),
                namespace: ns.clone(),
                name,
            })
        })
        .collect();

    // Image by image (so a person sees progress), each layer not seen before.
    let reads_before = layer::reads::snapshot();
    let mut verified: HashMap<LayerKey, LayerReport> = HashMap::new();
    for (done, f) in found.iter().enumerate() {
        if let Ok(image) = &f.image {
            let todo: Vec<ResolvedLayer> = image
                .layers
                .iter()
                .filter(|l| !verified.contains_key(&key_of(&f.namespace, l)))
                .cloned()
                .collect();
            let fetcher =
                job::blob_fetcher(&opts.fetch, &opts.config_path, &f.namespace, &store, image);
            let reports = job::for_each_layer(&todo, |l| {
                layer_blob::verify_layer(l, opts.content, fetcher.as_ref(), opts.toc.as_ref())
            });
            for (l, r) in todo.iter().zip(reports) {
                verified.insert(key_of(&f.namespace, l), r);
            }
        }
        progress(done + 1, found.len());
    }
    let layer_reads = layer::reads::since(&reads_before, &layer::reads::snapshot());

    let attempts = if opts.repair {
        repair_damaged(&found, &verified, &store, opts)
    } else {
        HashMap::new()
    };

    let images: Vec<Report> = found
        .iter()
        .map(|f| image_report(f, &verified, &attempts, &store, opts))
        .collect();
    let referenced: HashSet<String> = found
        .iter()
        .filter_map(|f| f.image.as_ref().ok())
        .flat_map(|i| i.layers.iter())
        .filter_map(|l| l.snapshot.as_ref().map(|s| s.backend_key.clone()))
        .collect();
    let snapshots_dir = store.layout.snapshots_dir();
    let dirs = snapshot_dirs(&snapshots_dir)?;
    let snapshots = store_findings(
        &store.snapshots,
        &dirs,
        &referenced,
        &namespaces,
        &snapshots_dir,
    );
    let outcomes: Vec<Outcome> = images.iter().map(|r| r.outcome).collect();
    let outcome = scan_outcome(&outcomes, snapshots.missing.len());
    let message = scan_message(&images, &snapshots, verified.len());
    Ok(ScanReport {
        outcome,
        images,
        snapshots,
        layers_checked: verified.len() as u64,
        duration_ms: 0,
        message: Some(message),
        layer_reads,
    })
}

/// Repairs every unique damaged layer once, lower layers first (an upper layer's implicit
/// directories take their attributes from the restored lowers).
fn repair_damaged(
    found: &[Found],
    verified: &HashMap<LayerKey, LayerReport>,
    store: &Store,
    opts: &ScanOptions,
) -> HashMap<LayerKey, LayerAttempt> {
    // Each damaged layer with the image it was first found in (whose registry may have it).
    let mut damaged: Vec<(LayerKey, &ResolvedLayer, usize)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, f) in found.iter().enumerate() {
        let Ok(image) = &f.image else { continue };
        for l in &image.layers {
            let key = key_of(&f.namespace, l);
            if verified.get(&key).is_some_and(|r| !job::layer_ok(r)) && seen.insert(key.clone()) {
                damaged.push((key, l, i));
            }
        }
    }
    damaged.sort_by_key(|(_, l, _)| l.index);
    let mut fetchers: HashMap<usize, Option<crate::registry::BlobFetcher>> = HashMap::new();
    let ropts = RepairOptions {
        dry_run: opts.dry_run,
        content: opts.content,
    };
    damaged
        .into_iter()
        .map(|(key, l, i)| {
            let fetcher = fetchers.entry(i).or_insert_with(|| {
                let f = &found[i];
                f.image.as_ref().ok().and_then(|image| {
                    job::blob_fetcher(&opts.fetch, &opts.config_path, &f.namespace, store, image)
                })
            });
            // The repair's pass verified the blob: its TOC is kept for the next scan.
            (
                key,
                job::attempt_repair(l, &ropts, fetcher.as_ref(), opts.toc.as_ref()),
            )
        })
        .collect()
}

fn image_report(
    f: &Found,
    verified: &HashMap<LayerKey, LayerReport>,
    attempts: &HashMap<LayerKey, LayerAttempt>,
    store: &Store,
    opts: &ScanOptions,
) -> Report {
    let image = match &f.image {
        Ok(image) => image,
        Err(e) => {
            return Report {
                image: f.name.clone(),
                outcome: Outcome::Error,
                message: Some(format!(
                    "namespace {}: {}",
                    f.namespace,
                    job::error_message(e)
                )),
                ..Default::default()
            };
        }
    };
    let verified_of = |l: &ResolvedLayer| {
        verified
            .get(&key_of(&f.namespace, l))
            .cloned()
            .unwrap_or_default()
    };
    let (layers, outcome, message) = if opts.repair {
        let attempts: Vec<LayerAttempt> = image
            .layers
            .iter()
            .map(|l| match attempts.get(&key_of(&f.namespace, l)) {
                Some(a) => a.clone(),
                None => job::nothing_to_repair(verified_of(l)),
            })
            .collect();
        job::settle_repair(&attempts, opts.dry_run)
    } else {
        let layers: Vec<LayerReport> = image.layers.iter().map(verified_of).collect();
        let refusals: Vec<Option<String>> = image.layers.iter().map(layer::refusal).collect();
        let as_job = JobOptions {
            root: opts.root.clone(),
            namespace: f.namespace.clone(),
            config_path: opts.config_path.clone(),
            target: Target::Image(image.name.clone()),
            content: opts.content,
            dry_run: false,
            fetch: opts.fetch.clone(),
            toc: opts.toc.clone(),
        };
        let outcome = job::verify_outcome(&layers);
        let message = job::verify_message(&layers, &refusals, &as_job);
        (layers, outcome, message)
    };
    Report {
        image: image.name.clone(),
        manifest_digest: image.manifest_digest.clone(),
        outcome,
        layers,
        mounts: job::count_mounts(store, image),
        duration_ms: 0,
        message,
        scan: None,
    }
}

/// Names of the entries under `snapshots/` (none when the directory itself is gone).
fn snapshot_dirs(dir: &Path) -> Result<BTreeSet<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(crate::Error::io(dir, e)),
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| crate::Error::io(dir, e))?;
        names.insert(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The snapshot store against its records. Pure.
/// - missing: a record whose directory is gone;
/// - orphaned: a directory no record names;
/// - unreferenced: a committed snapshot of a scanned namespace that no image uses.
pub(crate) fn store_findings(
    db: &SnapshotterDb,
    dirs: &BTreeSet<String>,
    referenced: &HashSet<String>,
    namespaces: &[String],
    snapshots_dir: &Path,
) -> StoreFindings {
    let mut findings = StoreFindings::default();
    let recorded: HashSet<String> = db.snapshots.values().map(|r| r.id.to_string()).collect();
    for record in db.snapshots.values() {
        let id = record.id.to_string();
        let entry = StoreSnapshot {
            path: snapshots_dir.join(&id).display().to_string(),
            key: Some(record.backend_key.clone()),
            kind: Some(format!("{:?}", record.kind)),
            id: id.clone(),
        };
        let namespace = record.backend_key.split('/').next().unwrap_or_default();
        if !dirs.contains(&id) {
            findings.missing.push(entry);
        } else if record.kind == SnapshotKind::Committed
            && namespaces.iter().any(|ns| ns == namespace)
            && !referenced.contains(&record.backend_key)
        {
            findings.unreferenced.push(entry);
        }
    }
    for name in dirs.iter().filter(|d| !recorded.contains(*d)) {
        findings.orphaned.push(StoreSnapshot {
            id: name.clone(),
            key: None,
            kind: None,
            path: snapshots_dir.join(name).display().to_string(),
        });
    }
    // Numeric ids in numeric order, other names after them.
    let order = |s: &StoreSnapshot| (s.id.parse::<u64>().map_or((1, 0), |n| (0, n)), s.id.clone());
    let by_id = |a: &StoreSnapshot, b: &StoreSnapshot| order(a).cmp(&order(b));
    findings.missing.sort_by(by_id);
    findings.orphaned.sort_by(by_id);
    findings.unreferenced.sort_by(by_id);
    findings
}

/// The scan's outcome from its images' and the store's. Pure.
/// An image that could not be checked counts as damage found: a person must look at it.
pub(crate) fn scan_outcome(images: &[Outcome], missing_snapshots: usize) -> Outcome {
    let any = |o: Outcome| images.contains(&o);
    if any(Outcome::Unrepairable) {
        Outcome::Unrepairable
    } else if any(Outcome::Corrupted) || any(Outcome::Error) || missing_snapshots > 0 {
        Outcome::Corrupted
    } else if any(Outcome::Repaired) {
        Outcome::Repaired
    } else {
        Outcome::Healthy
    }
}

/// One line a person reads first.
fn scan_message(images: &[Report], store: &StoreFindings, layers: usize) -> String {
    let count = |o: Outcome| images.iter().filter(|r| r.outcome == o).count();
    let mut parts = vec![format!(
        "{} images ({} healthy, {} damaged, {} repaired, {} unrepairable, {} could not be checked), {layers} unique layers checked",
        images.len(),
        count(Outcome::Healthy),
        count(Outcome::Corrupted),
        count(Outcome::Repaired),
        count(Outcome::Unrepairable),
        count(Outcome::Error),
    )];
    if !store.missing.is_empty() {
        parts.push(format!(
            "{} recorded snapshots have no directory",
            store.missing.len()
        ));
    }
    if !store.orphaned.is_empty() {
        parts.push(format!(
            "{} snapshot directories have no record (left alone)",
            store.orphaned.len()
        ));
    }
    if !store.unreferenced.is_empty() {
        parts.push(format!(
            "{} committed snapshots are used by no image (left alone; containerd's garbage collector removes them)",
            store.unreferenced.len()
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bolt::Recorded;
    use crate::store::snapshotter_db::SnapshotRecord;

    fn db(records: &[(&str, u64, SnapshotKind)]) -> SnapshotterDb {
        SnapshotterDb {
            path: PathBuf::from("/s/metadata.db"),
            snapshots: records
                .iter()
                .map(|(key, id, kind)| {
                    (
                        key.to_string(),
                        SnapshotRecord {
                            backend_key: key.to_string(),
                            id: *id,
                            kind: *kind,
                            parent: Recorded::Absent,
                        },
                    )
                })
                .collect(),
        }
    }

    fn ids(list: &[StoreSnapshot]) -> Vec<&str> {
        list.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn the_store_is_checked_against_its_records() {
        use SnapshotKind::*;
        let db = db(&[
            ("k8s.io/1/sha256:a", 1, Committed),
            ("k8s.io/2/sha256:b", 2, Committed),
            ("k8s.io/3/sha256:gone", 3, Committed),
            ("k8s.io/4/run", 4, Active),
            ("k8s.io/10/sha256:stale", 10, Committed),
            ("moby/5/sha256:c", 5, Committed),
        ]);
        let dirs: BTreeSet<String> = ["1", "2", "4", "5", "10", "11", "tmp-x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let referenced: HashSet<String> = ["k8s.io/1/sha256:a", "k8s.io/2/sha256:b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = store_findings(
            &db,
            &dirs,
            &referenced,
            &["k8s.io".to_string()],
            Path::new("/r/snapshots"),
        );
        assert_eq!(ids(&f.missing), vec!["3"]);
        assert_eq!(f.missing[0].kind.as_deref(), Some("Committed"));
        assert_eq!(f.missing[0].path, "/r/snapshots/3");
        assert_eq!(ids(&f.orphaned), vec!["11", "tmp-x"]);
        assert_eq!(f.orphaned[0].key, None);
        // Active snapshots and other namespaces' snapshots are never "unreferenced".
        assert_eq!(ids(&f.unreferenced), vec!["10"]);
        let all = store_findings(
            &db,
            &dirs,
            &referenced,
            &["k8s.io".to_string(), "moby".to_string()],
            Path::new("/r/snapshots"),
        );
        assert_eq!(ids(&all.unreferenced), vec!["5", "10"]);
    }

    #[test]
    fn the_worst_image_decides_the_scan() {
        use Outcome::*;
        assert_eq!(scan_outcome(&[], 0), Healthy);
        assert_eq!(scan_outcome(&[Healthy, Healthy], 0), Healthy);
        assert_eq!(scan_outcome(&[Healthy, Healthy], 1), Corrupted);
        assert_eq!(scan_outcome(&[Healthy, Repaired], 0), Repaired);
        assert_eq!(scan_outcome(&[Repaired, Corrupted], 0), Corrupted);
        assert_eq!(scan_outcome(&[Healthy, Error], 0), Corrupted);
        assert_eq!(scan_outcome(&[Corrupted, Unrepairable], 0), Unrepairable);
        assert_eq!(scan_outcome(&[Repaired], 2), Corrupted);
    }

    #[test]
    fn an_unreadable_store_is_an_error_report() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ScanOptions {
            root: dir.path().to_path_buf(),
            namespaces: Namespaces::All,
            config_path: dir.path().join("none.toml"),
            content: ContentCheck::Metadata,
            repair: false,
            dry_run: false,
            fetch: Default::default(),
            toc: None,
        };
        let r = scan(&opts, &mut |_, _| {});
        assert_eq!(r.outcome, Outcome::Error);
        assert_eq!(r.exit_code(), 2);
        assert!(r.message.unwrap().contains("meta.db"));
    }

    #[test]
    fn a_store_without_snapshots_scans_its_images_and_reports_progress() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store");
        let opts = ScanOptions {
            root: root.clone(),
            namespaces: Namespaces::One("k8s.io".into()),
            config_path: root.join("no-config.toml"),
            content: ContentCheck::Metadata,
            repair: false,
            dry_run: false,
            fetch: Default::default(),
            toc: None,
        };
        let mut calls = Vec::new();
        let r = scan(&opts, &mut |done, total| calls.push((done, total)));
        assert!(!r.images.is_empty());
        assert_eq!(calls.len(), r.images.len());
        assert_eq!(calls.last(), Some(&(r.images.len(), r.images.len())));
        // The fixture keeps no snapshot directories: nothing can be healthy.
        assert_ne!(r.outcome, Outcome::Healthy);
        assert!(r.message.unwrap().contains("unique layers checked"));
    }
}
