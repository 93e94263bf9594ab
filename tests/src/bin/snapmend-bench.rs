//! Runs the verify/repair benchmark (see `snapmend_tests::bench`) or, with `storm`, the
//! operator storm benchmark (`snapmend_tests::bench::storm`), and prints its Markdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use snapmend_tests::bench::scan::{ScanBenchOptions, render_scan_markdown, run_scan_bench};
use snapmend_tests::bench::stages::{StagesOptions, render_stages_markdown, run_stages};
use snapmend_tests::bench::storm::{
    StormOptions, choose_operator, render_storm_markdown, run_storm,
};
use snapmend_tests::bench::{BenchOptions, render_markdown, run_benchmarks};

#[derive(Parser)]
#[command(
    about = "snapmend benchmarks: verify/repair against GNU tar, or the operator storm",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    verify: VerifyArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The operator at scale: an event storm on thousands of realistic Nodes (issue 14).
    Storm(StormArgs),
    /// `scan` of a node with many images sharing base layers, without then with TOCs,
    /// against `tar --compare` of the same unique layers (issue 16).
    Scan(ScanArgs),
    /// Where one verify and one rebuild spend their time: stages, threads, CPU time and,
    /// with --callgrind, instruction counts (issue 18).
    Stages(StagesArgs),
}

#[derive(Args)]
struct ScanArgs {
    /// The node-helper binary to measure (build it with --release).
    #[arg(long)]
    node_helper: PathBuf,
    /// Images on the node.
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Rounds of (scan without TOCs, scan with TOCs, tar --compare).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the benchmark's TOC cache.
    #[arg(long, default_value = "/var/tmp/snapmend-bench")]
    work_dir: PathBuf,
    /// Date written into the Markdown.
    #[arg(long, default_value = "")]
    date: String,
    /// Command line written into the Markdown.
    #[arg(long, default_value = "bench/scan.sh")]
    command: String,
}

#[derive(Args)]
struct StagesArgs {
    /// Directory for the generated layer (and the tmpfs mount point with --tmpfs).
    #[arg(long, default_value = "/var/tmp/snapmend-bench")]
    work_dir: PathBuf,
    /// Files in the generated layer (about 20 KB each on average).
    #[arg(long, default_value_t = 5_000)]
    files: u64,
    /// The node-helper binary to measure (build it with --release).
    #[arg(long)]
    node_helper: PathBuf,
    /// Also count instructions with valgrind's callgrind (slow: use a small layer).
    #[arg(long)]
    callgrind: bool,
    /// Put containerd's root (blob and snapshot) on a tmpfs: the rebuild without the disk.
    #[arg(long)]
    tmpfs: bool,
    /// Date written into the Markdown.
    #[arg(long, default_value = "")]
    date: String,
    /// Command line written into the Markdown.
    #[arg(long, default_value = "snapmend-bench stages")]
    command: String,
}

#[derive(Args)]
struct VerifyArgs {
    /// Directory for the generated layer and image archive.
    #[arg(long, default_value = "/var/tmp/snapmend-bench")]
    work_dir: PathBuf,
    /// Files in the generated layer (about 20 KB each on average).
    #[arg(long, default_value_t = 60_000)]
    files: u64,
    /// Timed runs per command.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The node-helper binary to measure (build it with --release).
    #[arg(long, required = true)]
    node_helper: Option<PathBuf>,
    /// Date written into the Markdown.
    #[arg(long, default_value = "")]
    date: String,
    /// Only verify with a cached TOC against GNU tar (issue 16).
    #[arg(long)]
    toc_only: bool,
    /// Command line written into the Markdown.
    #[arg(long, default_value = "bench/run.sh")]
    command: String,
}

#[derive(Args)]
struct StormArgs {
    /// Realistic Nodes in the storm's cluster.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Nodes that get a FailedCreatePodSandBox event.
    #[arg(long, default_value_t = 200)]
    storm_nodes: usize,
    /// Updates of each event after its creation.
    #[arg(long, default_value_t = 4)]
    updates: u32,
    /// Repairs applied one after another on each cluster of the latency comparison.
    #[arg(long, default_value_t = 200)]
    batch_repairs: usize,
    /// Nodes in the large cluster of the latency comparison (the small one has one).
    #[arg(long, default_value_t = 2000)]
    batch_cluster_nodes: usize,
    /// The operator's `--max-cordoned-nodes`.
    #[arg(long, default_value_t = 20)]
    max_cordoned_nodes: usize,
    /// The operator binary; default: target/release if fresh, else target/debug.
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Date written into the Markdown.
    #[arg(long, default_value = "")]
    date: String,
    /// Command line written into the Markdown.
    #[arg(long, default_value = "snapmend-bench storm")]
    command: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Storm(args)) => storm(args),
        Some(Command::Scan(args)) => scan(args),
        Some(Command::Stages(args)) => stages(args),
        None => verify(cli.verify),
    };
    match result {
        Ok(markdown) => {
            print!("{markdown}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn verify(args: VerifyArgs) -> Result<String, String> {
    let node_helper = args.node_helper.ok_or("--node-helper is required")?;
    let opts = BenchOptions {
        work_dir: args.work_dir,
        files: args.files,
        runs: args.runs,
        node_helper,
        toc_only: args.toc_only,
    };
    let report = run_benchmarks(&opts).map_err(|e| e.to_string())?;
    Ok(render_markdown(&report, &args.date, &args.command))
}

fn scan(args: ScanArgs) -> Result<String, String> {
    let opts = ScanBenchOptions {
        node_helper: args.node_helper,
        images: args.images,
        runs: args.runs,
        work_dir: args.work_dir,
    };
    let report = run_scan_bench(&opts).map_err(|e| e.to_string())?;
    Ok(render_scan_markdown(&report, &args.date, &args.command))
}

fn stages(args: StagesArgs) -> Result<String, String> {
    let opts = StagesOptions {
        work_dir: args.work_dir,
        files: args.files,
        node_helper: args.node_helper,
        callgrind: args.callgrind,
        tmpfs: args.tmpfs,
    };
    let report = run_stages(&opts).map_err(|e| e.to_string())?;
    Ok(render_stages_markdown(&report, &args.date, &args.command))
}

fn storm(args: StormArgs) -> Result<String, String> {
    let operator = match args.operator {
        Some(path) => path,
        None => {
            // This binary lives in target/<profile>/.
            let exe = std::env::current_exe().map_err(|e| format!("/proc/self/exe: {e}"))?;
            let target = exe
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| format!("{} has no target directory", exe.display()))?;
            let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/src");
            choose_operator(target, &sources).map_err(|e| e.to_string())?
        }
    };
    eprintln!("snapmend-bench storm: operator {}", operator.display());
    let opts = StormOptions {
        operator,
        nodes: args.nodes,
        storm_nodes: args.storm_nodes,
        updates: args.updates,
        batch_repairs: args.batch_repairs,
        batch_cluster_nodes: args.batch_cluster_nodes,
        max_cordoned: args.max_cordoned_nodes,
        verify_time: Duration::from_millis(50),
        repair_time: Duration::from_millis(200),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let report = runtime
        .block_on(run_storm(&opts))
        .map_err(|e| e.to_string())?;
    Ok(render_storm_markdown(&report, &args.date, &args.command))
}
