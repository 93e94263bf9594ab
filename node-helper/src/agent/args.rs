//! `snapmend-node-helper agent` command line (contract: "Operator and agent command lines").

use std::net::SocketAddr;

use snapmend_crds::labels::DEFAULT_LEASE_NAMESPACE;

use super::{AgentOptions, StoreOptions, holder_identity};
use crate::cli::{FetchArgs, StoreArgs, TocArgs};

#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's name; the DaemonSet passes `spec.nodeName` from the downward API
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Where /metrics, /healthz and /readyz are served
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8081")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the presence Lease `snapmend-node-helper.<node>`
    #[arg(long, value_name = "NS", default_value = DEFAULT_LEASE_NAMESPACE)]
    pub lease_namespace: String,
    /// The agent's pod, for the Lease holder identity `<node>/<pod>`
    #[arg(long, value_name = "NAME", env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub toc: TocArgs,
    /// Name the processes that change committed snapshots (fanotify): Node Events `SnapshotTampered`
    #[arg(long, value_enum, default_value_t = GuardMode::On)]
    pub guard: GuardMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GuardMode {
    On,
    Off,
}

impl AgentArgs {
    pub fn options(&self) -> AgentOptions {
        AgentOptions {
            node: self.node.clone(),
            holder: holder_identity(&self.node, self.pod_name.as_deref()),
            metrics_addr: self.metrics_addr,
            lease_namespace: self.lease_namespace.clone(),
            store: StoreOptions {
                root: self.store.root.clone(),
                namespace: self.store.namespace.clone(),
                config_path: self.store.config.clone(),
                fetch: self.fetch.options(),
                toc: self.toc.cache(),
            },
            guard: self.guard == GuardMode::On,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::PathBuf;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .map(|w| w.agent)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let a = parse(&["--node", "node-a"]).expect("parse");
        let o = a.options();
        assert_eq!(o.node, "node-a");
        assert_eq!(
            o.metrics_addr,
            "0.0.0.0:8081".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(o.lease_namespace, "snapmend-system");
        assert_eq!(o.store.root, None);
        assert_eq!(o.store.namespace, "k8s.io");
        assert!(o.guard, "the guard is on by default");
        assert_eq!(
            o.store.toc.map(|t| t.dir),
            Some(PathBuf::from("/var/lib/snapmend/toc")),
            "the contract's default TOC cache"
        );
        assert_eq!(
            o.store.config_path,
            PathBuf::from("/etc/containerd/config.toml")
        );
    }

    #[test]
    fn every_option_parses() {
        let a = parse(&[
            "--node",
            "n1",
            "--metrics-addr",
            "127.0.0.1:9",
            "--lease-namespace",
            "ops",
            "--root",
            "/r",
            "--namespace",
            "default",
            "--config",
            "/c.toml",
            "--pod-name",
            "agent-x",
            "--guard",
            "off",
            "--toc-cache",
            "none",
        ])
        .expect("parse");
        let o = a.options();
        assert_eq!(o.holder, "n1/agent-x");
        assert!(!o.guard);
        assert_eq!(o.store.toc, None, "--toc-cache none turns the cache off");
        assert_eq!(o.lease_namespace, "ops");
        assert_eq!(o.store.root, Some(PathBuf::from("/r")));
        assert_eq!(o.store.config_path, PathBuf::from("/c.toml"));
    }

    #[test]
    fn node_is_required() {
        assert_eq!(parse(&[]).err().map(|e| e.exit_code()), Some(2));
    }
}
