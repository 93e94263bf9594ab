//! One pass over a layer: stream the blob into the expected-entry model, compare each regular
//! file's bytes with the snapshot while its tar data flows by (optionally staging the correct
//! bytes for a repair), walk the snapshot on worker threads, and settle the blob's state.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use sha2::{Digest, Sha256};
use snapmend_crds::{BlobState, ContentCheck};

use super::blob::{StreamError, stream_layer};
use super::compare::ContentVerdict;
use super::expected::{
    Applied, EntryKind, InodeId, LayerModel, LowerDir, ModelError, ModelOptions,
};
use super::header::read_full;
use super::observe::{Observation, observe_path, observe_tree};
use super::root_path::resolve_root_path;
use super::safe_fs::Beneath;
use super::toc::{TocKey, encode as encode_toc};
use crate::image::ResolvedLayer;
use crate::stage_profile::{self as profile, Stage};

const COMPARE_BUF: usize = 256 * 1024;

/// Where a repair stages the bytes of files it will restore.
pub struct StageDir<'a> {
    pub dir: &'a Path,
}

/// sha256 of a file's bytes, as written to staging and as read back after the rename.
pub type ContentDigest = [u8; 32];

/// The correct bytes of one file, staged during the pass.
#[derive(Clone, Debug)]
pub struct StagedFile {
    pub path: PathBuf,
    pub sha256: ContentDigest,
}

/// Hashes what it writes, so that the repair can later confirm the bytes it put in place.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn finish(self) -> ContentDigest {
        self.hasher.finalize().into()
    }
}

/// Hashes what is read through it: the content digest a TOC keeps of each regular file.
pub struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
}

impl<'a> HashingReader<'a> {
    pub fn new(inner: &'a mut dyn Read) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads what is left, then the digest of everything read.
    pub fn finish(mut self) -> io::Result<ContentDigest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finalize().into())
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut hashed = profile::time(Stage::FileHashes);
        hashed.bytes(n as u64);
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut written = profile::time(Stage::StagingWrites);
        let n = self.inner.write(buf)?;
        written.bytes(n as u64);
        drop(written);
        let mut hashed = profile::time(Stage::FileHashes);
        hashed.bytes(n as u64);
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl StageDir<'_> {
    pub fn data_path(&self, ordinal: u64) -> PathBuf {
        self.dir.join(format!("data-{ordinal}"))
    }
}

/// What the stream made of the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobCheck {
    /// Digest and diffID both matched.
    Verified,
    /// No blob was read: the model came from the TOC cache (kept after an earlier pass over
    /// the verified blob).
    FromToc,
    /// Not usable as the reference; `reason` is for people.
    Unusable { state: BlobState, reason: String },
}

impl BlobCheck {
    pub fn state(&self) -> BlobState {
        match self {
            BlobCheck::Verified => BlobState::Verified,
            BlobCheck::FromToc => BlobState::NotChecked,
            BlobCheck::Unusable { state, .. } => *state,
        }
    }
}

/// What the walk found of the snapshot's `fs`.
#[derive(Debug)]
pub enum FsWalk {
    Walked(Observation),
    /// No `fs` (or no snapshot at all, or `fs` is not a directory).
    Absent,
    /// `fs` exists but could not be read.
    Unreadable(String),
}

pub struct Pass {
    pub blob: BlobCheck,
    /// The expected entries, or why the tar cannot be applied.
    pub model: Result<LayerModel, ModelError>,
    pub fs: FsWalk,
    pub content: HashMap<InodeId, ContentVerdict>,
    /// Inode -> (path its content was compared at, staged data file if any).
    pub compared_at: HashMap<InodeId, Vec<u8>>,
    pub staged: HashMap<InodeId, StagedFile>,
    /// The TOC file's bytes, when the pass was asked to keep one and the blob verified.
    pub toc: Option<Vec<u8>>,
}

/// `io::copy` with our 256 KiB buffer: its own is 8 KiB, which means four times the write
/// calls when a rebuild stages a whole layer.
pub(crate) fn copy_through(
    from: &mut dyn Read,
    to: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = profile::timed(Stage::TarParse, || read_full(from, buf))?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

struct FileCompare<'a> {
    beneath: Option<&'a Beneath>,
    full: bool,
    stage: Option<&'a StageDir<'a>>,
    /// Writes whole staged files on other threads (repair's first stream only).
    writers: Option<(&'a StageWriters, crossbeam_channel::Sender<StageJob>)>,
    tar_buf: Vec<u8>,
    disk_buf: Vec<u8>,
}

/// Files up to this size that a repair stages whole from the tar are written by the staging
/// writers; larger ones (few, and dominated by their bytes) are written on the tar thread.
const ASYNC_STAGE_MAX: u64 = 1 << 20;
/// Staged files queued for the writers: at most this many MiB in memory.
const ASYNC_STAGE_QUEUE: usize = 32;

/// A file the tar thread read whole, for a writer to stage.
struct StageJob {
    ordinal: u64,
    bytes: Vec<u8>,
}

/// Staging writers: threads that create, write and hash staged files, so that a rebuild's
/// thousands of small creates run beside the tar stream instead of inside it.
struct StageWriters {
    /// The first write that failed; the tar side stops at its next entry.
    failed: std::sync::Mutex<Option<crate::Error>>,
}

impl StageWriters {
    fn take_failure(&self) -> Option<crate::Error> {
        self.failed.lock().ok()?.take()
    }

    fn fail(&self, e: crate::Error) {
        if let Ok(mut slot) = self.failed.lock() {
            slot.get_or_insert(e);
        }
    }

    /// Writer `index`: its staged files by the ordinal of their tar entry. Each writer creates
    /// in a directory of its own (`writer-<index>` in staging): two threads creating in one
    /// ext4 directory serialize on its lock and spin, which cost more CPU than it saved.
    fn write_all(
        &self,
        stage: &StageDir<'_>,
        index: usize,
        rx: crossbeam_channel::Receiver<StageJob>,
    ) -> Vec<(u64, StagedFile)> {
        let _profiled = profile::ThreadGuard::new();
        profile::role("stage-writer");
        let dir = stage.dir.join(format!("writer-{index}"));
        let made = std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| crate::Error::io(&dir, e));
        let mut done = Vec::new();
        if let Err(e) = made {
            self.fail(e);
            // Keep taking jobs, so the tar side learns of the failure instead of blocking.
            for _ in rx {}
            return done;
        }
        for job in rx {
            let path = dir.join(format!("data-{}", job.ordinal));
            match stage_whole(&path, &job.bytes) {
                Ok(sha256) => done.push((job.ordinal, StagedFile { path, sha256 })),
                Err(e) => self.fail(e),
            }
        }
        done
    }
}

/// Creates a staged file holding `bytes`; their sha256.
fn stage_whole(path: &Path, bytes: &[u8]) -> crate::Result<ContentDigest> {
    let f = {
        let _t = profile::time(Stage::StagingWrites);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| crate::Error::io(path, e))?
    };
    let mut out = HashingWriter::new(f);
    out.write_all(bytes)
        .map_err(|e| crate::Error::io(path, e))?;
    Ok(out.finish())
}

impl FileCompare<'_> {
    fn create_stage(&self, ordinal: u64) -> crate::Result<(File, PathBuf)> {
        let stage = self.stage.ok_or_else(|| crate::Error::Layer {
            digest: String::new(),
            reason: "no staging".into(),
        })?;
        let p = stage.data_path(ordinal);
        let _t = profile::time(Stage::StagingWrites);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| crate::Error::io(&p, e))?;
        Ok((f, p))
    }

    /// Compares the tar data of one regular file with the disk; stages the right bytes if
    /// they differ and a repair asked for it. Tar read errors are left for the stream.
    fn run(
        &mut self,
        path: &[u8],
        size: u64,
        ordinal: u64,
        data: &mut dyn Read,
    ) -> crate::Result<(ContentVerdict, Option<StagedFile>)> {
        // A metadata verify compares no bytes, and the walk already has type and size:
        // opening the file would only cost two syscalls per entry.
        if !self.full && self.stage.is_none() {
            return Ok((ContentVerdict::NotCompared, None));
        }
        let opening = profile::time(Stage::FileOpens);
        let disk = self
            .beneath
            .and_then(|b| {
                b.open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
                    .ok()
            })
            .map(File::from)
            .filter(|f| {
                f.metadata()
                    .is_ok_and(|m| m.file_type().is_file() && m.size() == size)
            });
        drop(opening);
        let Some(mut disk) = disk else {
            // Absent, wrong type or wrong size: the walk reports it; a repair needs all bytes.
            if let (Some(stage), Some((writers, tx))) = (self.stage, &self.writers)
                && size <= ASYNC_STAGE_MAX
            {
                let mut bytes = Vec::with_capacity(size as usize);
                profile::timed(Stage::TarParse, || data.read_to_end(&mut bytes))
                    .map_err(|e| crate::Error::io(stage.data_path(ordinal), e))?;
                let job = StageJob { ordinal, bytes };
                let queued = profile::timed(Stage::WaitForTar, || tx.send(job));
                if queued.is_err() {
                    return Err(writers.take_failure().unwrap_or_else(|| {
                        crate::Error::io(stage.dir, io::Error::other("the staging writers stopped"))
                    }));
                }
                return Ok((ContentVerdict::NotCompared, None));
            }
            if self.stage.is_some() {
                let (out, p) = self.create_stage(ordinal)?;
                let mut out = HashingWriter::new(out);
                copy_through(data, &mut out, &mut self.tar_buf)
                    .map_err(|e| crate::Error::io(&p, e))?;
                let staged = StagedFile {
                    path: p,
                    sha256: out.finish(),
                };
                return Ok((ContentVerdict::NotCompared, Some(staged)));
            }
            return Ok((ContentVerdict::NotCompared, None));
        };
        if !self.full {
            return Ok((ContentVerdict::Same, None));
        }
        let mut offset: u64 = 0;
        loop {
            let n = match profile::timed(Stage::TarParse, || read_full(data, &mut self.tar_buf)) {
                Ok(n) => n,
                Err(_) => return Ok((ContentVerdict::NotCompared, None)),
            };
            if n == 0 {
                return Ok((ContentVerdict::Same, None));
            }
            let mut reading = profile::time(Stage::FileReads);
            let read = disk.read_exact(&mut self.disk_buf[..n]).is_ok();
            reading.bytes(n as u64);
            drop(reading);
            let mut comparing = profile::time(Stage::Compare);
            comparing.bytes(n as u64);
            let same = read && self.disk_buf[..n] == self.tar_buf[..n];
            drop(comparing);
            if !same {
                let Some(_) = self.stage else {
                    return Ok((ContentVerdict::Differs, None));
                };
                // Bytes before `offset` were compared equal: copy them from disk, then the rest from the tar.
                let (out, p) = self.create_stage(ordinal)?;
                let mut out = HashingWriter::new(out);
                let io_err = |e| crate::Error::io(&p, e);
                disk.seek(io::SeekFrom::Start(0)).map_err(io_err)?;
                io::copy(&mut (&mut disk).take(offset), &mut out).map_err(io_err)?;
                out.write_all(&self.tar_buf[..n]).map_err(io_err)?;
                copy_through(data, &mut out, &mut self.tar_buf).map_err(io_err)?;
                let staged = StagedFile {
                    path: p,
                    sha256: out.finish(),
                };
                return Ok((ContentVerdict::Differs, Some(staged)));
            }
            offset += n as u64;
        }
    }
}

fn blob_check(
    layer: &ResolvedLayer,
    r: &Result<super::blob::BlobDigests, StreamError>,
) -> BlobCheck {
    let unusable = |state, reason: String| BlobCheck::Unusable { state, reason };
    let blob = layer.blob_path.display();
    match r {
        Ok(d) if d.compressed != layer.digest => unusable(
            BlobState::DigestMismatch,
            format!("blob {blob} hashes to {}", d.compressed),
        ),
        Ok(d) if d.uncompressed != layer.diff_id => unusable(
            BlobState::DiffIdMismatch,
            format!(
                "uncompressed layer hashes to {}, not diffID {}",
                d.uncompressed, layer.diff_id
            ),
        ),
        Ok(_) => BlobCheck::Verified,
        Err(StreamError::Missing) => unusable(
            BlobState::Missing,
            format!("layer blob {blob} is not in the content store"),
        ),
        Err(StreamError::Io(e)) => unusable(BlobState::Unreadable, format!("{blob}: {e}")),
        Err(StreamError::Unreadable {
            compressed: Some(c),
            ..
        }) if *c != layer.digest => unusable(
            BlobState::DigestMismatch,
            format!("blob {blob} hashes to {c}"),
        ),
        Err(StreamError::Unreadable { reason, .. }) => {
            unusable(BlobState::Unreadable, format!("{blob}: {reason}"))
        }
        Err(StreamError::Visitor(e)) => unusable(BlobState::Unreadable, e.to_string()),
    }
}

/// Regular files with tar data but no compared path, by the ordinal of their data header, with
/// the first path that still names them.
fn orphaned_files(
    model: &LayerModel,
    compared_at: &HashMap<InodeId, Vec<u8>>,
) -> HashMap<u64, (InodeId, Vec<u8>)> {
    let mut out: HashMap<u64, (InodeId, Vec<u8>)> = HashMap::new();
    for (path, id) in model.entries() {
        let inode = model.inode(id);
        if !matches!(inode.kind, EntryKind::File) || compared_at.contains_key(&id) {
            continue;
        }
        if let Some(ordinal) = inode.data_header {
            out.entry(ordinal).or_insert_with(|| (id, path.to_vec()));
        }
    }
    out
}

/// Dirs containerd's `mkparent` made: what the first lower layer has at that path decides
/// their mode, owner and xattrs (the model applies it, [`LayerModel::resolve_mkparent_dir`]).
pub(super) fn resolve_implicit_dirs(model: &mut LayerModel, lowers: &[PathBuf]) {
    use std::os::unix::ffi::OsStrExt;
    for (path, id) in model.mkparent_dirs() {
        let mut found = None;
        for lower in lowers {
            let Some(resolved) = root_path_in(lower, &path) else {
                break;
            };
            let Ok(o) = observe_path(&lower.join(std::ffi::OsStr::from_bytes(&resolved))) else {
                continue;
            };
            if o.file_type() == libc::S_IFDIR {
                found = Some(LowerDir {
                    mode: o.mode & 0o7777,
                    uid: o.uid,
                    gid: o.gid,
                    xattrs: o.xattrs.into_iter().collect(),
                });
            }
            break;
        }
        model.resolve_mkparent_dir(id, found);
    }
}

/// [`resolve_root_path`] on a real directory; `None` on a symlink loop.
pub fn root_path_in(root: &Path, rel: &[u8]) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    resolve_root_path(rel.split(|&b| b == b'/'), |p| {
        let target = std::fs::read_link(root.join(std::ffi::OsStr::from_bytes(p))).ok()?;
        Some(target.as_os_str().as_bytes().to_vec())
    })
    .ok()
}

/// The TOC key of a layer: its diffID and whether it is the image's base layer.
pub fn toc_key(layer: &ResolvedLayer) -> TocKey {
    TocKey {
        diff_id: layer.diff_id.clone(),
        base: layer.index == 0,
    }
}

/// Runs one pass. `stage` (repair only) receives the correct bytes of every file that differs.
/// With `keep_toc`, every regular file's tar data is hashed too and a verified blob's model
/// comes back encoded as a TOC (`Pass::toc`).
pub fn run_pass(
    layer: &ResolvedLayer,
    content: ContentCheck,
    stage: Option<&StageDir<'_>>,
    keep_toc: bool,
) -> Pass {
    // The layer's place in the image decides the whiteout rules, never the snapshot records
    // alone (resolve has checked that the two agree).
    let base = layer.index == 0;
    debug_assert!(layer.snapshot.as_ref().is_none_or(|s| s.is_base() == base));
    let fs = layer.snapshot.as_ref().map(|s| s.fs.clone());
    let beneath = fs.as_deref().and_then(|p| Beneath::open(p).ok());
    let threads = crate::workers::io_threads();
    profile::role("pass");

    let mut model = LayerModel::new(ModelOptions::new(base));
    let mut model_error = None;
    let mut content_verdicts = HashMap::new();
    let mut compared_at = HashMap::new();
    let mut staged = HashMap::new();
    let (stage_tx, stage_rx) = crossbeam_channel::bounded::<StageJob>(ASYNC_STAGE_QUEUE);
    let writers = StageWriters {
        failed: std::sync::Mutex::new(None),
    };
    // Inode of each regular file's tar entry, for the files the writers stage.
    let mut file_at_ordinal: HashMap<u64, InodeId> = HashMap::new();
    let mut compare = FileCompare {
        beneath: beneath.as_ref(),
        full: content == ContentCheck::Full,
        stage,
        writers: stage.map(|_| (&writers, stage_tx)),
        tar_buf: vec![0; COMPARE_BUF],
        disk_buf: vec![0; COMPARE_BUF],
    };

    let (streamed, observed, written) = std::thread::scope(|s| {
        let walker = fs
            .as_deref()
            .map(|p| s.spawn(move || observe_tree(p, threads)));
        let writer_threads: Vec<_> = match stage {
            Some(stage) => (0..threads)
                .map(|index| {
                    let rx = stage_rx.clone();
                    let writers = &writers;
                    s.spawn(move || writers.write_all(stage, index, rx))
                })
                .collect(),
            None => Vec::new(),
        };
        drop(stage_rx);
        let streamed = stream_layer(&layer.blob_path, &layer.media_type, |hdr, ordinal, data| {
            if let Some(e) = writers.take_failure() {
                return Err(e);
            }
            if model_error.is_some() {
                return Ok(());
            }
            let applied = profile::timed(Stage::Model, || model.apply(hdr, ordinal));
            if let Ok(Applied::File { inode, .. }) = &applied
                && compare.writers.is_some()
            {
                file_at_ordinal.insert(ordinal, *inode);
            }
            match applied {
                Ok(Applied::File { path, inode }) if keep_toc => {
                    let mut hashing = HashingReader::new(data);
                    let (verdict, staged_file) =
                        compare.run(&path, hdr.size, ordinal, &mut hashing)?;
                    // A read error here recurs in the stream, which then fails the blob.
                    if let Ok(digest) = hashing.finish() {
                        model.set_content_sha256(inode, digest);
                    }
                    content_verdicts.insert(inode, verdict);
                    compared_at.insert(inode, path);
                    if let Some(f) = staged_file {
                        staged.insert(inode, f);
                    }
                }
                Ok(Applied::File { path, inode }) => {
                    let (verdict, staged_file) = compare.run(&path, hdr.size, ordinal, data)?;
                    content_verdicts.insert(inode, verdict);
                    compared_at.insert(inode, path);
                    if let Some(f) = staged_file {
                        staged.insert(inode, f);
                    }
                }
                Ok(_) => {}
                Err(e) => model_error = Some(e),
            }
            Ok(())
        });
        // The writers finish what was queued, then stop.
        compare.writers = None;
        let written: Vec<(u64, StagedFile)> = writer_threads
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        let observed = walker.map(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("snapshot walker panicked")))
        });
        (streamed, observed, written)
    });
    // A staging write that failed after the last entry fails the pass like one before it.
    let streamed = match (streamed, writers.take_failure()) {
        (Ok(_), Some(e)) => Err(StreamError::Visitor(e)),
        (r, _) => r,
    };
    let mut written = written;
    written.sort_by_key(|(ordinal, _)| *ordinal);
    for (ordinal, f) in written {
        if let Some(inode) = file_at_ordinal.get(&ordinal) {
            staged.insert(*inode, f);
        }
    }

    let mut blob = blob_check(layer, &streamed);
    if model_error.is_none()
        && let Err(e) = model.finish()
    {
        model_error = Some(e);
    }
    // An inode whose compared path was later replaced kept the verdict of another file.
    compared_at.retain(|id, path| model.get(path).is_some_and(|(i, _)| i == *id));
    content_verdicts.retain(|id, _| compared_at.contains_key(id));
    staged.retain(|id, _| compared_at.contains_key(id));
    // Such an inode may still live on through a hardlink (`a`, `b` -> `a`, then `a` again):
    // its data already streamed by, so compare (and stage) it at a surviving path in a second
    // stream. Rare; only then is the blob read twice.
    if model_error.is_none() && blob == BlobCheck::Verified {
        let orphans = orphaned_files(&model, &compared_at);
        if !orphans.is_empty() {
            tracing::debug!(
                files = orphans.len(),
                "hardlinked files whose first path was replaced: second stream"
            );
            if let Some(stage) = stage {
                for ordinal in orphans.keys() {
                    let _ = std::fs::remove_file(stage.data_path(*ordinal));
                }
            }
            let again = stream_layer(&layer.blob_path, &layer.media_type, |hdr, ordinal, data| {
                if let Some((id, path)) = orphans.get(&ordinal) {
                    let (verdict, staged_file) = compare.run(path, hdr.size, ordinal, data)?;
                    content_verdicts.insert(*id, verdict);
                    compared_at.insert(*id, path.clone());
                    if let Some(f) = staged_file {
                        staged.insert(*id, f);
                    }
                }
                Ok(())
            });
            // The same bytes must come back; anything else makes the blob unusable now.
            let again = blob_check(layer, &again);
            if again != BlobCheck::Verified {
                blob = again;
            }
        }
    }
    // The TOC keeps the model as the headers alone made it; the lowers are applied on load.
    let toc = (keep_toc && model_error.is_none() && blob == BlobCheck::Verified)
        .then(|| encode_toc(&toc_key(layer), &model, &compared_at));
    if !base && let Some(s) = &layer.snapshot {
        resolve_implicit_dirs(&mut model, &s.lower_fs);
    }
    let fs_walk = settle_walk(observed, fs.as_deref());
    debug_assert!(
        model
            .entries()
            .all(|(_, id)| !matches!(model.inode(id).kind, EntryKind::File)
                || model.inode(id).data_header.is_some())
    );
    Pass {
        blob,
        model: match model_error {
            None => Ok(model),
            Some(e) => Err(e),
        },
        fs: fs_walk,
        content: content_verdicts,
        compared_at,
        staged,
        toc,
    }
}

/// The walker's result as the pass reports it.
pub(super) fn settle_walk(
    observed: Option<io::Result<Option<Observation>>>,
    fs: Option<&Path>,
) -> FsWalk {
    match observed {
        // An `fs` that is not a directory (e.g. a planted symlink) is as good as missing.
        Some(Ok(Some(o)))
            if o.root
                .as_ref()
                .is_some_and(|r| r.file_type() != libc::S_IFDIR) =>
        {
            FsWalk::Absent
        }
        Some(Ok(Some(o))) => FsWalk::Walked(o),
        Some(Ok(None)) | None => FsWalk::Absent,
        Some(Err(e)) => {
            let shown = fs.unwrap_or(Path::new("")).display().to_string();
            tracing::warn!(fs = %shown, error = %e, "cannot walk snapshot");
            FsWalk::Unreadable(format!("{shown}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::root_path_in;

    #[test]
    fn lower_paths_follow_symlinks_inside_the_lower_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", d.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../usr", d.path().join("up")).unwrap();
        assert_eq!(root_path_in(d.path(), b"lib/x").unwrap(), b"usr/lib/x");
        assert_eq!(root_path_in(d.path(), b"up/lib").unwrap(), b"usr/lib");
        std::os::unix::fs::symlink("loop", d.path().join("loop")).unwrap();
        assert!(root_path_in(d.path(), b"loop/x").is_none());
    }
}
