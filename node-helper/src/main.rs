//! `snapmend-node-helper`: see `snapmend_node_helper::cli` for the command line.

use clap::Parser;
use snapmend_node_helper::cli::{self, Cli};

fn main() {
    // clap exits with 2 on bad arguments, as the contract asks.
    let code = cli::run(Cli::parse());
    std::process::exit(code);
}
