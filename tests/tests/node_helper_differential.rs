//! Differential test of `snapmend-node-helper` against containerd 1.6's own unpack: seeded
//! random images (image_builder::random_image) are imported into one private containerd,
//! their snapshots captured, verified fresh (must be Healthy), damaged (every layer emptied,
//! or random deletions, mode/owner/content/xattr changes, extra files and dirs replaced by
//! symlinks), repaired, and compared entry by entry with the capture.
//! Reproduce one seed with `SNAPMEND_DIFF_SEEDS=7 cargo test -p snapmend-tests --test
//! node_helper_differential -- --nocapture`.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use snapmend_crds::Outcome;
use snapmend_tests::containerd::ContainerdFixture;
use snapmend_tests::fs_tree::set_xattr;
use snapmend_tests::fs_tree::{NodeKind, clean_tar_name};
use snapmend_tests::image_builder::random_layers::{
    Coverage, Features, SplitMix64, random_image_with,
};
use snapmend_tests::image_builder::{EntryBody, ImageSpec, LayerSpec, ManifestStyle, TarEntry};
use snapmend_tests::node_helper_cli::{
    Content, PristineImage, Scenario, empty_dir, node_helper_binary,
};

/// Seeds run by default: 0..32 (every entry sort of the generator shows up in 0..16, see
/// random_layers' unit tests), plus 56 and 68, whose non-base layers have dirs made by
/// containerd's `mkparent` that take their attributes from a lower (inside a setgid dir copied
/// from a lower, or named by a dir header later so the lower's xattrs stay).
const DEFAULT_SEEDS: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 56, 68,
];

/// `SNAPMEND_DIFF_SEEDS` (comma list) or [`DEFAULT_SEEDS`].
fn seeds() -> Vec<u64> {
    match std::env::var("SNAPMEND_DIFF_SEEDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("SNAPMEND_DIFF_SEEDS: {s:?}: {e}"))
            })
            .collect(),
        _ => DEFAULT_SEEDS.to_vec(),
    }
}

fn image_name(seed: u64) -> String {
    format!("snapmend.test/random:{seed}")
}

/// `SNAPMEND_DIFF_DUMP=1`: prints every generated layer, header by header.
fn dump(seed: u64, spec: &ImageSpec) {
    if std::env::var_os("SNAPMEND_DIFF_DUMP").is_none() {
        return;
    }
    for (i, layer) in spec.layers.iter().enumerate() {
        eprintln!("seed {seed} layer {i} ({:?}):", layer.compression);
        for e in &layer.entries {
            let body = match &e.body {
                EntryBody::File(c) => format!("file {} bytes", c.len()),
                EntryBody::Symlink(t) => format!("symlink -> {}", String::from_utf8_lossy(t)),
                EntryBody::Hardlink(t) => format!("hardlink -> {}", String::from_utf8_lossy(t)),
                other => format!("{other:?}"),
            };
            eprintln!(
                "  {} {body} mode {:o} owner {}:{} mtime {} xattrs {:?}",
                String::from_utf8_lossy(&e.name),
                e.mode,
                e.uid,
                e.gid,
                e.mtime,
                e.xattrs.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
        }
    }
}

/// Starts the scenario; when the import fails, names the seeds containerd refuses.
fn start(specs: &[ImageSpec], seeds: &[u64]) -> Scenario {
    // A missing or stale helper binary is not containerd refusing an image.
    node_helper_binary().unwrap();
    match Scenario::start(specs) {
        Ok(s) => s,
        Err(all) => {
            let fixture = ContainerdFixture::start().unwrap();
            let refused: Vec<String> = specs
                .iter()
                .zip(seeds)
                .filter_map(|(spec, seed)| {
                    fixture
                        .import_images(std::slice::from_ref(spec))
                        .err()
                        .map(|e| format!("seed {seed}: {e}"))
                })
                .collect();
            panic!(
                "containerd refused a generated image (generator bug):\n{}\nwhole import: {all}",
                refused.join("\n")
            );
        }
    }
}

/// True when every ancestor of `path` below `fs` is a real directory (never a symlink), so
/// that damage cannot escape the snapshot.
fn inside(fs: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(fs) else {
        return false;
    };
    let mut cur = fs.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// One random change to one layer; returns what it did (None when the pick was unusable).
fn damage_once(rng: &mut SplitMix64, fs: &Path, paths: &[String]) -> Option<String> {
    let rel = rng.pick(paths).trim_start_matches('/').to_string();
    let path: PathBuf = fs.join(&rel);
    if rel.is_empty() || !inside(fs, &path) {
        return None;
    }
    let meta = std::fs::symlink_metadata(&path).ok()?;
    let ft = meta.file_type();
    let what = match rng.below(9) {
        0 => {
            if ft.is_dir() {
                std::fs::remove_dir_all(&path).ok()?;
            } else {
                std::fs::remove_file(&path).ok()?;
            }
            "deleted"
        }
        1 if !ft.is_symlink() => {
            let mode = rng.below(0o10000) as u32;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).ok()?;
            "chmod"
        }
        2 if ft.is_file() => {
            let mut bytes = std::fs::read(&path).ok()?;
            if bytes.is_empty() {
                bytes.push(b'!');
            } else {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 0x5a;
            }
            std::fs::write(&path, bytes).ok()?;
            "content changed"
        }
        3 if ft.is_file() && meta.len() > 0 => {
            let f = std::fs::OpenOptions::new().write(true).open(&path).ok()?;
            f.set_len(rng.below(meta.len())).ok()?;
            "truncated"
        }
        4 if ft.is_dir() => {
            std::fs::write(
                path.join(format!("intruder-{}", rng.below(100))),
                b"extra\n",
            )
            .ok()?;
            "extra file"
        }
        5 if ft.is_dir() => {
            std::fs::remove_dir_all(&path).ok()?;
            std::os::unix::fs::symlink("/snapmend-damage-nowhere", &path).ok()?;
            "dir replaced by a symlink"
        }
        6 => {
            let id = rng.below(70_000) as u32;
            std::os::unix::fs::lchown(&path, Some(id), Some(id)).ok()?;
            "chown"
        }
        7 if ft.is_file() || ft.is_dir() => {
            set_xattr(&path, "user.a", b"tampered").ok()?;
            "user xattr set"
        }
        8 if !ft.is_dir() => {
            std::fs::remove_file(&path).ok()?;
            std::fs::create_dir(&path).ok()?;
            "non-dir replaced by a dir"
        }
        _ => return None,
    };
    Some(format!("{what} /{rel}"))
}

/// Damages every layer as the seed says; returns a description.
fn damage(seed: u64, pristine: &PristineImage) -> Vec<String> {
    let mut rng = SplitMix64::new(seed ^ 0xDA3A_6E00_5EED);
    if rng.chance(30) {
        for layer in &pristine.layers {
            empty_dir(&layer.fs).unwrap();
        }
        return vec!["every layer emptied (full rebuild)".into()];
    }
    let mut done = Vec::new();
    for (i, layer) in pristine.layers.iter().enumerate() {
        let paths: Vec<String> = layer.tree.nodes.keys().cloned().collect();
        let wanted = 1 + rng.below(4);
        let mut attempts = 0;
        let mut applied = 0;
        while applied < wanted && attempts < 40 {
            attempts += 1;
            if let Some(d) = damage_once(&mut rng, &layer.fs, &paths) {
                done.push(format!("layer {i}: {d}"));
                applied += 1;
            }
        }
    }
    done
}

/// `tar_mtime_paths` takes every name of the tar; a path whose last header is of another
/// sort than what is there after the unpack (e.g. a file later replaced by an implicit parent
/// dir) has no mtime from the tar.
fn keep_tar_mtimes_only(pristine: &mut PristineImage, spec: &ImageSpec) {
    for (layer, layer_spec) in pristine.layers.iter_mut().zip(&spec.layers) {
        let mut last_is_dir = std::collections::BTreeMap::new();
        for e in &layer_spec.entries {
            last_is_dir.insert(clean_tar_name(&e.name), matches!(e.body, EntryBody::Dir));
        }
        let tree = &layer.tree;
        layer.mtime_paths.retain(|p| {
            let now_dir = tree.nodes.get(p).map(|n| n.kind == NodeKind::Dir);
            now_dir.is_some() && last_is_dir.get(p).copied() == now_dir
        });
    }
}

/// Everything that went wrong for one seed (empty when snapmend agrees with containerd).
fn check_seed(s: &Scenario, seed: u64, spec: &ImageSpec, coverage: &Coverage) -> Vec<String> {
    let name = image_name(seed);
    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(format!("seed {seed}: {what}"));
    let mut pristine = s.capture_pristine(&name).unwrap();
    keep_tar_mtimes_only(&mut pristine, spec);

    // Verify of the untouched import must agree with containerd's unpack.
    let fresh = s.helper.verify(&name, Content::Full).unwrap();
    let fresh_outcome = fresh.report().map(|r| r.outcome).ok();
    if fresh.code != Some(0) || fresh_outcome != Some(Outcome::Healthy) {
        // The human-readable report and debug logs say why (e.g. a blob the helper cannot read).
        let out = s
            .helper
            .command("verify", &["--image", &name, "--content", "full"])
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        fail(format!(
            "fresh import not Healthy\n{fresh}\n--- text report\n{}\n--- debug log\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let touched = pristine.differences_now().unwrap();
    if !touched.is_empty() {
        fail(format!(
            "verify changed the snapshots:\n{}",
            touched.join("\n")
        ));
    }

    let damage = damage(seed, &pristine);
    let damaged = !pristine.differences_now().unwrap().is_empty();
    eprintln!("seed {seed}: {coverage}; damage: {}", damage.join("; "));

    let run = s.helper.repair(&name).unwrap();
    let outcome = run.report().map(|r| r.outcome).ok();
    let outcome_ok = match outcome {
        Some(Outcome::Repaired) => true,
        Some(Outcome::Healthy) => !damaged,
        _ => false,
    };
    if run.code != Some(0) || !outcome_ok {
        fail(format!(
            "repair after [{}] did not end Repaired (damaged: {damaged})\n{run}",
            damage.join("; ")
        ));
    }
    let after = s.helper.verify(&name, Content::Full).unwrap();
    if after.code != Some(0) || after.report().map(|r| r.outcome).ok() != Some(Outcome::Healthy) {
        fail(format!("verify after repair not Healthy\n{after}"));
    }
    let diffs = pristine.differences_now().unwrap();
    if !diffs.is_empty() {
        fail(format!(
            "repaired tree differs from containerd's unpack after [{}]:\n{}",
            damage.join("; "),
            diffs.join("\n")
        ));
    }
    failures
}

fn run_seeds(features: Features) {
    run_seeds_of(&seeds(), features);
}

fn run_seeds_of(seeds: &[u64], features: Features) {
    let started = Instant::now();
    let seeds = seeds.to_vec();
    let generated: Vec<(ImageSpec, Coverage)> = seeds
        .iter()
        .map(|&seed| random_image_with(&image_name(seed), seed, features))
        .collect();
    for (&seed, (spec, _)) in seeds.iter().zip(&generated) {
        dump(seed, spec);
    }
    let specs: Vec<ImageSpec> = generated.iter().map(|(s, _)| s.clone()).collect();
    let s = start(&specs, &seeds);
    eprintln!("imported {} images in {:?}", seeds.len(), started.elapsed());
    let mut failures = Vec::new();
    for (&seed, (spec, coverage)) in seeds.iter().zip(&generated) {
        failures.extend(check_seed(&s, seed, spec, coverage));
    }
    eprintln!("{} seeds in {:?}", seeds.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with containerd's unpack (reproduce with SNAPMEND_DIFF_SEEDS=<seed>):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn repair_reproduces_containerd_unpack_of_random_images() {
    run_seeds(Features::ALL);
}

/// PAX records are length-prefixed and may hold any byte; containerd (Go's archive/tar)
/// reads an xattr value with a newline (e.g. a `security.capability` mask byte 0x0a). The
/// helper's first tar reader (tar-rs, which splits records at newlines) called such a blob
/// unreadable.
#[test]
fn xattr_value_with_a_newline_is_verified() {
    const NAME: &str = "snapmend.test/newline-xattr:1";
    let image = ImageSpec::new(
        NAME,
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(vec![
            TarEntry::file("f", b"x").xattr("user.bin", b"a\nb"),
        ])],
    );
    let s = Scenario::start(&[image]).unwrap();
    s.assert_healthy(NAME);
}

/// `s` written, hardlinked as `b`, then `s` written again: `b` keeps the first bytes under a
/// path no regular-file header names. containerd's unpack has it; a repair must restore it.
#[test]
fn hardlink_that_outlives_its_first_name_is_restored() {
    const NAME: &str = "snapmend.test/relinked:1";
    let image = ImageSpec::new(
        NAME,
        ManifestStyle::Oci,
        vec![LayerSpec::gzip(vec![
            TarEntry::file("s", b"first bytes"),
            TarEntry::hardlink("b", "s"),
            TarEntry::file("s", b"second bytes, longer"),
        ])],
    );
    let s = Scenario::start(&[image]).unwrap();
    let pristine = s.capture_pristine(NAME).unwrap();
    s.assert_healthy(NAME);
    // Same size and mtime, other bytes: verify must see it.
    let b = pristine.layers[0].fs.join("b");
    let mtime = std::fs::symlink_metadata(&b).unwrap().modified().unwrap();
    std::fs::write(&b, b"FIRST BYTES").unwrap();
    let f = std::fs::File::options().write(true).open(&b).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let run = s.helper.verify(NAME, Content::Full).unwrap();
    assert_eq!(run.code, Some(1), "{run}");
    empty_dir(&pristine.layers[0].fs).unwrap();
    let run = s.helper.repair(NAME).unwrap();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.report().unwrap().outcome, Outcome::Repaired, "{run}");
    s.assert_healthy(NAME);
    let diffs = pristine.differences_now().unwrap();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
