//! The culprit end to end (issue 17): a process with a recognisable command line deletes
//! `/pause` from the sandbox image's committed snapshot in a private containerd; the agent's
//! guard attributes it; a SnapshotRepair for the node, driven by the real operator, repairs
//! it and names that process in `status.culprit`, in its message, and in the report's layer
//! `culprit`. Needs root.

mod agent_support;

use std::process::Command;
use std::time::{Duration, Instant};

use agent_support::*;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use snapmend_crds::{
    ContentCheck, LayerState, Outcome, Phase, RepairAction, SnapshotRepair, SnapshotRepairSpec,
};
use snapmend_tests::containerd::ContainerdFixture;
use snapmend_tests::image_builder::pause_image;
use snapmend_tests::kubelet::scenario::spawn_operator;

const CULPRIT: &str = "snapmend-cron-cleanup";
const NODE: &str = "node-culprit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_names_the_process_that_deleted_pause() {
    let started = Instant::now();
    let fixture = ContainerdFixture::start().unwrap();
    let sandbox = fixture.sandbox_image().to_string();
    fixture
        .import_images(&[pause_image(&sandbox).unwrap()])
        .unwrap();
    let pause = std::fs::read_dir(fixture.snapshotter_root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path().join("fs/pause"))
        .find(|p| p.is_file())
        .expect("the pause snapshot");
    let snapshot_id = pause
        .parent()
        .and_then(|fs| fs.parent())
        .and_then(|d| d.file_name())
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let sim = start_cluster(0).await;
    let client = sim.client().unwrap();
    create_node(&client, NODE).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let store = StoreArgs {
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), NODE, Some(&store));
    let _operator = spawn_operator(&kubeconfig, dir.path(), &[]).unwrap();
    agent.wait_ready().await;
    let (_, ready) = agent.http_get("/readyz").await.unwrap();
    assert!(ready.contains("guard: watching"), "{ready}");

    // The "cleanup script": deletes /pause, then waits to be told to exit (so /proc still
    // names it when the guard reads it, as a cron job's shell would).
    let culprit = Culprit::delete(CULPRIT, &pause);
    let pid = culprit.pid() as i32;
    // The guard reports a change once it has been quiet for a moment; its Node Event says
    // the attribution is in (the agent remembers it before sending the Event).
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    wait_for(
        "SnapshotTampered Event",
        Duration::from_secs(10),
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("SnapshotTampered")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NODE)
                })
        },
    )
    .await;
    culprit.release();

    let applied = Instant::now();
    // A person applies a SnapshotRepair for the node's sandbox image.
    let spec = SnapshotRepairSpec {
        node_name: NODE.into(),
        image: None,
        sandbox_image: true,
        all_images: false,
        action: RepairAction::Repair,
        cordon: true,
        content_check: ContentCheck::Full,
        pull_secrets: Vec::new(),
    };
    create_repair_with(&client, "culprit-pause", spec).await;
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let done = wait_for("the repair to finish", Duration::from_secs(30), || async {
        let sr = srs.get("culprit-pause").await.ok()?;
        sr.status.as_ref()?.phase?.is_terminal().then_some(sr)
    })
    .await;
    eprintln!("SnapshotRepair applied → done in {:?}", applied.elapsed());
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert!(pause.is_file(), "/pause restored");

    // status.culprit names the process, what it did, where and in which layer.
    let culprit = status.culprit.clone().expect("status.culprit");
    assert_eq!(culprit.change.process.pid, pid, "{culprit:?}");
    let cmdline = culprit.change.process.cmdline.clone().unwrap_or_default();
    assert!(
        cmdline.starts_with(CULPRIT) && cmdline.contains("unlink $ARGV[0]"),
        "{cmdline:?}"
    );
    assert_eq!(culprit.change.op, "delete");
    assert_eq!(culprit.change.path, "/pause");
    assert_eq!(culprit.layer, 0);
    assert_eq!(culprit.snapshot_id.as_deref(), Some(snapshot_id.as_str()));
    assert!(!culprit.change.process.exited);
    assert!(
        culprit
            .summary
            .starts_with(&format!("damaged by pid {pid} `{CULPRIT} -e unlink")),
        "{}",
        culprit.summary
    );
    assert!(
        culprit.summary.ends_with("(delete /pause)"),
        "{}",
        culprit.summary
    );
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("damaged by pid {pid} `{CULPRIT}")),
        "{message}"
    );

    // The report's layer 0 carries the same attribution.
    let report = status.report.expect("report").report;
    assert_eq!(report.outcome, Outcome::Repaired);
    let layer = &report.layers[0];
    assert_eq!(layer.state, LayerState::Repaired);
    assert_eq!(layer.culprit.as_ref(), Some(&culprit.change));

    // The operator's CorruptionFound Event on the SnapshotRepair names it too.
    let found = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| {
            e.reason.as_deref() == Some("CorruptionFound")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("culprit-pause")
        })
        .expect("CorruptionFound Event");
    let note = found.note.unwrap_or_default();
    assert!(note.contains(&format!("damaged by pid {pid}")), "{note}");

    // What a person reads: `kubectl describe sr` shows the culprit's summary.
    let described = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["describe", "sr", "culprit-pause"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&described.stderr)
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("Summary:")
            && l.contains(&format!("damaged by pid {pid} `{CULPRIT}"))),
        "{text}"
    );
    eprintln!("culprit end to end in {:?}", started.elapsed());
}
