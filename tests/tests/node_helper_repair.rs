//! `snapmend-node-helper repair` against a real containerd 1.6 (issue 3): every corruption is
//! repaired back to exactly what containerd unpacked, the incident is fixed end to end while a
//! container keeps running, and a bad blob makes the layer Unrepairable with nothing written.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use snapmend_crds::{LayerState, Outcome};
use snapmend_tests::containerd::RunOutcome;
use snapmend_tests::fs_tree::capture_tree;
use snapmend_tests::image_builder::{pause_image, rich_image};
use snapmend_tests::node_helper_cli::{CaseImage, Scenario, corruption, empty_dir, flip_blob_byte};

const PAUSE: &str = "snapmend.test/pause:3.10";
const RICH: &str = "snapmend.test/rich:1";

/// Repair must exit 0 with outcome Repaired, verify must then be Healthy, and every layer
/// must equal its pristine capture.
fn repair_restores_pristine(
    s: &Scenario,
    pristine: &snapmend_tests::node_helper_cli::PristineImage,
) {
    let run = s.helper.repair(&pristine.name).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Repaired, "{run}");
    s.assert_healthy(&pristine.name);
    let diffs = pristine.differences_now().unwrap();
    assert!(
        diffs.is_empty(),
        "repaired tree differs from containerd's unpack:\n{}",
        diffs.join("\n")
    );
    // A second repair has nothing to do.
    let again = s.helper.repair(&pristine.name).unwrap();
    assert_eq!(again.code, Some(0), "{again}");
    assert_eq!(again.report().unwrap().outcome, Outcome::Healthy, "{again}");
}

fn corruption_is_repaired(name: &str) {
    let case = corruption(name);
    let image = match case.image {
        CaseImage::Pause => pause_image(PAUSE).unwrap(),
        CaseImage::Rich => rich_image(RICH).unwrap(),
    };
    let image_name = image.name.clone();
    let s = Scenario::start(&[image]).unwrap();
    let pristine = s.capture_pristine(&image_name).unwrap();
    (case.apply)(&pristine.layers[case.layer].fs).unwrap();
    assert!(
        !pristine.differences_now().unwrap().is_empty(),
        "the corruption changed nothing"
    );
    repair_restores_pristine(&s, &pristine);
}

macro_rules! repair_tests {
    ($($name:ident),* $(,)?) => {
        mod repaired {
            $(#[test] fn $name() { super::corruption_is_repaired(stringify!($name)); })*
        }
    };
}

repair_tests!(
    deleted_pause,
    truncated_file,
    same_size_content_change,
    mode_change,
    owner_change,
    deleted_whiteout,
    lost_opaque_xattr,
    extra_file,
    type_change,
    broken_hardlink,
    symlink_target_change,
    device_change,
    xattr_change,
);

#[test]
fn deleted_fs_dir_is_recreated() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    std::fs::remove_dir_all(&pristine.layers[1].fs).unwrap();
    repair_restores_pristine(&s, &pristine);
}

#[test]
fn every_layer_emptied_is_rebuilt() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    for layer in &pristine.layers {
        empty_dir(&layer.fs).unwrap();
    }
    repair_restores_pristine(&s, &pristine);
}

#[test]
fn dry_run_writes_nothing() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    (corruption("type_change").apply)(&pristine.layers[0].fs).unwrap();
    let before = capture_tree(&s.fixture.root()).unwrap();
    let run = s
        .helper
        .run("repair", &["--image", RICH, "--dry-run", "--json"])
        .unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Corrupted, "{run}");
    let after = capture_tree(&s.fixture.root()).unwrap();
    let diffs = after.differences_from(&before, &before.all_paths());
    assert!(diffs.is_empty(), "dry run wrote:\n{}", diffs.join("\n"));
}

#[test]
fn bad_blob_is_unrepairable_and_nothing_is_written() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    let fs0 = &pristine.layers[0].fs;
    std::fs::remove_file(fs0.join("pause")).unwrap();
    flip_blob_byte(&s.fixture.blob_path(s.image(RICH).layers[0].digest())).unwrap();
    let snapshot_dirs: Vec<_> = (0..3).map(|i| pristine.snapshot_dir(i)).collect();
    let root_before = s.capture_root_except(&snapshot_dirs).unwrap();
    let fs_before: Vec<_> = pristine
        .layers
        .iter()
        .map(|l| capture_tree(&l.fs).unwrap())
        .collect();
    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Unrepairable, "{run}");
    assert_eq!(report.layers[0].state, LayerState::Unrepairable, "{run}");
    assert!(
        report.message.as_deref().is_some_and(|m| !m.is_empty()),
        "an Unrepairable report says why\n{run}"
    );
    let mut diffs = s
        .capture_root_except(&snapshot_dirs)
        .unwrap()
        .differences_from(&root_before, &root_before.all_paths());
    for (layer, before) in pristine.layers.iter().zip(&fs_before) {
        diffs.extend(
            capture_tree(&layer.fs)
                .unwrap()
                .differences_from(before, &before.all_paths()),
        );
    }
    assert!(
        diffs.is_empty(),
        "an unrepairable repair wrote:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn the_incident_end_to_end() {
    let s = Scenario::start(&[pause_image(PAUSE).unwrap()]).unwrap();
    let pristine = s.capture_pristine(PAUSE).unwrap();
    // 1. A pause container keeps running.
    assert_eq!(
        s.fixture.run_container(PAUSE, "old", &[]).unwrap(),
        RunOutcome::Started
    );
    // 2. /pause is deleted; a new sandbox cannot start.
    std::fs::remove_file(pristine.layers[0].fs.join("pause")).unwrap();
    let failed = s.fixture.run_container(PAUSE, "new-1", &[]).unwrap();
    assert!(failed.is_missing_entrypoint(), "{failed:?}");
    // 3. Repair (the snapshot is in use by the running container's overlay).
    let run = s.helper.repair(PAUSE).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Repaired, "{run}");
    assert!(pristine.differences_now().unwrap().is_empty());
    // 4. A new container starts and the old one still runs.
    assert_eq!(
        s.fixture.run_container(PAUSE, "new-2", &[]).unwrap(),
        RunOutcome::Started
    );
    assert_eq!(
        s.fixture.task_status("old").unwrap().as_deref(),
        Some("RUNNING")
    );
    assert_eq!(
        s.fixture.task_status("new-2").unwrap().as_deref(),
        Some("RUNNING")
    );
}

#[test]
fn the_same_file_deleted_and_repaired_again_and_again() {
    const MANY: &str = "snapmend.test/many:1";
    let s = Scenario::start(&[snapmend_tests::image_builder::many_files_image(MANY, 300).unwrap()])
        .unwrap();
    let pristine = s.capture_pristine(MANY).unwrap();
    let file = pristine.layers[0].fs.join("data/d0001/f000051");
    // After a full rebuild, too.
    empty_dir(&pristine.layers[0].fs).unwrap();
    let run = s.helper.repair(MANY).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    for round in 0..3 {
        std::fs::remove_file(&file).unwrap();
        let run = s.helper.repair(MANY).unwrap();
        assert_eq!(run.code, Some(0), "round {round}\n{run}");
        assert!(
            file.exists(),
            "round {round}: exit 0 but {} not restored\n{run}",
            file.display()
        );
    }
    assert!(pristine.differences_now().unwrap().is_empty());
}

#[test]
fn an_uncommitted_snapshot_is_refused_and_nothing_is_written() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let healthy = s
        .helper
        .verify(RICH, snapmend_tests::node_helper_cli::Content::Full)
        .unwrap()
        .report()
        .unwrap();
    let n = healthy.layers.len();
    assert!(n >= 2, "the rich image has a parent layer");
    let top = healthy.layers[n - 1].chain_id.clone();
    let parent = healthy.layers[n - 2].chain_id.clone();
    // The top layer's snapshot becomes an active one under the same name, as while containerd
    // is still unpacking it, with half its content extracted. gc.root labels keep the garbage
    // collector from taking the parent (the image referenced only the top) and the new one.
    const GC_ROOT: &str = "containerd.io/gc.root=snapmend-test";
    s.fixture
        .ctr(&["snapshots", "label", &parent, GC_ROOT])
        .unwrap();
    s.fixture.ctr(&["snapshots", "rm", &top]).unwrap();
    s.fixture
        .ctr(&["snapshots", "prepare", &top, &parent])
        .unwrap();
    s.fixture
        .ctr(&["snapshots", "label", &top, GC_ROOT])
        .unwrap();
    s.fixture.settle().unwrap();
    let active_fs = s.layer_fs(RICH).unwrap().pop().unwrap();
    std::fs::write(active_fs.join("half-extracted"), b"in progress").unwrap();
    let before = s.capture_root_except(&[]).unwrap();

    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Unrepairable, "{run}");
    assert_eq!(
        report.layers[n - 1].state,
        LayerState::Unrepairable,
        "{run}"
    );
    let message = report.message.clone().unwrap_or_default();
    assert!(
        message.contains("not committed") && message.contains("wrote nothing"),
        "the refusal says why: {message}"
    );
    let after = s.capture_root_except(&[]).unwrap();
    let changed = after.differences_from(&before, &before.all_paths());
    assert!(
        changed.is_empty(),
        "a refused repair changed the containerd root:\n{}",
        changed.join("\n")
    );
}
