//! Runs the verify/repair benchmark (see `snapmend_tests::bench`) and prints its Markdown.

use std::path::PathBuf;

use clap::Parser;
use snapmend_tests::bench::{BenchOptions, render_markdown, run_benchmarks};

#[derive(Parser)]
#[command(about = "snapmend verify/repair benchmark against GNU tar")]
struct Args {
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
    #[arg(long)]
    node_helper: PathBuf,
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

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let opts = BenchOptions {
        work_dir: args.work_dir,
        files: args.files,
        runs: args.runs,
        node_helper: args.node_helper,
        toc_only: args.toc_only,
    };
    match run_benchmarks(&opts) {
        Ok(report) => {
            print!("{}", render_markdown(&report, &args.date, &args.command));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
