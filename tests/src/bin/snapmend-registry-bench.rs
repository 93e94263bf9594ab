//! Runs the registry benchmark (see `snapmend_tests::bench::registry`) and prints its Markdown.

use std::path::PathBuf;

use clap::Parser;
use snapmend_tests::bench::registry::{
    RegistryBenchOptions, render_registry_markdown, run_registry_benchmark,
};

#[derive(Parser)]
#[command(
    about = "snapmend repair/fetch from a loopback registry against the content store and skopeo"
)]
struct Args {
    /// Directory for the generated layer, the registry and skopeo's copies.
    #[arg(long, default_value = "/var/tmp/snapmend-registry-bench")]
    work_dir: PathBuf,
    /// Files in the generated layer (about 20 KB each on average).
    #[arg(long, default_value_t = 60_000)]
    files: u64,
    /// Timed rounds.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The node-helper binary to measure (build it with --release).
    #[arg(long)]
    node_helper: PathBuf,
    /// Date written into the Markdown.
    #[arg(long, default_value = "")]
    date: String,
    /// Command line written into the Markdown.
    #[arg(long, default_value = "bench/registry.sh")]
    command: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let opts = RegistryBenchOptions {
        work_dir: args.work_dir,
        files: args.files,
        runs: args.runs,
        node_helper: args.node_helper,
    };
    match run_registry_benchmark(&opts) {
        Ok(report) => {
            print!(
                "{}",
                render_registry_markdown(&report, &args.date, &args.command)
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
