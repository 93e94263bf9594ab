//! Reading containerd's store from the files alone (works while containerd is hung):
//! bolt databases, the content store, config.toml and mountinfo.

pub mod bolt;
pub mod bounded;
pub mod config;
pub mod content;
pub mod meta_db;
pub mod mountinfo;
pub mod snapshotter_db;
pub mod varint;

use std::path::{Path, PathBuf};

/// containerd's plugin directories under its root (containerd-layout.md §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLayout {
    pub root: PathBuf,
    /// The overlayfs snapshotter's root (`root_path` in config.toml relocates it).
    pub overlay_root: PathBuf,
}

impl StoreLayout {
    pub fn new(root: &Path, overlay_root_override: Option<&Path>) -> StoreLayout {
        StoreLayout {
            root: root.to_path_buf(),
            overlay_root: overlay_root_override
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.join("io.containerd.snapshotter.v1.overlayfs")),
        }
    }

    pub fn meta_db(&self) -> PathBuf {
        self.root
            .join("io.containerd.metadata.v1.bolt")
            .join("meta.db")
    }

    pub fn content_root(&self) -> PathBuf {
        self.root.join("io.containerd.content.v1.content")
    }

    pub fn snapshotter_db(&self) -> PathBuf {
        self.overlay_root.join("metadata.db")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.overlay_root.join("snapshots")
    }
}

/// The decoded databases and the content store of one containerd root, read once per job.
#[derive(Clone, Debug)]
pub struct Store {
    pub layout: StoreLayout,
    pub meta: meta_db::MetaDb,
    pub snapshots: snapshotter_db::SnapshotterDb,
    pub content: content::ContentStore,
}

impl Store {
    /// Reads both bolt databases lock-free. A root without an overlayfs `metadata.db` has
    /// no overlayfs snapshots yet.
    pub fn open(layout: StoreLayout) -> crate::Result<Store> {
        let meta = meta_db::MetaDb::read(&layout.meta_db())?;
        let snapshots_path = layout.snapshotter_db();
        let snapshots = if snapshots_path.exists() {
            snapshotter_db::SnapshotterDb::read(&snapshots_path)?
        } else {
            snapshotter_db::SnapshotterDb {
                path: snapshots_path,
                snapshots: Default::default(),
            }
        };
        let content = content::ContentStore::new(&layout.content_root());
        Ok(Store {
            layout,
            meta,
            snapshots,
            content,
        })
    }
}
