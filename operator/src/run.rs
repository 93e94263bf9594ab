//! Wiring: kube client, metrics and health server, leader election, and the controllers that
//! only the leader runs.

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::Controller;
use snapmend_crds::SnapshotRepair;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::caches::{self, Caches, Filled, NodeMapper, repairs_for_lease};
use crate::config::OperatorConfig;
use crate::error::Error;
use crate::events::watch::{EventRemediationConfig, Shared, run_event_remediation_on};
use crate::http::{self, Health};
use crate::leader;
use crate::metrics::Metrics;
use crate::reconcile::{CONTROLLER_NAME, Context, error_policy, reconcile};
use crate::scans;
use snapmend_crds::runtime::shutdown::Shutdown;

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run_operator(config: OperatorConfig) -> Result<(), Error> {
    let client = make_client(config.args.kubeconfig.as_deref()).await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    run_operator_with(client, config, shutdown.token()).await
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
    let listener = snapmend_crds::runtime::http::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    let server = tokio::spawn(http::serve(
        listener,
        http::router(metrics.clone(), health.clone()),
        Shutdown::from_token(shutdown.clone()),
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

/// Everything only the leader runs, until `stop` is cancelled. Each term starts its own stores
/// (listed afresh, so a new leader counts the cordon cap from the cluster as it is), shared by
/// the SnapshotRepair controller and the automatic remediation: one watch per type.
pub async fn run_as_leader(base: Arc<Base>, stop: CancellationToken) {
    let filled = tokio::select! {
        () = stop.cancelled() => return,
        filled = caches::start_filled(&base.client, &base.config.env.namespace) => filled,
    };
    let Filled {
        caches,
        repair_changes,
        node_changes,
        lease_changes,
        remediation_repair_changes,
        scan_repair_changes,
        reflectors,
    } = match filled {
        Ok(filled) => filled,
        Err(error) => {
            warn!(%error, "SnapshotRepair controller and automatic remediation not started");
            return;
        }
    };
    info!(
        repairs = caches.repairs.len(),
        nodes = caches.nodes.len(),
        leases = caches.leases.len(),
        "caches filled"
    );
    let remediation = Shared {
        repairs: caches.repairs.clone(),
        nodes: caches.nodes.clone(),
        repair_changes: remediation_repair_changes,
    };
    let triggers = Triggers {
        repairs: repair_changes,
        nodes: node_changes,
        leases: lease_changes,
    };
    tokio::join!(
        run_repair_controller(base.clone(), stop.clone(), caches.clone(), triggers),
        run_event_remediation_until(base.clone(), stop.clone(), remediation),
        scans::controller::run_scan_controller(base, stop, caches, scan_repair_changes),
    );
    drop(reflectors);
}

/// Automatic SnapshotRepairs from kubelet events (`--auto-remediate`, `--cooldown`), until `stop`.
pub async fn run_event_remediation_until(base: Arc<Base>, stop: CancellationToken, shared: Shared) {
    let args = &base.config.args;
    let config = EventRemediationConfig::new(args.auto_remediate, args.cooldown);
    tokio::select! {
        _ = stop.cancelled() => {}
        result = run_event_remediation_on(base.client.clone(), config, shared) => {
            if let Err(error) = result {
                warn!(%error, "automatic remediation stopped");
            }
        }
    }
}

/// The store change streams that trigger reconciles.
struct Triggers {
    repairs: BoxStream<'static, Arc<SnapshotRepair>>,
    nodes: BoxStream<'static, Arc<Node>>,
    leases: BoxStream<'static, Arc<Lease>>,
}

/// The SnapshotRepair controller on the filled stores: their change streams trigger it (Node
/// and Lease changes mapped to the repairs they affect), every reconcile reads them.
async fn run_repair_controller(
    base: Arc<Base>,
    stop: CancellationToken,
    caches: Caches,
    triggers: Triggers,
) {
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
    let controller = Controller::for_shared_stream(triggers.repairs, caches.repairs.clone())
        .watches_shared_stream(triggers.nodes, move |node| node_mapper.map(&node))
        .watches_shared_stream(triggers.leases, move |lease| {
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
