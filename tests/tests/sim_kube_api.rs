//! kube-rs `Api` against snapmend-sim: CRUD, every patch kind, conflicts, the status
//! subresource, finalizers, selectors, pagination, events and error Status bodies.

// Helpers outside #[test] functions unwrap too: a panic is a failing test.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Node, Pod};
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, ResourceExt,
};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, CustomResourceExt, Resource};
use serde_json::json;
use snapmend_crds::SnapshotRepair;
use snapmend_tests::sim::SimServer;

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value"}
    }))
    .unwrap()
}

async fn install_snapshotrepair_crd(client: &Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.create(&PostParams::default(), &SnapshotRepair::crd())
        .await
        .unwrap();
}

fn repair(name: &str, node: &str) -> SnapshotRepair {
    serde_json::from_value(json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "sandboxImage": true}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_conflicts_and_error_statuses() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let created = cms
        .create(
            &PostParams::default(),
            &config_map("a", json!({"app": "web"})),
        )
        .await
        .unwrap();
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(
        created.metadata.generation, None,
        "configmaps have no generation"
    );
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let dup = api_error(
        cms.create(&PostParams::default(), &config_map("a", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    let mut changed = created.clone();
    changed.data = Some([("key".to_string(), "v2".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert!(replaced.resource_version().unwrap().parse::<u64>().unwrap() > rv1);

    let stale = api_error(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(stale.message.contains("the object has been modified"));

    let missing = api_error(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    let other_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "no-such-namespace");
    let no_ns = api_error(
        other_ns
            .create(&PostParams::default(), &config_map("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(no_ns.code, 404);

    let bad_selector = api_error(
        cms.list(&ListParams::default().labels("a in b"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (bad_selector.code, bad_selector.reason.as_str()),
        (400, "BadRequest")
    );

    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9);

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    sim.stop().await;
}

#[tokio::test]
async fn selectors_pagination_metadata_and_delete_collection() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        let tier = ["web", "db", "cache"][i % 3];
        cms.create(
            &PostParams::default(),
            &config_map(
                &format!("cm{i}"),
                json!({"tier": tier, "idx": i.to_string()}),
            ),
        )
        .await
        .unwrap();
    }
    let count = |lp: ListParams| {
        let cms = cms.clone();
        async move { cms.list(&lp).await.unwrap().items.len() }
    };
    assert_eq!(count(ListParams::default().labels("tier=web")).await, 3);
    assert_eq!(count(ListParams::default().labels("tier!=web")).await, 4);
    assert_eq!(
        count(ListParams::default().labels("tier in (db,cache)")).await,
        4
    );
    assert_eq!(
        count(ListParams::default().labels("tier notin (db,cache)")).await,
        3
    );
    assert_eq!(count(ListParams::default().labels("tier")).await, 7);
    assert_eq!(count(ListParams::default().labels("!tier")).await, 0);
    assert_eq!(
        count(ListParams::default().fields("metadata.name=cm3")).await,
        1
    );
    assert_eq!(
        count(ListParams::default().fields("metadata.namespace=default,metadata.name!=cm3")).await,
        6
    );

    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(ResourceExt::name_any));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(names.len(), 7);

    let meta: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(client.clone());
    let metas = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(metas.items.len(), 7);
    drop(meta);
    let one = cms.get_metadata("cm1").await.unwrap();
    assert_eq!(one.labels()["tier"], "db");

    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=web"),
    )
    .await
    .unwrap();
    assert_eq!(count(ListParams::default()).await, 4);
    sim.stop().await;
}

#[tokio::test]
async fn every_patch_kind_and_server_side_apply_ownership() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let cordoned = nodes.cordon("n1").await.unwrap();
    assert_eq!(cordoned.spec.unwrap().unschedulable, Some(true));
    let uncordoned = nodes.uncordon("n1").await.unwrap();
    assert_ne!(uncordoned.spec.unwrap().unschedulable, Some(true));

    let smp = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"metadata": {"labels": {"zone": "a"}}, "spec": {"unschedulable": true}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(smp.labels()["zone"], "a");
    assert_eq!(smp.spec.unwrap().unschedulable, Some(true));

    let merged = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"zone": null, "rack": "r1"}}})),
        )
        .await
        .unwrap();
    assert!(!merged.labels().contains_key("zone"));

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}},
        {"op": "test", "path": "/metadata/labels/rack", "value": "r1"}
    ]))
    .unwrap();
    let jp = nodes
        .patch("n1", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(jp.annotations()["note"], "x");
    let failing: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/labels/rack", "value": "nope"}]),
    )
    .unwrap();
    let err = api_error(
        nodes
            .patch("n1", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // Server-side apply: two managers, a conflict, force, and pruning of dropped fields.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let alice = PatchParams::apply("alice");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let created = cms.patch("ssa", &alice, &Patch::Apply(&cfg)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    assert_eq!(
        created.managed_fields()[0].manager.as_deref(),
        Some("alice")
    );
    let bob_cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}});
    let conflict = api_error(
        cms.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&bob_cfg))
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(conflict.message.contains("alice"), "{}", conflict.message);
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob_cfg),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "9");
    let alice_drops_b =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let pruned = cms
        .patch("ssa", &alice, &Patch::Apply(&alice_drops_b))
        .await
        .unwrap();
    assert_eq!(
        pruned.data.unwrap(),
        [("a".to_string(), "9".to_string())].into()
    );
    let missing_manager = api_error(
        cms.patch("ssa", &PatchParams::default(), &Patch::Apply(&bob_cfg))
            .await
            .unwrap_err(),
    );
    assert_eq!(missing_manager.code, 400);
    sim.stop().await;
}

#[tokio::test]
async fn status_subresource_generation_validation_and_finalizers_on_a_crd() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    install_snapshotrepair_crd(&client).await;
    let srs: Api<SnapshotRepair> = Api::all(client.clone());

    let mut with_status = repair("r1", "node-a");
    with_status.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let created = srs
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(
        created.status.is_none(),
        "create must drop status when a status subresource exists"
    );
    assert_eq!(
        created.spec.action,
        snapmend_crds::RepairAction::Repair,
        "schema default applied"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let st = srs
        .patch_status(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Verifying"}, "spec": {"cordon": false}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    assert!(st.spec.cordon, "status writes ignore spec");
    assert_eq!(
        st.status.as_ref().unwrap().phase,
        Some(snapmend_crds::Phase::Verifying)
    );

    let sp = srs
        .patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cordon": false}, "status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        sp.metadata.generation,
        Some(2),
        "spec writes bump generation"
    );
    assert_eq!(
        sp.status.as_ref().unwrap().phase,
        Some(snapmend_crds::Phase::Verifying),
        "spec writes ignore status"
    );

    let mut replaced_status = sp.clone();
    replaced_status.status.as_mut().unwrap().phase = Some(snapmend_crds::Phase::Succeeded);
    let rs = srs
        .replace_status("r1", &PostParams::default(), &replaced_status)
        .await
        .unwrap();
    assert_eq!(
        rs.status.unwrap().phase,
        Some(snapmend_crds::Phase::Succeeded)
    );

    let immutable = api_error(
        srs.patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "node-b"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (immutable.code, immutable.reason.as_str()),
        (422, "Invalid")
    );
    assert!(
        immutable.message.contains("nodeName is immutable"),
        "{}",
        immutable.message
    );

    let both: SnapshotRepair = serde_json::from_value(json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair", "metadata": {"name": "r2"},
        "spec": {"nodeName": "n", "sandboxImage": true, "image": "busybox"}
    }))
    .unwrap();
    let invalid = api_error(srs.create(&PostParams::default(), &both).await.unwrap_err());
    assert_eq!(invalid.code, 422);
    assert!(
        invalid
            .message
            .contains("exactly one of image, sandboxImage and allImages")
    );
    let all_and_image: SnapshotRepair = serde_json::from_value(json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair", "metadata": {"name": "r3"},
        "spec": {"nodeName": "n", "allImages": true, "image": "busybox"}
    }))
    .unwrap();
    let invalid = api_error(
        srs.create(&PostParams::default(), &all_and_image)
            .await
            .unwrap_err(),
    );
    assert_eq!(invalid.code, 422, "{}", invalid.message);
    let all: SnapshotRepair = serde_json::from_value(json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair", "metadata": {"name": "r4"},
        "spec": {"nodeName": "n", "allImages": true}
    }))
    .unwrap();
    let created = srs.create(&PostParams::default(), &all).await.unwrap();
    assert!(created.spec.all_images);
    assert_eq!(created.spec.target(), "all");
    let retarget = api_error(
        srs.patch(
            "r4",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allImages": null, "sandboxImage": true}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(retarget.code, 422, "{}", retarget.message);
    assert!(
        retarget.message.contains("the target is immutable"),
        "{}",
        retarget.message
    );
    srs.delete("r4", &Default::default()).await.unwrap();
    let bad_enum = api_error(
        srs.patch(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"action": "Destroy"}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        bad_enum.message.contains("Unsupported value: \"Destroy\""),
        "{}",
        bad_enum.message
    );

    let selected = srs
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    assert!(
        srs.list(&ListParams::default().fields("spec.nodeName=node-z"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    srs.patch(
        "r1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["snapmend.io/cleanup"]}})),
    )
    .await
    .unwrap();
    let deleting = srs.delete("r1", &DeleteParams::default()).await.unwrap();
    let obj = deleting
        .left()
        .expect("the object is returned while finalizers hold it");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(
        obj.metadata.generation,
        Some(3),
        "starting a deletion bumps the generation"
    );
    assert!(srs.get("r1").await.is_ok());
    srs.patch(
        "r1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(srs.get_opt("r1").await.unwrap().is_none());
    sim.stop().await;
}

#[tokio::test]
async fn events_recorded_through_events_v1_are_listed_as_core_events() {
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(on_node.items.len(), 1);

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "snapmend-test".into(),
            instance: Some("t1".into()),
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: "SnapshotCorrupted".into(),
                note: Some("pause missing".into()),
                action: "Verify".into(),
                secondary: None,
            },
            &pod.object_ref(&()),
        )
        .await
        .unwrap();
    let core: Api<CoreEvent> = Api::default_namespaced(client.clone());
    let found = core
        .list(&ListParams::default().fields(
            "involvedObject.name=p,involvedObject.kind=Pod,reason=SnapshotCorrupted,type=Warning",
        ))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].message.as_deref(), Some("pause missing"));
    assert_eq!(
        found.items[0].reporting_component.as_deref(),
        Some("snapmend-test")
    );

    pods.evict("p", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let scratch: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    scratch
        .create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .unwrap();
    let terminating = namespaces
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let refused = api_error(
        scratch
            .create(&PostParams::default(), &config_map("d", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        refused.code, 403,
        "no new content in a terminating namespace"
    );
    for _ in 0..100 {
        if namespaces.get_opt("scratch").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        namespaces.get_opt("scratch").await.unwrap().is_none(),
        "the namespace controller finished"
    );
    assert!(
        scratch.get_opt("c").await.unwrap().is_none(),
        "deleting a namespace deletes its contents"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sim_starts_and_stops_inside_a_runtime() {
    let sim = snapmend_tests::sim::BackgroundSim::start().unwrap();
    let client = Client::try_from(sim.server().kube_config().unwrap()).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    drop(sim);
    assert!(
        namespaces.list(&ListParams::default()).await.is_err(),
        "stopped"
    );
}

#[tokio::test]
async fn discovery_and_dynamic_objects_see_new_crds() {
    use kube::core::{DynamicObject, GroupVersionKind};
    use kube::discovery::{self, Discovery, Scope};
    let sim = SimServer::start().await.unwrap();
    let client = sim.client().unwrap();
    install_snapshotrepair_crd(&client).await;
    let discovered = Discovery::new(client.clone()).run().await.unwrap();
    let group = discovered
        .get("snapmend.io")
        .expect("the CRD's group is discovered");
    let (ar, caps) = group.recommended_kind("SnapshotRepair").unwrap();
    assert_eq!(ar.plural, "snapshotrepairs");
    assert_eq!(caps.scope, Scope::Cluster);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "snapshotrepairs/status" || sub.plural == "status")
    );
    let (ar, _) = discovery::pinned_kind(
        &client,
        &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
    )
    .await
    .unwrap();
    assert_eq!(ar.plural, "leases");

    let gvk = GroupVersionKind::gvk("snapmend.io", "v1alpha1", "SnapshotRepair");
    let (ar, _) = discovery::pinned_kind(&client, &gvk).await.unwrap();
    let dynamic: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapmend.io/v1alpha1", "kind": "SnapshotRepair", "metadata": {"name": "dyn"},
        "spec": {"nodeName": "node-a", "sandboxImage": true}
    }))
    .unwrap();
    let created = dynamic.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"]["action"], "Repair");
    assert_eq!(
        dynamic
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    sim.stop().await;
}
