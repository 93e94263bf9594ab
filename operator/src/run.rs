//! Wiring: kube client, metrics and health server, leader election, and the controllers that
//! only the leader runs.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::Controller;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::caches::{self, NodeMapper, Started, repairs_for_lease};
use crate::config::OperatorConfig;
use crate::error::Error;
use crate::events::{EventRemediationConfig, run_event_remediation};
use crate::http::{self, Health};
use crate::leader;
use crate::metrics::Metrics;
use crate::reconcile::{CONTROLLER_NAME, Context, error_policy, reconcile};

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

    let base = Arc::new(Base {
        client: client.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
    });
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
        |term| run_as_leader(base.clone(), term),
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

/// What every leadership term starts from.
pub struct Base {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
}

/// How often the store-size gauges are refreshed.
const STORE_GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Everything only the leader runs, until `stop` is cancelled. Each term starts its own caches
/// (listed afresh, so a new leader counts the cordon cap from the cluster as it is).
pub async fn run_as_leader(base: Arc<Base>, stop: CancellationToken) {
    tokio::join!(
        run_repair_controller(base.clone(), stop.clone()),
        run_event_remediation_until(base, stop),
    );
}

/// Automatic SnapshotRepairs from kubelet events (`--auto-remediate`, `--cooldown`), until `stop`.
pub async fn run_event_remediation_until(base: Arc<Base>, stop: CancellationToken) {
    let args = &base.config.args;
    let config = EventRemediationConfig::new(args.auto_remediate, args.cooldown);
    tokio::select! {
        _ = stop.cancelled() => {}
        result = run_event_remediation(base.client.clone(), config) => {
            if let Err(error) = result {
                warn!(%error, "automatic remediation stopped");
            }
        }
    }
}

/// The SnapshotRepair controller: reflector stores of SnapshotRepairs, Nodes and helper
/// Leases, one watch each, shared by the controller's triggers and every reconcile.
pub async fn run_repair_controller(base: Arc<Base>, stop: CancellationToken) {
    let Some(Started {
        caches,
        repair_changes,
        node_changes,
        lease_changes,
        drive,
    }) = caches::start(&base.client, &base.config.env.namespace)
    else {
        warn!("cannot subscribe to the reflector stores; SnapshotRepair controller not started");
        return;
    };
    // The reflectors run in their own task from now on; the controller starts once every store
    // holds its first full list, so no reconcile decides (or counts the cordon cap) on a
    // partial cluster. Waiting here, once per store, also keeps to one waiter at a time:
    // kube-runtime's readiness future wakes only the last of several concurrent waiters.
    let reflectors = AbortOnDrop(tokio::spawn(drive));
    tokio::select! {
        () = stop.cancelled() => return,
        ready = caches.wait_until_ready() => if !ready {
            warn!("reflectors stopped before the caches were filled");
            return;
        },
    }
    info!(
        repairs = caches.repairs.len(),
        nodes = caches.nodes.len(),
        leases = caches.leases.len(),
        "caches filled"
    );
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(
        base.client.clone(),
        base.config.clone(),
        base.metrics.clone(),
        caches.clone(),
        wake,
    ));
    let node_mapper = NodeMapper::new(caches.repairs.clone());
    let lease_repairs = caches.repairs.clone();
    info!("starting SnapshotRepair controller");
    let controller = Controller::for_shared_stream(repair_changes, caches.repairs.clone())
        .watches_shared_stream(node_changes, move |node| node_mapper.map(&node))
        .watches_shared_stream(lease_changes, move |lease| {
            repairs_for_lease(&lease_repairs, &lease)
        })
        .reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => debug!(repair = %obj.name, ?action, "reconciled"),
                // Reconcile failures are logged by error_policy; this is the watch side.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(%error, "SnapshotRepair controller"),
            }
        });
    let metrics = base.metrics.clone();
    let gauges = async move {
        let mut tick = tokio::time::interval(STORE_GAUGE_EVERY);
        loop {
            tick.tick().await;
            metrics.set_store_size("snapshotrepairs", caches.repairs.len());
            metrics.set_store_size("nodes", caches.nodes.len());
            metrics.set_store_size("leases", caches.leases.len());
        }
    };
    tokio::select! {
        () = controller => {}
        () = gauges => {}
    }
    drop(reflectors);
    info!("SnapshotRepair controller stopped");
}

/// Aborts the task when dropped, so a leadership term's reflectors end with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    Client::try_from(with_user_agent(config)).map_err(|e| Error::ClientConfig(e.to_string()))
}

/// Names the operator in every request (`snapmend-operator/<version>`), as kubectl and
/// kube-controller-manager do, so API server audit logs and request metrics can tell it apart.
pub fn with_user_agent(mut config: kube::Config) -> kube::Config {
    let agent = format!("{CONTROLLER_NAME}/{}", env!("CARGO_PKG_VERSION"));
    if let Ok(value) = axum::http::HeaderValue::from_str(&agent) {
        config.headers.push((axum::http::header::USER_AGENT, value));
    }
    config
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
