//! The bounded form of a node scan that an `allImages` SnapshotRepair keeps in `status.report`.
//!
//! A node can hold any number of images with names up to 1 KiB and layers with thousands of
//! findings, while an object must stay far below the API server's 1.5 MiB (etcd) and the 256 KiB
//! that large lists and watches handle well. So the status keeps exact counts, and lists only
//! what fits a byte budget: damaged images first, the first few store findings, the damaged
//! layers with their first findings. Everything left out is counted.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::{CheckedWith, LayerReport, Outcome, Report};
use crate::scan_report::{ScanReport, StoreFindings, StoreSnapshot};

/// The whole serialised `status.report` of a scan stays below this many bytes (the object
/// around it adds the operator's few KiB): the SnapshotRepair stays under 64 KiB.
pub const REPORT_BUDGET: usize = 48 * 1024;
/// Bytes for the per-image list (`scan.images`).
const IMAGES_BUDGET: usize = 24 * 1024;
/// Bytes for the damaged layers (`layers`), each with its first findings.
const LAYERS_BUDGET: usize = 16 * 1024;
/// Bytes for the listed store findings (`scan.store.listed`).
const STORE_BUDGET: usize = 4 * 1024;
/// Bytes for the scan's message.
const MESSAGE_BUDGET: usize = 1024;
/// Bytes of an image's own message (why it could not be checked or repaired).
const IMAGE_MESSAGE_MAX: usize = 200;
/// At most this many damaged layers are listed, each with at most this many findings.
const LAYERS_MAX: usize = 20;
const LAYER_FINDINGS_MAX: usize = 10;
/// At most this many entries of each store list.
const STORE_ENTRIES_MAX: usize = 5;

/// `target` of a scan's report: what the Target column shows for `allImages`.
pub const ALL_IMAGES: &str = "all";

/// Counts and the first entries of a node scan (`status.report.scan`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    /// Every image of the scanned namespaces.
    pub images_total: u64,
    /// How many images ended with each outcome (exact, whatever is listed).
    pub outcomes: OutcomeCounts,
    /// Unique layers (by chainID) verified, each once however many images share it.
    pub layers_checked: u64,
    /// What those unique layers were compared with: their blob, or the TOC kept from it.
    #[serde(default)]
    pub checked_with: CheckedWithCounts,
    /// Unique layers that were damaged (or repaired), and their findings, exact.
    #[serde(default)]
    pub damaged_layers: u64,
    #[serde(default)]
    pub findings_total: u64,
    /// The snapshot store against its records.
    #[serde(default)]
    pub store: StoreSummary,
    /// Images in order: damaged (unrepairable, corrupted, not checked) first, then repaired,
    /// then healthy; within each, namespace then name. As many as fit the byte budget.
    #[serde(default)]
    pub images: Vec<ImageSummary>,
    /// Images not listed in `images`.
    #[serde(default)]
    pub omitted: u64,
    /// Damaged layers not listed in the report's `layers`.
    #[serde(default)]
    pub omitted_layers: u64,
}

/// How many unique layers were checked against each reference.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckedWithCounts {
    pub blob: u64,
    pub toc: u64,
}

/// How many images ended with each outcome.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeCounts {
    pub healthy: u64,
    pub corrupted: u64,
    pub repaired: u64,
    pub unrepairable: u64,
    /// Images that could not be checked (unresolvable manifest, unreadable store part).
    pub error: u64,
}

impl OutcomeCounts {
    pub fn count(&mut self, outcome: Outcome) {
        let n = match outcome {
            Outcome::Healthy => &mut self.healthy,
            Outcome::Corrupted => &mut self.corrupted,
            Outcome::Repaired => &mut self.repaired,
            Outcome::Unrepairable => &mut self.unrepairable,
            Outcome::Error => &mut self.error,
        };
        *n += 1;
    }

    /// Images with damage that is still there (corrupted or unrepairable).
    pub fn damaged(&self) -> u64 {
        self.corrupted + self.unrepairable
    }
}

/// One image of the scan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    pub image: String,
    pub outcome: Outcome,
    /// Layers of the image.
    pub layers: u32,
    /// Of these, damaged (or repaired) ones.
    pub damaged_layers: u32,
    /// Findings over its layers (a shared layer counts in every image that uses it).
    pub findings_total: u64,
    /// Why an image could not be checked or repaired (its Report's message, cut short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The store's findings: exact counts, and the first few of each list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreSummary {
    /// Recorded snapshots whose directory is gone: damage.
    pub missing: u64,
    /// Directories with no record: report only.
    pub orphaned: u64,
    /// Committed snapshots no image uses: report only.
    pub unreferenced: u64,
    /// The first entries of each list, as many as fit.
    #[serde(default)]
    pub listed: StoreFindings,
}

impl ScanSummary {
    /// The Findings column: `healthy (14 images)`, `2/14 images damaged`, plus repaired,
    /// unchecked images and missing snapshot directories when there are any.
    pub fn findings_column(&self) -> String {
        self.findings_naming(0, 0)
    }

    /// [`ScanSummary::findings_column`] naming the first `names` listed images of each kind,
    /// each cut to `name_max` bytes: `2/14 images damaged (a:1, b:1)`, `5/14 images damaged
    /// (a:1, b:1, c:1, 2 more)`.
    pub fn findings_naming(&self, names: usize, name_max: usize) -> String {
        let n = self.images_total;
        let o = &self.outcomes;
        let named = |count: u64, what: &str, pick: &dyn Fn(&ImageSummary) -> bool| {
            let mut listed: Vec<String> = self
                .images
                .iter()
                .filter(|i| pick(i))
                .take(names)
                .map(|i| cut(&i.image, name_max))
                .collect();
            let more = count.saturating_sub(listed.len() as u64);
            if !listed.is_empty() && more > 0 {
                listed.push(format!("{more} more"));
            }
            let mut text = format!("{count}/{n} images {what}");
            if !listed.is_empty() {
                text.push_str(&format!(" ({})", listed.join(", ")));
            }
            text
        };
        let mut parts = Vec::new();
        if o.damaged() > 0 {
            parts.push(named(o.damaged(), "damaged", &|i| {
                matches!(i.outcome, Outcome::Corrupted | Outcome::Unrepairable)
            }));
        }
        if o.repaired > 0 {
            parts.push(named(o.repaired, "repaired", &|i| {
                i.outcome == Outcome::Repaired
            }));
        }
        if o.error > 0 {
            parts.push(named(o.error, "not checked", &|i| {
                i.outcome == Outcome::Error
            }));
        }
        match self.store.missing {
            0 => {}
            1 => parts.push("1 snapshot dir missing".to_string()),
            m => parts.push(format!("{m} snapshot dirs missing")),
        }
        if parts.is_empty() {
            format!("healthy ({n} images)")
        } else {
            parts.join(", ")
        }
    }
}

/// Damaged images first: the order a person wants to read them in.
fn rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Unrepairable => 0,
        Outcome::Corrupted => 1,
        Outcome::Error => 2,
        Outcome::Repaired => 3,
        Outcome::Healthy => 4,
    }
}

/// Serialised size of `v` in bytes (what it adds to the object, plus a separator).
fn size_of<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len() + 1)
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The longest prefix of `items` whose serialised sizes add up to at most `budget`.
fn prefix_within<T: Serialize + Clone>(items: &[T], budget: usize, max: usize) -> Vec<T> {
    let mut used = 0;
    items
        .iter()
        .take(max)
        .take_while(|item| {
            used += size_of(item);
            used <= budget
        })
        .cloned()
        .collect()
}

/// `layer` with as many of its first findings as fit `budget` (at most [`LAYER_FINDINGS_MAX`]);
/// `findingsTotal` stays exact. None when not even the layer without findings fits.
fn layer_within(layer: &LayerReport, budget: usize) -> Option<LayerReport> {
    let mut bare = layer.clone();
    bare.findings.clear();
    let mut used = size_of(&bare);
    if used > budget {
        return None;
    }
    bare.findings = layer
        .findings
        .iter()
        .take(LAYER_FINDINGS_MAX)
        .take_while(|f| {
            used += size_of(f);
            used <= budget
        })
        .cloned()
        .collect();
    Some(bare)
}

/// What an `allImages` SnapshotRepair keeps of a scan: the Report the operator already
/// understands (the scan's outcome, the damaged layers with their first findings) plus a
/// compact summary, all within [`REPORT_BUDGET`] bytes for any number of images. Pure.
pub fn bounded_report(scan: &ScanReport) -> Report {
    let mut outcomes = OutcomeCounts::default();
    let mut order: Vec<&Report> = scan.images.iter().collect();
    for image in &order {
        outcomes.count(image.outcome);
    }
    order.sort_by_key(|r| rank(r.outcome)); // stable: namespace then name within a rank

    // Unique layers (images share them), and of those the damaged ones, in the order of the
    // images that use them.
    let mut seen = HashSet::new();
    let mut damaged: Vec<&LayerReport> = Vec::new();
    let mut checked_with = CheckedWithCounts::default();
    for image in &order {
        for l in &image.layers {
            if !seen.insert((l.chain_id.as_str(), l.snapshot_id.as_deref())) {
                continue;
            }
            match l.checked_with {
                Some(CheckedWith::Blob) => checked_with.blob += 1,
                Some(CheckedWith::Toc) => checked_with.toc += 1,
                None => {}
            }
            if l.needs_attention() {
                damaged.push(l);
            }
        }
    }
    let findings_total = damaged.iter().map(|l| l.findings_total).sum();
    let mut layers = Vec::new();
    let mut left = LAYERS_BUDGET;
    for l in damaged.iter().take(LAYERS_MAX) {
        // Each layer gets a fair share of what is left, so one huge layer cannot crowd out the rest.
        let share = (left / (LAYERS_MAX - layers.len())).max(2048).min(left);
        let Some(listed) = layer_within(l, share) else {
            break;
        };
        left = left.saturating_sub(size_of(&listed));
        layers.push(listed);
    }

    let summaries: Vec<ImageSummary> = order
        .iter()
        .map(|r| ImageSummary {
            image: r.image.clone(),
            outcome: r.outcome,
            layers: u32::try_from(r.layers.len()).unwrap_or(u32::MAX),
            damaged_layers: u32::try_from(r.layers.iter().filter(|l| l.needs_attention()).count())
                .unwrap_or(u32::MAX),
            findings_total: r.findings_total(),
            message: r
                .message
                .as_deref()
                .filter(|_| matches!(r.outcome, Outcome::Error | Outcome::Unrepairable))
                .map(|m| cut(m, IMAGE_MESSAGE_MAX)),
        })
        .collect();
    let images = prefix_within(&summaries, IMAGES_BUDGET, usize::MAX);

    let s = &scan.snapshots;
    let mut store_left = STORE_BUDGET;
    let mut listed = |list: &[StoreSnapshot]| {
        let kept = prefix_within(list, store_left, STORE_ENTRIES_MAX);
        store_left = store_left.saturating_sub(kept.iter().map(size_of).sum());
        kept
    };
    let store = StoreSummary {
        missing: s.missing.len() as u64,
        orphaned: s.orphaned.len() as u64,
        unreferenced: s.unreferenced.len() as u64,
        listed: StoreFindings {
            missing: listed(&s.missing),
            orphaned: listed(&s.orphaned),
            unreferenced: listed(&s.unreferenced),
        },
    };

    let summary = ScanSummary {
        images_total: scan.images.len() as u64,
        outcomes,
        layers_checked: scan.layers_checked,
        checked_with,
        damaged_layers: damaged.len() as u64,
        findings_total,
        store,
        omitted: (summaries.len() - images.len()) as u64,
        omitted_layers: (damaged.len() - layers.len()) as u64,
        images,
    };
    Report {
        image: ALL_IMAGES.to_string(),
        manifest_digest: String::new(),
        outcome: scan.outcome,
        layers,
        // Mounted overlays are counted per image; the largest is a lower bound without double counting.
        mounts: scan
            .images
            .iter()
            .filter(|r| r.layers.iter().any(LayerReport::needs_attention))
            .map(|r| r.mounts)
            .max()
            .unwrap_or(0),
        duration_ms: scan.duration_ms,
        message: scan.message.as_deref().map(|m| cut(m, MESSAGE_BUDGET)),
        scan: Some(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BlobState, Finding, FindingKind, LayerState};

    fn toc_layer(chain: &str) -> LayerReport {
        LayerReport {
            blob: BlobState::NotChecked,
            checked_with: Some(CheckedWith::Toc),
            ..layer(chain, LayerState::Healthy, 0)
        }
    }

    fn layer(chain: &str, state: LayerState, findings: usize) -> LayerReport {
        LayerReport {
            digest: format!("sha256:d{chain}"),
            diff_id: format!("sha256:{chain}"),
            chain_id: format!("sha256:{chain}"),
            snapshot_id: Some(chain.to_string()),
            blob: BlobState::Verified,
            state,
            findings_total: findings as u64,
            findings: (0..findings.min(crate::report::FINDINGS_CAP))
                .map(|i| Finding {
                    path: format!("/usr/lib/{}/{i}", "x".repeat(200)),
                    kind: FindingKind::Missing,
                    detail: "regular file, 1 KiB".into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn image(name: &str, outcome: Outcome, layers: Vec<LayerReport>) -> Report {
        Report {
            image: name.into(),
            outcome,
            layers,
            ..Default::default()
        }
    }

    fn said(mut r: Report, message: &str) -> Report {
        r.message = Some(message.to_string());
        r
    }

    fn entry(id: &str) -> StoreSnapshot {
        StoreSnapshot {
            id: id.into(),
            key: Some(format!("k8s.io/{id}/sha256:{}", "a".repeat(64))),
            kind: Some("Committed".into()),
            path: format!("/var/lib/containerd/snapshots/{id}"),
        }
    }

    #[test]
    fn a_thousand_images_with_long_names_and_many_findings_stay_within_the_budget() {
        let images: Vec<Report> = (0..1000)
            .map(|i| {
                let name = format!("registry.example/{}:{i:04}", "n".repeat(1024));
                let (outcome, top) = if i % 3 == 0 {
                    (
                        Outcome::Corrupted,
                        layer(&format!("top{i}"), LayerState::Corrupted, 5000),
                    )
                } else {
                    (
                        Outcome::Healthy,
                        layer(&format!("top{i}"), LayerState::Healthy, 0),
                    )
                };
                image(
                    &name,
                    outcome,
                    vec![layer("base", LayerState::Healthy, 0), top],
                )
            })
            .collect();
        let scan = ScanReport {
            outcome: Outcome::Corrupted,
            images,
            snapshots: StoreFindings {
                missing: (0..300).map(|i| entry(&i.to_string())).collect(),
                orphaned: (300..600).map(|i| entry(&i.to_string())).collect(),
                unreferenced: (600..900).map(|i| entry(&i.to_string())).collect(),
            },
            layers_checked: 1001,
            layer_reads: Vec::new(),
            duration_ms: 7,
            message: Some("m".repeat(10_000)),
        };
        let r = bounded_report(&scan);
        let bytes = serde_json::to_vec(&r).unwrap().len();
        assert!(bytes < REPORT_BUDGET, "{bytes} bytes");
        let s = r.scan.as_ref().unwrap();
        assert_eq!(s.images_total, 1000);
        assert_eq!(s.outcomes.corrupted, 334);
        assert_eq!(s.outcomes.healthy, 666);
        assert_eq!(s.layers_checked, 1001);
        assert_eq!(s.damaged_layers, 334);
        assert_eq!(s.findings_total, 334 * 5000);
        assert_eq!(s.omitted as usize + s.images.len(), 1000);
        assert!(!s.images.is_empty());
        // Damaged first, in scan order: images 0, 3, 6, ...
        for (k, listed) in s.images.iter().enumerate() {
            assert_eq!(listed.outcome, Outcome::Corrupted);
            assert!(
                listed.image.ends_with(&format!(":{:04}", 3 * k)),
                "{}",
                listed.image
            );
            assert_eq!((listed.layers, listed.damaged_layers), (2, 1));
            assert_eq!(listed.findings_total, 5000);
        }
        assert_eq!(
            (s.store.missing, s.store.orphaned, s.store.unreferenced),
            (300, 300, 300)
        );
        let ids: Vec<&str> = s
            .store
            .listed
            .missing
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4"]);
        assert!(!r.layers.is_empty() && r.layers.len() <= LAYERS_MAX);
        assert_eq!(s.omitted_layers as usize + r.layers.len(), 334);
        assert_eq!(r.layers[0].chain_id, "sha256:top0");
        assert_eq!(r.layers[0].findings_total, 5000, "exact total kept");
        assert!(!r.layers[0].findings.is_empty());
        assert!(r.message.as_ref().unwrap().len() <= MESSAGE_BUDGET);
        assert_eq!(r.outcome, Outcome::Corrupted);
        assert_eq!(
            s.findings_column(),
            "334/1000 images damaged, 300 snapshot dirs missing"
        );
    }

    #[test]
    fn images_are_ordered_worst_first_and_counted_exactly() {
        let bad = |c: &str| layer(c, LayerState::Corrupted, 2);
        let ok = |c: &str| layer(c, LayerState::Healthy, 0);
        let scan = ScanReport {
            outcome: Outcome::Unrepairable,
            images: vec![
                image("a", Outcome::Healthy, vec![ok("1")]),
                said(
                    image("b", Outcome::Corrupted, vec![ok("1"), bad("2")]),
                    "a verify's note",
                ),
                said(
                    image("c", Outcome::Error, vec![]),
                    &format!(
                        "namespace k8s.io: manifest sha256:c is missing{}",
                        " ".repeat(300)
                    ),
                ),
                image(
                    "d",
                    Outcome::Repaired,
                    vec![layer("3", LayerState::Repaired, 1)],
                ),
                said(
                    image("e", Outcome::Unrepairable, vec![bad("2"), bad("4")]),
                    "blob sha256:4 is missing",
                ),
                image("f", Outcome::Corrupted, vec![bad("4")]),
            ],
            layers_checked: 4,
            ..Default::default()
        };
        let r = bounded_report(&scan);
        let s = r.scan.clone().unwrap();
        let names: Vec<&str> = s.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(names, ["e", "b", "f", "c", "d", "a"]);
        assert_eq!(
            s.outcomes,
            OutcomeCounts {
                healthy: 1,
                corrupted: 2,
                repaired: 1,
                unrepairable: 1,
                error: 1
            }
        );
        assert_eq!(s.omitted, 0);
        // Shared damaged layers are listed once.
        let chains: Vec<&str> = r.layers.iter().map(|l| l.chain_id.as_str()).collect();
        assert_eq!(chains, ["sha256:2", "sha256:4", "sha256:3"]);
        assert_eq!((s.damaged_layers, s.findings_total), (3, 5));
        assert_eq!(s.images[0].findings_total, 4);
        // Only images that could not be checked or repaired say why, in at most 200 bytes.
        let said: Vec<(&str, Option<&str>)> = s
            .images
            .iter()
            .map(|i| (i.image.as_str(), i.message.as_deref()))
            .collect();
        let long = s.images[3].message.clone().unwrap();
        assert!(long.starts_with("namespace k8s.io: manifest sha256:c is missing"));
        assert!(
            long.ends_with('…') && long.len() <= IMAGE_MESSAGE_MAX,
            "{long}"
        );
        assert_eq!(
            said,
            [
                ("e", Some("blob sha256:4 is missing")),
                ("b", None),
                ("f", None),
                ("c", Some(long.as_str())),
                ("d", None),
                ("a", None)
            ]
        );
        // Shared damaged layers are listed once.
        let chains: Vec<&str> = r.layers.iter().map(|l| l.chain_id.as_str()).collect();
        assert_eq!(chains, ["sha256:2", "sha256:4", "sha256:3"]);
        assert_eq!((s.damaged_layers, s.findings_total), (3, 5));
        assert_eq!(s.images[0].findings_total, 4);
        assert_eq!(
            s.findings_naming(2, 16),
            "3/6 images damaged (e, b, 1 more), 1/6 images repaired (d), 1/6 images not checked (c)"
        );
        assert_eq!(
            s.findings_column(),
            "3/6 images damaged, 1/6 images repaired, 1/6 images not checked"
        );
        assert_eq!(r.image, ALL_IMAGES);
        assert_eq!(r.findings_total(), 5);
    }

    #[test]
    fn a_healthy_node_reads_healthy_and_report_only_findings_are_listed() {
        let scan = ScanReport {
            outcome: Outcome::Healthy,
            images: (0..14)
                .map(|i| image(&format!("i{i}"), Outcome::Healthy, vec![toc_layer("1")]))
                .collect(),
            snapshots: StoreFindings {
                orphaned: vec![entry("999")],
                unreferenced: vec![entry("7")],
                ..Default::default()
            },
            layers_checked: 1,
            ..Default::default()
        };
        let r = bounded_report(&scan);
        let s = r.scan.as_ref().unwrap();
        assert_eq!(s.findings_column(), "healthy (14 images)");
        // The one layer all 14 images share counts once.
        assert_eq!(s.checked_with, CheckedWithCounts { blob: 0, toc: 1 });
        assert!(r.layers.is_empty());
        assert_eq!(
            (s.store.orphaned, s.store.unreferenced, s.store.missing),
            (1, 1, 0)
        );
        assert_eq!(s.store.listed.orphaned[0].id, "999");
        assert_eq!(r.findings_summary(), "healthy (14 images)");
    }

    #[test]
    fn a_scan_that_could_not_run_is_not_called_healthy() {
        let r = bounded_report(&ScanReport {
            outcome: Outcome::Error,
            message: Some("cannot open meta.db".into()),
            ..Default::default()
        });
        assert_eq!(r.findings_summary(), "not checked");
        assert_eq!(r.message.as_deref(), Some("cannot open meta.db"));
        let empty = bounded_report(&ScanReport {
            outcome: Outcome::Healthy,
            ..Default::default()
        });
        assert_eq!(empty.findings_summary(), "healthy (0 images)");
    }

    #[test]
    fn one_huge_layer_does_not_crowd_out_the_others() {
        let mut huge = layer("big", LayerState::Corrupted, 100);
        for f in &mut huge.findings {
            f.path = format!("/{}", "p".repeat(4000));
        }
        let scan = ScanReport {
            outcome: Outcome::Corrupted,
            images: vec![image(
                "x",
                Outcome::Corrupted,
                vec![huge, layer("small", LayerState::Corrupted, 1)],
            )],
            ..Default::default()
        };
        let r = bounded_report(&scan);
        assert_eq!(r.layers.len(), 2);
        assert_eq!(r.layers[1].findings.len(), 1);
        assert!(serde_json::to_vec(&r).unwrap().len() < REPORT_BUDGET);
    }

    #[test]
    fn the_summary_round_trips_as_camel_case() {
        let r = bounded_report(&ScanReport {
            outcome: Outcome::Healthy,
            images: vec![image("a", Outcome::Healthy, vec![])],
            ..Default::default()
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scan"]["imagesTotal"], 1);
        assert_eq!(v["scan"]["outcomes"]["healthy"], 1);
        assert_eq!(v["scan"]["images"][0]["damagedLayers"], 0);
        assert_eq!(
            v["scan"]["store"]["listed"]["missing"],
            serde_json::json!([])
        );
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn names_are_cut_and_one_missing_dir_is_singular() {
        let scan = ScanReport {
            outcome: Outcome::Corrupted,
            images: vec![image(&"n".repeat(300), Outcome::Corrupted, vec![])],
            snapshots: StoreFindings {
                missing: vec![entry("3")],
                ..Default::default()
            },
            ..Default::default()
        };
        let s = bounded_report(&scan).scan.unwrap();
        let text = s.findings_naming(3, 10);
        assert_eq!(
            text,
            format!(
                "1/1 images damaged ({}…), 1 snapshot dir missing",
                "n".repeat(7)
            )
        );
    }

    #[test]
    fn cut_keeps_character_boundaries() {
        assert_eq!(cut("abc", 3), "abc");
        let c = cut(&"é".repeat(100), 11);
        assert!(c.len() <= 11 && c.ends_with('…'), "{c}");
    }
}
