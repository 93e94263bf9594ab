//! Status ownership by server-side apply, on snapmend-sim: the operator applies its fields with
//! field manager `snapmend-operator`, the agent its `report` with `snapmend-node-helper`. A field
//! the operator set once and leaves out later is removed by the API server, whatever field it
//! is: every property of the status schema is covered (a new status field that the fixture
//! below does not set fails the test), and none needs a hand-kept list in the operator.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use snapmend_crds::{
    Outcome, Phase, RepairAction, RepairRequest, Report, RequestReport, SnapshotRepair,
    SnapshotRepairSpec, SnapshotRepairStatus,
};
use snapmend_operator::reconcile::{CONTROLLER_NAME, status_apply};
use snapmend_tests::sim::SimServer;

/// Every status field set (the report too, though the operator never sends it).
fn full_status() -> SnapshotRepairStatus {
    // metav1.Time keeps whole seconds.
    let t = Time(Timestamp::from_second(Timestamp::now().as_second()).expect("time"));
    SnapshotRepairStatus {
        phase: Some(Phase::Repairing),
        observed_generation: Some(1),
        target: Some("registry.k8s.io/pause:3.10".into()),
        request: Some(RepairRequest {
            id: "2".into(),
            action: RepairAction::Repair,
            pull_secret: None,
        }),
        request_time: Some(t.clone()),
        report: Some(RequestReport {
            request_id: "1".into(),
            report: Report {
                outcome: Outcome::Corrupted,
                ..Default::default()
            },
        }),
        cordoned_by_operator: Some(true),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Repairing".into(),
            message: "repairing".into(),
            last_transition_time: t.clone(),
            observed_generation: Some(1),
        }],
        findings: Some("1 missing".into()),
        message: Some("repairing".into()),
        culprit: Some(snapmend_crds::RepairCulprit {
            summary: "damaged by pid 4711 `/bin/sh /etc/cron.daily/cleanup`".into(),
            layer: 0,
            snapshot_id: Some("1".into()),
            change: snapmend_crds::Culprit {
                time: "2026-12-07T03:12:09Z".into(),
                path: "/pause".into(),
                op: "delete".into(),
                count: 1,
                process: snapmend_crds::CulpritProcess {
                    pid: 4711,
                    cmdline: Some("/bin/sh /etc/cron.daily/cleanup".into()),
                    ..Default::default()
                },
            },
        }),
        start_time: Some(t.clone()),
        completion_time: Some(t),
    }
}

fn status_properties() -> Vec<String> {
    let crd = serde_json::to_value(SnapshotRepair::crd()).expect("crd");
    let props = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/status/properties")
        .and_then(Value::as_object)
        .expect("status properties");
    props.keys().cloned().collect()
}

#[test]
fn the_fixture_sets_every_status_field_of_the_schema() {
    let full = serde_json::to_value(full_status()).expect("status");
    let set: Vec<String> = full.as_object().expect("object").keys().cloned().collect();
    for property in status_properties() {
        assert!(
            set.contains(&property),
            "status.{property} is new: set it in full_status() so that its pruning is tested"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_the_operator_stops_applying_are_removed_and_the_report_stays() {
    let sim = SimServer::start().await.expect("sim");
    let client = sim.client().expect("client");
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &SnapshotRepair::crd())
        .await
        .expect("crd");
    let api: Api<SnapshotRepair> = Api::all(client.clone());
    let spec = SnapshotRepairSpec {
        node_name: "node-a".into(),
        image: Some("registry.k8s.io/pause:3.10".into()),
        sandbox_image: false,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: Default::default(),
        pull_secrets: Vec::new(),
    };
    snapmend_tests::probe::wait_until(
        "SnapshotRepair served",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        || async { api.list(&Default::default()).await.ok().map(|_| ()) },
    )
    .await;
    api.create(&PostParams::default(), &SnapshotRepair::new("sr", spec))
        .await
        .expect("create");

    // The agent's report, under its own field manager.
    let report = json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair", "metadata": {"name": "sr"},
        "status": {"report": serde_json::to_value(full_status().report).expect("report")},
    });
    api.patch_status(
        "sr",
        &PatchParams::apply("snapmend-node-helper"),
        &Patch::Apply(&report),
    )
    .await
    .expect("agent applies its report");

    let operator = PatchParams::apply(CONTROLLER_NAME).force();
    let full = full_status();
    let applied = api
        .patch_status(
            "sr",
            &operator,
            &Patch::Apply(&status_apply("sr", None, &full)),
        )
        .await
        .expect("operator applies every field");
    assert_eq!(applied.status.as_ref(), Some(&full), "every field written");

    // Later the operator's decision has only a phase: everything else it owned goes.
    let only_phase = SnapshotRepairStatus {
        phase: Some(Phase::Succeeded),
        ..Default::default()
    };
    let rv = applied.resource_version();
    let after = api
        .patch_status(
            "sr",
            &operator,
            &Patch::Apply(&status_apply("sr", rv.as_deref(), &only_phase)),
        )
        .await
        .expect("operator applies one field");
    let status = serde_json::to_value(after.status.as_ref().expect("status")).expect("status");
    let mut keys: Vec<&String> = status.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["phase", "report"],
        "nothing stale is left: {status:#}"
    );
    assert_eq!(
        after.status.as_ref().and_then(|s| s.report.clone()),
        full.report
    );

    // Applying on a copy that has changed since fails instead of overwriting.
    let stale = api
        .patch_status(
            "sr",
            &operator,
            &Patch::Apply(&status_apply("sr", rv.as_deref(), &full)),
        )
        .await;
    assert!(
        matches!(stale, Err(kube::Error::Api(ref s)) if s.code == 409),
        "{stale:?}"
    );
    let managers: Vec<String> = after
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&CONTROLLER_NAME.to_string()),
        "{managers:?}"
    );
    assert!(
        managers.contains(&"snapmend-node-helper".to_string()),
        "{managers:?}"
    );
    sim.stop().await;
}
