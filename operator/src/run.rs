//! Wiring: kube client, metrics and health server, leader election, and the controllers that
//! only the leader runs.

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{Controller, watcher};
use snapmend_crds::SnapshotRepair;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::OperatorConfig;
use crate::error::Error;
use crate::events::{EventRemediationConfig, run_event_remediation};
use crate::http::{self, Health};
use crate::leader;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run_operator(config: OperatorConfig) -> Result<(), Error> {
    let client = make_client(config.args.kubeconfig.as_deref()).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    run_operator_with(client, config, shutdown).await
}

/// Runs the operator with a given client until `shutdown` is cancelled.
pub async fn run_operator_with(
    client: Client,
    config: OperatorConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let addr = config.args.metrics_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(http::serve(
        listener,
        http::router(metrics.clone(), health.clone()),
        shutdown.clone(),
    ));

    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
    ));
    let election = leader::run_when_leader(
        client,
        &config.env,
        shutdown.clone(),
        || health.set_ready(true),
        |leading| {
            metrics.set_leader(leading);
            if !leading {
                metrics.forget_phases();
            }
        },
        |term| run_as_leader(ctx.clone(), term),
    )
    .await;
    shutdown.cancel();
    match server.await {
        Ok(result) => result?,
        Err(join) => warn!(error = %join, "metrics server task ended abnormally"),
    }
    election?;
    info!("stopped");
    Ok(())
}

/// Everything only the leader runs, until `stop` is cancelled. Further leader-only tasks
/// (automatic repairs from events) are joined here.
pub async fn run_as_leader(ctx: Arc<Context>, stop: CancellationToken) {
    tokio::join!(
        run_repair_controller(ctx.clone(), stop.clone()),
        run_event_remediation_until(ctx, stop),
    );
}

/// Automatic SnapshotRepairs from kubelet events (`--auto-remediate`, `--cooldown`), until `stop`.
pub async fn run_event_remediation_until(ctx: Arc<Context>, stop: CancellationToken) {
    let args = &ctx.config.args;
    let config = EventRemediationConfig::new(args.auto_remediate, args.cooldown);
    tokio::select! {
        _ = stop.cancelled() => {}
        result = run_event_remediation(ctx.client.clone(), config) => {
            if let Err(error) = result {
                warn!(%error, "automatic remediation stopped");
            }
        }
    }
}

/// The SnapshotRepair controller.
pub async fn run_repair_controller(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<SnapshotRepair> = Api::all(ctx.client.clone());
    info!("starting SnapshotRepair controller");
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => debug!(repair = %obj.name, ?action, "reconciled"),
                // Reconcile failures are logged by error_policy; this is the watch side.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(%error, "SnapshotRepair controller"),
            }
        })
        .await;
    info!("SnapshotRepair controller stopped");
}

async fn make_client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::ClientConfig(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| Error::ClientConfig(e.to_string()))
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the operator");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
