//! The last change the culprit guard attributed on each snapshot, kept for the Reports the
//! agent writes later: a layer found damaged names the process that last changed its
//! snapshot (contract: "The culprit guard"). Bounded: the snapshots changed longest ago are
//! forgotten first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use snapmend_crds::{Culprit, LayerState, Report};

use crate::guard::Change;

/// Snapshots remembered at most.
pub const MAX_SNAPSHOTS: usize = 1024;

/// Last attributed change per snapshot id.
#[derive(Debug)]
pub struct Culprits {
    by_snapshot: HashMap<String, (u64, Culprit)>,
    /// Order of notes; the smallest is the oldest.
    seq: u64,
    max: usize,
}

impl Default for Culprits {
    fn default() -> Self {
        Culprits::with_capacity(MAX_SNAPSHOTS)
    }
}

/// Shared between the guard thread (writer) and the request worker (reader).
pub type SharedCulprits = Arc<Mutex<Culprits>>;

impl Culprits {
    pub fn with_capacity(max: usize) -> Culprits {
        Culprits {
            by_snapshot: HashMap::new(),
            seq: 0,
            max: max.max(1),
        }
    }

    /// Remembers `change` as the last one on its snapshot.
    pub fn note(&mut self, change: &Change) {
        self.insert(change.snapshot_id.clone(), change.culprit());
    }

    fn insert(&mut self, snapshot_id: String, culprit: Culprit) {
        self.seq += 1;
        if !self.by_snapshot.contains_key(&snapshot_id) && self.by_snapshot.len() >= self.max {
            let oldest = self
                .by_snapshot
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.by_snapshot.remove(&oldest);
            }
        }
        self.by_snapshot.insert(snapshot_id, (self.seq, culprit));
    }

    pub fn get(&self, snapshot_id: &str) -> Option<&Culprit> {
        self.by_snapshot.get(snapshot_id).map(|(_, c)| c)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_snapshot.len()
    }
}

/// Sets `culprit` on every layer of `report` that was found damaged (Corrupted, missing, or
/// repaired) and whose snapshot has an attributed change; healthy and unrepairable layers
/// (the latter: the blob, not the snapshot, is the problem) are left alone.
pub fn fill_culprits(report: &mut Report, culprits: &Culprits) {
    for layer in &mut report.layers {
        let damaged = matches!(
            layer.state,
            LayerState::Corrupted | LayerState::SnapshotMissing | LayerState::Repaired
        );
        if !damaged {
            continue;
        }
        if let Some(c) = layer.snapshot_id.as_deref().and_then(|id| culprits.get(id)) {
            layer.culprit = Some(c.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::process::ProcessInfo;
    use snapmend_crds::LayerReport;

    fn change(snapshot: &str, pid: i32) -> Change {
        Change {
            time: "2026-12-07T03:12:09Z".into(),
            first_time: "2026-12-07T03:12:09Z".into(),
            snapshot_id: snapshot.into(),
            path: "/pause".into(),
            op: "delete",
            process: ProcessInfo {
                pid,
                cmdline: Some("/bin/sh /etc/cron.daily/cleanup".into()),
                ..Default::default()
            },
            count: 1,
            sample_paths: vec!["/pause".into()],
        }
    }

    fn layer(index: u32, snapshot: Option<&str>, state: LayerState) -> LayerReport {
        LayerReport {
            index,
            snapshot_id: snapshot.map(str::to_string),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn the_last_change_per_snapshot_wins() {
        let mut c = Culprits::default();
        c.note(&change("1", 10));
        c.note(&change("2", 20));
        c.note(&change("1", 11));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("1").map(|c| c.process.pid), Some(11));
        assert_eq!(c.get("2").map(|c| c.process.pid), Some(20));
        assert!(c.get("3").is_none());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_snapshot_goes_first() {
        let mut c = Culprits::with_capacity(3);
        for (id, pid) in [("1", 1), ("2", 2), ("3", 3)] {
            c.note(&change(id, pid));
        }
        // Snapshot 1 changes again: now 2 is the oldest.
        c.note(&change("1", 4));
        c.note(&change("4", 5));
        assert_eq!(c.len(), 3);
        assert!(c.get("2").is_none());
        assert_eq!(c.get("1").map(|c| c.process.pid), Some(4));
        assert!(c.get("3").is_some() && c.get("4").is_some());
        let mut big = Culprits::default();
        for i in 0..(MAX_SNAPSHOTS + 50) {
            big.note(&change(&i.to_string(), 1));
        }
        assert_eq!(big.len(), MAX_SNAPSHOTS);
        assert!(big.get("0").is_none());
        assert!(big.get(&(MAX_SNAPSHOTS + 49).to_string()).is_some());
    }

    #[test]
    fn only_damaged_layers_with_an_attribution_get_a_culprit() {
        let mut c = Culprits::default();
        for id in ["1", "2", "3", "4", "5"] {
            c.note(&change(id, id.parse().unwrap_or(0)));
        }
        let mut report = Report {
            layers: vec![
                layer(0, Some("1"), LayerState::Corrupted),
                layer(1, Some("2"), LayerState::Healthy),
                layer(2, Some("3"), LayerState::Repaired),
                layer(3, Some("4"), LayerState::SnapshotMissing),
                layer(4, Some("5"), LayerState::Unrepairable),
                layer(5, Some("9"), LayerState::Corrupted),
                layer(6, None, LayerState::Corrupted),
            ],
            ..Default::default()
        };
        fill_culprits(&mut report, &c);
        let pids: Vec<Option<i32>> = report
            .layers
            .iter()
            .map(|l| l.culprit.as_ref().map(|c| c.process.pid))
            .collect();
        assert_eq!(
            pids,
            [Some(1), None, Some(3), Some(4), None, None, None],
            "Corrupted, Repaired and SnapshotMissing layers whose snapshot was attributed"
        );
        let culprit = report.layers[0].culprit.clone().unwrap_or_default();
        assert_eq!(culprit.op, "delete");
        assert_eq!(culprit.path, "/pause");
        assert_eq!(
            culprit.process.cmdline.as_deref(),
            Some("/bin/sh /etc/cron.daily/cleanup")
        );
    }

    #[test]
    fn nothing_attributed_changes_nothing() {
        let mut report = Report {
            layers: vec![layer(0, Some("1"), LayerState::Corrupted)],
            ..Default::default()
        };
        let before = report.clone();
        fill_culprits(&mut report, &Culprits::default());
        assert_eq!(report, before);
    }
}
