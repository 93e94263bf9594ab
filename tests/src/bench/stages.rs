//! `snapmend-bench stages` (issue 18): where one full verify, one metadata verify and one
//! rebuild of an emptied snapshot spend their time, stage by stage and thread by thread (the
//! node helper's own stage profile, `RUST_LOG=snapmend_stages=info`), with the CPU time
//! (user+sys) of each run beside its wall time and, with `--callgrind`, the instructions each
//! run executed under valgrind's callgrind: a figure a busy machine does not change.
//!
//! With `--tmpfs`, containerd's root (blob and snapshot) is on a tmpfs, so the rebuild's
//! creates and renames cost CPU only and the disk drops out of the figure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use snapmend_node_helper::stage_profile::{Breakdown, render_markdown as render_stages};

use super::IMAGE;
use crate::TestError;
use crate::containerd::{ContainerdFixture, FixtureOptions};
use crate::image_builder::{BigLayer, write_big_layer_archive, write_big_layer_blob};
use crate::node_helper_cli::{NodeHelper, empty_dir};

#[derive(Clone, Debug)]
pub struct StagesOptions {
    pub work_dir: PathBuf,
    pub files: u64,
    pub node_helper: PathBuf,
    /// Also count instructions with `valgrind --tool=callgrind`.
    pub callgrind: bool,
    /// containerd's root on a tmpfs mounted for the run.
    pub tmpfs: bool,
}

/// One measured run of the node helper.
#[derive(Clone, Debug, PartialEq)]
pub struct StageRun {
    pub what: String,
    pub wall: Duration,
    /// user + sys of the process and its threads.
    pub cpu: Duration,
    pub breakdown: Breakdown,
    /// Instructions executed (callgrind's `Ir`), when counted.
    pub instructions: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StagesReport {
    pub files: u64,
    pub layer: BigLayer,
    pub filesystem: String,
    /// `uptime` when the runs started: how loaded the shared machine was.
    pub load: String,
    pub runs: Vec<StageRun>,
}

/// user+sys of every child waited for so far.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage fills a struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The breakdown a node helper logged (`stages=<json>` on a `snapmend_stages` line).
pub fn parse_breakdown(stderr: &str) -> Option<Breakdown> {
    stderr
        .lines()
        .filter(|l| l.contains("snapmend_stages"))
        .find_map(|l| serde_json::from_str(l.split_once("stages=")?.1.trim()).ok())
}

/// callgrind's total: `==pid== Collected : N` on stderr.
pub fn parse_collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, n) = l.split_once("Collected :")?;
        n.split_whitespace().next()?.parse().ok()
    })
}

/// A tmpfs mounted for the benchmark, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Self, TestError> {
        std::fs::create_dir_all(at).map_err(|e| TestError::io(at, e))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g,mode=0700", "snapmend-bench"])
            .arg(at)
            .output()
            .map_err(|e| TestError::io(at, e))?;
        if !out.status.success() {
            return Err(TestError::Command {
                command: format!("mount -t tmpfs {}", at.display()),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run_helper(
    helper: &NodeHelper,
    what: &str,
    subcommand: &str,
    args: &[&str],
    callgrind: Option<&Path>,
) -> Result<StageRun, TestError> {
    let mut cmd = match callgrind {
        None => helper.command(subcommand, args),
        Some(out_file) => {
            let inner = helper.command(subcommand, args);
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out_file.display()))
                .arg(inner.get_program())
                .args(inner.get_args());
            c
        }
    };
    cmd.env("RUST_LOG", "snapmend_stages=info")
        .stdout(std::process::Stdio::null());
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let cpu_before = children_cpu();
    let started = Instant::now();
    let out = cmd.output().map_err(|e| TestError::io(&helper.binary, e))?;
    let wall = started.elapsed();
    let cpu = children_cpu().saturating_sub(cpu_before);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(TestError::Command {
            command: format!("snapmend-node-helper {subcommand} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr,
        });
    }
    let breakdown = parse_breakdown(&stderr).ok_or_else(|| {
        TestError::NodeHelper(format!("{what}: no stage breakdown in its log:\n{stderr}"))
    })?;
    let instructions = match callgrind {
        Some(_) => Some(parse_collected(&stderr).ok_or_else(|| {
            TestError::NodeHelper(format!("{what}: no callgrind total:\n{stderr}"))
        })?),
        None => None,
    };
    eprintln!("  {what}: {wall:.2?} wall, {cpu:.2?} CPU");
    Ok(StageRun {
        what: what.into(),
        wall,
        cpu,
        breakdown,
        instructions,
    })
}

/// Generates the layer, imports it and measures verify (full, metadata) and a rebuild.
pub fn run_stages(opts: &StagesOptions) -> Result<StagesReport, TestError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| TestError::io(&opts.work_dir, e))?;
    let tmpfs = if opts.tmpfs {
        Some(Tmpfs::mount(&opts.work_dir.join("tmpfs"))?)
    } else {
        None
    };
    let parent = tmpfs
        .as_ref()
        .map(|t| t.0.clone())
        .unwrap_or_else(std::env::temp_dir);
    let blob_path = opts.work_dir.join("stages-layer.tar.gz");
    let archive = opts.work_dir.join("stages-image.oci.tar");
    eprintln!("generating {} files ...", opts.files);
    let layer = write_big_layer_blob(&blob_path, opts.files)?;
    write_big_layer_archive(&archive, &blob_path, &layer, IMAGE)?;
    std::fs::remove_file(&blob_path).map_err(|e| TestError::io(&blob_path, e))?;
    let fixture = ContainerdFixture::start_in(FixtureOptions::default(), &parent)?;
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
    let filesystem = super::machine_info(&fs)
        .into_iter()
        .find(|(k, _)| k == "filesystem")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let load = super::command_output("uptime", &[]);
    let full = ["--image", IMAGE, "--content", "full", "--json"];
    let metadata = ["--image", IMAGE, "--content", "metadata", "--json"];
    let repair = ["--image", IMAGE, "--json"];
    // Warm the page cache, as for every run of bench/run.sh.
    run_helper(&helper, "warm-up", "verify", &full, None)?;
    let mut runs = vec![
        run_helper(&helper, "verify --content full", "verify", &full, None)?,
        run_helper(
            &helper,
            "verify --content metadata",
            "verify",
            &metadata,
            None,
        )?,
    ];
    empty_dir(&fs)?;
    runs.push(run_helper(
        &helper,
        "repair (emptied snapshot)",
        "repair",
        &repair,
        None,
    )?);
    if opts.callgrind {
        let out = |name: &str| opts.work_dir.join(format!("callgrind.{name}.out"));
        let counted = [
            (
                "verify --content full (callgrind)",
                "verify",
                &full[..],
                "verify-full",
            ),
            (
                "verify --content metadata (callgrind)",
                "verify",
                &metadata[..],
                "verify-metadata",
            ),
        ];
        for (what, sub, args, name) in counted {
            runs.push(run_helper(&helper, what, sub, args, Some(&out(name)))?);
        }
        empty_dir(&fs)?;
        runs.push(run_helper(
            &helper,
            "repair (emptied snapshot, callgrind)",
            "repair",
            &repair,
            Some(&out("repair")),
        )?);
    }
    drop(fixture);
    drop(tmpfs);
    Ok(StagesReport {
        files: opts.files,
        layer,
        filesystem,
        load,
        runs,
    })
}

/// Markdown: a summary table (wall, CPU, instructions), then each run's stages.
pub fn render_stages_markdown(r: &StagesReport, date: &str, command: &str) -> String {
    let l = &r.layer;
    let mut out = format!(
        "### Stage breakdown, {} files ({date}, `{command}`)\n\n\
         Layer: {} tar entries, {:.1} MiB of file content, tar stream {:.1} MiB, gzip blob \
         {:.1} MiB. containerd's root on {}. Load when the runs started: `{}`.\n\n\
         | run | wall | CPU (user+sys) | instructions (callgrind) |\n| --- | --- | --- | --- |\n",
        r.files,
        l.entries,
        l.file_bytes as f64 / 1048576.0,
        l.tar_bytes as f64 / 1048576.0,
        l.blob_bytes as f64 / 1048576.0,
        r.filesystem,
        r.load
    );
    for run in &r.runs {
        out.push_str(&format!(
            "| {} | {:.2} s | {:.2} s | {} |\n",
            run.what,
            run.wall.as_secs_f64(),
            run.cpu.as_secs_f64(),
            run.instructions
                .map(|n| format!("{:.3} G", n as f64 / 1e9))
                .unwrap_or_default()
        ));
    }
    for run in r.runs.iter().filter(|r| r.instructions.is_none()) {
        out.push_str(&format!(
            "\n`{}`: {:.2} s wall, {:.2} s CPU.\n\n{}",
            run.what,
            run.wall.as_secs_f64(),
            run.cpu.as_secs_f64(),
            render_stages(&run.breakdown)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breakdown_and_the_instruction_count_are_read_from_stderr() {
        let stderr = "2026-12-07T10:00:00Z  INFO verify: job finished\n\
            2026-12-07T10:00:00Z  INFO snapmend_stages: stage breakdown stages={\"roles\":[{\"role\":\"pass\",\"threads\":1,\"wall_ms\":0.0,\"cpu_ms\":0.0,\"stages\":[{\"stage\":\"tar-parse\",\"ms\":2.5,\"bytes\":10,\"calls\":3}]}]}\n\
            ==12== Events    : Ir\n==12== Collected : 123456789\n";
        let b = parse_breakdown(stderr).unwrap();
        assert_eq!(b.roles[0].role, "pass");
        assert_eq!(b.roles[0].stages[0].calls, 3);
        assert_eq!(parse_collected(stderr), Some(123_456_789));
        assert!(parse_breakdown("INFO other: x stages={").is_none());
        assert_eq!(parse_collected("nothing"), None);
    }

    #[test]
    fn children_cpu_grows_with_a_waited_child() {
        let before = children_cpu();
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(children_cpu() > before);
    }
}
