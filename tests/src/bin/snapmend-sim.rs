//! `snapmend-sim --kubeconfig PATH [--port N]`: serve a simulated Kubernetes API server until
//! SIGINT or SIGTERM. Requests are logged at debug level (`RUST_LOG=snapmend_tests=debug`).

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let sim = SimServer::start_with(SimConfig {
        port: args.port,
        history_window: args.history_window,
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
