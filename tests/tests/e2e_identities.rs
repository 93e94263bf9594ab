//! The incident repaired end to end with every component on its own least-privilege identity:
//! `snapmend-sim --auth` with deploy/'s RBAC and ValidatingAdmissionPolicy applied by kubectl,
//! the real operator on a token of its ServiceAccount, the real agent on a token bound to its
//! Pod on node-a (`kubectl create token --bound-object-kind Pod`), and a private containerd.
//! A missing permission stalls or fails the repair; an excessive one is caught by
//! `sim_auth.rs` and `deploy_manifests.rs`. The sim's request log proves that no request was
//! refused (no 401 or 403).

#[path = "agent_support/mod.rs"]
mod agent_support;
mod operator_support;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_support::{AgentProcess, StoreArgs, lease_of};
use kube::{Api, Client};
use operator_support::{
    OperatorProcess, add_node, condition, is_unschedulable, kubectl, node,
    start_auth_sim_with_deploy, wait_for,
};
use snapmend_crds::{Outcome, Phase, SnapshotRepair};
use snapmend_tests::containerd::{ContainerdFixture, RunOutcome};
use snapmend_tests::image_builder::pause_image;
use tokio::task::block_in_place;

const NS: &str = "snapmend-system";
const FLOW: Duration = Duration::from_secs(60);

fn apply(kubeconfig: &Path, yaml: &str) {
    let file = kubeconfig.with_extension("apply.yaml");
    std::fs::write(&file, yaml).expect("write manifest");
    kubectl(
        kubeconfig,
        &["apply", "-f", file.to_str().expect("utf-8 path")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_is_repaired_with_each_binary_on_its_own_identity() {
    let fixture = block_in_place(ContainerdFixture::start).expect("private containerd");
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, admin) = start_auth_sim_with_deploy(dir.path());
    let client = Client::try_from(sim.server().kube_config().expect("config")).expect("client");
    add_node(&client, "node-a", false).await;
    // The Pods the tokens are bound to, as the Deployment and the DaemonSet would run them.
    apply(
        &admin,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: agent-node-a\n  namespace: {NS}\nspec:\n  nodeName: node-a\n  serviceAccountName: snapmend-node-helper\n  containers:\n  - name: agent\n    image: snapmend/node-helper\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: op-1\n  namespace: {NS}\nspec:\n  nodeName: node-a\n  serviceAccountName: snapmend-operator\n  containers:\n  - name: operator\n    image: snapmend/operator\n"
        ),
    );
    let token = |sa: &str, pod: &str| {
        snapmend_tests::kubectl::bound_token(&admin, NS, sa, pod).unwrap_or_else(|e| panic!("{e}"))
    };
    let agent_token = token("snapmend-node-helper", "agent-node-a");
    let operator_token = token("snapmend-operator", "op-1");

    let sandbox = fixture.sandbox_image().to_string();
    block_in_place(|| fixture.import_images(&[pause_image(&sandbox).expect("pause image")]))
        .expect("import");
    let helper =
        snapmend_tests::node_helper_cli::NodeHelper::for_fixture(&fixture).expect("node-helper");
    let fs = block_in_place(|| helper.snapshot_paths(&sandbox))
        .expect("snapshot paths")
        .pop()
        .expect("one layer");

    let operator = OperatorProcess::spawn_with_kubeconfig(
        sim.server()
            .kubeconfig_yaml_with_token(Some(&operator_token)),
        "op-1",
        &["--helper-timeout", "20s"],
    );
    operator.wait_leader().await;
    let store = StoreArgs {
        root: fixture.root(),
        config: fixture.config_path(),
    };
    let agent = AgentProcess::spawn(
        &sim.server().kubeconfig_yaml_with_token(Some(&agent_token)),
        "node-a",
        Some(&store),
    );
    agent.wait_ready().await;
    wait_for("the agent's presence Lease", FLOW, || async {
        lease_of(&client, "node-a").await.map(drop)
    })
    .await;

    // The incident: a cleanup script deletes /pause from the unpacked snapshot.
    std::fs::remove_file(fs.join("pause")).expect("delete /pause");
    let started = Instant::now();
    apply(
        &admin,
        "apiVersion: snapmend.io/v1alpha1\nkind: SnapshotRepair\nmetadata:\n  name: node-a-pause\nspec:\n  nodeName: node-a\n  sandboxImage: true\n",
    );
    let repairs: Api<SnapshotRepair> = Api::all(client.clone());
    let sr = wait_for("the repair to finish", FLOW, || async {
        let sr = repairs.get_opt("node-a-pause").await.ok().flatten()?;
        let phase = sr.status.as_ref()?.phase?;
        matches!(phase, Phase::Succeeded | Phase::Failed).then_some(sr)
    })
    .await;
    eprintln!(
        "repaired on least-privilege identities in {:?}",
        started.elapsed()
    );
    let status = sr.status.clone().expect("status");
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:#?}\n--- operator ---\n{}\n--- agent ---\n{}",
        operator.log_text(),
        agent.log_text()
    );
    assert_eq!(
        status.report.as_ref().map(|r| r.report.outcome),
        Some(Outcome::Repaired)
    );
    assert_eq!(status.cordoned_by_operator, Some(true));
    assert_eq!(
        condition(&sr, "Repaired"),
        ("True".into(), "Repaired".into())
    );
    assert!(!is_unschedulable(&node(&client, "node-a").await));
    let after = block_in_place(|| fixture.run_container(&sandbox, "identities-after", &[]))
        .expect("ctr run");
    assert_eq!(after, RunOutcome::Started);
    block_in_place(|| fixture.remove_container("identities-after")).expect("remove");

    // Every request was authenticated and authorized (the test's own are the admin's).
    let refused = sim.server().refused_requests();
    assert!(refused.is_empty(), "refused requests: {refused:#?}");
    drop(agent);
    drop(operator);
    let _ = std::thread::spawn(move || drop(sim)).join();
}
