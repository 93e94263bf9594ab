//! The error type of the containerd fixture, the image builder and the helpers around them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
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
}

impl FixtureError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FixtureError::Io {
            path: path.into(),
            source,
        }
    }
}
