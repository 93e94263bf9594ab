//! SnapshotScan: scheduled scans of whole nodes. `schedule` decides when a run starts (pure),
//! `nodes` which nodes it covers, `runs` how it proceeds and what it counts (pure);
//! `reconcile` observes and executes around them; `metrics` counts runs.

pub mod controller;
pub mod metrics;
pub mod nodes;
pub mod reconcile;
pub mod runs;
pub mod schedule;
