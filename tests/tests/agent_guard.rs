//! The culprit guard inside the agent (issue 17): a process deleting `/pause` from a committed
//! snapshot becomes a Warning Event `SnapshotTampered` on the Node naming its pid, command line,
//! snapshot and path, and a metric; the agent's own repair is not reported. Needs root.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use snapmend_crds::{ContentCheck, Outcome, RepairAction, SnapshotRepairSpec};
use snapmend_tests::containerd::ContainerdFixture;
use snapmend_tests::image_builder::pause_image;

const CULPRIT: &str = "snapmend-culprit-test";

async fn tampered_events(client: &kube::Client, node: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("SnapshotTampered")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Node")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_culprit_becomes_a_node_event_and_the_agents_repair_does_not() {
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[pause_image(&sandbox).unwrap()])
        .unwrap();
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let node = unique("guard-a");
    let store = StoreArgs {
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, Some(&store));
    agent.wait_ready().await;
    let (_, ready) = agent.http_get("/readyz").await.unwrap();
    assert!(ready.contains("guard: watching"), "{ready}");
    assert_eq!(agent.metric("snapmend_agent_guard_active").await, 1.0);

    // A process with a recognisable name deletes /pause and stays alive until told.
    let pause = std::fs::read_dir(fixture.snapshotter_root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path().join("fs/pause"))
        .find(|p| p.exists())
        .expect("the pause snapshot");
    let snapshot_id = pause
        .parent()
        .and_then(|fs| fs.parent())
        .and_then(|d| d.file_name())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let culprit = Culprit::delete(CULPRIT, &pause);
    let pid = culprit.pid();
    let events = wait_for(
        "SnapshotTampered Event",
        Duration::from_secs(20),
        || async {
            let e = tampered_events(&client, &node).await;
            (!e.is_empty()).then_some(e)
        },
    )
    .await;
    culprit.release();
    assert_eq!(events.len(), 1, "{events:#?}");
    let note = events[0].note.clone().unwrap_or_default();
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    for part in [
        format!("snapshot {snapshot_id}: delete /pause"),
        format!("by pid {pid} `{CULPRIT}"),
    ] {
        assert!(note.contains(&part), "{part:?} not in {note:?}");
    }
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_guard_changes_total{op="delete"}"#)
            .await,
        1.0
    );

    // The agent's own repair writes into the snapshot and is not reported.
    let app = unique("guard-a-pause");
    let spec = SnapshotRepairSpec {
        node_name: node.clone(),
        image: None,
        sandbox_image: true,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: ContentCheck::Full,
        pull_secrets: Vec::new(),
    };
    create_repair_with(&client, &app, spec).await;
    request(&client, &app, "1", RepairAction::Repair).await;
    let repaired = wait_for_report(&client, &app, "1", Duration::from_secs(60))
        .await
        .report;
    assert_eq!(repaired.outcome, Outcome::Repaired, "{repaired:?}");
    assert!(pause.is_file());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(tampered_events(&client, &node).await.len(), 1);
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_guard_changes_total{op="create"}"#)
            .await,
        0.0
    );
    drop(agent);
    cluster.finish(&[&node]).await;
}
