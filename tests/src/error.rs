//! The one error type of the test crate: the containerd fixture, the image builder, the node
//! helper runner, snapmend-sim and the kubelet simulator all report through it.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building a test image: {0}")]
    Build(String),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("containerd did not start: {reason}; last log lines:\n{log}")]
    Start { reason: String, log: String },
    #[error("{0}")]
    NodeHelper(String),
    #[error("binding the API server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing the kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building a kube client for {url}: {source}")]
    Client { url: String, source: kube::Error },
    #[error("starting the background runtime of the API server: {0}")]
    Runtime(std::io::Error),
    #[error("parsing the server URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
    #[error("{0}")]
    Scenario(String),
    #[error("serving TLS with the certificate in {dir}: {reason}")]
    Tls { dir: PathBuf, reason: String },
}

impl TestError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TestError::Io {
            path: path.into(),
            source,
        }
    }
}
