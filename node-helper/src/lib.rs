//! snapmend's node helper: reads containerd's store offline, verifies the overlayfs
//! snapshots of an image against their layer blobs, and repairs them in place.
//!
//! The pipeline reads like the folder tree:
//! `store` (bolt, content, config, mountinfo) → `image` (manifest, chain ids, snapshots)
//! → `layer` (expected entries; verify and repair one layer) → `job` (one image, the Report)
//! → `cli`; `agent` runs the same jobs for SnapshotRepair requests on its node; `guard`
//! names the processes that change committed snapshots (fanotify).
//!
//! Only what the binary and the crate's own integration tests use is public, so that rustc
//! flags whatever nothing calls.

mod agent;
pub mod cli;
mod error;
mod guard;
mod image;
mod job;
mod layer;
mod lru_dir;
mod registry;
mod scan;
pub mod stage_profile;
mod store;
mod workers;

pub use error::{Error, Result};

/// The bolt reader, for the integration test that reads a live containerd's databases.
pub mod bolt {
    pub use crate::store::bolt::{BoltDb, Bucket};
    pub use crate::store::meta_db::MetaDb;
}
