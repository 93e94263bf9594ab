//! The operator and the real `snapmend-node-helper agent` on snapmend-sim: the protocol between
//! them (presence Lease, request ids, reports) without containerd. The agent's containerd root
//! is empty, so it answers Outcome Error (image unknown) and the repair fails with HelperError,
//! carrying the agent's own explanation. Runs with real containerd come from the lead's tests.

#[path = "agent_support/mod.rs"]
mod agent_support;
mod operator_support;

use std::time::Duration;

use agent_support::AgentProcess;
use operator_support::*;
use snapmend_crds::{Outcome, Phase, RepairAction};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_answers_the_operators_request() {
    let (sim, client) = start_cluster(&["node-a"]).await;
    let history = NodeHistory::start(&client);
    let agent = AgentProcess::spawn(&sim.kubeconfig_yaml(), "node-a", None);
    agent.wait_ready().await;
    let _op = OperatorProcess::spawn(&sim, "op-1", &["--helper-timeout", "30s"]);
    apply_repair(&client, "node-a-app", spec("node-a", RepairAction::Repair)).await;

    let sr = wait_phase(
        &client,
        "node-a-app",
        Phase::Failed,
        Duration::from_secs(40),
    )
    .await;
    let status = sr.status.clone().unwrap();
    let report = status.report.expect("the agent wrote its report");
    assert_eq!(report.request_id, status.request.as_ref().unwrap().id);
    assert_eq!(report.report.outcome, Outcome::Error);
    assert_eq!(
        condition(&sr, "Ready"),
        ("False".into(), "HelperError".into())
    );
    let agent_says = report.report.message.unwrap_or_default();
    assert!(!agent_says.is_empty());
    assert!(
        message(&sr).contains(&agent_says),
        "{} lacks {agent_says}",
        message(&sr)
    );
    assert_eq!(
        history.of("node-a"),
        [false],
        "an error at verify time never cordons"
    );
}
