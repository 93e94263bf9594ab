//! First do no harm (issue 12): snapshot metadata that disagrees with the image's layer order
//! is an `Error` for verify and repair with nothing written; oversized inputs fail fast with
//! exit 2; a repair that cannot take the snapshot's lock exits 2; leftover staging is reported
//! by verify and removed by repair.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use snapmend_crds::{Outcome, Report};
use snapmend_tests::fs_tree::capture_tree;
use snapmend_tests::image_builder::rich_image;
use snapmend_tests::node_helper_cli::{HelperRun, Scenario, node_helper_binary};

const RICH: &str = "snapmend.test/rich:1";

/// Every place in `bytes` where `needle` starts.
fn find_all(bytes: &[u8], needle: &[u8]) -> Vec<usize> {
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// The snapshotter's record of the snapshot whose parent is layer `below`'s snapshot: the
/// offsets of `parent<backend key of below>` (bolt keeps stale copies in free pages, so every
/// copy is edited) and that backend key.
fn parent_records(db: &[u8], report: &Report, below: usize) -> (Vec<usize>, Vec<u8>) {
    let chain = report.layers[below].chain_id.as_bytes();
    let mut found = Vec::new();
    let mut key = Vec::new();
    for at in find_all(db, b"parentk8s.io/") {
        let value = &db[at + b"parent".len()..];
        let digits = value[b"k8s.io/".len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let rest = &value[b"k8s.io/".len() + digits..];
        if digits > 0 && rest.first() == Some(&b'/') && rest[1..].starts_with(chain) {
            found.push(at);
            key = value[..b"k8s.io/".len() + digits + 1 + chain.len()].to_vec();
        }
    }
    assert!(
        !found.is_empty(),
        "no record with parent layer {below} in the snapshotter db"
    );
    (found, key)
}

fn snapshotter_db(s: &Scenario) -> PathBuf {
    s.fixture
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/metadata.db")
}

/// verify and repair both refuse with exit 2, a message naming the snapshot and both
/// parents, and leave the whole containerd root as it was.
fn both_refuse(s: &Scenario, expected_in_message: &[&str], case: &str) {
    let before = capture_tree(&s.fixture.root()).unwrap();
    for run in [
        s.helper
            .run("verify", &["--image", RICH, "--json"])
            .unwrap(),
        s.helper.repair(RICH).unwrap(),
    ] {
        assert_eq!(run.code, Some(2), "{case}: {run}");
        let report = run.report().unwrap();
        assert_eq!(report.outcome, Outcome::Error, "{case}: {run}");
        let message = report.message.unwrap_or_default();
        for want in expected_in_message {
            assert!(message.contains(want), "{case}: {want:?} not in {message}");
        }
        assert!(message.contains("wrote nothing"), "{case}: {message}");
    }
    let after = capture_tree(&s.fixture.root()).unwrap();
    let diffs = after.differences_from(&before, &before.all_paths());
    assert!(
        diffs.is_empty(),
        "{case}: the helper wrote:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn a_snapshot_record_that_lost_or_changed_its_parent_is_an_error_and_nothing_is_written() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let healthy = s
        .helper
        .run("verify", &["--image", RICH, "--json"])
        .unwrap();
    assert_eq!(healthy.code, Some(0), "{healthy}");
    let report = healthy.report().unwrap();
    // Damage an upper layer too: treated as a base layer, its whiteouts would be "extras".
    let fs2 = PathBuf::from(report.layers[2].snapshot_path.clone().unwrap());
    std::fs::remove_file(fs2.join("newdir/file")).unwrap();
    let db_path = snapshotter_db(&s);
    let pristine_db = std::fs::read(&db_path).unwrap();
    let snap1 = report.layers[1].snapshot_id.clone().unwrap();
    let snap2 = report.layers[2].snapshot_id.clone().unwrap();

    // The parent key of layer 1's record renamed: the record has no parent at all.
    let (at, key0) = parent_records(&pristine_db, &report, 0);
    let mut db = pristine_db.clone();
    for &i in &at {
        db[i + 5] = b'X';
    }
    std::fs::write(&db_path, &db).unwrap();
    let key0_text = String::from_utf8(key0.clone()).unwrap();
    both_refuse(
        &s,
        &[
            &format!("snapshot {snap1} "),
            "records parent none",
            &format!("needs {key0_text:?}"),
        ],
        "parent key renamed",
    );

    // The parent value made invalid UTF-8.
    let mut db = pristine_db.clone();
    for &i in &at {
        db[i + b"parent".len()] = 0xff;
    }
    std::fs::write(&db_path, &db).unwrap();
    both_refuse(
        &s,
        &[&format!("snapshot {snap1} "), "not UTF-8"],
        "parent value not UTF-8",
    );

    // Layer 2's parent pointing at layer 0 instead of layer 1 (same length: ids 1..3).
    let (at2, key1) = parent_records(&pristine_db, &report, 1);
    assert_eq!(key1.len(), key0.len(), "backend keys of equal length");
    let mut db = pristine_db.clone();
    for &i in &at2 {
        let v = i + b"parent".len();
        db[v..v + key0.len()].copy_from_slice(&key0);
    }
    std::fs::write(&db_path, &db).unwrap();
    let key1_text = String::from_utf8(key1).unwrap();
    both_refuse(
        &s,
        &[
            &format!("snapshot {snap2} "),
            &format!("records parent {key0_text:?}"),
            &format!("needs {key1_text:?}"),
        ],
        "parent points at the wrong layer",
    );

    // With the database as containerd wrote it, the same store verifies and repairs.
    std::fs::write(&db_path, &pristine_db).unwrap();
    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Repaired, "{run}");
    s.assert_healthy(RICH);
}

fn run_binary(args: &[&str]) -> (HelperRun, Duration) {
    let binary = node_helper_binary().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(&binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let run = HelperRun {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, started.elapsed())
}

#[test]
fn an_endless_or_huge_config_fails_fast_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let huge = dir.path().join("huge.toml");
    // Sparse: 8 GiB that cost no disk.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let root = root.to_str().unwrap();
    for config in [Path::new("/dev/zero"), huge.as_path()] {
        let config = config.to_str().unwrap();
        for sub in ["verify", "repair"] {
            let (run, took) = run_binary(&[
                sub,
                "--root",
                root,
                "--config",
                config,
                "--image",
                "x",
                "--json",
                "--toc-cache",
                "none",
            ]);
            assert_eq!(run.code, Some(2), "{run}");
            assert!(took < Duration::from_secs(1), "{config}: took {took:?}");
            let message = run.report().unwrap().message.unwrap_or_default();
            assert!(
                message.contains(config) && message.contains("larger than"),
                "{message}"
            );
        }
    }
}

#[test]
fn a_repair_that_cannot_take_the_snapshot_lock_exits_2_and_writes_nothing() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    std::fs::remove_file(pristine.layers[0].fs.join("pause")).unwrap();
    let dir = pristine.snapshot_dir(0);
    // What another repair holds: an exclusive flock on the snapshot directory.
    let held = std::fs::File::open(&dir).unwrap();
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let before = capture_tree(&s.fixture.root()).unwrap();
    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(2), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Error, "{run}");
    assert!(
        report
            .message
            .unwrap_or_default()
            .contains("another repair of this snapshot is running"),
        "{run}"
    );
    let after = capture_tree(&s.fixture.root()).unwrap();
    let diffs = after.differences_from(&before, &before.all_paths());
    assert!(diffs.is_empty(), "the loser wrote:\n{}", diffs.join("\n"));
    drop(held);
    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
}

#[test]
fn verify_reports_leftover_staging_and_repair_removes_it() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let pristine = s.capture_pristine(RICH).unwrap();
    let staging = pristine.snapshot_dir(1).join("snapmend-staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("data-7"), vec![b'x'; 4096]).unwrap();

    let run = s
        .helper
        .run("verify", &["--image", RICH, "--json"])
        .unwrap();
    let report = run.report().unwrap();
    let left = report.layers[1]
        .leftover_staging
        .clone()
        .unwrap_or_default();
    assert!(
        left.contains(staging.to_str().unwrap()) && left.contains("4096 bytes"),
        "{run}"
    );
    assert!(
        report
            .message
            .unwrap_or_default()
            .contains("interrupted repair left"),
        "{run}"
    );
    let human = s.helper.run("verify", &["--image", RICH]).unwrap();
    assert!(human.stdout.contains("leftover staging"), "{human}");

    let run = s.helper.repair(RICH).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert!(!staging.exists(), "repair left {}", staging.display());
    let again = s
        .helper
        .run("verify", &["--image", RICH, "--json"])
        .unwrap();
    assert!(
        again
            .report()
            .unwrap()
            .layers
            .iter()
            .all(|l| l.leftover_staging.is_none()),
        "{again}"
    );
}
