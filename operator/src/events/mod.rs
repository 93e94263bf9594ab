//! Automatic remediation from kubelet events: classify the event (pure), work out the node and the
//! image (pure), decide whether to create a SnapshotRepair (pure), and the watcher that does the I/O.

pub mod classify;

pub use classify::{Classification, Signature, Verdict, classify};
pub mod decide;
pub mod target;
