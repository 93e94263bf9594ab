//! A small test cluster: snapmend-sim with snapmend installed, the real operator binary, and
//! simulated nodes, each a private containerd with a kubelet simulator and (optionally) the real
//! agent binary. Images are imported and snapshot damage done before the kubelet starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ListParams};
use snapmend_crds::SnapshotRepair;

use super::incident::{tail, wait_for_helper_lease};
use super::scenario::{ChildProcess, Damage, install_snapmend, spawn_agent, spawn_operator};
use super::{KubeletConfig, KubeletSim};
use crate::TestError;
use crate::containerd::ContainerdFixture;
use crate::image_builder::{ImageSpec, pause_image};
use crate::sim::SimServer;

/// One simulated node.
pub struct SimNode {
    pub name: String,
    pub kubelet: KubeletSim,
    pub agent: Option<ChildProcess>,
    /// What was deleted from its snapshots.
    pub damage: Vec<Damage>,
    pub fixture: Arc<ContainerdFixture>,
}

/// How to build a node.
pub struct NodeSpec {
    pub kubelet: KubeletConfig,
    /// Imported besides the sandbox image.
    pub images: Vec<ImageSpec>,
    /// Paths (relative to a snapshot's `fs`) deleted after the import, e.g. `pause`.
    pub delete: Vec<String>,
    pub with_agent: bool,
}

impl NodeSpec {
    pub fn new(name: &str) -> Self {
        NodeSpec {
            kubelet: KubeletConfig::new(name),
            images: Vec::new(),
            delete: Vec::new(),
            with_agent: true,
        }
    }
}

pub struct TestCluster {
    pub nodes: Vec<SimNode>,
    pub operator: Option<ChildProcess>,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub sim: SimServer,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start() -> Result<TestCluster, TestError> {
        let dir = tempfile::Builder::new()
            .prefix("snapmend-cluster-")
            .tempdir()
            .map_err(|e| TestError::io(std::env::temp_dir(), e))?;
        let sim = SimServer::start().await?;
        let client = sim.client()?;
        install_snapmend(&client).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)?;
        Ok(TestCluster {
            nodes: Vec::new(),
            operator: None,
            client,
            kubeconfig,
            sim,
            dir,
        })
    }

    /// Starts `snapmend-operator` with `args` and waits until it watches events.
    pub async fn start_operator(&mut self, args: &[&str]) -> Result<(), TestError> {
        self.spawn_operator(args)?;
        self.wait_for_operator_log(
            "watching events for damaged snapshots",
            Duration::from_secs(20),
        )
        .await
    }

    /// Starts `snapmend-operator` with `args` without waiting for anything.
    pub fn spawn_operator(&mut self, args: &[&str]) -> Result<(), TestError> {
        self.operator = Some(spawn_operator(&self.kubeconfig, self.dir.path(), args)?);
        Ok(())
    }

    /// Waits until the operator's log contains `line`.
    pub async fn wait_for_operator_log(
        &self,
        line: &str,
        within: Duration,
    ) -> Result<(), TestError> {
        let deadline = Instant::now() + within;
        loop {
            let log = self
                .operator
                .as_ref()
                .map(ChildProcess::log_text)
                .unwrap_or_default();
            if log.contains(line) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestError::Timeout {
                    what: format!(
                        "operator log line {line:?}\n--- operator log tail\n{}",
                        tail(&log, 30)
                    ),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds a node: containerd with the sandbox image and `spec.images`, damage, agent, kubelet.
    pub async fn add_node(&mut self, spec: NodeSpec) -> Result<&SimNode, TestError> {
        let (fixture, damage) = tokio::task::block_in_place(|| -> Result<_, TestError> {
            let fixture = ContainerdFixture::start()?;
            let mut images = vec![pause_image(fixture.sandbox_image())?];
            images.extend(spec.images.iter().cloned());
            fixture.import_images(&images)?;
            let damage = spec
                .delete
                .iter()
                .map(|rel| Damage::delete_from_snapshot(&fixture, rel))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((fixture, damage))
        })?;
        let name = spec.kubelet.node.clone();
        super::register_node(&self.client, &spec.kubelet).await?;
        let fixture = Arc::new(fixture);
        let agent = if spec.with_agent {
            let agent = spawn_agent(&self.kubeconfig, self.dir.path(), &name, &fixture)?;
            wait_for_helper_lease(&self.client, &name, Duration::from_secs(30), &agent).await?;
            Some(agent)
        } else {
            None
        };
        let kubelet = KubeletSim::start(self.client.clone(), fixture.clone(), spec.kubelet).await?;
        self.nodes.push(SimNode {
            name,
            kubelet,
            agent,
            damage,
            fixture,
        });
        let added = self.nodes.len() - 1;
        Ok(&self.nodes[added])
    }

    pub fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub async fn repairs(&self) -> Result<Vec<SnapshotRepair>, TestError> {
        Ok(Api::<SnapshotRepair>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(super::kube_err("list", "SnapshotRepairs"))?
            .items)
    }

    /// Operator and agent log tails, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Some(op) = &self.operator {
            out.push_str(&format!(
                "--- operator log tail\n{}\n",
                tail(&op.log_text(), 40)
            ));
        }
        for n in &self.nodes {
            if let Some(agent) = &n.agent {
                out.push_str(&format!(
                    "--- agent {} log tail\n{}\n",
                    n.name,
                    tail(&agent.log_text(), 20)
                ));
            }
        }
        out
    }
}
