//! Issue 13 end to end: `spec.pullSecrets` through the real operator and the real agent on
//! snapmend-sim. A private containerd whose pause image's layer blob was removed (`ctr
//! content rm`) and whose `/pause` was deleted; the image's registry name maps (hosts.toml)
//! to Debian's `docker-registry` on loopback with TLS and htpasswd, the image pushed there
//! with `skopeo`. A SnapshotRepair naming a Secret with the right password repairs the
//! snapshot to exactly containerd's unpack; one with a wrong password fails with the
//! registry's 401 in `kubectl describe sr`, writing nothing; one naming a missing Secret fails
//! saying so. The operator's copy of the pull secrets is gone after each, and no password,
//! its base64 or the `auth` value appears in any log, Event, status or report. Needs root.

// Helpers of this test crate unwrap like the tests do (clippy.toml allows it only inside #[test]).
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::process::Command;
use std::time::{Duration, Instant};

use agent_support::*;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Node, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use snapmend_crds::labels::pull_secret_copy_name;
use snapmend_crds::{
    BlobSource, ContentCheck, LayerState, Outcome, Phase, PullSecretRef, RepairAction,
    SnapshotRepair, SnapshotRepairSpec,
};
use snapmend_tests::image_builder::{pause_image, write_oci_archive};
use snapmend_tests::kubelet::scenario::{ChildProcess, workspace_binary};
use snapmend_tests::node_helper_cli::Scenario;
use snapmend_tests::registry::{Registry, TestCa, write_hosts_toml};

const PAUSE: &str = "snapmend.test/pause:3.10";
const NODE: &str = "node-pull";
const APP_NS: &str = "app";
const USER: &str = "snapmend";
const PASSWORD: &str = "Pull-Secret-Pa55-never-shown";
const WRONG: &str = "Wrong-Pa55-never-shown";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A `kubernetes.io/dockerconfigjson` Secret for `host`, written with `stringData` (the API
/// server turns it into base64 `data`).
fn pull_secret(name: &str, host: &str, password: &str) -> Secret {
    let config = serde_json::json!({
        "auths": { host: { "auth": b64(&format!("{USER}:{password}")) } }
    });
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": APP_NS},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))
    .unwrap()
}

fn spec(secret: &str) -> SnapshotRepairSpec {
    SnapshotRepairSpec {
        node_name: NODE.into(),
        image: Some(PAUSE.into()),
        sandbox_image: false,
        all_images: false,
        action: RepairAction::Repair,
        cordon: false,
        content_check: ContentCheck::Full,
        pull_secrets: vec![PullSecretRef {
            namespace: APP_NS.into(),
            name: secret.into(),
        }],
    }
}

async fn finished(client: &Client, name: &str) -> SnapshotRepair {
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    wait_for(
        &format!("SnapshotRepair {name} to finish"),
        Duration::from_secs(30),
        || async {
            let sr = srs.get(name).await.ok()?;
            sr.status.as_ref()?.phase?.is_terminal().then_some(sr)
        },
    )
    .await
}

/// The operator's copy must be gone once the repair finished.
async fn assert_copy_deleted(client: &Client, repair: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let copy = pull_secret_copy_name(repair);
    wait_for(
        &format!("Secret {copy} deleted"),
        Duration::from_secs(5),
        || async { secrets.get_opt(&copy).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

fn describe(kubeconfig: &std::path::Path, name: &str) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["describe", "sr", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_reach_the_agent_and_never_show() {
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("snapmend-pull-e2e-")
        .tempdir()
        .unwrap();
    let w = work.path();
    let ca = TestCa::generate(&w.join("ca")).unwrap();
    let registry = Registry::start(&w.join("registry"), &ca, Some((USER, PASSWORD))).unwrap();
    let pause = pause_image(PAUSE).unwrap();
    let archive = w.join("pause.tar");
    write_oci_archive(std::slice::from_ref(&pause), &archive).unwrap();
    registry.push(&archive, "pause:3.10", &ca).unwrap();

    // The node: containerd's unpack captured, the layer blob gone, /pause deleted.
    let s = Scenario::start(&[pause]).unwrap();
    let pristine = s.capture_pristine(PAUSE).unwrap();
    for layer in &s.image(PAUSE).layers {
        s.fixture.ctr(&["content", "rm", layer.digest()]).unwrap();
    }
    s.fixture.settle().unwrap();
    std::fs::remove_file(pristine.layers[0].fs.join("pause")).unwrap();
    let damaged = pristine.differences_now().unwrap();
    assert!(!damaged.is_empty());
    let hosts = write_hosts_toml(
        &w.join("certs.d"),
        "snapmend.test",
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\n",
            registry.host(),
            ca.ca_cert().display()
        ),
    )
    .unwrap();

    let sim = start_cluster(0).await;
    let client = sim.client().unwrap();
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NODE}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": APP_NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let app_secrets: Api<Secret> = Api::namespaced(client.clone(), APP_NS);
    for (name, password) in [("regcred", PASSWORD), ("wrongcred", WRONG)] {
        app_secrets
            .create(
                &PostParams::default(),
                &pull_secret(name, &registry.host(), password),
            )
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let store = StoreArgs {
        root: s.fixture.root(),
        config: s.fixture.config_path(),
    };
    // No blob cache: every request fetches, so the wrong password cannot be helped by a copy.
    let hosts = hosts.display().to_string();
    let agent = AgentProcess::spawn_with(
        &sim.kubeconfig_yaml(),
        NODE,
        Some(&store),
        &[
            "--registry-config",
            &hosts,
            "--cache-dir",
            "none",
            "--guard",
            "off",
        ],
        "debug,kube=info,hyper=info,tower=info,rustls=info,reqwest=info,h2=info",
    );
    let operator = ChildProcess::spawn(
        "operator",
        &workspace_binary("snapmend-operator", "SNAPMEND_OPERATOR").unwrap(),
        &[
            "--metrics-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
        ],
        &kubeconfig,
        dir.path(),
        &[
            ("POD_NAMESPACE", LEASE_NAMESPACE),
            ("SNAPMEND_LEADER_LEASE_SECONDS", "4"),
            ("RUST_LOG", "debug,kube=info,hyper=info,tower=info"),
        ],
    )
    .unwrap();
    agent.wait_ready().await;

    // Wrong password: Failed, the registry and its 401 in what a person reads, nothing written.
    create_repair_with(&client, "pull-wrong", spec("wrongcred")).await;
    let failed = finished(&client, "pull-wrong").await;
    let status = failed.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    let message = status.message.clone().unwrap_or_default();
    let refusal = format!("{}: 401 Unauthorized", registry.host());
    assert!(message.contains(&refusal), "{message}");
    let report = status.report.clone().expect("report").report;
    assert_eq!(report.outcome, Outcome::Unrepairable, "{report:?}");
    assert_eq!(
        pristine.differences_now().unwrap(),
        damaged,
        "nothing written"
    );
    let described = describe(&kubeconfig, "pull-wrong");
    assert!(described.contains(&refusal), "{described}");
    assert_copy_deleted(&client, "pull-wrong").await;

    // A Secret that does not exist: Failed before the agent is asked.
    create_repair_with(&client, "pull-missing", spec("nope")).await;
    let missing = finished(&client, "pull-missing").await.status.unwrap();
    assert_eq!(missing.phase, Some(Phase::Failed));
    assert!(
        missing
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("pull secret app/nope not found"),
        "{missing:?}"
    );
    assert_eq!(missing.request, None, "the agent was never asked");

    // The right password: Repaired from the registry, equal to containerd's unpack.
    create_repair_with(&client, "pull-right", spec("regcred")).await;
    let repaired = finished(&client, "pull-right").await;
    let status = repaired.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        status.request.as_ref().and_then(|r| r.pull_secret.clone()),
        Some(pull_secret_copy_name("pull-right"))
    );
    let report = status.report.clone().expect("report").report;
    assert_eq!(report.outcome, Outcome::Repaired, "{report:?}");
    assert!(
        report
            .layers
            .iter()
            .any(|l| l.state == LayerState::Repaired)
    );
    assert!(
        report
            .layers
            .iter()
            .all(|l| l.blob_source == Some(BlobSource::Registry)
                && l.fetched_from.as_deref() == Some(&format!("{}/pause", registry.host()))),
        "{report:?}"
    );
    let diffs = pristine.differences_now().unwrap();
    assert!(
        diffs.is_empty(),
        "differs from containerd's unpack:\n{}",
        diffs.join("\n")
    );
    assert_copy_deleted(&client, "pull-right").await;

    // No credential anywhere: logs, Events (both APIs), statuses and reports.
    let mut seen = vec![agent.log_text(), operator.log_text()];
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    for sr in srs.list(&ListParams::default()).await.unwrap().items {
        seen.push(serde_json::to_string(&sr).unwrap());
    }
    for e in Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        seen.push(serde_json::to_string(&e).unwrap());
    }
    for e in Api::<CoreEvent>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        seen.push(serde_json::to_string(&e).unwrap());
    }
    seen.push(described);
    assert!(
        seen[0].contains("pull secret added to the registry credentials"),
        "the agent used the copy (debug log)"
    );
    let credentials = [
        PASSWORD.to_string(),
        WRONG.to_string(),
        b64(PASSWORD),
        b64(WRONG),
        b64(&format!("{USER}:{PASSWORD}")),
        b64(&format!("{USER}:{WRONG}")),
    ];
    for text in &seen {
        for c in &credentials {
            assert!(!text.contains(c.as_str()), "a credential leaked:\n{text}");
        }
    }
    eprintln!("pull secrets end to end in {:?}", started.elapsed());
}
