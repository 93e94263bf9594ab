//! The agent's side of the SnapshotRepair protocol, end to end: the real
//! `snapmend-node-helper agent` binary against snapmend-sim. The node's containerd root is
//! empty here, so every job answers Outcome Error (image unknown); the protocol is the same
//! as for a real verification (agent_containerd.rs runs real ones).
//! With `SNAPMEND_TEST_KUBECONFIG` set they run against that cluster instead.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use snapmend_crds::{Outcome, Phase, RepairAction, SnapshotRepair};

const MISSING_IMAGE: &str = "snapmend.test/not-on-this-node:1";
const ANSWER: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_report_for_the_request_and_touches_no_operator_field() {
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let (node, app) = (unique("report-a"), unique("report-a-app"));
    let agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, None);
    agent.wait_ready().await;

    create_repair(&client, &app, &node, MISSING_IMAGE).await;
    let asked = std::time::Instant::now();
    request(&client, &app, "1", RepairAction::Verify).await;
    let report = wait_for_report(&client, &app, "1", ANSWER).await;
    eprintln!(
        "request answered within {:?} (100 ms polling)",
        asked.elapsed()
    );

    assert_eq!(report.report.outcome, Outcome::Error);
    assert_eq!(report.report.image, MISSING_IMAGE);
    assert!(report.report.message.is_some(), "an Error report says why");

    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let status = srs.get(&app).await.unwrap().status.unwrap();
    assert_eq!(
        status.phase,
        Some(Phase::Verifying),
        "operator's phase untouched"
    );
    assert_eq!(
        status.message.as_deref(),
        Some("operator asked for request 1")
    );
    assert_eq!(status.request.as_ref().map(|r| r.id.as_str()), Some("1"));
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_requests_total{action="Verify",outcome="Error"}"#)
            .await,
        1.0
    );
    assert!(
        agent.log_text().contains("request_id=1"),
        "spans name the request"
    );
    cluster.finish(&[&node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_each_request_id_once_even_across_agent_restarts() {
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let (node, app) = (unique("once-a"), unique("once-a-app"));
    let mut agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, None);
    agent.wait_ready().await;
    create_repair(&client, &app, &node, MISSING_IMAGE).await;

    request(&client, &app, "1", RepairAction::Verify).await;
    let first = wait_for_report(&client, &app, "1", ANSWER).await;

    // The operator writes its own status fields again: a new watch event, same request.
    let srs: Api<SnapshotRepair> = Api::all(client.clone());
    let patch = json!({"status": {"message": "still verifying", "findings": "none"}});
    srs.patch_status(&app, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let verify_errors = r#"snapmend_agent_requests_total{action="Verify",outcome="Error"}"#;
    assert_eq!(agent.metric(verify_errors).await, 1.0, "request 1 ran once");
    assert_eq!(
        report_of(&client, &app).await,
        Some(first.clone()),
        "report unchanged"
    );

    // A restarted agent (a new pod) finds request 1 answered and leaves it.
    assert_eq!(
        agent.terminate(Duration::from_secs(10)).map(|s| s.code()),
        Some(Some(0))
    );
    let again = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, None);
    again.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        again.metric(verify_errors).await,
        0.0,
        "an answered request is not run again"
    );
    assert_eq!(report_of(&client, &app).await, Some(first));

    // A new request id is answered, with the requested action.
    request(&client, &app, "2", RepairAction::Repair).await;
    let second = wait_for_report(&client, &app, "2", ANSWER).await;
    assert_eq!(second.report.outcome, Outcome::Error);
    assert_eq!(
        again
            .metric(r#"snapmend_agent_requests_total{action="Repair",outcome="Error"}"#)
            .await,
        1.0
    );
    cluster.finish(&[&node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_only_its_own_nodes_repairs_and_all_of_them() {
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let (node, other) = (unique("isolation-a"), unique("isolation-b"));
    let other_app = unique("isolation-b-app");
    let agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, None);
    agent.wait_ready().await;

    create_repair(&client, &other_app, &other, MISSING_IMAGE).await;
    request(&client, &other_app, "1", RepairAction::Verify).await;
    let mine = [
        unique("isolation-one"),
        unique("isolation-two"),
        unique("isolation-three"),
    ];
    for name in &mine {
        create_repair(&client, name, &node, MISSING_IMAGE).await;
        request(&client, name, "7", RepairAction::Verify).await;
    }
    for name in &mine {
        wait_for_report(&client, name, "7", ANSWER).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        report_of(&client, &other_app).await,
        None,
        "the other node's repair is not ours"
    );
    assert_eq!(
        agent
            .metric(r#"snapmend_agent_requests_total{action="Verify",outcome="Error"}"#)
            .await,
        3.0
    );
    assert_eq!(agent.metric("snapmend_agent_running_requests").await, 0.0);
    assert_one_at_a_time(&agent.log_text(), 3);
    cluster.finish(&[&node, &other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let (node, app) = (unique("health-a"), unique("health-a-app"));
    let mut agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, None);
    agent.wait_ready().await;
    assert_eq!(agent.http_get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(agent.http_get("/readyz").await.map(|r| r.0), Some(200));
    // Labelled families appear once they have a sample.
    create_repair(&client, &app, &node, MISSING_IMAGE).await;
    request(&client, &app, "1", RepairAction::Verify).await;
    wait_for_report(&client, &app, "1", ANSWER).await;
    let (code, text) = agent.http_get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    for family in [
        "snapmend_agent_requests",
        "snapmend_agent_request_duration_seconds",
        "snapmend_agent_findings",
        "snapmend_agent_lease_renew_failures",
        "snapmend_agent_running_requests",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(agent.metric("snapmend_agent_lease_renewals_total").await >= 1.0);

    let started = std::time::Instant::now();
    let status = agent
        .terminate(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    cluster.finish(&[&node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_metrics_address_fails_at_start_with_exit_2() {
    let binary = snapmend_tests::node_helper_cli::node_helper_binary().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let sim = start_cluster(0).await;
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(&dir.path().join("kubeconfig"))
        .unwrap();
    let out = tokio::process::Command::new(binary)
        .args([
            "agent",
            "--node",
            "node-a",
            "--metrics-addr",
            &addr,
            "--toc-cache",
            "none",
            "--root",
        ])
        .arg(dir.path())
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

/// The agent's log shows `running request` and `request finished` strictly alternating: it
/// never started a request while another was running.
fn assert_one_at_a_time(log: &str, expected: usize) {
    let mut running = false;
    let mut finished = 0;
    for line in log.lines() {
        if line.contains("running request") {
            assert!(
                !running,
                "a second request started while one was running:\n{log}"
            );
            running = true;
        } else if line.contains("request finished") {
            assert!(running, "finished a request that was not running:\n{log}");
            running = false;
            finished += 1;
        }
    }
    assert_eq!(finished, expected, "{log}");
}
