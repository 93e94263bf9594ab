//! snapmend-operator: drives SnapshotRepairs through verify, cordon, repair and uncordon.
//!
//! `phases` decides (pure); `reconcile` observes and executes around it; `run` wires the
//! controller, leader election, metrics and health endpoints together. `scans` schedules
//! SnapshotScans, each run a set of `allImages` SnapshotRepairs.

pub mod caches;
pub mod conditions;
pub mod config;
pub mod cordon;
pub mod cordon_slots;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod node_condition;
pub mod phases;
pub mod presence;
pub mod pull_secrets;
pub mod reconcile;
pub mod run;
pub mod scans;
