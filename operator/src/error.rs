//! The one error type of the operator crate.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer {finalizer} on SnapshotRepair {name}: {source}")]
    Finalizer {
        finalizer: &'static str,
        name: String,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kube client configuration: {0}")]
    ClientConfig(String),
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    LeaderElection {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("metrics server on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Low-cardinality label for the reconcile error counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { action, .. } => action,
            Error::Finalizer { .. } => "finalizer",
            Error::Kubeconfig { .. } | Error::ClientConfig(_) => "config",
            Error::LeaderElection { .. } => "leader_election",
            Error::Serve { .. } => "serve",
        }
    }
}

/// `map_err` adapter that names the API call and the object.
pub fn kube_context(action: &'static str, object: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        action,
        object,
        source,
    }
}
