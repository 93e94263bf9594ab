//! Hostile layers (issue 3): names with `..`, absolute names, writes through symlinks, a name
//! that is first a symlink then a file, hardlinks that point out of the root, device nodes and
//! setuid files. containerd accepts these layers (clamping everything into the snapshot); the
//! repaired tree must equal containerd's own unpack and nothing may be written outside the
//! snapshot. Truncated gzip and a blob that does not match its digest must be refused.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use snapmend_crds::{BlobState, LayerState, Outcome};
use snapmend_tests::fs_tree::capture_tree;
use snapmend_tests::image_builder::{ImageSpec, LayerSpec, ManifestStyle, TarEntry, pause_binary};
use snapmend_tests::node_helper_cli::{Content, Scenario, empty_dir};

const IMAGE: &str = "snapmend.test/hostile:1";

/// A benign base layer and the hostile entries on top (non-base: overlay semantics), or the
/// hostile entries as the base layer itself.
fn hostile_image(entries: Vec<TarEntry>, as_base: bool) -> ImageSpec {
    let pause = TarEntry::file("pause", pause_binary().unwrap()).mode(0o755);
    let layers = if as_base {
        let mut all = vec![pause];
        all.extend(entries);
        vec![LayerSpec::gzip(all)]
    } else {
        vec![
            LayerSpec::gzip(vec![
                pause,
                TarEntry::dir("etc/"),
                TarEntry::file("etc/passwd", "root:x:0:0::/:/pause\n"),
            ]),
            LayerSpec::gzip(entries),
        ]
    };
    ImageSpec::new(IMAGE, ManifestStyle::Oci, layers)
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Imports the image, checks that verify calls it Healthy, empties every snapshot, repairs,
/// and compares with containerd's unpack; `outside` must stay empty and the containerd root
/// unchanged outside the image's snapshots.
fn repaired_equals_containerd(image: ImageSpec, outside: &Path) {
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let s = Scenario::start(&[image]).unwrap();
    assert!(
        dir_is_empty(outside),
        "containerd itself wrote outside its root"
    );
    s.assert_healthy(IMAGE);
    let pristine = s.capture_pristine(IMAGE).unwrap();
    let skip: Vec<PathBuf> = (0..pristine.layers.len())
        .map(|i| pristine.snapshot_dir(i))
        .collect();
    let root_before = s.capture_root_except(&skip).unwrap();
    for layer in &pristine.layers {
        empty_dir(&layer.fs).unwrap();
    }
    let run = s.helper.repair(IMAGE).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Repaired, "{run}");
    let diffs = pristine.differences_now().unwrap();
    assert!(
        diffs.is_empty(),
        "repaired tree differs from containerd's unpack:\n{}",
        diffs.join("\n")
    );
    s.assert_healthy(IMAGE);
    assert!(
        dir_is_empty(outside),
        "the repair wrote outside the snapshot: {:?}",
        std::fs::read_dir(outside).unwrap().collect::<Vec<_>>()
    );
    let root_after = s.capture_root_except(&skip).unwrap();
    let changed = root_after.differences_from(&root_before, &root_before.all_paths());
    assert!(
        changed.is_empty(),
        "changed outside the snapshots:\n{}",
        changed.join("\n")
    );
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links,
        "a hardlink reached the host"
    );
}

fn dotdot_entries() -> Vec<TarEntry> {
    vec![
        TarEntry::file("../escape-dotdot", "x\n"),
        TarEntry::file("a/../../b-escape", "x\n"),
        TarEntry::dir("./../../../c/"),
        TarEntry::file("./../../../c/d", "x\n"),
    ]
}

fn absolute_entries() -> Vec<TarEntry> {
    vec![
        TarEntry::file("/abs-file", "x\n"),
        TarEntry::dir("/absdir/"),
        TarEntry::file("/absdir/x", "x\n").mode(0o600),
        TarEntry::symlink("/abs-link", "/etc/passwd"),
    ]
}

fn symlink_write_entries(outside: &Path) -> Vec<TarEntry> {
    let abs = outside.to_string_lossy().into_owned();
    let rel = format!("{}{}", "../".repeat(20), abs.trim_start_matches('/'));
    vec![
        TarEntry::symlink("evil", &abs),
        TarEntry::file("evil/pwned", "through an absolute symlink\n"),
        TarEntry::symlink("rel", &rel),
        TarEntry::file("rel/pwned-rel", "through a relative symlink\n"),
        TarEntry::symlink("chain", "evil"),
        TarEntry::dir("chain/sub/"),
        TarEntry::file("chain/sub/pwned-chain", "through two symlinks\n"),
    ]
}

fn symlink_then_file_entries(outside: &Path) -> Vec<TarEntry> {
    let target = outside.join("target-x").to_string_lossy().into_owned();
    vec![
        TarEntry::symlink("x", &target),
        TarEntry::file("x", "the file replaces the symlink\n").mode(0o640),
        TarEntry::symlink("y", &target),
        TarEntry::dir("y/"),
        TarEntry::file("y/inside", "the dir replaced the symlink\n"),
    ]
}

fn hardlink_out_entries() -> Vec<TarEntry> {
    vec![
        TarEntry::dir("etc/"),
        TarEntry::file("etc/secret", "layer's own secret\n"),
        TarEntry::hardlink("hl-dotdot", "../../../../etc/secret"),
        TarEntry::hardlink("hl-abs", "/etc/secret"),
    ]
}

fn device_entries() -> Vec<TarEntry> {
    vec![
        TarEntry::dir("dev/"),
        TarEntry::block_device("dev/sda", 8, 0),
        TarEntry::char_device("dev/mem", 1, 1)
            .mode(0o640)
            .owner(0, 15),
        TarEntry::char_device("dev/kmsg", 1, 11).mode(0o4666),
        TarEntry::fifo("dev/fifo").mode(0o2620),
        TarEntry::dir("bin/"),
        TarEntry::file("bin/suid-root", "suid\n").mode(0o6755),
        TarEntry::file("bin/suid-user", "suid\n")
            .mode(0o4750)
            .owner(1000, 1000),
        TarEntry::dir("sticky/").mode(0o1733),
    ]
}

macro_rules! hostile_case {
    ($name:ident, $entries:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn on_top_of_a_base() {
                let outside = tempfile::tempdir().unwrap();
                let entries: fn(&Path) -> Vec<TarEntry> = $entries;
                repaired_equals_containerd(
                    hostile_image(entries(outside.path()), false),
                    outside.path(),
                );
            }
            #[test]
            fn as_the_base_layer() {
                let outside = tempfile::tempdir().unwrap();
                let entries: fn(&Path) -> Vec<TarEntry> = $entries;
                repaired_equals_containerd(
                    hostile_image(entries(outside.path()), true),
                    outside.path(),
                );
            }
        }
    };
}

hostile_case!(dotdot_names, |_| dotdot_entries());
hostile_case!(absolute_names, |_| absolute_entries());
hostile_case!(write_through_symlink, symlink_write_entries);
hostile_case!(symlink_then_file, symlink_then_file_entries);
hostile_case!(hardlink_out_of_root, |_| hardlink_out_entries());
hostile_case!(devices_and_setuid, |_| device_entries());

/// Replaces a layer's blob, deletes a file from its snapshot, and checks that repair refuses
/// with a reason and writes nothing (snapshots, containerd root, `outside`).
fn refused_with_nothing_written(tamper: impl FnOnce(&Scenario, &Path), expect_blob: &[BlobState]) {
    let outside = tempfile::tempdir().unwrap();
    let s =
        Scenario::start(&[hostile_image(symlink_write_entries(outside.path()), false)]).unwrap();
    let pristine = s.capture_pristine(IMAGE).unwrap();
    // The symlink itself (joining a path through it would follow it on the host).
    std::fs::remove_file(pristine.layers[1].fs.join("evil")).unwrap();
    let blob = s.fixture.blob_path(s.image(IMAGE).layers[1].digest());
    tamper(&s, &blob);
    let skip: Vec<PathBuf> = (0..2).map(|i| pristine.snapshot_dir(i)).collect();
    let root_before = s.capture_root_except(&skip).unwrap();
    let fs_before: Vec<_> = pristine
        .layers
        .iter()
        .map(|l| capture_tree(&l.fs).unwrap())
        .collect();

    let verify = s.helper.verify(IMAGE, Content::Full).unwrap();
    assert_eq!(verify.code, Some(1), "{verify}");
    let blob_state = verify.report().unwrap().layers[1].blob;
    assert!(
        expect_blob.contains(&blob_state),
        "blob {blob_state:?}\n{verify}"
    );

    let run = s.helper.repair(IMAGE).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    let report = run.report().unwrap();
    assert_eq!(report.outcome, Outcome::Unrepairable, "{run}");
    assert_eq!(report.layers[1].state, LayerState::Unrepairable, "{run}");
    assert!(
        report.message.as_deref().is_some_and(|m| !m.is_empty()),
        "a refusal says why\n{run}"
    );

    let mut diffs = s
        .capture_root_except(&skip)
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
        "a refused repair wrote:\n{}",
        diffs.join("\n")
    );
    assert!(dir_is_empty(outside.path()));
}

#[test]
fn truncated_gzip_is_refused() {
    refused_with_nothing_written(
        |_, blob| {
            let len = std::fs::metadata(blob).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(blob)
                .unwrap()
                .set_len(len - 20)
                .unwrap();
        },
        &[BlobState::DigestMismatch, BlobState::Unreadable],
    );
}

#[test]
fn blob_with_a_wrong_digest_is_refused() {
    // A valid gzip layer, but not the one the digest names: one that would write a file.
    refused_with_nothing_written(
        |_, blob| {
            let other = snapmend_tests::image_builder::build_layer(&LayerSpec::gzip(vec![
                TarEntry::file("evil/pwned", "from the wrong blob\n"),
                TarEntry::file("planted", "x\n"),
            ]))
            .unwrap();
            std::fs::write(blob, other.blob).unwrap();
        },
        &[BlobState::DigestMismatch],
    );
}
