//! A pass against a kept TOC instead of the blob: the snapshot walk (one `fstatat` and the
//! xattrs per entry) and, for a full check, every regular file read and hashed, compared
//! with the content digest the TOC kept. No blob is read.
//!
//! The hashing is spread over the I/O workers in small batches taken in TOC order (the
//! order containerd wrote the files, so mostly on-disk order): a worker that drew large
//! files does not hold up the others.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use sha2::{Digest, Sha256};
use snapmend_crds::ContentCheck;

use super::compare::ContentVerdict;
use super::expected::{InodeId, LayerModel};
use super::observe::observe_tree;
use super::pass::{BlobCheck, ContentDigest, Pass, resolve_implicit_dirs, settle_walk};
use super::safe_fs::Beneath;
use super::toc::TocBody;
use crate::image::ResolvedLayer;

/// Files a hashing worker takes at a time.
const BATCH: usize = 32;
/// Read size: most layer files fit in one read.
const READ_BUF: usize = 1 << 20;

/// Where the time of a TOC pass went (for the log).
#[derive(Clone, Copy, Debug, Default)]
pub struct TocPassTimings {
    pub load_ms: u64,
    pub walk_ms: u64,
    pub hash_ms: u64,
}

/// One pass against a TOC (see the module docs). `load` reads and checks the TOC while the
/// walk is already under way; `None` when it gives no TOC.
pub fn run_toc_pass(
    layer: &ResolvedLayer,
    content: ContentCheck,
    load: impl FnOnce() -> Option<TocBody>,
) -> Option<(Pass, TocPassTimings)> {
    let fs = layer.snapshot.as_ref().map(|s| s.fs.clone());
    let threads = crate::workers::io_threads();
    let started = Instant::now();
    let mut t = TocPassTimings::default();
    let (observed, loaded) = std::thread::scope(|s| {
        let walker = fs.as_deref().map(|p| {
            s.spawn(move || {
                let walked = observe_tree(p, threads);
                (walked, started.elapsed())
            })
        });
        let loaded = load().map(|body| {
            t.load_ms = started.elapsed().as_millis() as u64;
            let hashing = Instant::now();
            let verdicts = match (&content, fs.as_deref()) {
                (ContentCheck::Full, Some(p)) => match Beneath::open(p) {
                    Ok(b) => hash_and_compare(&b, &body.model, &body.anchors, threads),
                    Err(_) => HashMap::new(),
                },
                _ => HashMap::new(),
            };
            t.hash_ms = hashing.elapsed().as_millis() as u64;
            (body, verdicts)
        });
        let observed = walker.map(|w| {
            let (walked, took) = w.join().unwrap_or_else(|_| {
                (
                    Err(io::Error::other("snapshot walker panicked")),
                    Duration::ZERO,
                )
            });
            t.walk_ms = took.as_millis() as u64;
            walked
        });
        (observed, loaded)
    });
    let (TocBody { mut model, anchors }, verdicts) = loaded?;
    if layer.index != 0
        && let Some(s) = &layer.snapshot
    {
        resolve_implicit_dirs(&mut model, &s.lower_fs);
    }
    let pass = Pass {
        blob: BlobCheck::FromToc,
        model: Ok(model),
        fs: settle_walk(observed, fs.as_deref()),
        content: verdicts,
        compared_at: anchors.into_iter().collect(),
        staged: HashMap::new(),
        toc: None,
    };
    Some((pass, t))
}

/// Full-content verdicts against the TOC's digests: a file that is absent, not regular or of
/// another size is left to the walk (as in the blob pass); one that cannot be read differs.
fn hash_and_compare(
    beneath: &Beneath,
    model: &LayerModel,
    anchors: &[(InodeId, Vec<u8>)],
    threads: usize,
) -> HashMap<InodeId, ContentVerdict> {
    let next = AtomicUsize::new(0);
    let per_worker = crate::workers::run_workers(threads, |_| {
        let mut buf = vec![0u8; READ_BUF];
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(BATCH, Ordering::Relaxed);
            let Some(batch) = anchors.get(start..(start + BATCH).min(anchors.len())) else {
                break;
            };
            if batch.is_empty() {
                break;
            }
            for (id, path) in batch {
                let inode = model.inode(*id);
                let verdict = match inode.content_sha256 {
                    Some(want) => file_verdict(beneath, path, inode.size, &want, &mut buf),
                    None => ContentVerdict::NotCompared,
                };
                out.push((*id, verdict));
            }
        }
        out
    });
    per_worker.into_iter().flatten().collect()
}

/// Hashes the `size` bytes of one file (opened beneath `fs`, no symlink followed). The file
/// must still be a regular file of that size; one byte more or less differs.
pub(crate) fn file_verdict(
    beneath: &Beneath,
    path: &[u8],
    size: u64,
    want: &ContentDigest,
    buf: &mut [u8],
) -> ContentVerdict {
    let disk = beneath
        .open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .ok()
        .map(File::from)
        .filter(|f| {
            f.metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.size() == size)
        });
    let Some(mut disk) = disk else {
        return ContentVerdict::NotCompared;
    };
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let want_now = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match disk.read(&mut buf[..want_now]) {
            // Shorter than its size now: changed under us, so not what the TOC says.
            Ok(0) => return ContentVerdict::Differs,
            Ok(n) => {
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ContentVerdict::Differs,
        }
    }
    let got: ContentDigest = hasher.finalize().into();
    if &got == want {
        ContentVerdict::Same
    } else {
        ContentVerdict::Differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_judged_by_exactly_its_bytes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"hello").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let b = Beneath::open(d.path()).unwrap();
        let digest = |data: &[u8]| -> ContentDigest { Sha256::digest(data).into() };
        let mut buf = vec![0u8; 2];
        let v = |p: &[u8], size, want: &ContentDigest, buf: &mut [u8]| {
            file_verdict(&b, p, size, want, buf)
        };
        assert_eq!(
            v(b"f", 5, &digest(b"hello"), &mut buf),
            ContentVerdict::Same
        );
        assert_eq!(
            v(b"f", 5, &digest(b"hellO"), &mut buf),
            ContentVerdict::Differs
        );
        // Another size, absent or not a file: the walk reports it.
        assert_eq!(
            v(b"f", 4, &digest(b"hell"), &mut buf),
            ContentVerdict::NotCompared
        );
        assert_eq!(
            v(b"gone", 5, &digest(b"hello"), &mut buf),
            ContentVerdict::NotCompared
        );
        assert_eq!(
            v(b"dir", 0, &digest(b""), &mut buf),
            ContentVerdict::NotCompared
        );
        std::fs::write(d.path().join("empty"), b"").unwrap();
        assert_eq!(v(b"empty", 0, &digest(b""), &mut buf), ContentVerdict::Same);
    }
}
