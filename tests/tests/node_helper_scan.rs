//! `snapmend-node-helper scan` (issue 16) against a real containerd 1.6: several images that
//! share a base layer, damage spread over them, a deleted snapshot directory, an orphaned
//! directory and an unreferenced committed snapshot. Each shared layer is verified once; the
//! store findings are exact; `scan --repair` gives back exactly what containerd unpacked.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use snapmend_crds::{FindingKind, LayerState, Outcome, ScanReport};
use snapmend_tests::image_builder::{rich_image, shared_base_images};
use snapmend_tests::node_helper_cli::{HelperRun, Scenario};

const A: &str = "snapmend.test/shared-a:1";
const B: &str = "snapmend.test/shared-b:1";
const RICH: &str = "snapmend.test/rich:1";

fn scan(s: &Scenario, extra: &[&str]) -> (HelperRun, ScanReport) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = s.helper.run("scan", &args).unwrap();
    let report: ScanReport = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not a ScanReport ({e}):\n{run}"));
    (run, report)
}

fn image<'a>(r: &'a ScanReport, name: &str) -> &'a snapmend_crds::Report {
    r.images
        .iter()
        .find(|i| i.image == name)
        .unwrap_or_else(|| panic!("{name} not scanned"))
}

#[test]
fn scan_finds_damage_across_images_and_the_store_and_scan_repair_restores_it() {
    let [a, b] = shared_base_images(A, B).unwrap();
    let s = Scenario::start(&[a, b, rich_image(RICH).unwrap()]).unwrap();
    let pristine: Vec<_> = [A, B, RICH]
        .iter()
        .map(|n| s.capture_pristine(n).unwrap())
        .collect();

    let (run, healthy) = scan(&s, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(healthy.outcome, Outcome::Healthy, "{run}");
    // Shared base: 2 + 2 + 3 layers, 6 of them unique.
    let unique: BTreeSet<String> = healthy
        .images
        .iter()
        .flat_map(|i| i.layers.iter().map(|l| l.chain_id.clone()))
        .collect();
    assert_eq!(unique.len() as u64, healthy.layers_checked, "{run}");
    assert_eq!(
        image(&healthy, A).layers[0].chain_id,
        image(&healthy, B).layers[0].chain_id
    );
    assert!(healthy.snapshots.missing.is_empty() && healthy.snapshots.orphaned.is_empty());
    // Proof from the scan itself: the shared base was inflated once, as was every layer.
    let shared = &image(&healthy, A).layers[0];
    let reads = |r: &ScanReport, chain: &str| -> (u64, u64) {
        r.layer_reads
            .iter()
            .find(|x| x.chain_id == chain)
            .map(|x| (x.blob, x.toc))
            .unwrap_or_default()
    };
    assert_eq!(reads(&healthy, &shared.chain_id), (1, 0), "{run}");
    assert_eq!(healthy.layer_reads.len() as u64, healthy.layers_checked);
    assert!(
        healthy
            .layer_reads
            .iter()
            .all(|x| (x.blob, x.toc) == (1, 0))
    );
    // With a TOC cache: the first scan reads each blob once and keeps its TOC, the next
    // reads each TOC once and no blob.
    let toc = s.fixture.dir().join("scan-toc");
    let toc_arg = ["--toc-cache", toc.to_str().unwrap()];
    let (_, kept) = scan(&s, &toc_arg);
    assert!(kept.layer_reads.iter().all(|x| (x.blob, x.toc) == (1, 0)));
    let (run, from_toc) = scan(&s, &toc_arg);
    assert_eq!(from_toc.outcome, Outcome::Healthy, "{run}");
    assert_eq!(reads(&from_toc, &shared.chain_id), (0, 1), "{run}");
    assert_eq!(from_toc.layer_reads.len() as u64, healthy.layers_checked);
    assert!(
        from_toc
            .layer_reads
            .iter()
            .all(|x| (x.blob, x.toc) == (0, 1))
    );

    // Damage: the shared base (seen in both images), rich's top layer, B's whole snapshot
    // directory; plus an orphaned directory and an unreferenced committed snapshot.
    std::fs::remove_file(pristine[0].layers[0].fs.join("shared")).unwrap();
    std::fs::write(pristine[2].layers[2].fs.join("newdir/file"), b"tampered").unwrap();
    let b_top_dir = pristine[1].snapshot_dir(1);
    std::fs::remove_dir_all(&b_top_dir).unwrap();
    let snapshots = s.fixture.snapshotter_root().join("snapshots");
    std::fs::create_dir(snapshots.join("999")).unwrap();
    let base_chain = image(&healthy, A).layers[0].chain_id.clone();
    s.fixture
        .ctr(&["snapshots", "prepare", "unref-active", &base_chain])
        .unwrap();
    s.fixture
        .ctr(&["snapshots", "commit", "unref-committed", "unref-active"])
        .unwrap();
    s.fixture
        .ctr(&[
            "snapshots",
            "label",
            "unref-committed",
            "containerd.io/gc.root=snapmend-test",
        ])
        .unwrap();

    let (run, found) = scan(&s, &[]);
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(found.outcome, Outcome::Corrupted, "{run}");
    for name in [A, B] {
        let base = &image(&found, name).layers[0];
        assert_eq!(base.state, LayerState::Corrupted, "{name}: {run}");
        assert_eq!(base.findings[0].path, "/shared");
        assert_eq!(base.findings[0].kind, FindingKind::Missing);
    }
    assert_eq!(
        image(&found, B).layers[1].state,
        LayerState::SnapshotMissing,
        "{run}"
    );
    let rich_top = &image(&found, RICH).layers[2];
    assert_eq!(rich_top.findings[0].path, "/newdir/file", "{run}");
    assert_eq!(
        found.layers_checked, healthy.layers_checked,
        "each layer once"
    );
    let b_top_id = image(&healthy, B).layers[1].snapshot_id.clone().unwrap();
    let ids = |list: &[snapmend_crds::StoreSnapshot]| -> Vec<String> {
        list.iter().map(|s| s.id.clone()).collect()
    };
    assert_eq!(ids(&found.snapshots.missing), vec![b_top_id], "{run}");
    assert_eq!(
        ids(&found.snapshots.orphaned),
        vec!["999".to_string()],
        "{run}"
    );
    assert_eq!(found.snapshots.unreferenced.len(), 1, "{run}");
    assert!(
        found.snapshots.unreferenced[0]
            .key
            .as_deref()
            .unwrap()
            .ends_with("/unref-committed"),
        "{run}"
    );
    let human = s.helper.run("scan", &[]).unwrap();
    assert!(
        human.stdout.contains("snapshot orphaned:") && human.stdout.contains("outcome  Corrupted"),
        "{human}"
    );

    // A fresh TOC cache: the deleted snapshot directory has nothing to verify against, so only
    // the repair's own pass can keep its layer's TOC.
    let repair_toc = s.fixture.dir().join("repair-toc");
    let repair_toc_arg = ["--toc-cache", repair_toc.to_str().unwrap()];
    let (run, repaired) = scan(&s, &["--repair", repair_toc_arg[0], repair_toc_arg[1]]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(repaired.outcome, Outcome::Repaired, "{run}");
    assert!(repaired.snapshots.missing.is_empty(), "{run}");
    for p in &pristine {
        let diffs = p.differences_now().unwrap();
        assert!(
            diffs.is_empty(),
            "{}: differs from containerd's unpack after scan --repair:\n{}",
            p.name,
            diffs.join("\n")
        );
    }
    // Report-only findings are left alone.
    assert!(snapshots.join("999").is_dir());
    let (run, after) = scan(&s, &repair_toc_arg);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(after.outcome, Outcome::Healthy, "{run}");
    assert!(
        after.layer_reads.iter().all(|x| (x.blob, x.toc) == (0, 1)),
        "every layer from a TOC kept by scan --repair, the recreated one too: {:?}",
        after.layer_reads
    );
    for name in [A, B, RICH] {
        s.assert_healthy(name);
    }
}

#[test]
fn scan_dry_run_writes_nothing() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    std::fs::remove_file(pristine.layers[0].fs.join("pause")).unwrap();
    let before = snapmend_tests::fs_tree::capture_tree(&s.fixture.root()).unwrap();
    let (run, r) = scan(&s, &["--repair", "--dry-run"]);
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(r.outcome, Outcome::Corrupted, "{run}");
    let after = snapmend_tests::fs_tree::capture_tree(&s.fixture.root()).unwrap();
    let diffs = after.differences_from(&before, &before.all_paths());
    assert!(diffs.is_empty(), "dry run wrote:\n{}", diffs.join("\n"));
}
