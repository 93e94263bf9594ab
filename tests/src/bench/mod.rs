//! The verify/repair benchmark of issues 2 and 3: a generated ≥1 GiB, ≥50k-file gzip layer
//! imported into a private containerd, then snapmend-node-helper side by side with GNU tar on
//! the same blob and the same snapshot. `bench/run.sh` drives it and records the Markdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::TestError;
use crate::containerd::ContainerdFixture;
use crate::image_builder::{BigLayer, write_big_layer_archive, write_big_layer_blob};
use crate::node_helper_cli::{Content, NodeHelper};

pub mod registry;
pub mod scan;
pub mod stages;
pub mod storm;

pub const IMAGE: &str = "snapmend.bench/big:1";

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where the blob and archive are written (same filesystem as /tmp is best).
    pub work_dir: PathBuf,
    pub files: u64,
    /// Timed runs per command (after one untimed warm-up).
    pub runs: usize,
    pub node_helper: PathBuf,
    /// Only the comparisons of verify with a cached TOC (issue 16), not the blob ones.
    pub toc_only: bool,
}

/// Timed runs of one command.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub command: String,
    pub samples: Vec<Duration>,
    /// CPU time (user+sys, its children included) of each run, in the same order.
    pub cpu: Vec<Duration>,
}

impl Timing {
    pub fn median(&self) -> Duration {
        median(&self.samples)
    }

    pub fn median_cpu(&self) -> Duration {
        median(&self.cpu)
    }
}

fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s.get(s.len() / 2).copied().unwrap_or_default()
}

/// snapmend against a reference, with the goal the issue sets for the ratio. The two were
/// run alternately (ours, reference, ours, ...), so `ours.samples[i]` and
/// `reference.samples[i]` ran back to back under the same machine load.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub what: String,
    pub ours: Timing,
    pub reference: Timing,
    pub goal: String,
    /// System calls of one more run of each (ours, reference), counted by `strace -f -c`.
    pub syscalls: Option<(u64, u64)>,
}

impl Comparison {
    /// Median of the per-round ratios: load that drifts during the benchmark cancels out of
    /// each back-to-back pair.
    pub fn ratio(&self) -> f64 {
        median_ratio(&self.ours.samples, &self.reference.samples)
    }

    /// The same for CPU time (user+sys): what the machine's load changes least.
    pub fn cpu_ratio(&self) -> f64 {
        median_ratio(&self.ours.cpu, &self.reference.cpu)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// The Markdown heading of the section.
    pub title: String,
    /// `uptime` when the runs started: how loaded the shared machine was.
    pub load: String,
    pub machine: Vec<(String, String)>,
    pub layer: BigLayer,
    pub comparisons: Vec<Comparison>,
}

fn median_ratio(ours: &[Duration], reference: &[Duration]) -> f64 {
    let mut r: Vec<f64> = ours
        .iter()
        .zip(reference)
        .map(|(o, t)| o.as_secs_f64() / t.as_secs_f64().max(1e-9))
        .collect();
    r.sort_by(f64::total_cmp);
    r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `cmd` to completion, failing unless it exits 0: its wall time, CPU time (user+sys of
/// the command and the children it waited for) and stdout.
pub(crate) fn run_measured(
    cmd: &mut Command,
    what: &str,
) -> Result<(Duration, Duration, Vec<u8>), TestError> {
    let cpu_before = stages::children_cpu();
    let started = Instant::now();
    let out = cmd.output().map_err(|e| TestError::Command {
        command: what.into(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    let took = started.elapsed();
    let cpu = stages::children_cpu().saturating_sub(cpu_before);
    if !out.status.success() {
        return Err(TestError::Command {
            command: what.into(),
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok((took, cpu, out.stdout))
}

/// [`run_measured`] without the output.
fn run_checked(cmd: &mut Command, what: &str) -> Result<(Duration, Duration), TestError> {
    run_measured(cmd, what).map(|(took, cpu, _)| (took, cpu))
}

/// I/Os in flight over all block devices (`/proc/diskstats`, the 12th field).
pub fn ios_in_flight(diskstats: &str) -> u64 {
    diskstats
        .lines()
        .filter_map(|l| l.split_whitespace().nth(11)?.parse::<u64>().ok())
        .sum()
}

/// Waits (up to 60 s) until no block I/O has been in flight for one second. A setup that
/// deletes a 1 GiB tree on a filesystem mounted with `discard` keeps the disk busy with
/// discards after `sync` returns, and whichever command ran next paid for them.
fn wait_for_idle_disks() {
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(60) {
        let busy = std::fs::read_to_string("/proc/diskstats")
            .map(|s| ios_in_flight(&s) > 0)
            .unwrap_or(false);
        match (busy, idle_since) {
            (true, _) => idle_since = None,
            (false, None) => idle_since = Some(Instant::now()),
            (false, Some(t)) if t.elapsed() >= Duration::from_secs(1) => return,
            (false, Some(_)) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes of the previous run and of the setup must not be flushed during the next timed one.
pub(crate) fn settle_disks() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    wait_for_idle_disks();
}

/// One command to time: `setup` runs untimed before each run.
struct Timed<'a> {
    label: &'a str,
    setup: Box<dyn FnMut() -> Result<(), TestError> + 'a>,
    make: Box<dyn FnMut() -> Command + 'a>,
}

impl<'a> Timed<'a> {
    fn new(
        label: &'a str,
        setup: impl FnMut() -> Result<(), TestError> + 'a,
        make: impl FnMut() -> Command + 'a,
    ) -> Self {
        Timed {
            label,
            setup: Box::new(setup),
            make: Box::new(make),
        }
    }

    fn run_once(&mut self) -> Result<(Duration, Duration), TestError> {
        (self.setup)()?;
        settle_disks();
        let (took, cpu) = run_checked(&mut (self.make)(), self.label)?;
        eprintln!("  {}: {took:.2?} ({cpu:.2?} CPU)", self.label);
        Ok((took, cpu))
    }

    /// System calls of one more run, by `strace -f -c` (`None` without strace).
    fn count_syscalls(&mut self) -> Result<Option<u64>, TestError> {
        (self.setup)()?;
        let cmd = (self.make)();
        let out =
            tempfile::NamedTempFile::new().map_err(|e| TestError::io(Path::new("/tmp"), e))?;
        let mut strace = Command::new("strace");
        strace
            .args(["-f", "-c", "-o"])
            .arg(out.path())
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match strace.status() {
            Ok(st) if st.success() => {}
            _ => return Ok(None),
        }
        let text = std::fs::read_to_string(out.path()).unwrap_or_default();
        Ok(strace_total_calls(&text))
    }
}

/// One untimed warm-up of each, then `runs` rounds of ours followed by the reference.
fn compare_side_by_side(
    runs: usize,
    what: &str,
    goal: &str,
    mut ours: Timed<'_>,
    mut reference: Timed<'_>,
) -> Result<Comparison, TestError> {
    compare_pair(runs, what, goal, &mut ours, &mut reference)
}

/// [`compare_side_by_side`] on commands the caller keeps.
fn compare_pair(
    runs: usize,
    what: &str,
    goal: &str,
    ours: &mut Timed<'_>,
    reference: &mut Timed<'_>,
) -> Result<Comparison, TestError> {
    ours.run_once()?;
    reference.run_once()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(ours.run_once()?);
        b.push(reference.run_once()?);
    }
    let timing = |label: &str, runs: Vec<(Duration, Duration)>| Timing {
        command: label.into(),
        samples: runs.iter().map(|r| r.0).collect(),
        cpu: runs.iter().map(|r| r.1).collect(),
    };
    Ok(Comparison {
        what: what.into(),
        ours: timing(ours.label, a),
        reference: timing(reference.label, b),
        goal: goal.into(),
        syscalls: None,
    })
}

/// [`compare_side_by_side`], plus the system calls of one more run of each (for the
/// comparisons whose speed comes from making fewer of them).
fn compare_with_syscalls(
    runs: usize,
    what: &str,
    goal: &str,
    mut ours: Timed<'_>,
    mut reference: Timed<'_>,
) -> Result<Comparison, TestError> {
    // After the timed runs: the warm-up is the run that may still have work to cache.
    let mut c = compare_pair(runs, what, goal, &mut ours, &mut reference)?;
    c.syscalls = ours.count_syscalls()?.zip(reference.count_syscalls()?);
    Ok(c)
}

/// The `calls` column of the `total` line of `strace -c`.
pub fn strace_total_calls(summary: &str) -> Option<u64> {
    let total = summary.lines().find(|l| l.trim_end().ends_with(" total"))?;
    let fields: Vec<&str> = total.split_whitespace().collect();
    // % time, seconds, usecs/call, calls, [errors], total
    fields.get(3)?.parse().ok()
}

fn empty_dir(dir: &Path) -> Result<(), TestError> {
    crate::node_helper_cli::empty_dir(dir)
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// CPU, cores, memory, kernel, filesystem and tool versions.
pub fn machine_info(dir: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    let dir_s = dir.to_string_lossy().into_owned();
    vec![
        (
            "CPU".into(),
            format!(
                "{cpu} ({} cores online)",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0)
            ),
        ),
        ("memory".into(), mem),
        ("kernel".into(), command_output("uname", &["-sr"])),
        (
            "filesystem".into(),
            command_output(
                "findmnt",
                &["-n", "-o", "FSTYPE,SOURCE", "--target", &dir_s],
            ),
        ),
        ("GNU tar".into(), command_output("tar", &["--version"])),
        (
            "containerd".into(),
            command_output("containerd", &["--version"]),
        ),
    ]
}

/// Generates the layer, imports it into a private containerd and runs every comparison.
pub fn run_benchmarks(opts: &BenchOptions) -> Result<BenchReport, TestError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| TestError::io(&opts.work_dir, e))?;
    let blob_path = opts.work_dir.join("layer.tar.gz");
    let archive = opts.work_dir.join("image.oci.tar");
    eprintln!("generating {} files ...", opts.files);
    let layer = write_big_layer_blob(&blob_path, opts.files)?;
    write_big_layer_archive(&archive, &blob_path, &layer, IMAGE)?;
    std::fs::remove_file(&blob_path).map_err(|e| TestError::io(&blob_path, e))?;
    eprintln!("layer: {layer:?}\nimporting ...");
    let fixture = ContainerdFixture::start()?;
    fixture.import(&archive)?;
    std::fs::remove_file(&archive).map_err(|e| TestError::io(&archive, e))?;
    let helper = NodeHelper {
        binary: opts.node_helper.clone(),
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let fs = helper
        .snapshot_paths(IMAGE)?
        .pop()
        .ok_or_else(|| TestError::NodeHelper("no layer".into()))?;
    let blob = fixture.blob_path(&layer.digest);
    let blob_s = blob.to_string_lossy().into_owned();
    let fs_s = fs.to_string_lossy().into_owned();
    let extract_dir = fixture.dir().join("tar-extract");
    let extract_s = extract_dir.to_string_lossy().into_owned();
    let runs = opts.runs;
    let verify = |content: Content| {
        let c = match content {
            Content::Full => "full",
            Content::Metadata => "metadata",
        };
        let mut cmd = helper.command("verify", &["--image", IMAGE, "--content", c, "--json"]);
        cmd.stdout(std::process::Stdio::null());
        cmd
    };
    let toc_dir = opts.work_dir.join("toc");
    let toc_s = toc_dir.to_string_lossy().into_owned();
    let verify_toc = |c: &str| {
        let mut cmd = helper.command(
            "verify",
            &[
                "--image",
                IMAGE,
                "--content",
                c,
                "--json",
                "--toc-cache",
                &toc_s,
            ],
        );
        cmd.stdout(std::process::Stdio::null());
        cmd
    };
    let repair = || {
        let mut cmd = helper.command("repair", &["--image", IMAGE, "--json"]);
        cmd.stdout(std::process::Stdio::null());
        cmd
    };
    let tar_compare = || {
        let mut c = Command::new("tar");
        c.args(["--compare", "-z", "-f", &blob_s, "-C", &fs_s]);
        c
    };
    const VERIFY_FULL: &str = "snapmend-node-helper verify --content full";
    const TAR_COMPARE: &str = "tar --compare -z -f BLOB -C fs";
    let one_file = fs.join("data/000/000/f000001");

    let load = command_output("uptime", &[]);
    let mut comparisons = Vec::new();
    if !opts.toc_only {
        comparisons = vec![
            compare_side_by_side(
                runs,
                "full-content verify vs GNU tar --compare",
                "≤ 0.35× (issue 18)",
                Timed::new(VERIFY_FULL, || Ok(()), || verify(Content::Full)),
                Timed::new(TAR_COMPARE, || Ok(()), tar_compare),
            )?,
            compare_side_by_side(
                runs,
                "metadata verify vs GNU tar --compare",
                "faster than full verify",
                Timed::new(
                    "snapmend-node-helper verify --content metadata",
                    || Ok(()),
                    || verify(Content::Metadata),
                ),
                Timed::new(TAR_COMPARE, || Ok(()), tar_compare),
            )?,
            compare_side_by_side(
                runs,
                "full rebuild of the emptied snapshot vs tar -xzf into an empty dir",
                "≤ 0.5× (issue 18)",
                Timed::new(
                    "snapmend-node-helper repair (emptied snapshot)",
                    || empty_dir(&fs),
                    repair,
                ),
                Timed::new(
                    "tar -xzf BLOB -C empty-dir",
                    || {
                        if extract_dir.exists() {
                            std::fs::remove_dir_all(&extract_dir)
                                .map_err(|e| TestError::io(&extract_dir, e))?;
                        }
                        std::fs::create_dir(&extract_dir)
                            .map_err(|e| TestError::io(&extract_dir, e))
                    },
                    || {
                        let mut c = Command::new("tar");
                        c.args(["-xzf", &blob_s, "-C", &extract_s]);
                        c
                    },
                ),
            )?,
            compare_side_by_side(
                runs,
                "repair of one missing file vs one full verify pass",
                "≈ 1×",
                Timed::new(
                    "snapmend-node-helper repair (one file missing)",
                    || std::fs::remove_file(&one_file).map_err(|e| TestError::io(&one_file, e)),
                    repair,
                ),
                Timed::new(VERIFY_FULL, || Ok(()), || verify(Content::Full)),
            )?,
        ];
    }
    // Issue 16: the same layer with its TOC cached. The warm-up run of each pair is the one
    // that verifies against the blob and keeps the TOC; every timed run uses the TOC.
    if toc_dir.exists() {
        std::fs::remove_dir_all(&toc_dir).map_err(|e| TestError::io(&toc_dir, e))?;
    }
    const VERIFY_TOC_FULL: &str = "snapmend-node-helper verify --content full (TOC cached)";
    const VERIFY_TOC_META: &str = "snapmend-node-helper verify --content metadata (TOC cached)";
    comparisons.push(compare_with_syscalls(
        runs,
        "full-content verify, TOC cached, vs GNU tar --compare",
        "≤ 0.15×",
        Timed::new(VERIFY_TOC_FULL, || Ok(()), || verify_toc("full")),
        Timed::new(TAR_COMPARE, || Ok(()), tar_compare),
    )?);
    comparisons.push(compare_with_syscalls(
        runs,
        "metadata verify, TOC cached, vs GNU tar --compare",
        "≤ 0.03×",
        Timed::new(VERIFY_TOC_META, || Ok(()), || verify_toc("metadata")),
        Timed::new(TAR_COMPARE, || Ok(()), tar_compare),
    )?);
    check_toc_was_used(&helper, &toc_s)?;
    hold_for_profiling(&opts.work_dir, &helper, &toc_s);
    if extract_dir.exists() {
        std::fs::remove_dir_all(&extract_dir).map_err(|e| TestError::io(&extract_dir, e))?;
    }
    Ok(BenchReport {
        load,
        title: if opts.toc_only {
            "Verify with the TOC cache (issue 16)".into()
        } else {
            "Verify and repair (issues 2 and 3, 16)".into()
        },
        machine: machine_info(fixture.dir()),
        layer,
        comparisons,
    })
}

/// With `SNAPMEND_BENCH_HOLD=1`, keeps the private containerd (and the TOC) until the file
/// `<work-dir>/hold` is removed, printing the verify command, so that a person can profile it
/// (`perf record`, `strace -c`) on the real layer.
fn hold_for_profiling(work_dir: &Path, helper: &NodeHelper, toc: &str) {
    if std::env::var_os("SNAPMEND_BENCH_HOLD").is_none_or(|v| v != "1") {
        return;
    }
    let hold = work_dir.join("hold");
    if std::fs::write(&hold, b"remove this file to end the benchmark\n").is_err() {
        return;
    }
    eprintln!(
        "holding for profiling until {} is removed; run:\n  {} verify --root {} --config {} --image {IMAGE} --toc-cache {toc} --content full --json",
        hold.display(),
        helper.binary.display(),
        helper.root.display(),
        helper.config.display()
    );
    while hold.exists() {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The timed TOC runs must have read no blob: one more verify must say `checkedWith: Toc`.
fn check_toc_was_used(helper: &NodeHelper, toc: &str) -> Result<(), TestError> {
    let run = helper.run(
        "verify",
        &[
            "--image",
            IMAGE,
            "--content",
            "metadata",
            "--json",
            "--toc-cache",
            toc,
        ],
    )?;
    let report = run.report()?;
    let all_toc = !report.layers.is_empty()
        && report
            .layers
            .iter()
            .all(|l| l.checked_with == Some(snapmend_crds::CheckedWith::Toc));
    if all_toc {
        Ok(())
    } else {
        Err(TestError::NodeHelper(format!(
            "the TOC cache was not used:\n{run}"
        )))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The Markdown section recorded in docs/BENCHMARKS.md.
pub fn render_markdown(report: &BenchReport, date: &str, command: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("## {}\n\n", report.title));
    out.push_str(&format!("Measured {date} with `{command}`. Each pair of commands ran alternately, snapmend then the reference, after one warm-up run of each (warm page cache; before every run `sync`, then a wait until no block I/O has been in flight for a second). Times are medians; the ratio is the median of the per-round ratios snapmend ÷ reference, so load that drifts during the run cancels out of each back-to-back pair.\n\n"));
    out.push_str("| machine | |\n| --- | --- |\n");
    for (k, v) in &report.machine {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    let l = &report.layer;
    out.push_str(&format!(
        "\nLayer: {} tar entries, {} of file content, tar stream {}, gzip blob {} (`{}`).\n\n",
        l.entries,
        gib(l.file_bytes),
        gib(l.tar_bytes),
        gib(l.blob_bytes),
        l.digest
    ));
    out.push_str(&format!(
        "Load when the runs started (`uptime`): {}.\n\n",
        report.load
    ));
    out.push_str(
        "| comparison | snapmend | reference | ratio | goal | CPU snapmend | CPU reference | CPU ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &report.comparisons {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2}× | {} | {} | {} | {:.2}× |\n",
            c.what,
            secs(c.ours.median()),
            secs(c.reference.median()),
            c.ratio(),
            c.goal,
            secs(c.ours.median_cpu()),
            secs(c.reference.median_cpu()),
            c.cpu_ratio(),
        ));
    }
    let counted: Vec<&Comparison> = report
        .comparisons
        .iter()
        .filter(|c| c.syscalls.is_some())
        .collect();
    if !counted.is_empty() {
        out.push_str("\nSystem calls of one more run of each under `strace -f -c`:\n\n| comparison | snapmend syscalls | reference syscalls |\n| --- | --- | --- |\n");
        for c in counted {
            let (a, b) = c.syscalls.unwrap_or_default();
            out.push_str(&format!("| {} | {a} | {b} |\n", c.what));
        }
    }
    out.push_str("\nEvery timed run, in the order run (ours, then the reference), wall (CPU):\n\n");
    for c in &report.comparisons {
        let rounds: Vec<String> = (0..c.ours.samples.len().min(c.reference.samples.len()))
            .map(|i| {
                let cpu = |t: &Timing| t.cpu.get(i).map(|d| secs(*d)).unwrap_or_default();
                format!(
                    "{} ({}) / {} ({})",
                    secs(c.ours.samples[i]),
                    cpu(&c.ours),
                    secs(c.reference.samples[i]),
                    cpu(&c.reference)
                )
            })
            .collect();
        out.push_str(&format!(
            "- `{}` / `{}`: {}\n",
            c.ours.command,
            c.reference.command,
            rounds.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(cmd: &str, ms: &[u64]) -> Timing {
        Timing {
            command: cmd.into(),
            samples: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            cpu: ms
                .iter()
                .map(|m| Duration::from_millis(*m * 3 / 2))
                .collect(),
        }
    }

    #[test]
    fn median_and_ratio() {
        let ours = timing("a", &[300, 100, 200]);
        assert_eq!(ours.median(), Duration::from_millis(200));
        let c = Comparison {
            what: "x".into(),
            ours,
            reference: timing("b", &[800, 800, 800]),
            goal: "≤ 0.5×".into(),
            syscalls: None,
        };
        assert!((c.ratio() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn in_flight_ios_are_the_twelfth_diskstats_field() {
        let stats = "\
 254       0 vda 100 0 2000 50 300 0 4000 60 3 70 110 0 0 0 0 0 0
 254       1 vda1 10 0 200 5 30 0 400 6 0 7 11 0 0 0 0 0 0
   7       0 loop0 1 0 2 0 0 0 0 0 2 0 0
";
        assert_eq!(ios_in_flight(stats), 5);
        assert_eq!(ios_in_flight(""), 0);
    }

    #[test]
    fn the_ratio_pairs_back_to_back_runs() {
        // The machine got twice as slow each round; every pair still says 0.25.
        let c = Comparison {
            what: "x".into(),
            ours: timing("a", &[100, 200, 400]),
            reference: timing("b", &[400, 800, 1600]),
            goal: String::new(),
            syscalls: None,
        };
        assert!((c.ratio() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn markdown_lists_times_ratio_goal_and_each_command_once() {
        let report = BenchReport {
            title: "Verify and repair".into(),
            load: "load average: 0.50".into(),
            machine: vec![("CPU".into(), "test cpu".into())],
            layer: BigLayer {
                digest: "sha256:d".into(),
                diff_id: "sha256:e".into(),
                entries: 50_100,
                file_bytes: 1 << 30,
                tar_bytes: 1 << 30,
                blob_bytes: 1 << 29,
            },
            comparisons: vec![
                Comparison {
                    what: "verify vs tar".into(),
                    ours: timing("verify", &[1000]),
                    reference: timing("tar", &[4000]),
                    goal: "≤ 0.5×".into(),
                    syscalls: Some((70_000, 900_000)),
                },
                Comparison {
                    what: "meta vs tar".into(),
                    ours: timing("meta", &[500]),
                    reference: timing("tar", &[4000]),
                    goal: "faster".into(),
                    syscalls: None,
                },
            ],
        };
        let md = render_markdown(&report, "2026-11-28", "bench/run.sh");
        assert!(
            md.contains(
                "| verify vs tar | 1.00 s | 4.00 s | 0.25× | ≤ 0.5× | 1.50 s | 6.00 s | 0.25× |"
            ),
            "{md}"
        );
        assert!(md.contains("load average: 0.50"), "{md}");
        assert!(md.contains("| CPU | test cpu |"));
        assert!(md.contains("50100 tar entries, 1.00 GiB of file content"));
        assert!(
            md.contains("- `verify` / `tar`: 1.00 s (1.50 s) / 4.00 s (6.00 s)"),
            "{md}"
        );
        assert!(md.contains("| verify vs tar | 70000 | 900000 |"), "{md}");
        assert_eq!(
            md.matches("| meta vs tar |").count(),
            1,
            "no syscall row without a count: {md}"
        );
    }

    #[test]
    fn strace_summary_total_calls() {
        let summary = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ------------------
 74.73    2.453060      613265         4           futex
 11.80    0.387252           6     60623         1 statx
------ ----------- ----------- --------- --------- ------------------
100.00    3.282410          26    125401       312 total
";
        assert_eq!(strace_total_calls(summary), Some(125_401));
        assert_eq!(strace_total_calls("garbage"), None);
    }
}
