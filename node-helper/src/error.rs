//! The node helper's one error type. Every variant names the path, digest or object involved.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid bolt database: {reason}")]
    Bolt { path: PathBuf, reason: String },
    #[error("image {reference:?} is not known to containerd in namespace {namespace:?}")]
    ImageNotFound {
        reference: String,
        namespace: String,
    },
    #[error("image {reference:?}: {reason}")]
    Image { reference: String, reason: String },
    #[error("{path}: invalid containerd config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("layer {digest}: {reason}")]
    Layer { digest: String, reason: String },
    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    /// A Kubernetes API call of the agent; `what` names the verb and object.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The agent's HTTP endpoint or async runtime.
    #[error("{what}: {source}")]
    Serve {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
