//! Crash safety of `snapmend-node-helper repair` (issue 3): the repair is aborted after the
//! N-th rename (`SNAPMEND_FAULT_AFTER_RENAMES`) or killed with SIGKILL at spread-out instants;
//! each time the snapshot is no worse than before, a rerun makes it Healthy and equal to
//! containerd's unpack, and nothing in the containerd root outside the damaged snapshots
//! changed.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use snapmend_crds::Outcome;
use snapmend_tests::image_builder::{many_files_image, rich_image};
use snapmend_tests::node_helper_cli::{Content, PristineImage, Scenario, corruption, empty_dir};

const RICH: &str = "snapmend.test/rich:1";
const MANY: &str = "snapmend.test/many:1";
const FAULT_ENV: &str = "SNAPMEND_FAULT_AFTER_RENAMES";

/// Verify still works after a crash, and no entry that was right before is wrong now.
fn assert_no_worse(
    s: &Scenario,
    pristine: &PristineImage,
    damaged: &BTreeSet<String>,
    label: &str,
) {
    let run = s.helper.verify(&pristine.name, Content::Metadata).unwrap();
    assert!(
        matches!(run.code, Some(0) | Some(1)),
        "{label}: verify after a crash must still work\n{run}"
    );
    let now = pristine.damaged_entries().unwrap();
    let worse: Vec<&String> = now.difference(damaged).collect();
    assert!(
        worse.is_empty(),
        "{label}: the crash damaged entries that were right: {worse:?}"
    );
}

/// Rerun the repair, then: Healthy, equal to the pristine trees, root unchanged elsewhere.
fn rerun_heals(
    s: &Scenario,
    pristine: &PristineImage,
    skip: &[PathBuf],
    root_before: &snapmend_tests::fs_tree::TreeSnapshot,
    label: &str,
) {
    let run = s.helper.repair(&pristine.name).unwrap();
    assert_eq!(run.code, Some(0), "{label}: rerun\n{run}");
    assert!(
        matches!(
            run.report().unwrap().outcome,
            Outcome::Repaired | Outcome::Healthy
        ),
        "{label}\n{run}"
    );
    s.assert_healthy(&pristine.name);
    let diffs = pristine.differences_now().unwrap();
    assert!(
        diffs.is_empty(),
        "{label}: differs from containerd's unpack:\n{}",
        diffs.join("\n")
    );
    let root_after = s.capture_root_except(skip).unwrap();
    let outside = root_after.differences_from(root_before, &root_before.all_paths());
    assert!(
        outside.is_empty(),
        "{label}: changed outside the damaged snapshots:\n{}",
        outside.join("\n")
    );
    let leftovers = pristine.leftovers().unwrap();
    assert!(
        leftovers.is_empty(),
        "{label}: staging left behind: {leftovers:?}"
    );
}

/// Damages all three layers of the rich image: base emptied, a whiteout and the opaque marker
/// gone in the middle one, the top one's `fs` deleted.
fn damage_rich(pristine: &PristineImage) {
    empty_dir(&pristine.layers[0].fs).unwrap();
    (corruption("deleted_whiteout").apply)(&pristine.layers[1].fs).unwrap();
    (corruption("lost_opaque_xattr").apply)(&pristine.layers[1].fs).unwrap();
    (corruption("same_size_content_change").apply)(&pristine.layers[1].fs).unwrap();
    if pristine.layers[2].fs.exists() {
        std::fs::remove_dir_all(&pristine.layers[2].fs).unwrap();
    }
}

#[test]
fn abort_after_each_rename_then_rerun_heals() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    let skip: Vec<PathBuf> = (0..3).map(|i| pristine.snapshot_dir(i)).collect();
    let root_before = s.capture_root_except(&skip).unwrap();
    let mut n = 1u64;
    let mut aborted_runs = 0;
    loop {
        damage_rich(&pristine);
        let damaged = pristine.damaged_entries().unwrap();
        let out = s
            .helper
            .command("repair", &["--image", RICH, "--json"])
            .env(FAULT_ENV, n.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            assert!(
                n > 1,
                "the helper ignored {FAULT_ENV}: build it with \
                 `--features snapmend-node-helper/fault-injection` (`make test` does)"
            );
            // n is past the last rename: the repair completed.
            break;
        }
        assert_eq!(
            out.status.code(),
            None,
            "the fault knob aborts the process (n={n}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        aborted_runs += 1;
        assert_no_worse(&s, &pristine, &damaged, &format!("abort after rename {n}"));
        rerun_heals(
            &s,
            &pristine,
            &skip,
            &root_before,
            &format!("abort after rename {n}"),
        );
        n += if n < 12 { 1 } else { 4 };
        assert!(n < 2000, "the repair never completed");
    }
    assert!(
        aborted_runs >= 10,
        "too few fault points exercised: {aborted_runs}"
    );
    rerun_heals(
        &s,
        &pristine,
        &skip,
        &root_before,
        "after the last fault point",
    );
}

#[test]
fn sigkill_at_spread_instants_then_rerun_heals() {
    let s = Scenario::start(&[many_files_image(MANY, 3000).unwrap()]).unwrap();
    let pristine = s.capture_pristine(MANY).unwrap();
    let skip = vec![pristine.snapshot_dir(0)];
    let root_before = s.capture_root_except(&skip).unwrap();
    // How long a full rebuild of the base layer takes, uninterrupted.
    empty_dir(&pristine.layers[0].fs).unwrap();
    let started = Instant::now();
    rerun_heals(&s, &pristine, &skip, &root_before, "uninterrupted");
    let full = started.elapsed();
    for k in 1..=8u32 {
        empty_dir(&pristine.layers[0].fs).unwrap();
        let damaged = pristine.damaged_entries().unwrap();
        let mut child = s
            .helper
            .command("repair", &["--image", MANY, "--json"])
            .spawn()
            .unwrap();
        std::thread::sleep(full * k / 9);
        let _ = child.kill();
        let _ = child.wait();
        assert_no_worse(&s, &pristine, &damaged, &format!("SIGKILL at {k}/9"));
        rerun_heals(
            &s,
            &pristine,
            &skip,
            &root_before,
            &format!("SIGKILL at {k}/9 of {full:?}"),
        );
    }
    assert!(
        full > Duration::from_millis(1),
        "the repair must take measurable time"
    );
}

#[test]
fn two_repairs_at_once_leave_one_correct_result() {
    let s = Scenario::start(&[many_files_image(MANY, 1500).unwrap()]).unwrap();
    let pristine = s.capture_pristine(MANY).unwrap();
    empty_dir(&pristine.layers[0].fs).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            s.helper
                .command("repair", &["--image", MANY, "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The loser could not run: exit 2 (the contract's "could not run"), never 1.
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{:?}: {stdout}\n{stderr}",
            out.status
        );
        if out.status.code() == Some(2) {
            assert!(
                stdout.contains("another repair of this snapshot is running"),
                "{stdout}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        outputs.iter().any(|o| o.status.success()),
        "neither concurrent repair succeeded"
    );
    s.assert_healthy(MANY);
    let diffs = pristine.differences_now().unwrap();
    assert!(
        diffs.is_empty(),
        "after two concurrent repairs:\n{}",
        diffs.join("\n")
    );
}
