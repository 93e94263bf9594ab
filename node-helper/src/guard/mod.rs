//! The culprit guard (contract: "The culprit guard"): a fanotify filesystem mark on the
//! filesystem holding the overlayfs snapshots attributes every change inside the `fs` tree
//! of a committed snapshot to its process, leaves out legitimate writers (containerd and its
//! own children, snapmend's repairs, active and view snapshots, anything outside
//! `snapshots/<id>/fs`) and aggregates repeats.
//!
//! Cost: one read per batch of events; a directory handle is resolved to a path once
//! (`open_by_handle_at` + readlink, cached, bounded); /proc is read once per new (process,
//! snapshot, change) and the containerd ancestry once per process per second.

mod aggregate;
pub mod cgroup;
mod command;
mod fanotify;
mod place;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::image::SnapshotKind;
use crate::layer::repair::STAGING_DIR;
use aggregate::{Aggregate, Aggregator, Key, Op};
pub use command::{GuardArgs, layout_for, main};
pub use fanotify::Unavailable;
use place::{Place, SnapshotKinds, inner_path, place_of};
use process::{ProcessInfo, SelfIdentity, Writer};

/// Read buffer for events (many events per read syscall).
const READ_BUFFER: usize = 256 * 1024;
/// How long the guard lets events gather after a wake-up before it reads them.
const BATCH: Duration = Duration::from_millis(20);
/// Directory handles remembered; the cache starts over when full.
const DIR_CACHE: usize = 65_536;
/// Writer verdicts remembered per pid, and for how long (pids are reused).
const WRITER_CACHE: usize = 4096;
const WRITER_TTL: Duration = Duration::from_secs(1);
/// Pids seen creating a repair's staging directory, trusted as snapmend's repair this long.
const REPAIR_TTL: Duration = Duration::from_secs(3600);
const REPAIRERS: usize = 1024;

/// One aggregated change to a committed snapshot (one JSON line of `guard --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// When the last of the aggregated changes happened (as the guard read it).
    pub time: String,
    pub first_time: String,
    pub snapshot_id: String,
    /// The first path changed, inside the layer, as in findings.
    pub path: String,
    pub op: &'static str,
    pub process: ProcessInfo,
    pub count: u64,
    /// The first few distinct paths changed.
    pub sample_paths: Vec<String>,
}

impl Change {
    fn from_aggregate(a: Aggregate) -> Change {
        Change {
            time: a.last_wall.to_string(),
            first_time: a.first_wall.to_string(),
            snapshot_id: a.key.snapshot_id.to_string(),
            path: a.path,
            op: a.key.op.name(),
            process: a.process,
            count: a.count,
            sample_paths: a.samples,
        }
    }

    /// What a Report's layer `culprit` says about this change.
    pub fn culprit(&self) -> snapmend_crds::Culprit {
        snapmend_crds::Culprit {
            time: self.time.clone(),
            path: self.path.clone(),
            op: self.op.to_string(),
            count: self.count,
            process: self.process.clone(),
        }
        .bounded()
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let times = if self.count > 1 {
            format!(" ({} times, first at {})", self.count, self.first_time)
        } else {
            String::new()
        };
        format!(
            "{} snapshot {} {} {}{times} by {}",
            self.time,
            self.snapshot_id,
            self.op,
            self.path,
            self.process.describe()
        )
    }
}

/// The kernel's event queue overflowed: `count` overflow events since the last report,
/// each standing for changes the guard never saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overflow {
    pub time: String,
    pub overflow: u64,
    pub message: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Change(Box<Change>),
    Overflow(Overflow),
}

/// Counters for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardStats {
    pub events: u64,
    pub overflows: u64,
    /// Directory handles that no longer resolved (removed before the event was read).
    pub unresolved: u64,
    pub in_snapshots: u64,
    pub not_committed: u64,
    pub legitimate: u64,
    pub reported_changes: u64,
}

pub struct Guard {
    group: fanotify::Group,
    snapshotter_root: PathBuf,
    kinds: SnapshotKinds,
    dirs: HashMap<Vec<u8>, Place>,
    writers: HashMap<i32, (Writer, Instant)>,
    repairers: HashMap<i32, Instant>,
    me: SelfIdentity,
    aggregator: Aggregator,
    pending_overflows: u64,
    buf: Vec<u8>,
    key: Vec<u8>,
    pub stats: GuardStats,
}

impl Guard {
    /// Marks the filesystem holding `snapshotter_root/snapshots`.
    pub fn start(snapshotter_root: &Path) -> Result<Guard, Unavailable> {
        let snapshots = snapshotter_root.join("snapshots");
        // Paths come back as the kernel spells them: compare against the canonical root.
        let snapshotter_root = snapshotter_root
            .canonicalize()
            .map_err(Unavailable::Other)?;
        let group = fanotify::Group::watch_filesystem_of(&snapshots)?;
        Ok(Guard {
            group,
            kinds: SnapshotKinds::new(snapshotter_root.join("metadata.db")),
            snapshotter_root,
            dirs: HashMap::new(),
            writers: HashMap::new(),
            repairers: HashMap::new(),
            me: SelfIdentity::current(),
            aggregator: Aggregator::default(),
            pending_overflows: 0,
            buf: vec![0; READ_BUFFER],
            key: Vec::with_capacity(64),
            stats: GuardStats::default(),
        })
    }

    /// Waits up to `timeout` for events, handles all queued ones, and returns what is due.
    pub fn poll(&mut self, timeout: Duration) -> std::io::Result<Vec<Output>> {
        let mut out = Vec::new();
        if self
            .group
            .wait(timeout.as_millis().min(u16::MAX as u128) as u16)
        {
            // Let a burst queue up: one read then carries hundreds of events, and the kernel
            // merges repeats (a file written in many chunks) into one. The queue holds 16,384
            // events, far more than arrive in this pause.
            std::thread::sleep(BATCH);
            self.drain(&mut out)?;
        }
        self.due(&mut out, false);
        Ok(out)
    }

    /// Everything still open, at shutdown.
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        let _ = self.drain(&mut out);
        self.due(&mut out, true);
        out
    }

    fn due(&mut self, out: &mut Vec<Output>, all: bool) {
        if self.pending_overflows > 0 {
            out.push(Output::Overflow(Overflow {
                time: Timestamp::now().to_string(),
                overflow: std::mem::take(&mut self.pending_overflows),
                message: "the kernel's fanotify queue overflowed: changes made meanwhile were not seen",
            }));
        }
        for a in self.aggregator.due(Instant::now(), all) {
            self.stats.reported_changes += a.count;
            out.push(Output::Change(Box::new(Change::from_aggregate(a))));
        }
    }

    /// Reads until the queue is empty (bounded to keep the caller's flushes timely).
    fn drain(&mut self, out: &mut Vec<Output>) -> std::io::Result<()> {
        let started = Instant::now();
        let mut buf = std::mem::take(&mut self.buf);
        let result = loop {
            let n = match self.group.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let now = Instant::now();
            let wall = Timestamp::now();
            for event in fanotify::parse_events(&buf[..n]) {
                self.handle(&event, now, wall, out);
            }
            if started.elapsed() > aggregate::QUIET {
                break Ok(());
            }
        };
        self.buf = buf;
        result
    }

    fn handle(
        &mut self,
        event: &fanotify::Event<'_>,
        now: Instant,
        wall: Timestamp,
        out: &mut Vec<Output>,
    ) {
        self.stats.events += 1;
        if event.overflow() {
            self.stats.overflows += 1;
            self.pending_overflows += 1;
            return;
        }
        let Some(handle) = event.dir else { return };
        handle.key_into(&mut self.key);
        // Most events of a filesystem mark are elsewhere: decide those without allocating.
        let place = match self.dirs.get(self.key.as_slice()) {
            Some(Place::Elsewhere) => {
                if event.mask & libc::FAN_ONDIR != 0
                    && event.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0
                {
                    // A renamed directory moves every cached path below it.
                    self.dirs.clear();
                }
                return;
            }
            Some(place) => place.clone(),
            None => {
                let Some(path) = self.group.directory_path(&handle) else {
                    self.stats.unresolved += 1;
                    return;
                };
                let place = place_of(&path, &self.snapshotter_root);
                if self.dirs.len() >= DIR_CACHE {
                    self.dirs.clear();
                }
                self.dirs.insert(self.key.clone(), place.clone());
                place
            }
        };
        let name = event.name.to_string_lossy();
        let ops = Op::of_mask(event.mask);
        // A renamed directory moves every cached path below it.
        if event.mask & libc::FAN_ONDIR != 0
            && (ops.contains(&Op::MoveFrom) || ops.contains(&Op::MoveTo))
        {
            self.dirs.clear();
        }
        let (id, dir) = match place {
            Place::Elsewhere => return,
            Place::SnapshotterRoot => {
                if name == "metadata.db" {
                    self.kinds.mark_stale();
                }
                return;
            }
            Place::SnapshotDir { .. } => {
                if name == STAGING_DIR && ops.contains(&Op::Create) {
                    self.note_repairer(event.pid, now);
                } else if name == STAGING_DIR && ops.contains(&Op::Delete) {
                    // The repair is over; its pid may be reused by anyone.
                    self.repairers.remove(&event.pid);
                }
                return;
            }
            Place::Snapshot { id, dir } => (id, dir),
        };
        self.stats.in_snapshots += 1;
        if self.kinds.kind(id) != SnapshotKind::Committed {
            self.stats.not_committed += 1;
            return;
        }
        let path = inner_path(&dir, &name);
        for op in ops {
            let key = Key {
                pid: event.pid,
                snapshot_id: id,
                op,
            };
            if self.aggregator.repeat(&key, &path, now, wall) {
                continue;
            }
            if self.writer(event.pid, now) == Writer::Legitimate {
                self.stats.legitimate += 1;
                continue;
            }
            let process = process::read(event.pid);
            if let Some(early) = self.aggregator.open(key, process, &path, now, wall) {
                self.stats.reported_changes += early.count;
                out.push(Output::Change(Box::new(Change::from_aggregate(early))));
            }
        }
    }

    /// A process creating a repair's staging directory: snapmend's repair if it runs
    /// snapmend's binary; if it is already gone, the staging directory vouches for it.
    fn note_repairer(&mut self, pid: i32, now: Instant) {
        let gone = !Path::new("/proc").join(pid.to_string()).exists();
        if gone || self.me.writer(pid) == Writer::Legitimate {
            if self.repairers.len() >= REPAIRERS {
                self.repairers
                    .retain(|_, t| now.duration_since(*t) < REPAIR_TTL);
            }
            self.repairers.insert(pid, now);
        }
    }

    fn writer(&mut self, pid: i32, now: Instant) -> Writer {
        if self
            .repairers
            .get(&pid)
            .is_some_and(|t| now.duration_since(*t) < REPAIR_TTL)
        {
            return Writer::Legitimate;
        }
        if let Some((w, at)) = self.writers.get(&pid)
            && now.duration_since(*at) < WRITER_TTL
        {
            return *w;
        }
        let w = self.me.writer(pid);
        if self.writers.len() >= WRITER_CACHE {
            self.writers.clear();
        }
        self.writers.insert(pid, (w, now));
        w
    }
}
