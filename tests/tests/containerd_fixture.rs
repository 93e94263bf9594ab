//! The private containerd fixture and the test images, checked on their own (no snapmend code):
//! every test image imports and unpacks, containers start, parallel fixtures do not collide,
//! and dropping a fixture leaves nothing behind.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use snapmend_tests::containerd::{ContainerdFixture, RunOutcome, mounts_beneath};
use snapmend_tests::image_builder::{
    Compression, compressed_image, index_image, pause_image, rich_image, shared_base_images,
};

/// Committed snapshot dirs (`snapshots/<id>/fs`) that hold `rel`.
fn snapshot_fs_holding(fixture: &ContainerdFixture, rel: &str) -> Vec<PathBuf> {
    let snapshots = fixture.snapshotter_root().join("snapshots");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path().join("fs"))
        .filter(|fs| fs.join(rel).symlink_metadata().is_ok())
        .collect();
    out.sort();
    out
}

#[test]
fn pause_image_imports_and_a_container_runs() {
    let fixture = ContainerdFixture::start().unwrap();
    let built = fixture
        .import_images(&[pause_image("snapmend.test/pause:3.10").unwrap()])
        .unwrap();
    assert!(
        fixture
            .image_names()
            .unwrap()
            .contains(&"snapmend.test/pause:3.10".to_string())
    );
    assert_eq!(built[0].layers.len(), 1);
    assert!(fixture.blob_path(built[0].layers[0].digest()).is_file());
    assert_eq!(
        fixture
            .run_container("snapmend.test/pause:3.10", "p1", &[])
            .unwrap(),
        RunOutcome::Started
    );
    assert_eq!(
        fixture.task_status("p1").unwrap().as_deref(),
        Some("RUNNING")
    );
    fixture.remove_container("p1").unwrap();
    assert_eq!(fixture.task_status("p1").unwrap(), None);
}

#[test]
fn every_test_image_imports_and_unpacks() {
    let fixture = ContainerdFixture::start().unwrap();
    let [a, b] =
        shared_base_images("snapmend.test/shared-a:1", "snapmend.test/shared-b:1").unwrap();
    let images = vec![
        rich_image("snapmend.test/rich:1").unwrap(),
        index_image("snapmend.test/index:1").unwrap(),
        compressed_image("snapmend.test/gzip:1", Compression::Gzip).unwrap(),
        compressed_image("snapmend.test/zstd:1", Compression::Zstd).unwrap(),
        compressed_image("snapmend.test/plain:1", Compression::None).unwrap(),
        a,
        b,
    ];
    let built = fixture.import_images(&images).unwrap();
    let names = fixture.image_names().unwrap();
    for image in &built {
        assert!(
            names.contains(&image.name),
            "{} not in {names:?}",
            image.name
        );
        // Unpacked: the committed snapshot of the top layer exists.
        let top = &image.layers.last().unwrap().chain_id;
        let info = fixture.ctr(&["snapshots", "info", top]).unwrap();
        assert!(info.contains("Committed"), "{}: {info}", image.name);
    }
    // The shared base layer is one snapshot.
    assert_eq!(built[5].layers[0].chain_id, built[6].layers[0].chain_id);
    assert_eq!(snapshot_fs_holding(&fixture, "shared").len(), 1);
    // The index unpacked this host's platform only.
    let platform_files = snapshot_fs_holding(&fixture, "platform");
    assert_eq!(platform_files.len(), 1);
    assert_eq!(
        std::fs::read_to_string(platform_files[0].join("platform")).unwrap(),
        "host\n"
    );
    // The rich image runs (its entrypoint is /pause).
    assert_eq!(
        fixture
            .run_container("snapmend.test/rich:1", "rich", &[])
            .unwrap(),
        RunOutcome::Started
    );
}

#[test]
fn rich_image_unpacks_with_overlay_semantics() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let fixture = ContainerdFixture::start().unwrap();
    fixture
        .import_images(&[rich_image("snapmend.test/rich:1").unwrap()])
        .unwrap();
    let base = snapshot_fs_holding(&fixture, "pause").pop().unwrap();
    let middle = snapshot_fs_holding(&fixture, "var/cache/new")
        .pop()
        .unwrap();
    // Non-base layer: whiteout = char 0:0, opaque dir = trusted.overlay.opaque.
    let wh = std::fs::symlink_metadata(middle.join("etc/obsolete")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let out = std::process::Command::new("getfattr")
        .args([
            "--absolute-names",
            "-n",
            "trusted.overlay.opaque",
            "--only-values",
        ])
        .arg(middle.join("var/cache"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"y");
    // Hardlink header mode applies to the shared inode.
    let tool = std::fs::metadata(base.join("usr/bin/tool")).unwrap();
    let link = std::fs::metadata(base.join("usr/bin/tool-hardlink")).unwrap();
    assert_eq!((tool.ino(), tool.mode() & 0o7777), (link.ino(), 0o700));
    assert_eq!(
        std::fs::metadata(base.join("usr/bin/su-tool"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::metadata(base.join("home/app/data")).unwrap().uid(),
        1000
    );
}

#[test]
fn deleting_pause_makes_runc_fail_like_the_incident() {
    let fixture = ContainerdFixture::start().unwrap();
    fixture
        .import_images(&[pause_image("snapmend.test/pause:3.10").unwrap()])
        .unwrap();
    let fs = snapshot_fs_holding(&fixture, "pause").pop().unwrap();
    std::fs::remove_file(fs.join("pause")).unwrap();
    let outcome = fixture
        .run_container("snapmend.test/pause:3.10", "p1", &[])
        .unwrap();
    assert!(outcome.is_missing_entrypoint(), "{outcome:?}");
}

#[test]
fn parallel_fixtures_do_not_collide_and_clean_up() {
    let fixtures: Vec<ContainerdFixture> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| ContainerdFixture::start().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let dirs: Vec<PathBuf> = fixtures.iter().map(|f| f.dir().to_path_buf()).collect();
    let pids: Vec<u32> = fixtures.iter().map(|f| f.pid()).collect();
    std::thread::scope(|s| {
        for f in &fixtures {
            s.spawn(move || {
                f.import_images(&[pause_image("snapmend.test/pause:3.10").unwrap()])
                    .unwrap();
                // Same container id in both fixtures.
                assert_eq!(
                    f.run_container("snapmend.test/pause:3.10", "same-id", &[])
                        .unwrap(),
                    RunOutcome::Started
                );
            });
        }
    });
    for f in &fixtures {
        assert_eq!(
            f.task_status("same-id").unwrap().as_deref(),
            Some("RUNNING")
        );
    }
    drop(fixtures);
    for (dir, pid) in dirs.iter().zip(pids) {
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "containerd {pid} still running"
        );
        assert!(mounts_beneath(dir).is_empty());
        // No shim or container of that fixture survives.
        let survivors = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.unwrap().path().join("cmdline")).ok())
            .filter(|c| {
                c.windows(dir.as_os_str().len())
                    .any(|w| w == dir.as_os_str().as_encoded_bytes())
            })
            .count();
        assert_eq!(survivors, 0);
    }
}
