//! Command line of `snapmend-operator`, exactly as the contract fixes it (plus `--kubeconfig`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};

pub use crate::events::decide::AutoRemediate;
use crate::phases::FailurePolicy;
use snapmend_crds::runtime::duration::parse_duration;

/// The pure modules (`phases`, `events::decide`) own these enums; only this module knows clap.
fn auto_remediate_parser() -> impl TypedValueParser<Value = AutoRemediate> {
    PossibleValuesParser::new(["off", "verify", "repair"]).map(|s| match s.as_str() {
        "verify" => AutoRemediate::Verify,
        "repair" => AutoRemediate::Repair,
        _ => AutoRemediate::Off,
    })
}

fn failure_policy_parser() -> impl TypedValueParser<Value = FailurePolicy> {
    PossibleValuesParser::new(["keep-cordoned", "uncordon"]).map(|s| match s.as_str() {
        "uncordon" => FailurePolicy::Uncordon,
        _ => FailurePolicy::KeepCordoned,
    })
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "snapmend-operator",
    version,
    about = "Drives SnapshotRepairs: verify, cordon, repair, uncordon"
)]
pub struct Args {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Create SnapshotRepairs from FailedCreatePodSandBox events: off, verify or repair.
    #[arg(long, default_value = "off", value_parser = auto_remediate_parser())]
    pub auto_remediate: AutoRemediate,
    /// At most this many nodes are cordoned by snapmend at a time; more repairs wait in Pending.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_cordoned_nodes: u32,
    /// A request the node helper does not answer within this long fails with HelperUnavailable.
    #[arg(long, default_value = "5m", value_parser = parse_nonzero_duration)]
    pub helper_timeout: Duration,
    /// As --helper-timeout, for an allImages request: a whole-node scan reads every image. The
    /// helper's Lease still shows within 40 s when an agent is gone.
    #[arg(long, default_value = "1h", value_parser = parse_nonzero_duration)]
    pub scan_timeout: Duration,
    /// Minimum time between two automatic repairs of the same node and image.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// What a failed repair does with the node it cordoned.
    #[arg(long, default_value = "keep-cordoned", value_parser = failure_policy_parser())]
    pub failure_policy: FailurePolicy,
    /// Kubeconfig file; otherwise KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".to_string()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Settings that do not come from flags: where the operator runs, and its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    /// Namespace of the leader-election Lease and of the helpers' presence Leases.
    pub namespace: String,
    /// Leader-election identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a leader's Lease is valid without renewal.
    pub leader_lease_seconds: u64,
}

impl Environment {
    /// Reads `POD_NAMESPACE`, `POD_NAME`, `SNAPMEND_LEADER_LEASE_SECONDS` through `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, fallback_identity: String) -> Self {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        Environment {
            namespace: nonempty("POD_NAMESPACE")
                .unwrap_or_else(|| snapmend_crds::labels::DEFAULT_LEASE_NAMESPACE.to_string()),
            identity: nonempty("POD_NAME").unwrap_or(fallback_identity),
            leader_lease_seconds: nonempty("SNAPMEND_LEADER_LEASE_SECONDS")
                .and_then(|v| v.parse().ok())
                .filter(|s| *s >= 2)
                .unwrap_or(15),
        }
    }
}

/// Everything the running operator is configured with.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub args: Args,
    pub env: Environment,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("snapmend-operator").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(a.auto_remediate, AutoRemediate::Off);
        assert_eq!(a.max_cordoned_nodes, 1);
        assert_eq!(a.helper_timeout, Duration::from_secs(300));
        assert_eq!(a.scan_timeout, Duration::from_secs(3600));
        assert_eq!(a.cooldown, Duration::from_secs(600));
        assert_eq!(a.failure_policy, FailurePolicy::KeepCordoned);
        assert_eq!(a.kubeconfig, None);
    }

    #[test]
    fn every_flag_parses() {
        let a = parse(&[
            "--metrics-addr",
            "127.0.0.1:9999",
            "--auto-remediate",
            "repair",
            "--max-cordoned-nodes",
            "3",
            "--helper-timeout",
            "30s",
            "--cooldown",
            "1h",
            "--failure-policy",
            "uncordon",
            "--kubeconfig",
            "/tmp/kc",
        ])
        .unwrap();
        assert_eq!(a.metrics_addr.port(), 9999);
        assert_eq!(a.auto_remediate, AutoRemediate::Repair);
        assert_eq!(a.max_cordoned_nodes, 3);
        assert_eq!(a.helper_timeout, Duration::from_secs(30));
        assert_eq!(a.cooldown, Duration::from_secs(3600));
        assert_eq!(a.failure_policy, FailurePolicy::Uncordon);
        assert_eq!(a.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(
            parse(&["--auto-remediate=verify"]).unwrap().auto_remediate,
            AutoRemediate::Verify
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["--helper-timeout", "5"]).is_err());
        assert!(parse(&["--helper-timeout", "0s"]).is_err());
        assert!(parse(&["--max-cordoned-nodes", "0"]).is_err());
        assert!(parse(&["--failure-policy", "drain"]).is_err());
        assert!(parse(&["--auto-remediate", "yes"]).is_err());
        assert!(parse(&["--unknown"]).is_err());
    }

    #[test]
    fn environment_defaults_and_overrides() {
        let none = Environment::from_vars(|_| None, "host-1".into());
        assert_eq!(none.namespace, "snapmend-system");
        assert_eq!(none.identity, "host-1");
        assert_eq!(none.leader_lease_seconds, 15);
        let vars = |k: &str| match k {
            "POD_NAMESPACE" => Some("ops".to_string()),
            "POD_NAME" => Some("snapmend-operator-abc".to_string()),
            "SNAPMEND_LEADER_LEASE_SECONDS" => Some("4".to_string()),
            _ => None,
        };
        let set = Environment::from_vars(vars, "host-1".into());
        assert_eq!(set.namespace, "ops");
        assert_eq!(set.identity, "snapmend-operator-abc");
        assert_eq!(set.leader_lease_seconds, 4);
    }
}
