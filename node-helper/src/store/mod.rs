//! Reading containerd's store from the files alone (works while containerd is hung):
//! bolt databases, the content store, config.toml and mountinfo.

pub mod bolt;
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
