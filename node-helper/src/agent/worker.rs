//! The request queue: one request at a time, oldest first, through the same job code as the
//! CLI, answered by writing `status.report`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use snapmend_crds::{Outcome, RepairAction, Report, RequestReport, SnapshotRepair, bounded_report};
use tokio::sync::Notify;
use tracing::{Instrument, debug, info, info_span, warn};

use super::culprits::{SharedCulprits, fill_culprits};
use super::decision::{Decision, Scope, Work, decide, queue_order};
use super::metrics::Metrics;
use super::pull_secret::{self, PullSecretFile};
use super::report_patch::{FIELD_MANAGER, refusal, report_apply};
use crate::error::{Error, Result};
use crate::job::{self, JobOptions, Target};
use crate::scan::{self, Namespaces, ScanOptions};
use snapmend_crds::runtime::retry::RetryPolicy;
use snapmend_crds::runtime::shutdown::Shutdown;

/// Where the node's containerd store is; the same options the CLI takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// `--root`; without it, config.toml's `root`, else the default (resolved per request, so
    /// a config that appears or changes later is picked up).
    pub root: Option<PathBuf>,
    pub namespace: String,
    pub config_path: PathBuf,
    /// Blobs the node lacks (`--fetch`, `--registry-config`, `--auth`, `--cache-dir`).
    pub fetch: crate::registry::FetchOptions,
    /// Where TOCs of verified layers are kept (`--toc-cache`); `None` = off.
    pub toc: Option<crate::layer::toc::TocCache>,
}

/// Rescan the store at least this often, even without watch events.
const RESCAN: Duration = Duration::from_secs(30);
/// Report writes and reads through API outages: from 0.25 s, doubling up to 10 s.
const RETRY: RetryPolicy = RetryPolicy::new(Duration::from_millis(250), Duration::from_secs(10));

pub struct Worker {
    pub node: String,
    pub api: Api<SnapshotRepair>,
    pub store: Store<SnapshotRepair>,
    pub wake: Arc<Notify>,
    pub store_options: StoreOptions,
    /// Secrets of the agent's own namespace: the operator's copies of requests' pull secrets.
    pub secrets: Api<Secret>,
    pub secrets_namespace: String,
    pub metrics: Metrics,
    /// The culprit guard's last attribution per snapshot (empty without the guard).
    pub culprits: SharedCulprits,
    pub shutdown: Shutdown,
}

/// A request the worker has handled, keyed by SnapshotRepair name: the uid and resourceVersion
/// of the cached copy it acted on. Until the cache holds a newer copy the worker does not pick
/// the same object again, so a lagging cache cannot make it spin.
type Handled = HashMap<String, (Option<String>, Option<String>)>;

fn version_of(sr: &SnapshotRepair) -> (Option<String>, Option<String>) {
    (
        sr.metadata.uid.clone(),
        sr.metadata.resource_version.clone(),
    )
}

impl Worker {
    pub async fn run(mut self) {
        let mut handled = Handled::new();
        while !self.shutdown.is_triggered() {
            let Some(sr) = self.next_pending(&handled) else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(RESCAN) => {}
                    _ = self.shutdown.wait() => {}
                }
                continue;
            };
            let name = sr.metadata.name.clone().unwrap_or_default();
            let cached_version = version_of(&sr);
            if self.serve(&name).await {
                handled.insert(name, cached_version);
            }
            // Forget deleted SnapshotRepairs, so the map stays as small as the node's set.
            let live: std::collections::HashSet<String> = self
                .store
                .state()
                .iter()
                .filter_map(|sr| sr.metadata.name.clone())
                .collect();
            handled.retain(|name, _| live.contains(name));
        }
        debug!(node = self.node, "request worker stopped");
    }

    /// The oldest cached SnapshotRepair with an unanswered request.
    fn next_pending(&self, handled: &Handled) -> Option<Arc<SnapshotRepair>> {
        let live: Vec<Arc<SnapshotRepair>> = self.store.state();
        let mut pending: Vec<&Arc<SnapshotRepair>> = live
            .iter()
            .filter(|sr| !matches!(decide(&self.node, sr), Decision::Idle(_)))
            .filter(|sr| {
                let name = sr.metadata.name.clone().unwrap_or_default();
                handled.get(&name) != Some(&version_of(sr))
            })
            .collect();
        pending.sort_by(|a, b| queue_order(a, b));
        pending.first().map(|sr| Arc::clone(sr))
    }

    /// Answers the current request of `name`, re-read from the API server first so that a stale
    /// cache never runs a request twice. True when done with this version of the object
    /// (answered, or nothing to do); false when interrupted by shutdown.
    async fn serve(&mut self, name: &str) -> bool {
        let Some(current) = self.get_until_ok(name).await else {
            return false;
        };
        let Some(current) = current else {
            return true; // deleted meanwhile
        };
        match decide(&self.node, &current) {
            Decision::Idle(why) => {
                debug!(sr = name, ?why, "nothing to do after re-reading");
                true
            }
            Decision::Refuse {
                name,
                request_id,
                reason,
            } => {
                let span =
                    info_span!("request", node = %self.node, sr = %name, request_id = %request_id);
                async {
                    warn!(%reason, "refusing request");
                    let report = refusal(&request_id, current.spec.target(), reason);
                    self.deliver(&name, report).await
                }
                .instrument(span)
                .await
            }
            Decision::Run(work) => {
                let span = info_span!(
                    "request",
                    node = %self.node,
                    sr = %work.name,
                    request_id = %work.request_id,
                    action = ?work.action
                );
                async {
                    let mut report = self.run_job(&work).await;
                    if let Ok(culprits) = self.culprits.lock() {
                        fill_culprits(&mut report.report, &culprits);
                    }
                    self.deliver(&work.name, report).await
                }
                .instrument(span)
                .await
            }
        }
    }

    /// Runs the job on a blocking thread (it reads and hashes whole layers).
    async fn run_job(&self, work: &Work) -> RequestReport {
        let action = work.action;
        let pull_secret = match self.pull_secret_file(work).await {
            Ok(file) => file,
            Err(message) => {
                warn!(error = %message, "cannot use the request's pull secret");
                let report = error_report(&work.scope, message);
                self.metrics
                    .request_finished(action, &report, Duration::ZERO);
                return RequestReport {
                    request_id: work.request_id.clone(),
                    report,
                };
            }
        };
        let mut fetch = self.store_options.fetch.clone();
        fetch
            .pull_secret_files
            .extend(pull_secret.as_ref().map(PullSecretFile::path));
        let root = match job::root_from(
            self.store_options.root.as_deref(),
            &self.store_options.config_path,
        ) {
            Ok(root) => root,
            Err(e) => {
                warn!(error = %e, "cannot find containerd's root");
                let report =
                    error_report(&work.scope, format!("cannot find containerd's root: {e}"));
                self.metrics
                    .request_finished(action, &report, Duration::ZERO);
                return RequestReport {
                    request_id: work.request_id.clone(),
                    report,
                };
            }
        };
        let job = self.job_for(work, root, fetch);
        info!(scope = ?work.scope, content = ?work.content, "running request");
        self.metrics.request_started();
        let started = Instant::now();
        let span = tracing::Span::current();
        let joined = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            job()
        })
        .await;
        let report = match joined {
            Ok(report) => report,
            Err(e) => error_report(
                &work.scope,
                format!("the {action:?} job did not finish: {e}"),
            ),
        };
        // The credentials leave the disk as soon as the job is done.
        drop(pull_secret);
        let elapsed = started.elapsed();
        self.metrics.request_finished(action, &report, elapsed);
        info!(
            outcome = ?report.outcome,
            findings = report.findings_total(),
            duration_ms = elapsed.as_millis() as u64,
            "request finished"
        );
        RequestReport {
            request_id: work.request_id.clone(),
            report,
        }
    }

    /// The blocking job that answers `work`: the same code as the CLI's `verify`, `repair` or
    /// `scan [--repair]`, with the agent's store, namespace, TOC cache and registry settings.
    fn job_for(
        &self,
        work: &Work,
        root: PathBuf,
        fetch: crate::registry::FetchOptions,
    ) -> Box<dyn FnOnce() -> Report + Send> {
        let store = &self.store_options;
        match &work.scope {
            Scope::Image(target) => {
                let opts = JobOptions {
                    root,
                    namespace: store.namespace.clone(),
                    config_path: store.config_path.clone(),
                    target: target.clone(),
                    content: work.content,
                    dry_run: false,
                    fetch,
                    toc: store.toc.clone(),
                };
                match work.action {
                    RepairAction::Verify => Box::new(move || job::verify(&opts)),
                    RepairAction::Repair => Box::new(move || job::repair(&opts)),
                }
            }
            Scope::AllImages => {
                let opts = ScanOptions {
                    root,
                    namespaces: Namespaces::One(store.namespace.clone()),
                    config_path: store.config_path.clone(),
                    content: work.content,
                    repair: work.action == RepairAction::Repair,
                    dry_run: false,
                    fetch,
                    toc: store.toc.clone(),
                };
                Box::new(move || {
                    let mut progress = ScanProgress::default();
                    let scan = scan::scan(&opts, &mut |done, total| progress.saw(done, total));
                    bounded_report(&scan)
                })
            }
        }
    }

    /// The request's pull secret as a private docker config file, if the request names one.
    async fn pull_secret_file(
        &self,
        work: &Work,
    ) -> std::result::Result<Option<PullSecretFile>, String> {
        let Some(name) = &work.pull_secret else {
            return Ok(None);
        };
        let config = pull_secret::read(&self.secrets, &self.secrets_namespace, name).await?;
        let file = PullSecretFile::write(&config).map_err(|e| {
            format!(
                "writing pull secret {}/{name} to a private file: {e}",
                self.secrets_namespace
            )
        })?;
        debug!(secret = %name, "pull secret added to the registry credentials");
        Ok(Some(file))
    }

    /// Writes the report, retrying through API outages for as long as the request is still the
    /// current one. True when written or no longer wanted; false on shutdown.
    async fn deliver(&mut self, name: &str, mut report: RequestReport) -> bool {
        let mut retry = RETRY.delays();
        let mut minimal = false;
        loop {
            match self.apply_report(name, &report).await {
                Ok(()) => {
                    info!(outcome = ?report.report.outcome, "report written");
                    return true;
                }
                Err(error) if is_not_found(&error) => {
                    info!("SnapshotRepair deleted before its report was written");
                    return true;
                }
                Err(error) if is_rejected(&error) && !minimal => {
                    // The API server will never take this report (too large, or a CRD older
                    // than the agent): answer with a minimal Error report rather than block
                    // the queue.
                    self.metrics.report_write_failed();
                    warn!(%error, "the report was rejected; writing a minimal Error report instead");
                    report = minimal_report(&report, &error.to_string());
                    minimal = true;
                    continue;
                }
                Err(error) => {
                    self.metrics.report_write_failed();
                    warn!(%error, "writing the report failed");
                }
            }
            let wait = retry.next_delay();
            debug!(retry_in = ?wait, "retrying the report");
            if self.shutdown.sleep_or_stop(wait).await {
                return false;
            }
            // The request may have moved on while the API server was away.
            match self.api.get_opt(name).await {
                Ok(None) => return true,
                Ok(Some(sr)) => {
                    let still_wanted = sr
                        .status
                        .as_ref()
                        .and_then(|s| s.request.as_ref())
                        .is_some_and(|r| r.id == report.request_id);
                    let answered = sr
                        .status
                        .as_ref()
                        .and_then(|s| s.report.as_ref())
                        .is_some_and(|r| r.request_id == report.request_id);
                    if !still_wanted || answered {
                        info!(still_wanted, answered, "request superseded; report dropped");
                        return true;
                    }
                }
                Err(error) => debug!(%error, "re-reading before retrying the report failed"),
            }
        }
    }

    /// Server-side apply of `status.report` under the agent's own field manager: the API
    /// server replaces exactly the report (dropping keys the previous one had) and never
    /// touches the operator's fields.
    async fn apply_report(&self, name: &str, report: &RequestReport) -> Result<()> {
        let body = report_apply(name, report);
        self.api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|source| {
                Error::kube(
                    format!("apply status.report of SnapshotRepair {name}"),
                    source,
                )
            })?;
        Ok(())
    }

    /// GET with retries through API outages: Some(None) when the object is gone,
    /// None on shutdown.
    async fn get_until_ok(&mut self, name: &str) -> Option<Option<SnapshotRepair>> {
        let mut retry = RETRY.delays();
        loop {
            let wait = match self.api.get_opt(name).await {
                Ok(found) => return Some(found),
                Err(error) => {
                    let wait = retry.next_delay();
                    warn!(sr = name, %error, retry_in = ?wait, "reading SnapshotRepair failed");
                    wait
                }
            };
            if self.shutdown.sleep_or_stop(wait).await {
                return None;
            }
        }
    }
}

/// How far a scan is, logged at most every [`PROGRESS_EVERY`] and when it ends, so that a
/// long scan shows in the agent's log while it runs.
#[derive(Default)]
struct ScanProgress {
    logged: Option<Instant>,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl ScanProgress {
    fn saw(&mut self, done: usize, total: usize) {
        let due = self.logged.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due || done == total {
            self.logged = Some(Instant::now());
            info!(images_done = done, images_total = total, "scan progress");
        }
    }
}

/// An Outcome Error report for a job that could not run.
fn error_report(scope: &Scope, message: String) -> Report {
    Report {
        image: match scope {
            Scope::Image(Target::Image(i)) => i.clone(),
            Scope::Image(Target::SandboxImage) => String::new(),
            Scope::AllImages => snapmend_crds::scan_summary::ALL_IMAGES.to_string(),
        },
        outcome: Outcome::Error,
        message: Some(message),
        ..Default::default()
    }
}

/// The Error report written when the full one is rejected: no layers or findings, only what
/// was asked, for which image, and why the full report is missing.
fn minimal_report(full: &RequestReport, why: &str) -> RequestReport {
    RequestReport {
        request_id: full.request_id.clone(),
        report: Report {
            image: full.report.image.clone(),
            outcome: Outcome::Error,
            message: Some(format!(
                "the agent's {:?} report was rejected by the API server: {why}",
                full.report.outcome
            )),
            ..Default::default()
        },
    }
}

/// 400 Bad Request, 413 Request Entity Too Large or 422 Invalid: resending the same body
/// cannot succeed.
fn is_rejected(error: &Error) -> bool {
    matches!(error, Error::Kube { source, .. }
        if matches!(source.as_ref(), kube::Error::Api(s) if rejection_code(s.code)))
}

fn rejection_code(code: u16) -> bool {
    matches!(code, 400 | 413 | 422)
}

fn is_not_found(error: &Error) -> bool {
    matches!(error, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.is_not_found()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapmend_crds::{BlobState, LayerReport, LayerState};

    #[test]
    fn only_bad_request_and_invalid_are_final_rejections() {
        for code in [400, 413, 422] {
            assert!(rejection_code(code), "{code}");
        }
        for code in [401, 403, 404, 409, 429, 500, 503, 504] {
            assert!(!rejection_code(code), "{code} is retried");
        }
    }

    #[test]
    fn the_minimal_report_keeps_the_request_and_says_what_was_rejected() {
        let full = RequestReport {
            request_id: "4".into(),
            report: Report {
                image: "registry.k8s.io/pause:3.10".into(),
                outcome: Outcome::Repaired,
                layers: vec![LayerReport {
                    index: 0,
                    digest: "sha256:a".into(),
                    diff_id: "sha256:b".into(),
                    chain_id: "sha256:b".into(),
                    snapshot_id: None,
                    snapshot_path: None,
                    blob: BlobState::Verified,
                    state: LayerState::Repaired,
                    findings_total: 1,
                    findings: vec![],
                    entries_restored: Some(1),
                    leftover_staging: None,
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        let minimal = minimal_report(&full, "status.report.layers: unknown field");
        assert_eq!(minimal.report.outcome, Outcome::Error);
        assert!(minimal.report.layers.is_empty());
        assert_eq!(minimal.request_id, "4");
        assert_eq!(minimal.report.image, full.report.image);
        let message = minimal.report.message.unwrap_or_default();
        assert!(
            message.contains("Repaired report was rejected"),
            "{message}"
        );
        assert!(message.contains("unknown field"), "{message}");
    }
}
