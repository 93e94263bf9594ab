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
    /// A file given on the command line or found in the store that cannot be used as it is.
    #[error("{path}: {what}: {reason}")]
    InputInvalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: invalid containerd config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("layer {digest}: {reason}")]
    Layer { digest: String, reason: String },
    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    /// A snapshot's recorded parent disagrees with the image's layer order.
    #[error(
        "{db}: snapshot {snapshot} of layer {index} records parent {recorded}, but the image's layer order needs {expected}; snapmend neither verifies nor repairs against inconsistent snapshot metadata and wrote nothing (restore the database from a backup, or remove the image and its snapshots and pull it again)"
    )]
    SnapshotChain {
        db: PathBuf,
        /// Snapshot id and backend key.
        snapshot: String,
        index: u32,
        expected: String,
        recorded: String,
    },
    /// Another repair holds the snapshot's lock.
    #[error(
        "snapshot {path}: another repair of this snapshot is running; nothing was done, rerun when it has finished"
    )]
    Busy { path: PathBuf },
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

/// Longest piece of outside input copied into a message.
const MESSAGE_INPUT_CAP: usize = 256;

/// `text` cut to a length fit for a message (input from disk or a user is unbounded).
pub fn bounded_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MESSAGE_INPUT_CAP {
        return text.into();
    }
    let mut end = MESSAGE_INPUT_CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len()).into()
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A bolt decoding error with where in the file it happened put in front.
    pub(crate) fn within(self, at: impl std::fmt::Display) -> Self {
        match self {
            Error::Bolt { path, reason } => Error::Bolt {
                path,
                reason: format!("{at}: {reason}"),
            },
            other => other,
        }
    }

    /// A bolt decoding error, now naming the file it came from.
    pub(crate) fn in_file(self, file: &std::path::Path) -> Self {
        match self {
            Error::Bolt { reason, .. } => Error::Bolt {
                path: file.to_path_buf(),
                reason,
            },
            other => other,
        }
    }

    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
