//! `snapmend-operator`: see `snapmend_operator::run`.

use std::process::ExitCode;

use clap::Parser;
use snapmend_operator::config::{Args, Environment, OperatorConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let env = Environment::from_vars(|k| std::env::var(k).ok(), fallback_identity());
    match snapmend_operator::run::run_operator(OperatorConfig { args, env }).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "snapmend-operator failed");
            ExitCode::FAILURE
        }
    }
}

/// Host name and process id: unique enough among replicas outside a Pod.
fn fallback_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let host = if host.is_empty() {
        "snapmend-operator"
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}
