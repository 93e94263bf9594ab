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
    /// The reflector stores could not be started or stopped before their first full list.
    #[error("reflector stores: {0}")]
    Caches(&'static str),
    #[error("encoding {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
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
            Error::Caches(_) => "caches",
            Error::Serve { .. } => "serve",
            Error::Encode { .. } => "encode",
        }
    }
}

impl Error {
    /// Someone else changed the object between our read and our write (409); retry soon.
    pub fn is_conflict(&self) -> bool {
        let kube_error = match self {
            Error::Kube { source, .. } => Some(source),
            Error::Finalizer { source, .. } => match source.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => return e.is_conflict(),
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e) => Some(e),
                _ => None,
            },
            _ => None,
        };
        matches!(kube_error, Some(kube::Error::Api(s)) if s.is_conflict())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": reason
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn conflicts_are_recognised_through_the_finalizer_wrapper() {
        let direct = Error::Kube {
            action: "cordon",
            object: "node n".into(),
            source: api_error(409, "Conflict"),
        };
        assert!(direct.is_conflict());
        let other = Error::Kube {
            action: "cordon",
            object: "node n".into(),
            source: api_error(500, "InternalError"),
        };
        assert!(!other.is_conflict());
        let wrapped = Error::Finalizer {
            finalizer: "f",
            name: "sr".into(),
            source: Box::new(kube::runtime::finalizer::Error::ApplyFailed(direct)),
        };
        assert!(wrapped.is_conflict());
        assert_eq!(wrapped.metric_label(), "finalizer");
        assert!(
            wrapped.to_string().contains("SnapshotRepair sr"),
            "{wrapped}"
        );
    }
}
