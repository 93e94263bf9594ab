//! Where a verify or a rebuild spends its time: per-thread accumulators of time, bytes and
//! calls for each pipeline stage (issue 18). Cheap enough to stay on: a timed operation costs
//! two clock reads and a few thread-local adds, nothing is allocated or locked until a thread
//! ends ([`ThreadGuard`]) or a job finishes ([`log_job`]).
//!
//! Times are exclusive: a stage timed inside another (the blob read inside inflate, the
//! diffID hash inside the tar parse) is subtracted from the outer one, so the stages of one
//! thread add up to at most its wall time. The record is process-wide; jobs that run at the
//! same time (the agent) share it, so a breakdown is exact for one job at a time (the CLI).

use std::cell::{Cell, RefCell};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The pipeline's stages, in pipeline order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// `read(2)` of the stored blob.
    ReadBlob,
    /// sha256 of the stored blob (its digest).
    BlobDigest,
    /// gzip/zstd inflate (the decoder's own work, reads and digest excluded).
    Inflate,
    /// The blob reader blocked because the tar side had not taken the previous chunks.
    WaitForTar,
    /// The tar side blocked waiting for inflated data.
    WaitForInflate,
    /// sha256 of the uncompressed stream (the diffID).
    DiffIdHash,
    /// Tar headers and entry data taken from the stream (copies included).
    TarParse,
    /// The expected-entry model (containerd's applier rules).
    Model,
    /// Opening and `fstat` of snapshot files to compare or hash.
    FileOpens,
    /// `read(2)` of snapshot files.
    FileReads,
    /// sha256 of file contents (TOC digests, staged bytes, read-back checks).
    FileHashes,
    /// Byte comparison of tar data with snapshot files.
    Compare,
    /// The snapshot walk: directory reads, `lstat`, `readlink`, xattrs.
    SnapshotWalk,
    /// Creating staged files and writing their bytes.
    StagingWrites,
    /// Building entries in staging: directories, links, devices, owners, modes, xattrs, times.
    Build,
    /// Renames from staging into `fs` (and swaps of what was in the way).
    Renames,
    /// Re-applying directory times after the renames.
    DirTimes,
    /// Reading back what a repair touched (its file hashes are counted under `FileHashes`).
    Confirmation,
}

const STAGES: usize = 18;

impl Stage {
    pub const ALL: [Stage; STAGES] = [
        Stage::ReadBlob,
        Stage::BlobDigest,
        Stage::Inflate,
        Stage::WaitForTar,
        Stage::WaitForInflate,
        Stage::DiffIdHash,
        Stage::TarParse,
        Stage::Model,
        Stage::FileOpens,
        Stage::FileReads,
        Stage::FileHashes,
        Stage::Compare,
        Stage::SnapshotWalk,
        Stage::StagingWrites,
        Stage::Build,
        Stage::Renames,
        Stage::DirTimes,
        Stage::Confirmation,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// How the stage is named in tables.
    pub fn label(self) -> &'static str {
        match self {
            Stage::ReadBlob => "read blob",
            Stage::BlobDigest => "blob digest",
            Stage::Inflate => "inflate",
            Stage::WaitForTar => "wait for the tar side",
            Stage::WaitForInflate => "wait for inflate",
            Stage::DiffIdHash => "diffID hash",
            Stage::TarParse => "tar parse",
            Stage::Model => "model",
            Stage::FileOpens => "file opens",
            Stage::FileReads => "file reads",
            Stage::FileHashes => "file hashes",
            Stage::Compare => "compare",
            Stage::SnapshotWalk => "snapshot walk",
            Stage::StagingWrites => "staging writes",
            Stage::Build => "build entries",
            Stage::Renames => "renames",
            Stage::DirTimes => "directory times",
            Stage::Confirmation => "confirmation",
        }
    }

    /// Waiting is not work: tables show it apart from the CPU stages.
    pub fn is_wait(self) -> bool {
        matches!(self, Stage::WaitForTar | Stage::WaitForInflate)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    nanos: u64,
    bytes: u64,
    calls: u64,
}

struct Local {
    role: &'static str,
    accs: [Acc; STAGES],
    used: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            role: "",
            accs: [Acc { nanos: 0, bytes: 0, calls: 0 }; STAGES],
            used: false,
        })
    };
    /// Nanoseconds spent in stages nested inside the innermost open one.
    static NESTED: Cell<u64> = const { Cell::new(0) };
}

fn add(stage: Stage, nanos: u64, bytes: u64, calls: u64) {
    LOCAL.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            let a = &mut l.accs[stage.index()];
            a.nanos += nanos;
            a.bytes += bytes;
            a.calls += calls;
            l.used = true;
        }
    });
}

/// One timed operation; its time (minus the stages timed inside it) is added when it drops.
#[must_use = "the stage is timed until this is dropped"]
pub struct Timed {
    stage: Stage,
    started: Instant,
    outer_nested: u64,
    bytes: u64,
}

/// Starts timing `stage` on this thread.
pub fn time(stage: Stage) -> Timed {
    Timed {
        stage,
        started: Instant::now(),
        outer_nested: NESTED.replace(0),
        bytes: 0,
    }
}

/// Times `f` as one call of `stage`.
pub fn timed<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let _t = time(stage);
    f()
}

impl Timed {
    /// Counts `n` bytes as handled by this call.
    pub fn bytes(&mut self, n: u64) {
        self.bytes += n;
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().as_nanos() as u64;
        let nested = NESTED.get();
        add(self.stage, elapsed.saturating_sub(nested), self.bytes, 1);
        NESTED.set(self.outer_nested + elapsed);
    }
}

/// Names this thread's part of the pipeline in the breakdown (default `worker`).
pub fn role(name: &'static str) {
    LOCAL.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.role = name;
        }
    });
}

/// One role's totals (threads of the same role are summed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleTotals {
    pub role: String,
    pub threads: u32,
    /// Wall and CPU time of the threads that ended with a [`ThreadGuard`] (0 for the job's
    /// own thread).
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub stages: Vec<StageTotal>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTotal {
    pub stage: Stage,
    pub ms: f64,
    pub bytes: u64,
    pub calls: u64,
}

/// Everything recorded since the last [`take`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub roles: Vec<RoleTotals>,
}

static RECORD: Mutex<Vec<RoleTotals>> = Mutex::new(Vec::new());

/// Moves this thread's accumulators into `sink`.
fn flush(sink: &Mutex<Vec<RoleTotals>>, wall_ms: f64, cpu_ms: f64) {
    let (role, accs) = LOCAL.with(|l| {
        let Ok(mut l) = l.try_borrow_mut() else {
            return (None, [Acc::default(); STAGES]);
        };
        let used = std::mem::take(&mut l.used);
        let accs = std::mem::replace(&mut l.accs, [Acc::default(); STAGES]);
        let role = if l.role.is_empty() { "worker" } else { l.role };
        (used.then_some(role), accs)
    });
    let Some(role) = role else { return };
    let totals = RoleTotals {
        role: role.to_string(),
        threads: 1,
        wall_ms,
        cpu_ms,
        stages: Stage::ALL
            .iter()
            .zip(accs.iter())
            .filter(|(_, a)| a.calls > 0)
            .map(|(s, a)| StageTotal {
                stage: *s,
                ms: a.nanos as f64 / 1e6,
                bytes: a.bytes,
                calls: a.calls,
            })
            .collect(),
    };
    if let Ok(mut record) = sink.lock() {
        merge_into(&mut record, totals);
    }
}

/// Adds one thread's totals to the role of the same name.
pub fn merge_into(roles: &mut Vec<RoleTotals>, t: RoleTotals) {
    let Some(r) = roles.iter_mut().find(|r| r.role == t.role) else {
        roles.push(t);
        return;
    };
    r.threads += t.threads;
    r.wall_ms += t.wall_ms;
    r.cpu_ms += t.cpu_ms;
    for s in t.stages {
        match r.stages.iter_mut().find(|x| x.stage == s.stage) {
            Some(x) => {
                x.ms += s.ms;
                x.bytes += s.bytes;
                x.calls += s.calls;
            }
            None => r.stages.push(s),
        }
    }
    r.stages
        .sort_by_key(|s| Stage::ALL.iter().position(|x| *x == s.stage));
}

fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r == 0 {
        ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
    } else {
        0.0
    }
}

/// Held by a worker thread for its whole life: when it drops, the thread's stages, wall and
/// CPU time go into the record (before the thread is joined, so nothing is lost).
pub struct ThreadGuard {
    started: Instant,
    cpu_at_start: f64,
    sink: &'static Mutex<Vec<RoleTotals>>,
}

impl ThreadGuard {
    pub fn new() -> Self {
        Self::with_sink(&RECORD)
    }

    fn with_sink(sink: &'static Mutex<Vec<RoleTotals>>) -> Self {
        ThreadGuard {
            started: Instant::now(),
            cpu_at_start: thread_cpu_ms(),
            sink,
        }
    }
}

impl Default for ThreadGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let wall = self.started.elapsed().as_secs_f64() * 1e3;
        flush(self.sink, wall, thread_cpu_ms() - self.cpu_at_start);
    }
}

/// The record since the last call (this thread's stages included), and a fresh start.
pub fn take() -> Breakdown {
    take_from(&RECORD)
}

fn take_from(sink: &Mutex<Vec<RoleTotals>>) -> Breakdown {
    flush(sink, 0.0, 0.0);
    let roles = sink
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    Breakdown { roles }
}

/// Logs the breakdown of the job that just ended (target `snapmend_stages`, level info) and
/// starts a fresh one: `RUST_LOG=snapmend_stages=info` shows it.
pub fn log_job() {
    let b = take();
    if b.roles.is_empty() || !tracing::enabled!(target: "snapmend_stages", tracing::Level::INFO) {
        return;
    }
    match serde_json::to_string(&b) {
        Ok(json) => tracing::info!(target: "snapmend_stages", stages = %json, "stage breakdown"),
        Err(e) => tracing::warn!(error = %e, "cannot encode the stage breakdown"),
    }
}

/// A Markdown table of a breakdown: one row per role and stage.
pub fn render_markdown(b: &Breakdown) -> String {
    let mut out = String::from(
        "| thread (count) | stage | time | bytes | MB/s | calls |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for r in &b.roles {
        let head = if r.wall_ms > 0.0 {
            format!(
                "{} ({}; wall {:.0} ms, CPU {:.0} ms)",
                r.role, r.threads, r.wall_ms, r.cpu_ms
            )
        } else {
            format!("{} ({})", r.role, r.threads)
        };
        for (i, s) in r.stages.iter().enumerate() {
            let rate = if s.bytes > 0 && s.ms > 0.0 {
                format!("{:.0}", s.bytes as f64 / 1e3 / s.ms)
            } else {
                String::new()
            };
            let bytes = if s.bytes > 0 {
                format!("{:.1} MiB", s.bytes as f64 / (1u64 << 20) as f64)
            } else {
                String::new()
            };
            let name = if s.stage.is_wait() {
                format!("*{}*", s.stage.label())
            } else {
                s.stage.label().to_string()
            };
            out.push_str(&format!(
                "| {} | {} | {:.0} ms | {} | {} | {} |\n",
                if i == 0 { head.as_str() } else { "" },
                name,
                s.ms,
                bytes,
                rate,
                s.calls
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stage<'a>(b: &'a Breakdown, role: &str, s: Stage) -> Option<&'a StageTotal> {
        b.roles
            .iter()
            .find(|r| r.role == role)?
            .stages
            .iter()
            .find(|x| x.stage == s)
    }

    #[test]
    fn nested_stages_are_subtracted_from_the_outer_one() {
        // Other tests record into the process-wide record at the same time: use a sink.
        static SINK: Mutex<Vec<RoleTotals>> = Mutex::new(Vec::new());
        let (b, outer_ms) = std::thread::scope(|s| {
            let outer_ms = s
                .spawn(|| {
                    let _g = ThreadGuard::with_sink(&SINK);
                    role("test-nested");
                    let started = Instant::now();
                    {
                        let mut outer = time(Stage::Inflate);
                        outer.bytes(10);
                        std::thread::sleep(Duration::from_millis(30));
                        timed(Stage::ReadBlob, || {
                            std::thread::sleep(Duration::from_millis(40))
                        });
                    }
                    let outer_ms = started.elapsed().as_secs_f64() * 1e3;
                    timed(Stage::ReadBlob, || ());
                    outer_ms
                })
                .join()
                .unwrap();
            (take_from(&SINK), outer_ms)
        });
        let inflate = stage(&b, "test-nested", Stage::Inflate).unwrap();
        let read = stage(&b, "test-nested", Stage::ReadBlob).unwrap();
        // However late the sleeps wake up, outer = own + nested.
        assert!(
            inflate.ms >= 30.0 && read.ms >= 40.0,
            "{inflate:?} {read:?}"
        );
        assert!(
            (inflate.ms + read.ms - outer_ms).abs() < 2.0,
            "{inflate:?} {read:?} {outer_ms}"
        );
        assert_eq!((inflate.bytes, inflate.calls, read.calls), (10, 1, 2));
        let r = b.roles.iter().find(|r| r.role == "test-nested").unwrap();
        assert!(r.wall_ms >= 70.0 && r.cpu_ms < r.wall_ms, "{r:?}");
    }

    #[test]
    fn threads_of_one_role_are_summed_in_pipeline_order() {
        let mut roles = Vec::new();
        let t = |ms: f64, stages: Vec<StageTotal>| RoleTotals {
            role: "walk".into(),
            threads: 1,
            wall_ms: ms,
            cpu_ms: ms / 2.0,
            stages,
        };
        let s = |stage, ms, bytes| StageTotal {
            stage,
            ms,
            bytes,
            calls: 1,
        };
        merge_into(&mut roles, t(10.0, vec![s(Stage::SnapshotWalk, 5.0, 0)]));
        merge_into(
            &mut roles,
            t(
                20.0,
                vec![s(Stage::Compare, 1.0, 7), s(Stage::SnapshotWalk, 2.0, 3)],
            ),
        );
        assert_eq!(roles.len(), 1);
        let r = &roles[0];
        assert_eq!((r.threads, r.wall_ms, r.cpu_ms), (2, 30.0, 15.0));
        assert_eq!(
            r.stages
                .iter()
                .map(|s| (s.stage, s.ms, s.bytes, s.calls))
                .collect::<Vec<_>>(),
            vec![
                (Stage::Compare, 1.0, 7, 1),
                (Stage::SnapshotWalk, 7.0, 3, 2)
            ]
        );
        let md = render_markdown(&Breakdown { roles });
        assert!(
            md.contains("| walk (2; wall 30 ms, CPU 15 ms) | compare | 1 ms | 0.0 MiB | 0 | 1 |"),
            "{md}"
        );
        assert!(md.contains("|  | snapshot walk | 7 ms |"), "{md}");
    }

    #[test]
    fn the_breakdown_survives_json() {
        let b = Breakdown {
            roles: vec![RoleTotals {
                role: "pass".into(),
                threads: 1,
                wall_ms: 0.0,
                cpu_ms: 0.0,
                stages: vec![StageTotal {
                    stage: Stage::DiffIdHash,
                    ms: 1.5,
                    bytes: 4,
                    calls: 2,
                }],
            }],
        };
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains("\"diff-id-hash\""), "{json}");
        assert_eq!(serde_json::from_str::<Breakdown>(&json).unwrap(), b);
    }
}
