//! Repair: restore exactly the entries that differ, each built complete under a temporary
//! name in the snapshot's own staging directory (`snapshots/<id>/snapmend-staging`, beside
//! `fs`, same filesystem) and renamed into place only after the blob's digest and diffID were
//! confirmed at the end of the stream. Every path inside `fs` is opened beneath it without
//! following symlinks (`safe_fs`). Directory times are re-applied last.
//!
//! Crash tests: built with the `fault-injection` feature (never in release images),
//! `SNAPMEND_FAULT_AFTER_RENAMES=N` aborts the process right after the N-th rename into `fs`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{AtFlags, OFlag, RenameFlags, renameat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, linkat, symlinkat};
use snapmend_crds::{ContentCheck, LayerState};

use super::compare::{
    Diff, Need, OPAQUE_XATTR, describe_expected, describe_observed, xattr_difference,
};
use super::confirm::{Touched, confirm_repair};
use super::expected::{EntryKind, Inode, InodeId, LayerModel, display_path};
use super::header::Timestamp;
use super::observe::{Observation, observe_path};
use super::pass::{BlobCheck, ContentDigest, FsWalk, HashingWriter, Pass, StageDir, run_pass};
use super::safe_fs::{Beneath, errno, fd_child_path, lremovexattr, lsetxattr};
use super::{LayerRepair, RepairOptions, report_from_pass};
use crate::image::{ResolvedLayer, SnapshotKind, SnapshotRef};
use crate::stage_profile::{self as profile, Stage};
use crate::workers::{map_chunks, workers_for};
use crate::{Error, Result};

/// Environment knob for crash tests: abort after this many renames into `fs`.
#[cfg(any(test, feature = "fault-injection"))]
pub const FAULT_ENV: &str = "SNAPMEND_FAULT_AFTER_RENAMES";

/// The crash tests' abort point; only builds with the `fault-injection` feature read it.
#[cfg(any(test, feature = "fault-injection"))]
fn fault_after_from_env() -> Option<u64> {
    std::env::var(FAULT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
}

#[cfg(not(any(test, feature = "fault-injection")))]
fn fault_after_from_env() -> Option<u64> {
    None
}
pub const STAGING_DIR: &str = "snapmend-staging";
/// Inside staging: the snapshot directory's times from before the first (maybe interrupted)
/// repair, restored when staging goes away so nothing outside `fs` looks touched.
const PARENT_TIMES: &str = "snapshot-dir-times";

/// An exclusive, non-blocking `flock` on the snapshot directory itself, held for the repair.
/// No file is created; the CLI and the agent (another mount namespace, same inode) exclude
/// each other.
pub struct SnapshotLock {
    _dir: File,
}

pub fn lock_snapshot(dir: &Path) -> Result<SnapshotLock> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| Error::io(dir, e))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
            });
        }
        return Err(Error::io(dir, e));
    }
    Ok(SnapshotLock { _dir: file })
}

/// A committed snapshot whose whole directory was deleted (containerd then fails with
/// `failed to stat parent: stat …/snapshots/<id>/fs`) gets it back as containerd makes it
/// (0700, root); `fs` is rebuilt inside it like a missing `fs`. `snapshots/` itself must exist.
fn recreate_snapshot_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(dir = %dir.display(), "snapshot directory is gone; recreating it");
            std::fs::DirBuilder::new()
                .mode_0700()
                .create(dir)
                .map_err(|e| Error::io(dir, e))
        }
        Err(e) => Err(Error::io(dir, e)),
        Ok(_) => Ok(()),
    }
}

/// `snapshots/<id>/snapmend-staging`, and the snapshot directory's original times.
pub struct Staging {
    pub path: PathBuf,
    snapshot_dir: PathBuf,
    times: (Timestamp, Timestamp),
}

fn dir_times(dir: &Path) -> Result<(Timestamp, Timestamp)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    Ok((
        Timestamp {
            sec: m.atime(),
            nsec: m.atime_nsec() as u32,
        },
        Timestamp {
            sec: m.mtime(),
            nsec: m.mtime_nsec() as u32,
        },
    ))
}

fn parse_times(text: &str) -> Option<(Timestamp, Timestamp)> {
    let v: Vec<i64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v.as_slice() {
        [a, an, m, mn] => Some((
            Timestamp {
                sec: *a,
                nsec: u32::try_from(*an).ok()?,
            },
            Timestamp {
                sec: *m,
                nsec: u32::try_from(*mn).ok()?,
            },
        )),
        _ => None,
    }
}

/// Removes what an earlier, interrupted repair left in the staging directory (keeping the
/// snapshot directory times it recorded), and creates it afresh.
pub fn fresh_staging(dir: &Path) -> Result<Staging> {
    let p = dir.join(STAGING_DIR);
    let recorded = crate::store::bounded::read_text_capped(
        &p.join(PARENT_TIMES),
        "staging record",
        crate::store::bounded::OWN_RECORD_CAP,
    )
    .ok()
    .and_then(|t| parse_times(&t));
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?,
        Ok(_) => std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&p, e)),
    }
    let times = match recorded {
        Some(t) => t,
        None => dir_times(dir)?,
    };
    std::fs::DirBuilder::new()
        .mode_0700()
        .create(&p)
        .map_err(|e| Error::io(&p, e))?;
    let record = p.join(PARENT_TIMES);
    let (a, m) = times;
    std::fs::write(
        &record,
        format!("{} {} {} {}\n", a.sec, a.nsec, m.sec, m.nsec),
    )
    .map_err(|e| Error::io(&record, e))?;
    Ok(Staging {
        path: p,
        snapshot_dir: dir.to_path_buf(),
        times,
    })
}

trait DirBuilderExt2 {
    fn mode_0700(&mut self) -> &mut Self;
}
impl DirBuilderExt2 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        std::os::unix::fs::DirBuilderExt::mode(self, 0o700)
    }
}

/// Deletes staging and puts the snapshot directory's times back.
fn remove_staging(s: &Staging) {
    if let Err(e) = std::fs::remove_dir_all(&s.path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %s.path.display(), error = %e, "cannot remove staging directory; the next repair removes it");
        return;
    }
    let (a, m) = s.times;
    if let Err(e) = utimensat(
        nix::fcntl::AT_FDCWD,
        &s.snapshot_dir,
        &timespec(a),
        &timespec(m),
        UtimensatFlags::NoFollowSymlink,
    ) {
        tracing::warn!(path = %s.snapshot_dir.display(), error = %e, "cannot restore the snapshot directory's times");
    }
}

fn timespec(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.sec, t.nsec as i64)
}

/// Plan lines, in the order the actions are applied.
fn plan_lines(
    model: &LayerModel,
    diff: &super::compare::Diff,
    obs: &Observation,
    fs_missing: bool,
) -> Vec<String> {
    let mut plan = Vec::new();
    if fs_missing {
        plan.push("create the snapshot's fs directory".to_string());
    }
    if let Some(set) = diff.root_opaque {
        plan.push(format!(
            "{} the opaque marker on /",
            if set { "set" } else { "remove" }
        ));
    }
    for p in &diff.extras {
        let what = obs
            .entries
            .get(p)
            .map(describe_observed)
            .unwrap_or_default();
        plan.push(format!(
            "remove {} ({what}, not in the layer)",
            display_path(p)
        ));
    }
    for (p, need) in &diff.needs {
        let Some((_, inode)) = model.get(p) else {
            continue;
        };
        let line = match need {
            Need::FixDir => format!("fix attributes of {} (directory)", display_path(p)),
            Need::CreateDir => format!("restore {} (directory)", display_path(p)),
            Need::Recreate => format!("restore {} ({})", display_path(p), describe_expected(inode)),
        };
        plan.push(line);
    }
    plan
}

/// Why a repair will not touch this layer's snapshot whatever it holds; `None` when it may.
/// Verify gives the same advice, so the two never disagree.
pub fn refusal(layer: &ResolvedLayer) -> Option<String> {
    let Some(snap) = &layer.snapshot else {
        return Some(no_snapshot_reason(layer));
    };
    (snap.kind != SnapshotKind::Committed).then(|| {
        format!(
            "snapshot {} ({}) is {:?}, not committed: containerd is still unpacking it, or \
             it is a container's writable layer. snapmend repairs only committed snapshots \
             and wrote nothing; let the unpack finish (or remove the image and pull it \
             again), then rerun",
            snap.id,
            snap.dir.display(),
            snap.kind
        )
    })
}

/// The advice for a layer whose snapshot containerd does not record.
pub fn no_snapshot_reason(layer: &ResolvedLayer) -> String {
    format!(
        "containerd has no snapshot for chain {}, and snapmend repairs only snapshots containerd \
         records; pull or import the image again",
        layer.chain_id
    )
}

/// Repairs one layer. See the module docs for the rules.
#[tracing::instrument(skip_all, fields(layer = layer.index, digest = %layer.digest, dry_run = opts.dry_run))]
pub fn repair(
    layer: &ResolvedLayer,
    opts: &RepairOptions,
    toc: Option<&super::toc::TocCache>,
) -> Result<LayerRepair> {
    let Some(snap) = &layer.snapshot else {
        let p = run_pass(layer, ContentCheck::Full, None, false);
        let (report, _, reason) = report_from_pass(layer, &p);
        return Ok(LayerRepair {
            report,
            plan: Vec::new(),
            reason,
            confirmation: None,
        });
    };
    if let Some(reason) = refusal(layer) {
        let mut report = super::empty_report(layer);
        report.state = LayerState::Unrepairable;
        return Ok(LayerRepair {
            report,
            plan: Vec::new(),
            reason: Some(reason),
            confirmation: None,
        });
    }
    let _lock = if opts.dry_run {
        None
    } else {
        recreate_snapshot_dir(&snap.dir)?;
        Some(lock_snapshot(&snap.dir)?)
    };
    let staging = if opts.dry_run {
        None
    } else {
        Some(fresh_staging(&snap.dir)?)
    };
    let result = repair_locked(layer, snap, staging.as_ref().map(|s| s.path.as_path()), toc);
    if let Some(s) = &staging {
        remove_staging(s);
    }
    result
}

fn repair_locked(
    layer: &ResolvedLayer,
    snap: &SnapshotRef,
    staging: Option<&Path>,
    toc: Option<&super::toc::TocCache>,
) -> Result<LayerRepair> {
    let stage = staging.map(|dir| StageDir { dir });
    // Repair always compares every byte: it must never rewrite data it has not verified.
    let started = std::time::Instant::now();
    let mut p = run_pass(layer, ContentCheck::Full, stage.as_ref(), toc.is_some());
    // The pass inflated and verified the blob: its TOC spares the next verify the blob.
    if let (Some(cache), Some(bytes)) = (toc, p.toc.take()) {
        super::keep(cache, layer, &bytes);
    }
    let pass_ms = started.elapsed().as_millis() as u64;
    let (mut report, diff, reason) = report_from_pass(layer, &p);
    let empty = Observation::default();
    let (model, diff, obs, fs_missing) = match (&p.blob, &p.model, &p.fs, diff) {
        (BlobCheck::Verified, Ok(model), FsWalk::Walked(obs), Some(d)) => (model, d, obs, false),
        // `fs` is gone: rebuild every entry.
        (BlobCheck::Verified, Ok(model), FsWalk::Absent, _) => {
            let d = super::compare::diff(model, &empty, &p.content, &p.compared_at);
            (model, d, &empty, true)
        }
        _ => {
            if report.state != LayerState::Healthy {
                report.state = match report.state {
                    LayerState::SnapshotMissing => LayerState::SnapshotMissing,
                    _ => LayerState::Unrepairable,
                };
            }
            return Ok(LayerRepair {
                report,
                plan: Vec::new(),
                reason,
                confirmation: None,
            });
        }
    };
    if fs_missing {
        // Report what a rebuild restores, entry by entry.
        super::set_findings(&mut report, &diff.findings);
    }
    let plan = plan_lines(model, &diff, obs, fs_missing);
    let fault_after = fault_after_from_env();
    if plan.is_empty() {
        // Nothing differs, but an interrupted repair may not have re-applied directory times.
        let mut plan = plan;
        if let Some(staging) = staging {
            let applier = Applier::new(layer, snap, model, &p, staging, fault_after, false)?;
            let changed = applier.apply_dir_times()?;
            if changed > 0 {
                plan.push(format!("re-apply the tar's times to {changed} directories"));
                report.state = LayerState::Repaired;
                report.entries_restored = Some(changed);
            }
        }
        // Only directory times changed: the entries themselves were just verified.
        let confirmation = (report.state == LayerState::Repaired).then(|| {
            let mut c = report.clone();
            c.state = LayerState::Healthy;
            c
        });
        return Ok(LayerRepair {
            report,
            plan,
            reason: None,
            confirmation,
        });
    }
    let Some(staging) = staging else {
        return Ok(LayerRepair {
            report,
            plan,
            reason: None,
            confirmation: None,
        });
    };
    let mut applier = Applier::new(layer, snap, model, &p, staging, fault_after, fs_missing)?;
    let applying = std::time::Instant::now();
    applier.apply(&diff)?;
    let apply_ms = applying.elapsed().as_millis() as u64;
    let confirming = std::time::Instant::now();
    let touched = Touched::from_diff(&diff, fs_missing);
    let written = applier.written.into_inner().unwrap_or_default();
    let left = profile::timed(Stage::Confirmation, || {
        confirm_repair(&snap.fs, model, &touched, &written, &p.compared_at)
    })
    .map_err(|e| Error::io(&snap.fs, e))?;
    let confirmation = confirmation_report(&report, &left);
    tracing::info!(
        restored = plan.len(),
        renames = applier.renames.load(Ordering::Relaxed),
        pass_ms,
        apply_ms,
        confirm_ms = confirming.elapsed().as_millis() as u64,
        still_wrong = left.findings.len(),
        "layer repaired"
    );
    report.state = LayerState::Repaired;
    report.entries_restored = Some(plan.len() as u64);
    Ok(LayerRepair {
        report,
        plan,
        reason: None,
        confirmation: Some(confirmation),
    })
}

/// The layer's state after the repair, as read back by `confirm`: `Healthy` when nothing
/// it touched is still wrong, else `Corrupted` with what is.
fn confirmation_report(
    before: &snapmend_crds::LayerReport,
    left: &Diff,
) -> snapmend_crds::LayerReport {
    let mut r = before.clone();
    super::set_findings(&mut r, &left.findings);
    r.state = if left.is_clean() {
        LayerState::Healthy
    } else {
        LayerState::Corrupted
    };
    r
}

struct Applier<'a> {
    digest: &'a str,
    snap: &'a SnapshotRef,
    model: &'a LayerModel,
    pass: &'a Pass,
    staging: &'a Path,
    staging_fd: OwnedFd,
    beneath: Option<Beneath>,
    fs_missing: bool,
    counter: AtomicU64,
    renames: AtomicU64,
    fault_after: Option<u64>,
    /// sha256 of every file built, by inode, for `confirm`.
    written: std::sync::Mutex<HashMap<InodeId, ContentDigest>>,
}

/// The last parent directory opened by one worker: siblings are restored one after another.
#[derive(Default)]
struct ParentCache(Option<(Vec<u8>, OwnedFd)>);

/// Non-directory work that can run in parallel once every directory exists.
enum Work<'m> {
    Entry(&'m [u8], InodeId),
    Group(InodeId, &'m [Vec<u8>]),
}

impl<'a> Applier<'a> {
    fn new(
        layer: &'a ResolvedLayer,
        snap: &'a SnapshotRef,
        model: &'a LayerModel,
        pass: &'a Pass,
        staging: &'a Path,
        fault_after: Option<u64>,
        fs_missing: bool,
    ) -> Result<Self> {
        let staging_fd = nix::fcntl::open(
            staging,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(staging, errno(e)))?;
        let beneath = if fs_missing {
            None
        } else {
            Some(Beneath::open(&snap.fs).map_err(|e| Error::io(&snap.fs, e))?)
        };
        Ok(Applier {
            digest: &layer.digest,
            snap,
            model,
            pass,
            staging,
            staging_fd,
            beneath,
            fs_missing,
            counter: AtomicU64::new(0),
            renames: AtomicU64::new(0),
            fault_after,
            written: Default::default(),
        })
    }

    fn err(&self, path: &[u8], e: io::Error) -> Error {
        Error::io(self.snap.fs.join(OsStr::from_bytes(path)), e)
    }

    fn temp_name(&self, what: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{what}-{n}")
    }

    fn beneath(&self) -> Result<&Beneath> {
        self.beneath.as_ref().ok_or_else(|| Error::Snapshot {
            path: self.snap.fs.clone(),
            reason: "fs is not open".into(),
        })
    }

    fn renamed(&self) {
        let n = self.renames.fetch_add(1, Ordering::SeqCst) + 1;
        #[cfg(any(test, feature = "fault-injection"))]
        if self.fault_after == Some(n) {
            tracing::error!(renames = n, "{FAULT_ENV} reached: aborting");
            std::process::abort();
        }
        #[cfg(not(any(test, feature = "fault-injection")))]
        let _ = (n, self.fault_after);
    }

    fn apply(&mut self, diff: &super::compare::Diff) -> Result<()> {
        if self.fs_missing {
            self.create_fs()?;
        }
        if let Some(set) = diff.root_opaque {
            let root = self
                .beneath()?
                .open_at(b"", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| self.err(b"", e))?;
            set_opaque_fd(&root, set).map_err(|e| self.err(b"", e))?;
        }
        for p in &diff.extras {
            self.remove_extra(p)?;
        }
        // Directories first, in path order (parents before children), on this thread.
        let mut cache = ParentCache::default();
        let groups = self.model.hardlink_groups();
        let mut work: Vec<Work<'_>> = Vec::new();
        let mut grouped = std::collections::HashSet::new();
        for (path, need) in &diff.needs {
            let Some((id, inode)) = self.model.get(path) else {
                continue;
            };
            match need {
                Need::FixDir => self.fix_dir(path, inode)?,
                Need::CreateDir => {
                    let name = self.build(id, inode)?;
                    self.place(&mut cache, &name, path, true)?;
                }
                Need::Recreate => match groups.get(&id) {
                    // A hardlink group is rebuilt as one unit by one worker.
                    Some(paths) => {
                        if grouped.insert(id) {
                            work.push(Work::Group(id, paths));
                        }
                    }
                    None => work.push(Work::Entry(path, id)),
                },
            }
        }
        drop(cache);
        // Then every other entry: each worker takes a contiguous run (siblings together).
        let this = &*self;
        let results = map_chunks(&work, workers_for(work.len(), 64), |part| {
            this.restore_entries(part)
        });
        for r in results {
            r?;
        }
        self.apply_dir_times().map(|_| ())
    }

    fn restore_entries(&self, part: &[Work<'_>]) -> Result<()> {
        profile::role("restore");
        let mut cache = ParentCache::default();
        for w in part {
            match w {
                Work::Entry(path, id) => {
                    let name = self.build(*id, self.model.inode(*id))?;
                    self.place(&mut cache, &name, path, false)?;
                }
                Work::Group(id, paths) => {
                    self.rebuild_group(&mut cache, *id, self.model.inode(*id), paths)?
                }
            }
        }
        Ok(())
    }

    fn create_fs(&mut self) -> Result<()> {
        let name = self.temp_name("fs");
        mkdirat(
            &self.staging_fd,
            name.as_str(),
            Mode::from_bits_truncate(0o755),
        )
        .map_err(|e| Error::io(self.staging.join(&name), errno(e)))?;
        // Owner: root for a base layer, else the parent's fs owner (containerd chowns it so).
        let (uid, gid) = match self.snap.lower_fs.first() {
            Some(parent) => observe_path(parent)
                .map(|o| (o.uid, o.gid))
                .unwrap_or((0, 0)),
            None => (0, 0),
        };
        let staged = self.staging.join(&name);
        fchownat(
            &self.staging_fd,
            name.as_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io(&staged, errno(e)))?;
        fchmodat(
            &self.staging_fd,
            name.as_str(),
            Mode::from_bits_truncate(0o755),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| Error::io(&staged, errno(e)))?;
        if self.model.root_opaque() {
            lsetxattr(&staged, OPAQUE_XATTR, b"y").map_err(|e| Error::io(&staged, e))?;
        }
        let snap_fd = nix::fcntl::open(
            &self.snap.dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(&self.snap.dir, errno(e)))?;
        // Something that is not a directory (say a planted symlink) sits where fs belongs:
        // swap the new fs in atomically, never following it, and delete the old thing.
        let in_the_way = match fstatat(&snap_fd, "fs", AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(Error::Snapshot {
                    path: self.snap.fs.clone(),
                    reason: "fs appeared while the repair ran; run the repair again".into(),
                });
            }
            Ok(_) => true,
            Err(nix::errno::Errno::ENOENT) => false,
            Err(e) => return Err(Error::io(&self.snap.fs, errno(e))),
        };
        let flags = if in_the_way {
            RenameFlags::RENAME_EXCHANGE
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        renameat2(&self.staging_fd, name.as_str(), &snap_fd, "fs", flags)
            .map_err(|e| Error::io(&self.snap.fs, errno(e)))?;
        self.renamed();
        if in_the_way {
            self.discard(&name);
        }
        self.beneath = Some(Beneath::open(&self.snap.fs).map_err(|e| Error::io(&self.snap.fs, e))?);
        self.fs_missing = false;
        Ok(())
    }

    /// Moves an unexplained entry (with its subtree) out of `fs` in one rename, then deletes it.
    fn remove_extra(&self, path: &[u8]) -> Result<()> {
        let _renaming = profile::time(Stage::Renames);
        let (parent, base) = self
            .beneath()?
            .open_parent(path)
            .map_err(|e| self.err(path, e))?;
        let name = self.temp_name("trash");
        match nix::fcntl::renameat(&parent, base, &self.staging_fd, name.as_str()) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.err(path, errno(e))),
        }
        self.renamed();
        self.discard(&name);
        Ok(())
    }

    fn discard(&self, name: &str) {
        let p = self.staging.join(name);
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(path = %p.display(), error = %e, "cannot delete a replaced entry from staging");
        }
    }

    /// Renames the staged entry `name` to `path` inside `fs`. Whatever was there is replaced
    /// atomically (a directory in the way, or a non-directory where a directory goes, is
    /// swapped out with RENAME_EXCHANGE and deleted from staging).
    fn place(
        &self,
        cache: &mut ParentCache,
        name: &str,
        path: &[u8],
        staged_is_dir: bool,
    ) -> Result<()> {
        let _renaming = profile::time(Stage::Renames);
        let (parent_path, base) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&[][..], path),
        };
        // Siblings come one after another: keep their parent open. Any rename that could
        // swap a directory out drops the cache.
        let cached = matches!(&cache.0, Some((p, _)) if p.as_slice() == parent_path);
        if !cached {
            let (fd, _) = self
                .beneath()?
                .open_parent(path)
                .map_err(|e| self.err(path, e))?;
            cache.0 = Some((parent_path.to_vec(), fd));
        }
        let Some((_, parent)) = cache.0.take() else {
            return Err(self.err(path, io::Error::other("parent directory not open")));
        };
        let (result, keep) = self.place_in(&parent, name, path, base, staged_is_dir);
        if result.is_ok() && keep && !staged_is_dir {
            cache.0 = Some((parent_path.to_vec(), parent));
        }
        result
    }

    /// Returns the result and whether the parent fd may stay cached (an exchange may have
    /// swapped a directory out).
    fn place_in(
        &self,
        parent: &OwnedFd,
        name: &str,
        path: &[u8],
        base: &[u8],
        staged_is_dir: bool,
    ) -> (Result<()>, bool) {
        // Common case first: nothing is there.
        match renameat2(
            &self.staging_fd,
            name,
            parent,
            base,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                self.renamed();
                return (Ok(()), true);
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return (Err(self.err(path, errno(e))), false),
        }
        let existing_is_dir = match fstatat(parent, base, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
            Err(e) => return (Err(self.err(path, errno(e))), false),
        };
        if existing_is_dir || staged_is_dir {
            if let Err(e) = renameat2(
                &self.staging_fd,
                name,
                parent,
                base,
                RenameFlags::RENAME_EXCHANGE,
            ) {
                return (Err(self.err(path, errno(e))), false);
            }
            self.renamed();
            self.discard(name);
            (Ok(()), false)
        } else {
            if let Err(e) = nix::fcntl::renameat(&self.staging_fd, name, parent, base) {
                return (Err(self.err(path, errno(e))), false);
            }
            self.renamed();
            (Ok(()), true)
        }
    }

    /// Staged bytes for a file inode and their sha256: the copy made during the pass, or a
    /// copy of the disk file whose bytes the pass compared equal to the tar.
    fn file_bytes(&self, id: InodeId) -> Result<(String, ContentDigest)> {
        if let Some(src) = self.pass.staged.get(&id)
            && let Some(staged) = src
                .path
                .strip_prefix(self.staging)
                .ok()
                .and_then(|n| n.to_str())
        {
            return Ok((staged.to_string(), src.sha256));
        }
        let name = self.temp_name("file");
        let dst = self.staging.join(&name);
        let verified = self.pass.content.get(&id) == Some(&super::compare::ContentVerdict::Same);
        let Some(path) = self.pass.compared_at.get(&id).filter(|_| verified) else {
            return Err(Error::Layer {
                digest: self.digest.to_string(),
                reason: "a file to restore has no verified bytes".into(),
            });
        };
        let src = self
            .beneath()?
            .open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .map_err(|e| self.err(path, e))?;
        let mut src = File::from(src);
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dst)
            .map_err(|e| Error::io(&dst, e))?;
        let mut out = HashingWriter::new(out);
        io::copy(&mut src, &mut out).map_err(|e| Error::io(&dst, e))?;
        Ok((name, out.finish()))
    }

    /// Builds a complete entry for `inode` in staging and returns its name.
    fn build(&self, id: InodeId, inode: &Inode) -> Result<String> {
        let _building = profile::time(Stage::Build);
        let name = match &inode.kind {
            EntryKind::File => {
                let (name, sha256) = self.file_bytes(id)?;
                if let Ok(mut w) = self.written.lock() {
                    w.insert(id, sha256);
                }
                name
            }
            EntryKind::Dir => {
                let n = self.temp_name("dir");
                mkdirat(
                    &self.staging_fd,
                    n.as_str(),
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(|e| Error::io(self.staging.join(&n), errno(e)))?;
                n
            }
            EntryKind::Symlink(target) => {
                let n = self.temp_name("link");
                symlinkat(OsStr::from_bytes(target), &self.staging_fd, n.as_str())
                    .map_err(|e| Error::io(self.staging.join(&n), errno(e)))?;
                n
            }
            EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => {
                let n = self.temp_name("dev");
                let kind = if matches!(inode.kind, EntryKind::Char { .. }) {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknodat(
                    &self.staging_fd,
                    n.as_str(),
                    kind,
                    Mode::empty(),
                    libc::makedev(*major, *minor),
                )
                .map_err(|e| Error::io(self.staging.join(&n), errno(e)))?;
                n
            }
            EntryKind::Fifo => {
                let n = self.temp_name("fifo");
                mknodat(
                    &self.staging_fd,
                    n.as_str(),
                    SFlag::S_IFIFO,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| Error::io(self.staging.join(&n), errno(e)))?;
                n
            }
            EntryKind::Whiteout => {
                let n = self.temp_name("whiteout");
                mknodat(
                    &self.staging_fd,
                    n.as_str(),
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| Error::io(self.staging.join(&n), errno(e)))?;
                n
            }
        };
        self.set_attributes(&name, inode)?;
        Ok(name)
    }

    /// containerd's order: lchown, xattrs, chmod (not symlinks), times (not implicit dirs
    /// or whiteouts).
    fn set_attributes(&self, name: &str, inode: &Inode) -> Result<()> {
        let staged = self.staging.join(name);
        let io_err = |e: io::Error| Error::io(&staged, e);
        fchownat(
            &self.staging_fd,
            name,
            Some(Uid::from_raw(inode.uid)),
            Some(Gid::from_raw(inode.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(errno(e)))?;
        for (k, v) in &inode.xattrs {
            lsetxattr(&staged, k, v).map_err(io_err)?;
        }
        if inode.kind.is_dir() && inode.opaque {
            lsetxattr(&staged, OPAQUE_XATTR, b"y").map_err(io_err)?;
        }
        if !matches!(inode.kind, EntryKind::Symlink(_)) {
            fchmodat(
                &self.staging_fd,
                name,
                Mode::from_bits_truncate(inode.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_err(errno(e)))?;
        }
        if let Some(mtime) = inode.mtime {
            let atime = inode.atime.unwrap_or(mtime);
            utimensat(
                &self.staging_fd,
                name,
                &timespec(atime),
                &timespec(mtime),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| io_err(errno(e)))?;
        }
        Ok(())
    }

    /// One inode, every path linked to it: all links are made in staging first, then each
    /// is renamed into place.
    fn rebuild_group(
        &self,
        cache: &mut ParentCache,
        id: InodeId,
        inode: &Inode,
        paths: &[Vec<u8>],
    ) -> Result<()> {
        let first = self.build(id, inode)?;
        let mut names = vec![first.clone()];
        for _ in 1..paths.len() {
            let n = self.temp_name("hardlink");
            linkat(
                &self.staging_fd,
                first.as_str(),
                &self.staging_fd,
                n.as_str(),
                AtFlags::empty(),
            )
            .map_err(|e| Error::io(self.staging.join(&n), errno(e)))?;
            names.push(n);
        }
        for (name, path) in names.iter().zip(paths) {
            self.place(cache, name, path, false)?;
        }
        Ok(())
    }

    /// Owner, xattrs, opaque marker and mode of an existing directory, in place (each change
    /// is one atomic syscall; a directory with children cannot be swapped by rename).
    fn fix_dir(&self, path: &[u8], inode: &Inode) -> Result<()> {
        let _building = profile::time(Stage::Build);
        let fd = self
            .beneath()?
            .open_at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| self.err(path, e))?;
        let (parent, base) = self
            .beneath()?
            .open_parent(path)
            .map_err(|e| self.err(path, e))?;
        let via = fd_child_path(&parent, base);
        let err = |e: io::Error| Error::io(self.snap.fs.join(OsStr::from_bytes(path)), e);
        let current = observe_path(&via).map_err(err)?;
        if (current.uid, current.gid) != (inode.uid, inode.gid) {
            nix::unistd::fchown(
                &fd,
                Some(Uid::from_raw(inode.uid)),
                Some(Gid::from_raw(inode.gid)),
            )
            .map_err(|e| err(errno(e)))?;
        }
        if xattr_difference(&current, &inode.xattrs).is_some() {
            for (k, v) in &inode.xattrs {
                if current.xattr(k) != Some(v.as_slice()) {
                    lsetxattr(&via, k, v).map_err(err)?;
                }
            }
            for (k, _) in &current.xattrs {
                let host_label = k.as_slice() == b"security.selinux" || k.starts_with(b"system.");
                if k.as_slice() != OPAQUE_XATTR && !host_label && !inode.xattrs.contains_key(k) {
                    lremovexattr(&via, k).map_err(err)?;
                }
            }
        }
        let has_opaque = current.xattr(OPAQUE_XATTR) == Some(b"y".as_slice());
        if has_opaque != inode.opaque {
            set_opaque_fd(&fd, inode.opaque).map_err(err)?;
        }
        if !inode.mode_ok(current.mode & 0o7777) {
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(inode.mode))
                .map_err(|e| err(errno(e)))?;
        }
        Ok(())
    }

    /// Directory mtimes from the tar, re-applied after every change (renames touch parents).
    fn apply_dir_times(&self) -> Result<u64> {
        let _timing = profile::time(Stage::DirTimes);
        let mut changed = 0;
        for path in self.model.dir_time_order() {
            let Some((_, inode)) = self.model.get(&path) else {
                continue;
            };
            let Some(mtime) = inode.mtime else { continue };
            let (parent, base) = self
                .beneath()?
                .open_parent(&path)
                .map_err(|e| self.err(&path, e))?;
            let st = match fstatat(&parent, base, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) => return Err(self.err(&path, errno(e))),
            };
            if (st.st_mtime, st.st_mtime_nsec as u32) != (mtime.sec, mtime.nsec) {
                let atime = inode.atime.unwrap_or(mtime);
                utimensat(
                    &parent,
                    base,
                    &timespec(atime),
                    &timespec(mtime),
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| self.err(&path, errno(e)))?;
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn set_opaque_fd(fd: &impl AsFd, set: bool) -> io::Result<()> {
    let name = c"trusted.overlay.opaque";
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: valid fd, NUL-terminated name, value slice with its exact length.
    let r = unsafe {
        if set {
            libc::fsetxattr(raw, name.as_ptr(), b"y".as_ptr().cast(), 1, 0)
        } else {
            libc::fremovexattr(raw, name.as_ptr())
        }
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !set && e.raw_os_error() == Some(libc::ENODATA) {
        Ok(())
    } else {
        Err(e)
    }
}
