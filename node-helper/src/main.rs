//! `snapmend-node-helper`: see `snapmend_node_helper::cli` for the command line.

use clap::Parser;
use snapmend_node_helper::cli::{self, Cli, Command};

fn main() {
    // clap exits with 2 on bad arguments, as the contract asks.
    let cli = Cli::parse();
    cli::init_logging();
    let code = match &cli.command {
        Command::Verify(args) => cli::run_job(args, false, false),
        Command::Repair(args) => cli::run_job(&args.verify, true, args.dry_run),
        Command::Agent(args) => snapmend_node_helper::agent::main(args),
    };
    std::process::exit(code);
}
