//! The agent's presence Lease, and surviving the API server going away and coming back:
//! the real binary against snapmend-sim, stopped and started again on the same port. (The
//! Lease test also runs against `SNAPMEND_TEST_KUBECONFIG`; the restart needs snapmend-sim.)

mod agent_support;

use std::time::Duration;

use agent_support::*;
use snapmend_crds::RepairAction;

const ANSWER: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_its_presence_lease_fresh() {
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let node = unique("lease-a");
    let agent = AgentProcess::spawn(cluster.kubeconfig_yaml(), &node, None);

    let lease = wait_for("presence Lease", Duration::from_secs(20), || {
        lease_of(&client, &node)
    })
    .await;
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity, Some(format!("{node}/agent-{node}")));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let first = spec.renew_time.unwrap().0;
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(first);
    assert!(age.as_secs() < 15, "fresh: renewed {age:?} ago");

    // Renewed every 10 s (not faster), and well inside the operator's 40 s presence window even
    // on a loaded machine; same holder, no transition.
    let renewed = wait_for("Lease renewal", Duration::from_secs(25), || async {
        lease_renew_time(&client, &node)
            .await
            .filter(|t| *t > first)
    })
    .await;
    let gap = renewed.duration_since(first).as_secs_f64();
    assert!((8.0..=20.0).contains(&gap), "renewed after {gap} s");
    eprintln!("Lease renewed {gap:.2} s after the previous renewal");
    let again = lease_of(&client, &node).await.unwrap().spec.unwrap();
    assert_eq!(again.holder_identity, spec.holder_identity);
    assert_eq!(again.acquire_time, spec.acquire_time);
    assert_eq!(again.lease_transitions, Some(0));
    drop(agent);
    cluster.finish(&[&node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_api_server_going_away_and_coming_back() {
    let port = free_port();
    let sim = start_cluster(port).await;
    let client = sim.client().unwrap();
    let agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), "node-a", None);
    agent.wait_ready().await;
    create_repair(&client, "before", "node-a", "snapmend.test/absent:1").await;
    request(&client, "before", "1", RepairAction::Verify).await;
    wait_for_report(&client, "before", "1", ANSWER).await;

    // Away for longer than one renewal interval: the agent must fail, retry and stay up.
    let kubeconfig = sim.kubeconfig_yaml();
    sim.stop().await;
    let away = std::time::Instant::now();
    wait_for(
        "a failed Lease renewal",
        Duration::from_secs(20),
        || async {
            (agent
                .metric("snapmend_agent_lease_renew_failures_total")
                .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        agent.http_get("/healthz").await.map(|r| r.0),
        Some(200),
        "alive while away"
    );
    assert!(agent.metric("snapmend_agent_watch_errors_total").await >= 1.0);
    eprintln!("API server away for {:?}", away.elapsed());

    // Back on the same port, empty (as after a control-plane restore): the agent relists,
    // re-creates its Lease and answers new requests.
    let sim = start_cluster(port).await;
    assert_eq!(sim.kubeconfig_yaml(), kubeconfig);
    let client = sim.client().unwrap();
    wait_for("Lease re-created", Duration::from_secs(20), || {
        lease_of(&client, "node-a")
    })
    .await;
    create_repair(&client, "after", "node-a", "snapmend.test/absent:1").await;
    request(&client, "after", "1", RepairAction::Verify).await;
    let report = wait_for_report(&client, "after", "1", ANSWER).await;
    assert_eq!(report.report.image, "snapmend.test/absent:1");
    agent.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_promptly_on_sigterm_while_the_api_server_is_away() {
    let sim = start_cluster(0).await;
    let mut agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), "node-a", None);
    agent.wait_ready().await;
    sim.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
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
}
