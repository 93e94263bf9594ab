//! The 50-image scan benchmark of issue 16: a node whose images share base layers, imported
//! into a private containerd, scanned by `snapmend-node-helper scan` once without TOCs (every
//! unique layer's blob inflated, its TOC kept) and once with them, side by side with GNU
//! `tar --compare` of the same unique layers. The scan's own `layerReads` prove that each
//! unique layer was read once however many images share it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use snapmend_crds::{LayerReads, Outcome, ScanReport};

use super::{machine_info, settle_disks};
use crate::TestError;
use crate::containerd::ContainerdFixture;
use crate::image_builder::{ImageSpec, LayerSpec, ManifestStyle, TarEntry};
use crate::node_helper_cli::NodeHelper;

#[derive(Clone, Debug)]
pub struct ScanBenchOptions {
    pub node_helper: PathBuf,
    pub images: usize,
    /// Rounds of (scan without TOCs, scan with TOCs, tar --compare of every unique layer).
    pub runs: usize,
    /// Where the TOC cache of the benchmark lives.
    pub work_dir: PathBuf,
}

/// Base layers ("distributions") and middle layers ("runtimes") the images share.
pub const BASES: usize = 5;
pub const MIDDLES: usize = 10;

/// Deterministic content: `len` bytes that gzip compresses about 3×, like binaries do.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Four random bytes, then twelve from a small alphabet.
        out.extend_from_slice(&x.to_le_bytes()[..4]);
        out.extend(std::iter::repeat_n(b'a' + (x % 7) as u8, 12));
    }
    out.truncate(len);
    out
}

/// One layer of `files` files (sizes 1..2×`avg` bytes) in directories of 100.
fn layer(name: &str, files: usize, avg: usize) -> LayerSpec {
    let mut entries = Vec::with_capacity(files + files / 100 + 2);
    entries.push(TarEntry::dir(format!("{name}/")));
    let seed0 = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    for i in 0..files {
        if i % 100 == 0 {
            entries.push(TarEntry::dir(format!("{name}/d{:03}/", i / 100)));
        }
        let len = 1 + (i * 7919) % (2 * avg);
        entries.push(
            TarEntry::file(
                format!("{name}/d{:03}/f{i:05}", i / 100),
                content(seed0 ^ i as u64, len),
            )
            .mode(if i % 9 == 0 { 0o755 } else { 0o644 }),
        );
    }
    LayerSpec::gzip(entries)
}

/// `n` images: image `i` = base `i % 5` + middle `i % 10` (a middle always sits on the same
/// base, so 10 chains) + its own top layer. 5 + 10 + n unique layers, 3n layer references.
pub fn scan_bench_images(n: usize) -> Vec<ImageSpec> {
    let bases: Vec<LayerSpec> = (0..BASES)
        .map(|b| layer(&format!("base{b}"), 1500, 16 << 10))
        .collect();
    let middles: Vec<LayerSpec> = (0..MIDDLES)
        .map(|m| layer(&format!("runtime{m}"), 400, 8 << 10))
        .collect();
    (0..n)
        .map(|i| {
            ImageSpec::new(
                &format!("snapmend.bench/scan-{i:02}:1"),
                ManifestStyle::Oci,
                vec![
                    bases[i % BASES].clone(),
                    middles[i % MIDDLES].clone(),
                    layer(&format!("app{i:02}"), 60, 4 << 10),
                ],
            )
        })
        .collect()
}

/// One timed command: wall time and the CPU time (user + sys) of it and its children.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    pub wall: Duration,
    pub cpu: Duration,
}

/// Runs `cmd` to completion; its stdout, wall and CPU time.
pub fn measure(cmd: &mut Command, what: &str) -> Result<(Measured, String), TestError> {
    // scan exits 1 when it finds damage; the benchmark's node is healthy, so only 0 is right.
    let (wall, cpu, stdout) = super::run_measured(cmd, what)?;
    Ok((
        Measured { wall, cpu },
        String::from_utf8_lossy(&stdout).into_owned(),
    ))
}

/// One round: the scan without TOCs, with them, and tar over the same unique layers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    pub cold: Measured,
    pub warm: Measured,
    pub tar: Measured,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScanBenchReport {
    pub machine: Vec<(String, String)>,
    pub images: usize,
    pub layer_refs: usize,
    pub unique_layers: usize,
    /// Bytes of file content over the unique layers (what a full check hashes).
    pub unique_bytes: u64,
    pub rounds: Vec<Round>,
    /// What the last scans read, by chainID: (blob passes, TOC loads).
    pub cold_reads: Vec<LayerReads>,
    pub warm_reads: Vec<LayerReads>,
}

/// The layers a healthy scan must have read exactly once each, by the given way.
pub fn check_read_once(
    report: &ScanReport,
    unique: &BTreeMap<String, PathBuf>,
    by_toc: bool,
) -> Result<(), String> {
    if report.outcome != Outcome::Healthy {
        return Err(format!(
            "scan outcome {:?}: {:?}",
            report.outcome, report.message
        ));
    }
    let reads: BTreeMap<&str, &LayerReads> = report
        .layer_reads
        .iter()
        .map(|r| (r.chain_id.as_str(), r))
        .collect();
    for chain in unique.keys() {
        let want = if by_toc { (0, 1) } else { (1, 0) };
        match reads.get(chain.as_str()) {
            Some(r) if (r.blob, r.toc) == want => {}
            Some(r) => {
                return Err(format!(
                    "layer {chain} read {} times from its blob and {} from its TOC, want {want:?}",
                    r.blob, r.toc
                ));
            }
            None => return Err(format!("layer {chain} was not read")),
        }
    }
    if reads.len() != unique.len() {
        return Err(format!(
            "{} layers read, {} unique layers",
            reads.len(),
            unique.len()
        ));
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

pub fn run_scan_bench(opts: &ScanBenchOptions) -> Result<ScanBenchReport, TestError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| TestError::io(&opts.work_dir, e))?;
    eprintln!("building {} images ...", opts.images);
    let specs = scan_bench_images(opts.images);
    let fixture = ContainerdFixture::start()?;
    eprintln!("importing ...");
    fixture.import_images(&specs)?;
    drop(specs);
    let helper = NodeHelper {
        binary: opts.node_helper.clone(),
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let toc_dir = opts.work_dir.join("scan-toc");
    let toc_s = toc_dir.to_string_lossy().into_owned();
    let scan_cmd = |toc: &str| helper.command("scan", &["--json", "--toc-cache", toc]);

    // An untimed scan without a cache names every layer, its blob and its snapshot.
    let (_, out) = measure(&mut scan_cmd("none"), "scan (warm-up)")?;
    let first: ScanReport = serde_json::from_str(&out)
        .map_err(|e| TestError::NodeHelper(format!("not a ScanReport: {e}")))?;
    let mut unique: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut blobs: BTreeMap<String, (PathBuf, PathBuf)> = BTreeMap::new();
    let mut layer_refs = 0;
    for image in &first.images {
        for l in &image.layers {
            layer_refs += 1;
            let fs = PathBuf::from(l.snapshot_path.clone().unwrap_or_default());
            unique.insert(l.chain_id.clone(), fs.clone());
            blobs.insert(l.chain_id.clone(), (fixture.blob_path(&l.digest), fs));
        }
    }
    check_read_once(&first, &unique, false).map_err(TestError::NodeHelper)?;
    let unique_bytes = unique.values().map(|fs| dir_bytes(fs)).sum();
    let tar_all = || -> Result<Measured, TestError> {
        let mut total = Measured::default();
        for (blob, fs) in blobs.values() {
            let mut c = Command::new("tar");
            c.arg("--compare")
                .arg("-z")
                .arg("-f")
                .arg(blob)
                .arg("-C")
                .arg(fs);
            let (m, _) = measure(&mut c, "tar --compare")?;
            total.wall += m.wall;
            total.cpu += m.cpu;
        }
        Ok(total)
    };
    tar_all()?; // warm-up of the reference too
    let mut rounds = Vec::new();
    let (mut cold_reads, mut warm_reads) = (Vec::new(), Vec::new());
    for round in 0..opts.runs {
        if toc_dir.exists() {
            std::fs::remove_dir_all(&toc_dir).map_err(|e| TestError::io(&toc_dir, e))?;
        }
        settle_disks();
        let (cold, out) = measure(&mut scan_cmd(&toc_s), "scan (no TOCs yet)")?;
        let r: ScanReport = serde_json::from_str(&out)
            .map_err(|e| TestError::NodeHelper(format!("not a ScanReport: {e}")))?;
        check_read_once(&r, &unique, false).map_err(TestError::NodeHelper)?;
        cold_reads = r.layer_reads;
        settle_disks();
        let (warm, out) = measure(&mut scan_cmd(&toc_s), "scan (TOCs kept)")?;
        let r: ScanReport = serde_json::from_str(&out)
            .map_err(|e| TestError::NodeHelper(format!("not a ScanReport: {e}")))?;
        check_read_once(&r, &unique, true).map_err(TestError::NodeHelper)?;
        warm_reads = r.layer_reads;
        settle_disks();
        let tar = tar_all()?;
        eprintln!(
            "  round {round}: scan without TOCs {:.2?} (cpu {:.2?}), with TOCs {:.2?} (cpu {:.2?}), tar --compare {:.2?} (cpu {:.2?})",
            cold.wall, cold.cpu, warm.wall, warm.cpu, tar.wall, tar.cpu
        );
        rounds.push(Round { cold, warm, tar });
    }
    if toc_dir.exists() {
        let _ = std::fs::remove_dir_all(&toc_dir);
    }
    Ok(ScanBenchReport {
        machine: machine_info(fixture.dir()),
        images: first.images.len(),
        layer_refs,
        unique_layers: unique.len(),
        unique_bytes,
        rounds,
        cold_reads,
        warm_reads,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The Markdown section recorded in docs/BENCHMARKS.md.
pub fn render_scan_markdown(r: &ScanBenchReport, date: &str, command: &str) -> String {
    let mut out = String::new();
    out.push_str("## Scan of a node with 50 images sharing base layers (issue 16)\n\n");
    out.push_str(&format!(
        "Measured {date} with `{command}`. {} images, each a base layer (one of {BASES}, 1,500 \
         files), a runtime layer (one of {MIDDLES}, 400 files) and its own app layer (60 files): \
         {} layer references, {} unique layers, {:.0} MiB of file content in the unique layers. \
         Each round: `scan --content full` with an empty TOC cache (every unique layer's blob \
         inflated and hashed, its TOC kept), the same scan again (TOCs used), then GNU `tar \
         --compare -z` of every unique layer's blob against its snapshot, one after another \
         (warm page cache; `sync` and idle disks before each). CPU is user + sys of the \
         command and its children. On a shared machine wall times vary; the CPU times and the \
         per-round ratios are the steadier numbers.\n\n",
        r.images,
        r.layer_refs,
        r.unique_layers,
        r.unique_bytes as f64 / (1u64 << 20) as f64
    ));
    out.push_str("| machine | |\n| --- | --- |\n");
    for (k, v) in &r.machine {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    let med = |f: &dyn Fn(&Round) -> f64| median(r.rounds.iter().map(f).collect());
    let n = r.unique_layers.max(1) as f64;
    let ms = |s: f64| format!("{:.0} ms", s * 1000.0);
    out.push_str("\n| | wall (median) | per unique layer | CPU (median) | ratio to tar (median of rounds) |\n| --- | --- | --- | --- | --- |\n");
    let tar_wall = med(&|x| x.tar.wall.as_secs_f64());
    type Pick = fn(&Round) -> Measured;
    let rows: [(&str, Pick); 3] = [
        ("scan, no TOCs (blobs read, TOCs kept)", |x| x.cold),
        ("scan, TOCs kept", |x| x.warm),
        ("tar --compare of each unique layer", |x| x.tar),
    ];
    for (what, pick) in rows {
        let wall = med(&|x| pick(x).wall.as_secs_f64());
        let cpu = med(&|x| pick(x).cpu.as_secs_f64());
        let ratio = med(&|x| pick(x).wall.as_secs_f64() / x.tar.wall.as_secs_f64().max(1e-9));
        out.push_str(&format!(
            "| {what} | {:.2} s | {} | {:.2} s | {ratio:.2}× |\n",
            wall,
            ms(wall / n),
            cpu
        ));
    }
    let _ = tar_wall;
    let total = |reads: &[LayerReads]| -> (u64, u64, usize) {
        (
            reads.iter().map(|x| x.blob).sum(),
            reads.iter().map(|x| x.toc).sum(),
            reads.len(),
        )
    };
    let (cb, ct, cn) = total(&r.cold_reads);
    let (wb, wt, wn) = total(&r.warm_reads);
    out.push_str(&format!(
        "\nRead once, from the scans' own `layerReads` (checked in every round, the benchmark \
         fails otherwise): without TOCs {cn} layers read, {cb} blob passes, {ct} TOC loads; \
         with TOCs {wn} layers, {wb} blob passes, {wt} TOC loads — for {} layer references.\n\n\
         Every round, in the order run: ",
        r.layer_refs
    ));
    let list: Vec<String> = r
        .rounds
        .iter()
        .map(|x| {
            format!(
                "{:.2} s / {:.2} s / {:.2} s",
                x.cold.wall.as_secs_f64(),
                x.warm.wall.as_secs_f64(),
                x.tar.wall.as_secs_f64()
            )
        })
        .collect();
    out.push_str(&list.join(", "));
    out.push_str(" (no TOCs / TOCs / tar).\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_share_bases_and_runtimes() {
        let specs = scan_bench_images(20);
        assert_eq!(specs.len(), 20);
        assert_eq!(specs[0].layers[0], specs[5].layers[0], "base shared");
        assert_eq!(specs[3].layers[1], specs[13].layers[1], "runtime shared");
        assert_ne!(specs[0].layers[2], specs[10].layers[2], "apps differ");
    }

    #[test]
    fn read_once_is_checked_per_unique_layer() {
        let unique = BTreeMap::from([("c1".to_string(), PathBuf::new())]);
        let reads = |blob, toc| ScanReport {
            outcome: Outcome::Healthy,
            layer_reads: vec![LayerReads {
                chain_id: "c1".into(),
                diff_id: "d1".into(),
                blob,
                toc,
            }],
            ..Default::default()
        };
        assert!(check_read_once(&reads(1, 0), &unique, false).is_ok());
        assert!(check_read_once(&reads(0, 1), &unique, true).is_ok());
        assert!(check_read_once(&reads(2, 0), &unique, false).is_err());
        assert!(check_read_once(&reads(1, 0), &unique, true).is_err());
        assert!(check_read_once(&ScanReport::default(), &unique, false).is_err());
    }
}
