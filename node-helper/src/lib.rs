//! snapmend's node helper: reads containerd's store offline, verifies the overlayfs
//! snapshots of an image against their layer blobs, and repairs them in place.
//!
//! The pipeline reads like the folder tree:
//! `store` (bolt, content, config, mountinfo) → `image` (manifest, chain ids, snapshots)
//! → `layer` (expected entries; verify and repair one layer) → `report` / `cli`;
//! `agent` runs the same code for SnapshotRepair requests on its node.

pub mod agent;
pub mod cli;
pub mod error;
pub mod image;
pub mod job;
pub mod layer;
pub mod registry;
pub mod store;

pub use error::{Error, Result};
