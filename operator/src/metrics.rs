//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use snapmend_crds::Phase;

use crate::scans::metrics::ScanMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub phase: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

type HistogramFamily = Family<PhaseLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 s .. ~4.5 h
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    repairs: Family<PhaseLabels, Gauge>,
    finished: Family<FinishedLabels, Counter>,
    duration: HistogramFamily,
    findings: Counter,
    nodes_cordoned: Gauge,
    leader: Gauge,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconciles: Counter,
    reconcile_duration: Histogram,
    store_objects: Family<StoreLabels, Gauge>,
    /// SnapshotScan runs.
    pub scans: ScanMetrics,
    /// Last known phase of every SnapshotRepair, the source of the `repairs` gauge.
    phases: Mutex<HashMap<String, Phase>>,
}

const ALL_PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Verifying,
    Phase::Cordoning,
    Phase::Repairing,
    Phase::Uncordoning,
    Phase::Succeeded,
    Phase::Failed,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("snapmend");
        let repairs = Family::<PhaseLabels, Gauge>::default();
        let finished = Family::<FinishedLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let findings = Counter::default();
        let nodes_cordoned = Gauge::default();
        let leader = Gauge::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconciles = Counter::default();
        // 1 ms .. ~16 s: a reconcile reads caches and makes at most a few writes.
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let store_objects = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "reconciles",
            "SnapshotRepair reconciliations run",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one SnapshotRepair reconciliation took",
            reconcile_duration.clone(),
        );
        registry.register(
            "store_objects",
            "Objects held in the operator's reflector stores, by store",
            store_objects.clone(),
        );
        registry.register(
            "repairs",
            "SnapshotRepairs by current phase",
            repairs.clone(),
        );
        registry.register(
            "repairs_finished",
            "SnapshotRepairs that reached Succeeded or Failed, by outcome",
            finished.clone(),
        );
        registry.register(
            "repair_duration_seconds",
            "Time from start to completion of a SnapshotRepair, by final phase",
            duration.clone(),
        );
        registry.register(
            "findings",
            "Findings reported by node-helper verifications",
            findings.clone(),
        );
        registry.register(
            "nodes_cordoned",
            "Nodes cordoned by snapmend now",
            nodes_cordoned.clone(),
        );
        registry.register(
            "operator_leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations, by error kind",
            reconcile_errors.clone(),
        );
        for phase in ALL_PHASES {
            repairs
                .get_or_create(&PhaseLabels {
                    phase: format!("{phase:?}"),
                })
                .set(0);
        }
        let scans = ScanMetrics::register(&mut registry);
        Metrics {
            registry,
            scans,
            repairs,
            finished,
            duration,
            findings,
            nodes_cordoned,
            leader,
            reconcile_errors,
            reconciles,
            reconcile_duration,
            store_objects,
            phases: Mutex::new(HashMap::new()),
        }
    }

    /// Records the phase of `repair`, or forgets it (`None`, deleted).
    pub fn set_phase(&self, repair: &str, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(repair.to_string(), p),
            None => phases.remove(repair),
        };
        self.refresh_phase_gauge(&phases);
    }

    /// Forgets every phase (this replica stopped leading; another one keeps count).
    pub fn forget_phases(&self) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        phases.clear();
        self.refresh_phase_gauge(&phases);
    }

    fn refresh_phase_gauge(&self, phases: &HashMap<String, Phase>) {
        for phase in ALL_PHASES {
            let n = phases.values().filter(|p| **p == phase).count();
            self.repairs
                .get_or_create(&PhaseLabels {
                    phase: format!("{phase:?}"),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn finished(&self, phase: Phase, outcome: &str, duration_seconds: Option<f64>) {
        let phase = format!("{phase:?}");
        self.finished
            .get_or_create(&FinishedLabels {
                phase: phase.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(secs) = duration_seconds {
            self.duration
                .get_or_create(&PhaseLabels { phase })
                .observe(secs);
        }
    }

    pub fn add_findings(&self, n: u64) {
        self.findings.inc_by(n);
    }

    pub fn set_nodes_cordoned(&self, n: u32) {
        self.nodes_cordoned.set(i64::from(n));
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: kind.to_string(),
            })
            .inc();
    }

    /// One reconciliation ran (successful or not; failures are counted by `reconcile_error`).
    pub fn reconciled(&self, took: std::time::Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Objects in the reflector store `store` (snapshotrepairs, nodes, leases).
    pub fn set_store_size(&self, store: &str, objects: usize) {
        self.store_objects
            .get_or_create(&StoreLabels {
                store: store.to_string(),
            })
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_metric_with_the_snapmend_prefix() {
        let m = Metrics::new();
        m.set_phase("a", Some(Phase::Repairing));
        m.set_phase("b", Some(Phase::Repairing));
        m.set_phase("c", Some(Phase::Succeeded));
        m.finished(Phase::Succeeded, "Repaired", Some(12.0));
        m.add_findings(3);
        m.set_nodes_cordoned(1);
        m.set_leader(true);
        m.reconcile_error("patch_status");
        m.reconciled(std::time::Duration::from_millis(3));
        m.set_store_size("nodes", 2000);
        let text = m.encode().unwrap();
        for line in [
            "snapmend_repairs{phase=\"Repairing\"} 2",
            "snapmend_repairs{phase=\"Succeeded\"} 1",
            "snapmend_repairs{phase=\"Pending\"} 0",
            "snapmend_repairs_finished_total{phase=\"Succeeded\",outcome=\"Repaired\"} 1",
            "snapmend_repair_duration_seconds_count{phase=\"Succeeded\"} 1",
            "snapmend_findings_total 3",
            "snapmend_nodes_cordoned 1",
            "snapmend_operator_leader 1",
            "snapmend_reconcile_errors_total{error=\"patch_status\"} 1",
            "snapmend_reconciles_total 1",
            "snapmend_reconcile_duration_seconds_count 1",
            "snapmend_store_objects{store=\"nodes\"} 2000",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn phases_move_and_are_forgotten() {
        let m = Metrics::new();
        m.set_phase("a", Some(Phase::Verifying));
        m.set_phase("a", Some(Phase::Succeeded));
        let text = m.encode().unwrap();
        assert!(text.contains("snapmend_repairs{phase=\"Verifying\"} 0"));
        assert!(text.contains("snapmend_repairs{phase=\"Succeeded\"} 1"));
        m.set_phase("a", None);
        assert!(
            m.encode()
                .unwrap()
                .contains("snapmend_repairs{phase=\"Succeeded\"} 0")
        );
        m.set_phase("b", Some(Phase::Failed));
        m.forget_phases();
        assert!(
            m.encode()
                .unwrap()
                .contains("snapmend_repairs{phase=\"Failed\"} 0")
        );
    }
}
