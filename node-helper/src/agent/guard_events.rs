//! The culprit guard inside the agent: the guard loop on its own thread; each aggregated
//! change becomes a Warning Event `SnapshotTampered` on this Node, counts in the metrics and
//! is remembered per snapshot (`culprits`) for the layer `culprit` of later Reports.
//! Without fanotify (old kernel, no CAP_SYS_ADMIN) the agent keeps working and says so in
//! its log, `snapmend_agent_guard_active` and /readyz.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::culprits::SharedCulprits;
use super::metrics::Metrics;
use super::status::AgentStatus;
use super::worker::StoreOptions;
use crate::guard::{self, Change, Guard, Output};
use snapmend_crds::runtime::shutdown::Shutdown;

/// Changes waiting for their Event; beyond, Events are dropped (the metrics still count).
const PENDING_EVENTS: usize = 256;
const TICK: Duration = Duration::from_millis(200);
/// Event notes are limited to 1 KiB by the API.
const NOTE_CAP: usize = 1000;

pub const REASON_TAMPERED: &str = "SnapshotTampered";
pub const REASON_OVERFLOW: &str = "SnapshotGuardOverflow";

/// `snapshot 12: delete /pause (3 times) by pid 4711 `…` (systemd unit cron.service) at <time>`.
pub fn tampered_note(c: &Change) -> String {
    let times = if c.count > 1 {
        format!(" ({} times, e.g. {})", c.count, c.sample_paths.join(", "))
    } else {
        String::new()
    };
    let note = format!(
        "snapshot {}: {} {}{times} by {} at {}",
        c.snapshot_id,
        c.op,
        c.path,
        c.process.describe(),
        c.time
    );
    cap(note, NOTE_CAP)
}

/// `text` cut at a character boundary to at most `max` bytes plus "…".
fn cap(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Starts the guard thread and the Event task; returns the task (aborted at shutdown).
pub fn spawn(
    client: Client,
    node: String,
    store: &StoreOptions,
    metrics: Metrics,
    status: AgentStatus,
    culprits: SharedCulprits,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let started = guard::layout_for(store.root.as_deref(), &store.config_path)
        .map_err(|e| e.to_string())
        .and_then(|layout| Guard::start(&layout.overlay_root).map_err(|e| e.to_string()));
    let guard = match started {
        Ok(guard) => guard,
        Err(reason) => {
            warn!(%reason, "culprit guard unavailable; the agent works without it");
            metrics.guard_active(false);
            status.guard_state(format!("unavailable: {reason}"));
            return tokio::spawn(async {});
        }
    };
    info!("culprit guard watching committed snapshots");
    metrics.guard_active(true);
    status.guard_state("watching".into());
    let (tx, mut rx) = mpsc::channel::<Output>(PENDING_EVENTS);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread_metrics = metrics.clone();
    let thread_status = status.clone();
    std::thread::spawn(move || {
        run_guard(
            guard,
            tx,
            thread_stop,
            thread_metrics,
            thread_status,
            culprits,
        );
    });
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "snapmend-node-helper".into(),
            instance: Some(node.clone()),
        },
    );
    let node_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node),
        ..Default::default()
    };
    tokio::spawn(async move {
        loop {
            let output = tokio::select! {
                o = rx.recv() => o,
                _ = shutdown.wait() => None,
            };
            let Some(output) = output else { break };
            let (reason, note) = match &output {
                Output::Change(c) => (REASON_TAMPERED, tampered_note(c)),
                Output::Overflow(o) => (
                    REASON_OVERFLOW,
                    format!(
                        "{} ({} overflow events) at {}",
                        o.message, o.overflow, o.time
                    ),
                ),
            };
            let event = Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note),
                action: "Guard".into(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &node_ref).await {
                warn!(reason, %error, "could not record the guard's event");
            }
        }
        stop.store(true, Ordering::SeqCst);
    })
}

fn run_guard(
    mut guard: Guard,
    tx: mpsc::Sender<Output>,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
    status: AgentStatus,
    culprits: SharedCulprits,
) {
    while !stop.load(Ordering::SeqCst) {
        let outputs = match guard.poll(TICK) {
            Ok(outputs) => outputs,
            Err(e) => {
                warn!(error = %e, "culprit guard stopped reading events");
                metrics.guard_active(false);
                status.guard_state(format!("stopped: {e}"));
                return;
            }
        };
        for output in outputs {
            match &output {
                Output::Change(c) => {
                    warn!(
                        snapshot = c.snapshot_id,
                        op = c.op,
                        path = c.path,
                        count = c.count,
                        pid = c.process.pid,
                        process = c.process.describe(),
                        "committed snapshot changed"
                    );
                    metrics.guard_changes(c.op, c.count);
                    // Before the Event, which may be dropped: a later Report still names it.
                    if let Ok(mut culprits) = culprits.lock() {
                        culprits.note(c);
                    }
                }
                Output::Overflow(o) => {
                    warn!(overflow = o.overflow, "{}", o.message);
                    metrics.guard_overflows(o.overflow);
                }
            }
            if tx.try_send(output).is_err() {
                warn!(
                    "guard events are backing up; this change is logged and counted, not sent as an Event"
                );
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::process::ProcessInfo;

    fn change(count: u64) -> Change {
        Change {
            time: "2026-12-07T03:12:09Z".into(),
            first_time: "2026-12-07T03:12:08Z".into(),
            snapshot_id: "1".into(),
            path: "/pause".into(),
            op: "delete",
            process: ProcessInfo {
                pid: 4711,
                cmdline: Some("/bin/sh /etc/cron.daily/cleanup".into()),
                systemd_unit: Some("cron.service".into()),
                ..Default::default()
            },
            count,
            sample_paths: vec!["/pause".into(), "/etc/passwd".into()],
        }
    }

    #[test]
    fn the_note_names_process_snapshot_path_and_time() {
        assert_eq!(
            tampered_note(&change(1)),
            "snapshot 1: delete /pause by pid 4711 `/bin/sh /etc/cron.daily/cleanup` (systemd unit cron.service) at 2026-12-07T03:12:09Z"
        );
        assert!(tampered_note(&change(7)).contains("(7 times, e.g. /pause, /etc/passwd)"));
        let mut long = change(1);
        long.process.cmdline = Some("x".repeat(5000));
        assert!(tampered_note(&long).len() <= NOTE_CAP + 3);
    }
}
