//! A kube-runtime `Controller` with a finalizer on a CRD (snapmend's SnapshotRepair) against
//! snapmend-sim: reconcile writes status, deletion runs the cleanup and releases the object.

// Helpers outside #[test] functions unwrap too: a panic is a failing test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, ResourceExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use serde_json::json;
use snapmend_crds::{Phase, SnapshotRepair};
use snapmend_tests::sim::SimServer;

const FINALIZER: &str = "snapmend.io/test-cleanup";

struct Ctx {
    api: Api<SnapshotRepair>,
    cleaned: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(
    sr: Arc<SnapshotRepair>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<ReconcileError>> {
    let api = ctx.api.clone();
    finalizer(&api, FINALIZER, sr, |event| async {
        match event {
            Finalizer::Apply(sr) => {
                let status = json!({"status": {"phase": "Succeeded", "observedGeneration": sr.metadata.generation}});
                ctx.api
                    .patch_status(&sr.name_any(), &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(sr) => {
                ctx.cleaned.lock().unwrap().push(sr.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _sr: Arc<SnapshotRepair>,
    _e: &kube::runtime::finalizer::Error<ReconcileError>,
    _ctx: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(100))
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn controller_with_finalizer_reconciles_and_cleans_up() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &SnapshotRepair::crd())
        .await
        .unwrap();
    let api: Api<SnapshotRepair> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        cleaned: Mutex::new(Vec::new()),
    });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );

    let sr: SnapshotRepair = serde_json::from_value(json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair",
        "metadata": {"name": "r1"}, "spec": {"nodeName": "node-a", "image": "busybox:1.36"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &sr).await.unwrap();

    eventually("the finalizer and a Succeeded status", || async {
        let sr = api.get("r1").await.unwrap();
        sr.finalizers().contains(&FINALIZER.to_string())
            && sr.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded)
            && sr.status.as_ref().and_then(|s| s.observed_generation) == Some(1)
    })
    .await;

    api.patch(
        "r1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cordon": false}})),
    )
    .await
    .unwrap();
    eventually("observedGeneration to follow the spec change", || async {
        api.get("r1")
            .await
            .unwrap()
            .status
            .and_then(|s| s.observed_generation)
            == Some(2)
    })
    .await;

    api.delete("r1", &DeleteParams::default()).await.unwrap();
    eventually("cleanup to run and the object to go", || async {
        api.get_opt("r1").await.unwrap().is_none()
    })
    .await;
    assert_eq!(*ctx.cleaned.lock().unwrap(), vec!["r1".to_string()]);
    controller.abort();
    sim.stop().await;
}
