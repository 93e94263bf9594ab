//! Image resolution: image name → manifest (this node's platform) → config → diffIDs →
//! chainIDs → committed overlayfs snapshots. These types are what the `layer` engine consumes.

pub mod chain_id;
pub mod platform;
pub mod resolve;
pub mod snapshot_chain;

pub use platform::Platform;

use std::path::PathBuf;

/// An image resolved from containerd's store, bottom layer first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The name as containerd records it.
    pub name: String,
    /// Digest of the platform manifest actually used (not of an index).
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<ResolvedLayer>,
}

/// One layer of an image and where its blob and snapshot live on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLayer {
    pub index: u32,
    /// Digest of the (possibly compressed) blob, `sha256:<hex>`.
    pub digest: String,
    pub media_type: String,
    /// Size from the manifest descriptor.
    pub size: u64,
    /// sha256 of the uncompressed tar stream, `sha256:<hex>`.
    pub diff_id: String,
    pub chain_id: String,
    /// `<root>/io.containerd.content.v1.content/blobs/sha256/<hex>`; may not exist.
    pub blob_path: PathBuf,
    /// The committed snapshot keyed by `chain_id`, if the metadata has one.
    pub snapshot: Option<SnapshotRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    Unknown,
    View,
    Active,
    Committed,
}

/// A snapshot as recorded in the overlayfs snapshotter's `metadata.db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Decimal snapshot id = directory name under `snapshots/`.
    pub id: String,
    /// Backend key, `<namespace>/<N>/<chainID>`.
    pub backend_key: String,
    pub kind: SnapshotKind,
    /// `<snapshotter root>/snapshots/<id>`.
    pub dir: PathBuf,
    /// `<snapshotter root>/snapshots/<id>/fs`.
    pub fs: PathBuf,
    /// `fs` of the parents, immediate parent first, down to the base layer
    /// (containerd's lowerdir order). Empty for a base layer.
    pub lower_fs: Vec<PathBuf>,
}

impl SnapshotRef {
    /// Base layers are applied with deleting whiteouts; others with overlay whiteout conversion.
    pub fn is_base(&self) -> bool {
        self.lower_fs.is_empty()
    }
}
