//! Automatic remediation from kubelet events: classify the event (pure), work out the node and the
//! image (pure), decide whether to create a SnapshotRepair (pure), and the watcher that does the I/O.

pub mod classify;
pub mod decide;
pub mod pull_secrets;
pub mod target;
pub mod watch;

pub use classify::{Classification, Signature, Verdict, classify};
pub use decide::AutoRemediate;
pub use watch::{EventRemediationConfig, run_event_remediation};
