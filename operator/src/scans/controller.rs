//! The SnapshotScan controller's wiring: its own watch of SnapshotScans, woken by changes of the
//! SnapshotRepairs they own (from the operator's shared repair store) and by requeues at the
//! next scheduled time.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use snapmend_crds::{SnapshotRepair, SnapshotScan};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::reconcile::{ScanContext, reconcile_scan, scan_error_policy, scans_owning};
use crate::caches::Caches;
use crate::reconcile::CONTROLLER_NAME;
use crate::run::Base;

/// Runs until `stop`. `repair_changes` is drained into an unbounded channel by a task of its
/// own: a subscriber of the shared store that is not read stalls the store, and the
/// controller pauses all its triggers while it backs off from a failing watch (for example
/// before the SnapshotScan CRD is installed).
pub async fn run_scan_controller(
    base: Arc<Base>,
    stop: CancellationToken,
    caches: Caches,
    mut repair_changes: BoxStream<'static, Arc<SnapshotRepair>>,
) {
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let forward = async move {
        while let Some(sr) = repair_changes.next().await {
            for scan in scans_owning(&sr) {
                let _ = wake.send(scan);
            }
        }
    };
    let reporter = Reporter {
        controller: CONTROLLER_NAME.to_string(),
        instance: Some(base.config.env.identity.clone()),
    };
    let ctx = Arc::new(ScanContext::new(
        base.client.clone(),
        Recorder::new(base.client.clone(), reporter),
        base.metrics.clone(),
        caches,
    ));
    info!("starting SnapshotScan controller");
    let controller = Controller::new(
        Api::<SnapshotScan>::all(base.client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)))
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile_scan, scan_error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((obj, action)) => debug!(scan = %obj.name, ?action, "reconciled"),
            Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
            Err(error) => warn!(%error, "SnapshotScan controller"),
        }
    });
    tokio::select! {
        () = controller => {}
        () = forward => {}
    }
    info!("SnapshotScan controller stopped");
}
