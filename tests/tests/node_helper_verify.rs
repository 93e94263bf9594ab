//! `snapmend-node-helper verify` against a real containerd 1.6 (issue 2): no false positives on
//! any freshly imported image, every corruption found at the right path with the right kind,
//! the incident reproduced for real, and bad input handled without panics.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use snapmend_crds::{BlobState, FindingKind, LayerState, Outcome};
use snapmend_tests::containerd::RunOutcome;
use snapmend_tests::image_builder::{
    Compression, ImageSpec, compressed_image, index_image, pause_image, rich_image,
    shared_base_images,
};
use snapmend_tests::node_helper_cli::{
    CaseImage, Content, Scenario, corruption, flip_blob_byte, node_helper_binary,
};

const PAUSE: &str = "snapmend.test/pause:3.10";
const RICH: &str = "snapmend.test/rich:1";

fn all_images() -> Vec<ImageSpec> {
    let [a, b] =
        shared_base_images("snapmend.test/shared-a:1", "snapmend.test/shared-b:1").unwrap();
    vec![
        pause_image(PAUSE).unwrap(),
        rich_image(RICH).unwrap(),
        index_image("snapmend.test/index:1").unwrap(),
        compressed_image("snapmend.test/gzip:1", Compression::Gzip).unwrap(),
        compressed_image("snapmend.test/zstd:1", Compression::Zstd).unwrap(),
        compressed_image("snapmend.test/plain:1", Compression::None).unwrap(),
        a,
        b,
    ]
}

#[test]
fn every_fresh_image_is_healthy_in_both_modes() {
    let s = Scenario::start(&all_images()).unwrap();
    for image in &s.images {
        for content in [Content::Full, Content::Metadata] {
            let run = s.helper.verify(&image.name, content).unwrap();
            assert_eq!(run.code, Some(0), "{run}");
            let report = run.report().unwrap();
            assert_eq!(report.outcome, Outcome::Healthy, "{run}");
            assert_eq!(report.image, image.name);
            assert_eq!(report.manifest_digest, image.manifest_digest, "{run}");
            assert_eq!(report.layers.len(), image.layers.len(), "{run}");
            for (got, want) in report.layers.iter().zip(&image.layers) {
                assert_eq!(
                    (got.digest.as_str(), got.diff_id.as_str()),
                    (want.digest(), want.diff_id()),
                    "{run}"
                );
                assert_eq!(got.chain_id, want.chain_id, "{run}");
                assert_eq!(got.state, LayerState::Healthy, "{run}");
                assert_eq!(got.findings_total, 0, "{run}");
                if content == Content::Full {
                    assert_eq!(got.blob, BlobState::Verified, "{run}");
                }
            }
        }
    }
    // The shared base layer is one snapshot for both images.
    let a = s.layer_fs("snapmend.test/shared-a:1").unwrap();
    let b = s.layer_fs("snapmend.test/shared-b:1").unwrap();
    assert_eq!(a[0], b[0]);
    assert_ne!(a[1], b[1]);
}

#[test]
fn sandbox_image_is_read_from_the_config() {
    let s = Scenario::start(&[pause_image(PAUSE).unwrap()]).unwrap();
    assert_eq!(s.fixture.sandbox_image(), PAUSE);
    let run = s
        .helper
        .run("verify", &["--sandbox-image", "--json"])
        .unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().image, PAUSE);
}

#[test]
fn human_summary_without_json() {
    let s = Scenario::start(&[pause_image(PAUSE).unwrap()]).unwrap();
    let fs = s.layer_fs(PAUSE).unwrap();
    std::fs::remove_file(fs[0].join("pause")).unwrap();
    let run = s.helper.run("verify", &["--image", PAUSE]).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&run.stdout).is_err(),
        "{run}"
    );
    assert!(run.stdout.contains("/pause"), "{run}");
}

#[test]
fn mounted_overlays_are_counted() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    assert_eq!(
        s.fixture.run_container(RICH, "c1", &[]).unwrap(),
        RunOutcome::Started
    );
    // The container's rootfs overlay (upper = its own snapshot, lowers = the 3 layers).
    let run = s.helper.verify(RICH, Content::Metadata).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Healthy);
    assert_eq!(report.mounts, 1, "{report:?}");
}

/// Damages one snapshot as the case says and checks the one finding, exit 1.
fn corruption_is_found(name: &str) {
    let case = corruption(name);
    let image = match case.image {
        CaseImage::Pause => pause_image(PAUSE).unwrap(),
        CaseImage::Rich => rich_image(RICH).unwrap(),
    };
    let image_name = image.name.clone();
    let s = Scenario::start(&[image]).unwrap();
    let fs = s.layer_fs(&image_name).unwrap();
    (case.apply)(&fs[case.layer]).unwrap();
    let run = s.helper.verify(&image_name, Content::Full).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Corrupted, "{run}");
    let findings = run.findings().unwrap();
    assert!(
        findings
            .iter()
            .any(|(l, p, k)| *l as usize == case.layer && p == case.path && *k == case.kind),
        "expected {:?} at {} in layer {}\n{run}",
        case.kind,
        case.path,
        case.layer
    );
    for (l, p, _) in &findings {
        assert!(
            *l as usize == case.layer && (p == case.path || case.also.contains(&p.as_str())),
            "unexpected finding at {p} (layer {l})\n{run}"
        );
    }
    for layer in &report.layers {
        let want = if layer.index as usize == case.layer {
            LayerState::Corrupted
        } else {
            LayerState::Healthy
        };
        assert_eq!(layer.state, want, "layer {}\n{run}", layer.index);
        assert_eq!(layer.blob, BlobState::Verified, "{run}");
    }
    // Metadata mode finds everything but a same-size content change.
    if case.kind != FindingKind::ContentMismatch {
        let meta = s.helper.verify(&image_name, Content::Metadata).unwrap();
        assert_eq!(meta.code, Some(1), "{meta}");
    }
}

macro_rules! corruption_tests {
    ($($name:ident),* $(,)?) => {
        mod found {
            $(#[test] fn $name() { super::corruption_is_found(stringify!($name)); })*
        }
    };
}

corruption_tests!(
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
fn deleted_fs_dir_is_snapshot_missing() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let fs = s.layer_fs(RICH).unwrap();
    std::fs::remove_dir_all(&fs[1]).unwrap();
    let run = s.helper.verify(RICH, Content::Full).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Corrupted, "{run}");
    let states: Vec<LayerState> = report.layers.iter().map(|l| l.state).collect();
    assert_eq!(
        states,
        vec![
            LayerState::Healthy,
            LayerState::SnapshotMissing,
            LayerState::Healthy
        ],
        "{run}"
    );
}

#[test]
fn corrupted_blob_is_digest_mismatch() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let digest = s.image(RICH).layers[2].digest().to_string();
    flip_blob_byte(&s.fixture.blob_path(&digest)).unwrap();
    let run = s.helper.verify(RICH, Content::Full).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Corrupted, "{run}");
    assert_eq!(report.layers[2].blob, BlobState::DigestMismatch, "{run}");
    assert_eq!(report.layers[0].blob, BlobState::Verified, "{run}");
}

#[test]
fn the_incident_for_real() {
    let s = Scenario::start(&[pause_image(PAUSE).unwrap()]).unwrap();
    assert_eq!(
        s.fixture.run_container(PAUSE, "before", &[]).unwrap(),
        RunOutcome::Started
    );
    let fs = s.layer_fs(PAUSE).unwrap();
    std::fs::remove_file(fs[0].join("pause")).unwrap();
    let outcome = s.fixture.run_container(PAUSE, "after", &[]).unwrap();
    assert!(outcome.is_missing_entrypoint(), "{outcome:?}");
    let run = s.helper.verify(PAUSE, Content::Full).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        run.findings().unwrap(),
        vec![(0, "/pause".to_string(), FindingKind::Missing)],
        "{run}"
    );
}

#[test]
fn unknown_image_exits_2_with_a_clear_message() {
    let s = Scenario::start(&[pause_image(PAUSE).unwrap()]).unwrap();
    let run = s
        .helper
        .verify("snapmend.test/no-such-image:1", Content::Full)
        .unwrap();
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("snapmend.test/no-such-image:1")
            || run.stdout.contains("snapmend.test/no-such-image:1"),
        "the message must name the image\n{run}"
    );
    assert!(!run.stderr.contains("panicked"), "{run}");
}

#[test]
fn truncated_and_garbage_blobs_are_findings_not_panics() {
    let s = Scenario::start(&[rich_image(RICH).unwrap()]).unwrap();
    let image = s.image(RICH).clone();
    // Layer 0 truncated to half, layer 1 replaced by garbage of the same size.
    let blob0 = s.fixture.blob_path(image.layers[0].digest());
    let len = std::fs::metadata(&blob0).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob0)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let blob1 = s.fixture.blob_path(image.layers[1].digest());
    let garbage: Vec<u8> = (0..std::fs::metadata(&blob1).unwrap().len())
        .map(|i| (i * 7 + 3) as u8)
        .collect();
    std::fs::write(&blob1, garbage).unwrap();
    for content in [Content::Full, Content::Metadata] {
        let run = s.helper.verify(RICH, content).unwrap();
        assert_eq!(run.code, Some(1), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
        let report = run.report().unwrap();
        for layer in &report.layers[..2] {
            assert!(
                matches!(
                    layer.blob,
                    BlobState::DigestMismatch | BlobState::Unreadable
                ),
                "layer {}: {:?}\n{run}",
                layer.index,
                layer.blob
            );
        }
        assert_eq!(report.layers[2].blob, BlobState::Verified, "{run}");
    }
}

#[test]
fn garbage_bolt_file_is_a_clear_error() {
    let binary = node_helper_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let meta = root.join("io.containerd.metadata.v1.bolt/meta.db");
    std::fs::create_dir_all(meta.parent().unwrap()).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("version = 2\nroot = {:?}\n", root.to_str().unwrap()),
    )
    .unwrap();
    for garbage in [
        vec![0u8; 0],
        b"not a bolt file at all".repeat(500),
        vec![0xed; 8192],
    ] {
        std::fs::write(&meta, &garbage).unwrap();
        let out = std::process::Command::new(&binary)
            .args(["verify", "--root"])
            .arg(&root)
            .arg("--config")
            .arg(&config)
            .args(["--image", PAUSE, "--json", "--toc-cache", "none"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains("meta.db") || stdout.contains("meta.db"),
            "the message must name the file\n{stdout}\n{stderr}"
        );
    }
}
