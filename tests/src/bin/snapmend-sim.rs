//! `snapmend-sim --kubeconfig PATH [--port N] [--auth]`: serve a simulated Kubernetes API server until
//! SIGINT or SIGTERM. Each request is logged at debug level: see it with `--verbose` or
//! `RUST_LOG=info,snapmend_tests=debug`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use snapmend_tests::sim::{SimConfig, SimServer};

#[derive(Debug, Parser)]
#[command(
    name = "snapmend-sim",
    about = "An in-process Kubernetes API server test double"
)]
struct Args {
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Changes kept for watches to resume from.
    #[arg(long, default_value_t = SimConfig::default().history_window)]
    history_window: usize,
    /// Authenticate (bearer tokens, TokenRequest), authorize (RBAC) and admit
    /// (ValidatingAdmissionPolicy) as a real cluster does; the kubeconfig gets an admin token.
    #[arg(long)]
    auth: bool,
    /// Log every request (debug level) unless RUST_LOG says otherwise.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let default_filter = if args.verbose {
        "info,snapmend_tests=debug"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let sim = SimServer::start_with(SimConfig {
        port: args.port,
        history_window: args.history_window,
        auth: args.auth,
        ..SimConfig::default()
    })
    .await?;
    sim.write_kubeconfig(&args.kubeconfig)?;
    tracing::info!(url = %sim.url(), kubeconfig = %args.kubeconfig.display(), "serving; SIGINT or SIGTERM stops");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    sim.stop().await;
    Ok(())
}
