//! The TOC cache (issue 16 part 2) against a real containerd 1.6: a TOC is written by the
//! first verification against the blob and used by the next (`checkedWith: Toc`, no blob
//! read: the blobs are moved away); a damaged or foreign TOC is discarded and rebuilt, never
//! trusted; after `ctr content rm` of every blob the TOC still finds damage (metadata: a chmod;
//! full content: a same-size change), and the repair then still needs the blob.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use snapmend_crds::{BlobState, CheckedWith, FindingKind, LayerState, Outcome, Report, ScanReport};
use snapmend_tests::image_builder::rich_image;
use snapmend_tests::node_helper_cli::{HelperRun, Scenario};

const RICH: &str = "snapmend.test/rich:1";

struct Toc {
    s: Scenario,
    dir: tempfile::TempDir,
}

impl Toc {
    fn dir(&self) -> PathBuf {
        self.dir.path().join("toc")
    }

    fn run(&self, sub: &str, extra: &[&str]) -> HelperRun {
        let dir = self.dir();
        let mut args = vec!["--toc-cache", dir.to_str().unwrap(), "--fetch", "never"];
        args.extend_from_slice(extra);
        self.s.helper.run(sub, &args).unwrap()
    }

    fn verify(&self, content: &str) -> (HelperRun, Report) {
        let run = self.run("verify", &["--image", RICH, "--content", content, "--json"]);
        let report = run.report().unwrap_or_else(|e| panic!("{e}\n{run}"));
        (run, report)
    }

    fn toc_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn blobs(&self) -> Vec<PathBuf> {
        self.s
            .image(RICH)
            .layers
            .iter()
            .map(|l| self.s.fixture.blob_path(l.digest()))
            .collect()
    }
}

fn checked_with(r: &Report) -> Vec<(Option<CheckedWith>, BlobState)> {
    r.layers.iter().map(|l| (l.checked_with, l.blob)).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The TOC file of one layer, found by its diffID.
fn toc_of(t: &Toc, diff_id: &str) -> PathBuf {
    let hex = diff_id.trim_start_matches("sha256:");
    t.toc_files()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(hex))
        .unwrap_or_else(|| panic!("no TOC for {diff_id} in {:?}", t.toc_files()))
}

#[test]
fn a_toc_is_kept_reused_without_the_blob_rebuilt_when_damaged_and_finds_damage_after_content_rm() {
    let t = Toc {
        s: Scenario::start(&[rich_image(RICH).unwrap()]).unwrap(),
        dir: tempfile::tempdir().unwrap(),
    };
    let fs = t.s.layer_fs(RICH).unwrap();

    // 1. First verify: against the blobs, and a TOC per layer is kept (0600 in a 0700 dir).
    let (run, first) = t.verify("full");
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        checked_with(&first)
            .iter()
            .all(|c| *c == (Some(CheckedWith::Blob), BlobState::Verified)),
        "{run}"
    );
    let tocs = t.toc_files();
    assert_eq!(tocs.len(), 3, "{tocs:?}");
    assert_eq!(mode(&t.dir()), 0o700);
    assert!(tocs.iter().all(|p| mode(p) == 0o600), "{tocs:?}");

    // 2. Second verify with the blobs out of reach: every layer checked with its TOC.
    let aside = t.dir.path().join("blobs-aside");
    std::fs::create_dir(&aside).unwrap();
    for (i, b) in t.blobs().iter().enumerate() {
        std::fs::rename(b, aside.join(i.to_string())).unwrap();
    }
    for content in ["full", "metadata"] {
        let (run, again) = t.verify(content);
        assert_eq!(run.code, Some(0), "{content}: {run}");
        assert_eq!(again.outcome, Outcome::Healthy, "{run}");
        assert!(
            checked_with(&again)
                .iter()
                .all(|c| *c == (Some(CheckedWith::Toc), BlobState::NotChecked)),
            "{content}: {run}"
        );
    }
    for (i, b) in t.blobs().iter().enumerate() {
        std::fs::rename(aside.join(i.to_string()), b).unwrap();
    }

    // 3. A damaged TOC (one flipped byte) and a foreign one (layer 0's under layer 1's name)
    //    are discarded with a log line and rebuilt from the blob; the others are used.
    let base_toc = toc_of(&t, &first.layers[0].diff_id);
    let middle_toc = toc_of(&t, &first.layers[1].diff_id);
    let top_toc = toc_of(&t, &first.layers[2].diff_id);
    let mut bytes = std::fs::read(&base_toc).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&base_toc, &bytes).unwrap();
    std::fs::copy(&top_toc, &middle_toc).unwrap();
    let (run, rebuilt) = t.verify("metadata");
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        checked_with(&rebuilt),
        vec![
            (Some(CheckedWith::Blob), BlobState::Verified),
            (Some(CheckedWith::Blob), BlobState::Verified),
            (Some(CheckedWith::Toc), BlobState::NotChecked),
        ],
        "{run}"
    );
    assert_eq!(
        run.stderr.matches("TOC discarded").count(),
        2,
        "one clear line per rejected TOC:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    assert!(run.stderr.contains("made for diffID"), "{}", run.stderr);
    let (run, healed) = t.verify("metadata");
    assert!(
        checked_with(&healed)
            .iter()
            .all(|c| c.0 == Some(CheckedWith::Toc)),
        "rebuilt TOCs are used: {run}"
    );

    // 4. Every blob removed from the content store, as discard_unpacked_layers does.
    for l in &t.s.image(RICH).layers {
        t.s.fixture.ctr(&["content", "rm", l.digest()]).unwrap();
    }
    t.s.fixture.settle().unwrap();
    assert!(t.blobs().iter().all(|b| !b.exists()));

    // A chmod: the metadata check (lstat only) finds it.
    let hostname = fs[0].join("etc/hostname");
    std::fs::set_permissions(&hostname, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A same-size content change: only the full check (hashing the file) finds it.
    let passwd = fs[0].join("etc/passwd");
    let mut text = std::fs::read(&passwd).unwrap();
    text[0] = b'R';
    std::fs::write(&passwd, &text).unwrap();

    let (run, meta) = t.verify("metadata");
    assert_eq!(run.code, Some(1), "{run}");
    let base = &meta.layers[0];
    assert_eq!(
        (base.checked_with, base.blob, base.state),
        (
            Some(CheckedWith::Toc),
            BlobState::NotChecked,
            LayerState::Corrupted
        ),
        "{run}"
    );
    let kinds: Vec<(String, FindingKind)> = base
        .findings
        .iter()
        .map(|f| (f.path.clone(), f.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![("/etc/hostname".to_string(), FindingKind::ModeMismatch)],
        "{run}"
    );

    let (run, full) = t.verify("full");
    assert_eq!(run.code, Some(1), "{run}");
    let kinds: Vec<(String, FindingKind)> = full.layers[0]
        .findings
        .iter()
        .map(|f| (f.path.clone(), f.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("/etc/hostname".to_string(), FindingKind::ModeMismatch),
            ("/etc/passwd".to_string(), FindingKind::ContentMismatch),
        ],
        "{run}"
    );
    assert_eq!(full.layers[0].checked_with, Some(CheckedWith::Toc));

    // scan uses the TOCs too.
    let scanned = t.run("scan", &["--json", "--content", "full"]);
    let scan: ScanReport = serde_json::from_str(&scanned.stdout)
        .unwrap_or_else(|e| panic!("not a ScanReport ({e}):\n{scanned}"));
    assert_eq!(scanned.code, Some(1), "{scanned}");
    let layers = &scan.images[0].layers;
    assert!(
        layers
            .iter()
            .all(|l| l.checked_with == Some(CheckedWith::Toc)),
        "{scanned}"
    );
    assert_eq!(layers[0].findings_total, 2, "{scanned}");

    // The repair needs the blob: without one (and no registry) it writes nothing.
    let repair = t.run("repair", &["--image", RICH, "--json"]);
    let r = repair.report().unwrap();
    assert_ne!(r.outcome, Outcome::Repaired, "{repair}");
    assert_eq!(r.layers[0].blob, BlobState::Missing, "{repair}");
    assert_eq!(mode(&hostname), 0o600, "nothing written: {repair}");
    // Healthy layers were settled from their TOCs, without the blob.
    assert_eq!(r.layers[2].checked_with, Some(CheckedWith::Toc), "{repair}");
    assert_eq!(r.layers[2].state, LayerState::Healthy, "{repair}");
}
