//! What `/readyz` reports: the agent is ready once its watch has listed its node's
//! SnapshotRepairs and its presence Lease was renewed within the operator's window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::Mutex;

/// The operator's presence window: a Lease older than this means "no helper".
pub const PRESENCE_WINDOW: Duration = Duration::from_secs(40);

#[derive(Clone, Default)]
pub struct AgentStatus {
    watch_synced: Arc<AtomicBool>,
    lease_renewed_at: Arc<Mutex<Option<Instant>>>,
    /// The culprit guard's state, shown by /readyz; it never makes the agent unready.
    guard: Arc<Mutex<Option<String>>>,
}

impl AgentStatus {
    pub fn watch_synced(&self, synced: bool) {
        self.watch_synced.store(synced, Ordering::Relaxed);
    }

    pub fn lease_renewed(&self) {
        if let Ok(mut at) = self.lease_renewed_at.lock() {
            *at = Some(Instant::now());
        }
    }

    pub fn guard_state(&self, state: String) {
        if let Ok(mut g) = self.guard.lock() {
            *g = Some(state);
        }
    }

    /// `guard: <state>` for /readyz's body.
    pub fn guard_detail(&self) -> String {
        let state = self.guard.lock().ok().and_then(|g| g.clone());
        format!("guard: {}", state.as_deref().unwrap_or("starting"))
    }

    /// Why the agent is not ready, or None when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        let renewed = self.lease_renewed_at.lock().ok().and_then(|at| *at);
        readiness(
            self.watch_synced.load(Ordering::Relaxed),
            renewed.map(|at| at.elapsed()),
        )
    }
}

/// Pure readiness rule.
pub fn readiness(
    watch_synced: bool,
    since_lease_renewal: Option<Duration>,
) -> Option<&'static str> {
    if !watch_synced {
        return Some("SnapshotRepair watch has not listed yet");
    }
    match since_lease_renewal {
        None => Some("presence Lease not renewed yet"),
        Some(age) if age > PRESENCE_WINDOW => Some("presence Lease is stale"),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_a_synced_watch_and_a_fresh_lease() {
        let fresh = Some(Duration::from_secs(3));
        assert_eq!(readiness(true, fresh), None);
        assert!(readiness(false, fresh).is_some());
        assert!(readiness(true, None).is_some());
        assert!(readiness(true, Some(Duration::from_secs(41))).is_some());
        assert_eq!(readiness(true, Some(PRESENCE_WINDOW)), None);
    }

    #[test]
    fn status_tracks_watch_and_lease() {
        let s = AgentStatus::default();
        assert!(s.not_ready_reason().is_some());
        s.watch_synced(true);
        assert_eq!(s.not_ready_reason(), Some("presence Lease not renewed yet"));
        s.lease_renewed();
        assert_eq!(s.not_ready_reason(), None);
        s.watch_synced(false);
        assert!(s.not_ready_reason().is_some());
    }
}
