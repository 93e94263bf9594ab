//! `snapmend-node-helper agent`: the per-node side of the SnapshotRepair protocol.
//!
//! - `decision`: what to do with one observed SnapshotRepair (pure).
//! - `worker`: the one-at-a-time request queue; runs `job::verify`/`job::repair` and writes
//!   `status.report` (`report_patch`, pure).
//! - `culprits`: the guard's last attribution per snapshot, filled into damaged layers of
//!   the Reports the worker writes (`fill_culprits`, pure).
//! - `pull_secret`: the request's pull secrets as a private docker config file for the job.
//! - `presence`: the `snapmend-node-helper.<node>` Lease, renewed every 10 s.
//! - `http`, `metrics`, `status`: `/metrics`, `/healthz`, `/readyz`.
//!
//! Every task survives the API server going away: the watch backs off and relists, the Lease
//! and report writes retry. Only SIGTERM/SIGINT stops the agent.

pub mod args;
pub mod culprits;
pub mod decision;
pub mod guard_events;
pub mod http;
pub mod metrics;
pub mod presence;
pub mod pull_secret;
pub mod report_patch;
pub mod status;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{reflector, watcher};
use kube::{Api, Client};
use snapmend_crds::SnapshotRepair;
use snapmend_crds::runtime::retry::RetryPolicy;
use snapmend_crds::runtime::shutdown::Shutdown;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
pub use args::AgentArgs;
pub use worker::StoreOptions;

/// How long a running request may take to finish after SIGTERM before the agent exits anyway.
/// Repairs are crash-safe (entry by entry, atomically), so cutting one short is safe.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentOptions {
    pub node: String,
    /// Lease holder identity: `<node>/<pod>` in a DaemonSet, the node name otherwise.
    pub holder: String,
    pub metrics_addr: SocketAddr,
    pub lease_namespace: String,
    pub store: StoreOptions,
    /// Run the culprit guard (`--guard on`).
    pub guard: bool,
}

/// Holder identity for the presence Lease.
pub fn holder_identity(node: &str, pod: Option<&str>) -> String {
    match pod {
        Some(pod) if !pod.is_empty() => format!("{node}/{pod}"),
        _ => node.to_string(),
    }
}

/// The field selector that limits the watch to this node's SnapshotRepairs
/// (`spec.nodeName` is a selectable field of the CRD).
pub fn node_field_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Runs the agent until SIGTERM or SIGINT, with the kube client from the environment
/// (KUBECONFIG or in-cluster).
pub async fn run(opts: AgentOptions) -> Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|source| Error::kube("load Kubernetes client configuration", source))?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let result = run_with(client, opts, shutdown.clone()).await;
    // Ends the signal task too.
    shutdown.trigger();
    result
}

/// Runs the agent with `client` until `shutdown` fires.
pub async fn run_with(client: Client, opts: AgentOptions, shutdown: Shutdown) -> Result<()> {
    let metrics = metrics::Metrics::new();
    let status = status::AgentStatus::default();
    let server = http::bind(
        opts.metrics_addr,
        metrics.clone(),
        status.clone(),
        shutdown.clone(),
    )
    .await?;
    let server = tokio::spawn(server);
    info!(
        node = opts.node,
        holder = opts.holder,
        lease_namespace = opts.lease_namespace,
        "agent starting"
    );

    let culprits = culprits::SharedCulprits::default();
    let guard = opts.guard.then(|| {
        guard_events::spawn(
            client.clone(),
            opts.node.clone(),
            &opts.store,
            metrics.clone(),
            status.clone(),
            Arc::clone(&culprits),
            shutdown.clone(),
        )
    });
    if !opts.guard {
        status.guard_state("off (--guard off)".into());
    }
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let secrets = Api::namespaced(client.clone(), &opts.lease_namespace);
    let leases: Api<Lease> = Api::namespaced(client, &opts.lease_namespace);
    let (store, writer) = reflector::store();
    let wake = Arc::new(Notify::new());

    let presence = tokio::spawn(presence::keep_present(
        leases,
        opts.node.clone(),
        opts.holder.clone(),
        metrics.clone(),
        status.clone(),
        shutdown.clone(),
    ));
    let watch = tokio::spawn(watch_own_repairs(
        srs.clone(),
        opts.node.clone(),
        writer,
        Arc::clone(&wake),
        metrics.clone(),
        status,
        shutdown.clone(),
    ));
    let work = tokio::spawn(
        worker::Worker {
            node: opts.node.clone(),
            api: srs,
            store,
            wake,
            store_options: opts.store.clone(),
            secrets,
            secrets_namespace: opts.lease_namespace.clone(),
            metrics,
            culprits,
            shutdown: shutdown.clone(),
        }
        .run(),
    );

    let stop = shutdown;
    stop.wait().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, work).await.is_err() {
        warn!(grace = ?SHUTDOWN_GRACE, "a request was still running at shutdown; leaving it (repairs are crash-safe)");
    }
    // Both are safe to cut anywhere; an API call stuck on an unreachable server must not
    // hold up the exit.
    watch.abort();
    presence.abort();
    if let Some(guard) = guard {
        guard.abort();
    }
    match server.await {
        Ok(result) => result,
        Err(e) => Err(Error::Serve {
            what: "metrics server task".into(),
            source: std::io::Error::other(e),
        }),
    }
}

/// Pauses before relisting after a watch error: from 0.5 s, doubling up to 15 s.
const WATCH_RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(15));

/// Mirrors this node's SnapshotRepairs into the reflector store and wakes the worker on every
/// change. After any watch error it starts over with a fresh list instead of resuming from the
/// last resourceVersion: an API server that comes back restored from a backup (or a test double
/// that restarts empty) may not know that version, and a relist of one node's repairs is cheap.
async fn watch_own_repairs(
    api: Api<SnapshotRepair>,
    node: String,
    mut writer: reflector::store::Writer<SnapshotRepair>,
    wake: Arc<Notify>,
    metrics: metrics::Metrics,
    status: status::AgentStatus,
    shutdown: Shutdown,
) {
    let config = watcher::Config::default().fields(&node_field_selector(&node));
    let mut retry = WATCH_RETRY.delays();
    loop {
        let stream = watcher(api.clone(), config.clone());
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = shutdown.wait() => return,
            };
            match event {
                Some(Ok(event)) => {
                    writer.apply_watcher_event(&event);
                    if matches!(event, watcher::Event::InitDone) {
                        debug!(node, "SnapshotRepair watch listed");
                        status.watch_synced(true);
                        retry.reset();
                    }
                    wake.notify_one();
                }
                Some(Err(error)) => {
                    warn!(node, %error, "SnapshotRepair watch failed; relisting");
                    metrics.watch_error();
                    status.watch_synced(false);
                    break;
                }
                None => {
                    warn!(node, "SnapshotRepair watch ended; relisting");
                    break;
                }
            }
        }
        let wait = retry.next_delay();
        debug!(node, retry_in = ?wait, "relisting after a pause");
        if shutdown.sleep_or_stop(wait).await {
            return;
        }
    }
}

/// Entry point for the CLI (which sets up logging): a runtime, the agent, and an exit status
/// (0 after a clean stop, 2 when it could not start).
pub fn main(args: &AgentArgs) -> i32 {
    let opts = args.options();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            eprintln!(
                "snapmend-node-helper agent: {}",
                Error::Serve {
                    what: "start the async runtime".into(),
                    source
                }
            );
            return 2;
        }
    };
    let result = runtime.block_on(run(opts));
    // A job still running past the grace period is left behind, not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "agent stopped");
            eprintln!("snapmend-node-helper agent: {error}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_is_node_slash_pod_when_the_pod_is_known() {
        assert_eq!(holder_identity("n1", Some("agent-x7")), "n1/agent-x7");
        assert_eq!(holder_identity("n1", Some("")), "n1");
        assert_eq!(holder_identity("n1", None), "n1");
    }

    #[test]
    fn watch_is_limited_to_the_node_by_field_selector() {
        assert_eq!(node_field_selector("node-a"), "spec.nodeName=node-a");
    }
}
