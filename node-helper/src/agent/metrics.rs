//! The agent's Prometheus metrics, served on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use snapmend_crds::{CheckedWith, Outcome, RepairAction, Report};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionOutcome {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

fn duration_histogram() -> Histogram {
    // 10 ms .. ~ 160 s: a metadata check of a small image up to a full hash of a big one.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Cheap to clone; every clone updates the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<ActionOutcome, Counter>,
    durations: Family<ActionLabel, Histogram, fn() -> Histogram>,
    findings: Family<ActionLabel, Counter>,
    running: Gauge,
    lease_renewals: Counter,
    lease_renew_failures: Counter,
    report_write_failures: Counter,
    watch_errors: Counter,
    guard_active: Gauge,
    guard_changes: Family<OpLabel, Counter>,
    guard_overflows: Counter,
    layers_checked: Family<CheckedWithLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckedWithLabel {
    checked_with: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("snapmend_agent");
        let requests = Family::<ActionOutcome, Counter>::default();
        let durations = Family::<ActionLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let findings = Family::<ActionLabel, Counter>::default();
        let running = Gauge::default();
        let lease_renewals = Counter::default();
        let lease_renew_failures = Counter::default();
        let report_write_failures = Counter::default();
        let watch_errors = Counter::default();
        let guard_active = Gauge::default();
        let guard_changes = Family::<OpLabel, Counter>::default();
        let guard_overflows = Counter::default();
        let layers_checked = Family::<CheckedWithLabel, Counter>::default();
        registry.register(
            "layers_checked",
            "Layers compared with a reference, by what it was: Blob (read and verified) or Toc (the TOC cache, no blob read)",
            layers_checked.clone(),
        );
        // The TOC cache counts in the layer engine (process-wide); these are the same counters.
        let toc = crate::layer::toc::counters();
        registry.register(
            "toc_rejected",
            "TOC files discarded, not trusted, by reason (checksum, truncated, version, diffid_mismatch, ...); the layer is then checked against its blob",
            toc.rejected.clone(),
        );
        registry.register(
            "toc_hits",
            "Layers verified with their TOC (no blob read)",
            toc.hits.clone(),
        );
        registry.register(
            "toc_misses",
            "TOC lookups that found no TOC",
            toc.misses.clone(),
        );
        registry.register(
            "toc_writes",
            "TOCs written after a pass over a verified blob",
            toc.writes.clone(),
        );
        registry.register(
            "guard_active",
            "1 while the culprit guard watches the snapshots, 0 when it cannot or is off",
            guard_active.clone(),
        );
        registry.register(
            "guard_changes",
            "Changes to committed snapshots by processes other than containerd and snapmend, by operation",
            guard_changes.clone(),
        );
        registry.register(
            "guard_queue_overflows",
            "fanotify queue overflows: changes the guard could not see",
            guard_overflows.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by action and report outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to run one request",
            durations.clone(),
        );
        registry.register(
            "findings",
            "Findings reported (exact totals), by action",
            findings.clone(),
        );
        registry.register(
            "running_requests",
            "Requests running now (0 or 1)",
            running.clone(),
        );
        registry.register(
            "lease_renewals",
            "Presence Lease renewals",
            lease_renewals.clone(),
        );
        registry.register(
            "lease_renew_failures",
            "Failed presence Lease renewals",
            lease_renew_failures.clone(),
        );
        registry.register(
            "report_write_failures",
            "Failed writes of status.report",
            report_write_failures.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of the SnapshotRepair watch",
            watch_errors.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            durations,
            findings,
            running,
            lease_renewals,
            lease_renew_failures,
            report_write_failures,
            watch_errors,
            guard_active,
            guard_changes,
            guard_overflows,
            layers_checked,
        }
    }

    pub fn guard_active(&self, active: bool) {
        self.guard_active.set(i64::from(active));
    }

    pub fn guard_changes(&self, op: &str, count: u64) {
        self.guard_changes
            .get_or_create(&OpLabel { op: op.into() })
            .inc_by(count);
    }

    pub fn guard_overflows(&self, count: u64) {
        self.guard_overflows.inc_by(count);
    }

    pub fn request_started(&self) {
        self.running.set(1);
    }

    /// Records one answered request.
    pub fn request_finished(&self, action: RepairAction, report: &Report, elapsed: Duration) {
        self.running.set(0);
        let action = format!("{action:?}");
        self.requests
            .get_or_create(&ActionOutcome {
                action: action.clone(),
                outcome: outcome_label(report.outcome),
            })
            .inc();
        self.durations
            .get_or_create(&ActionLabel {
                action: action.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.findings
            .get_or_create(&ActionLabel { action })
            .inc_by(report.findings_total());
        // A scan's report lists only damaged layers; its summary counts every unique layer.
        let (blob, toc) = match &report.scan {
            Some(scan) => (scan.checked_with.blob, scan.checked_with.toc),
            None => {
                let count = |w: CheckedWith| {
                    report
                        .layers
                        .iter()
                        .filter(|l| l.checked_with == Some(w))
                        .count() as u64
                };
                (count(CheckedWith::Blob), count(CheckedWith::Toc))
            }
        };
        for (with, n) in [(CheckedWith::Blob, blob), (CheckedWith::Toc, toc)] {
            if n > 0 {
                self.layers_checked
                    .get_or_create(&CheckedWithLabel {
                        checked_with: format!("{with:?}"),
                    })
                    .inc_by(n);
            }
        }
    }

    pub fn lease_renewed(&self) {
        self.lease_renewals.inc();
    }

    pub fn lease_renew_failed(&self) {
        self.lease_renew_failures.inc();
    }

    pub fn report_write_failed(&self) {
        self.report_write_failures.inc();
    }

    pub fn watch_error(&self) {
        self.watch_errors.inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn outcome_label(outcome: Outcome) -> String {
    format!("{outcome:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapmend_crds::{BlobState, LayerReport, LayerState};

    #[test]
    fn a_finished_request_is_counted_by_action_outcome_duration_and_findings() {
        let m = Metrics::new();
        let report = Report {
            outcome: Outcome::Corrupted,
            layers: vec![LayerReport {
                index: 0,
                digest: "sha256:a".into(),
                diff_id: "sha256:b".into(),
                chain_id: "sha256:b".into(),
                snapshot_id: None,
                snapshot_path: None,
                blob: BlobState::Verified,
                state: LayerState::Corrupted,
                findings_total: 3,
                findings: vec![],
                entries_restored: None,
                leftover_staging: None,
                checked_with: Some(CheckedWith::Toc),
                ..Default::default()
            }],
            ..Default::default()
        };
        m.request_started();
        assert!(m.encode().contains("snapmend_agent_running_requests 1"));
        m.request_finished(RepairAction::Verify, &report, Duration::from_millis(40));
        let text = m.encode();
        assert!(
            text.contains(
                r#"snapmend_agent_requests_total{action="Verify",outcome="Corrupted"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"snapmend_agent_findings_total{action="Verify"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"snapmend_agent_request_duration_seconds_count{action="Verify"} 1"#),
            "{text}"
        );
        assert!(text.contains("snapmend_agent_running_requests 0"), "{text}");
        assert!(
            text.contains(r#"snapmend_agent_layers_checked_total{checked_with="Toc"} 1"#),
            "{text}"
        );
        // A scan counts every unique layer from its summary, not only the listed damaged ones.
        let mut scan = report.clone();
        scan.scan = Some(snapmend_crds::ScanSummary {
            checked_with: snapmend_crds::CheckedWithCounts { blob: 5, toc: 40 },
            ..Default::default()
        });
        m.request_finished(RepairAction::Verify, &scan, Duration::from_millis(40));
        let text = m.encode();
        assert!(
            text.contains(r#"snapmend_agent_layers_checked_total{checked_with="Toc"} 41"#),
            "{text}"
        );
        assert!(
            text.contains(r#"snapmend_agent_layers_checked_total{checked_with="Blob"} 5"#),
            "{text}"
        );
    }

    #[test]
    fn a_corrupted_toc_is_counted_by_reason_on_metrics() {
        use crate::layer::expected::{LayerModel, ModelOptions};
        use crate::layer::toc::{Lookup, TocCache, TocKey, encode};
        let d = tempfile::tempdir().unwrap();
        let cache = TocCache {
            dir: d.path().to_path_buf(),
            max_bytes: 1 << 20,
        };
        let key = TocKey {
            diff_id: format!("sha256:{}", "7a".repeat(32)),
            base: true,
        };
        let mut model = LayerModel::new(ModelOptions::new(true));
        model.finish().unwrap();
        let path = cache
            .store(&key, &encode(&key, &model, &Default::default()))
            .unwrap();
        let m = Metrics::new();
        let count = |text: &str, reason: &str| -> u64 {
            let prefix = format!(r#"snapmend_agent_toc_rejected_total{{reason="{reason}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let before = count(&m.encode(), "checksum");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(cache.lookup(&key), Lookup::Rejected { .. }));
        let text = m.encode();
        assert!(count(&text, "checksum") > before, "{text}");
        assert!(text.contains("snapmend_agent_toc_writes_total"), "{text}");
        assert!(text.contains("snapmend_agent_toc_hits_total"), "{text}");
    }

    #[test]
    fn lease_and_write_failures_are_counted() {
        let m = Metrics::new();
        m.lease_renewed();
        m.lease_renew_failed();
        m.lease_renew_failed();
        m.report_write_failed();
        m.watch_error();
        let text = m.encode();
        assert!(
            text.contains("snapmend_agent_lease_renewals_total 1"),
            "{text}"
        );
        assert!(
            text.contains("snapmend_agent_lease_renew_failures_total 2"),
            "{text}"
        );
        assert!(
            text.contains("snapmend_agent_report_write_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("snapmend_agent_watch_errors_total 1"),
            "{text}"
        );
    }
}
