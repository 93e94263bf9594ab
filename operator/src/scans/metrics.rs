//! Prometheus metrics of SnapshotScan runs (registered with the operator's other metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// `schedule`, `catch_up` (several missed times) or `run_now`.
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The worst of the run: `healthy`, `repaired`, `damaged` or `failed`.
    pub result: String,
}

#[derive(Clone, Default)]
pub struct ScanMetrics {
    started: Family<TriggerLabels, Counter>,
    finished: Family<ResultLabels, Counter>,
    missed: Counter,
}

impl ScanMetrics {
    pub fn register(registry: &mut Registry) -> ScanMetrics {
        let m = ScanMetrics::default();
        registry.register(
            "scan_runs_started",
            "SnapshotScan runs started, by trigger",
            m.started.clone(),
        );
        registry.register(
            "scan_runs_finished",
            "SnapshotScan runs finished, by result",
            m.finished.clone(),
        );
        registry.register(
            "scan_missed_schedules",
            "Scheduled SnapshotScan times not run (a run was in progress, or the operator was down)",
            m.missed.clone(),
        );
        m
    }

    pub fn run_started(&self, trigger: &str) {
        self.started
            .get_or_create(&TriggerLabels {
                trigger: trigger.to_string(),
            })
            .inc();
    }

    pub fn run_finished(&self, result: &str) {
        self.finished
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn missed(&self, count: u32) {
        self.missed.inc_by(u64::from(count));
    }
}
