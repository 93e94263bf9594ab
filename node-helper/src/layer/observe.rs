//! The snapshot side: what is actually in `fs`. A small pool of threads walks the tree
//! (lstat, readlink, xattrs) while the blob is being streamed on other threads.

use crate::workers::run_workers;
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::header::Timestamp;
use crate::stage_profile::{self as profile, Stage};

/// One entry as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub mtime: Timestamp,
    pub link: Option<Vec<u8>>,
    /// All xattrs, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Observed {
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Every entry below `fs` (relative paths as in the model) plus `fs` itself.
#[derive(Debug, Default)]
pub struct Observation {
    pub root: Option<Observed>,
    pub entries: HashMap<Vec<u8>, Observed>,
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// All xattrs of `path` without following a final symlink.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: the buffer pointer and length describe `names`; `c` is NUL-terminated.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: as above; `cname` is NUL-terminated.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                value.truncate(n as usize);
                out.push((name.to_vec(), value));
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4 + 65536, 0),
                Some(libc::ENODATA) => break,
                _ => return Err(err),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// lstat + readlink + xattrs of one path.
pub fn observe_path(path: &Path) -> std::io::Result<Observed> {
    let md = std::fs::symlink_metadata(path)?;
    let link = if md.file_type().is_symlink() {
        Some(std::fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    } else {
        None
    };
    Ok(Observed {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        dev: md.dev(),
        ino: md.ino(),
        rdev: md.rdev(),
        mtime: Timestamp {
            sec: md.mtime(),
            nsec: md.mtime_nsec() as u32,
        },
        link,
        xattrs: read_xattrs(path)?,
    })
}

fn rel_join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
        v.extend_from_slice(parent);
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// Walks `fs` with `threads` workers. `None` when `fs` itself does not exist.
pub fn observe_tree(fs: &Path, threads: usize) -> std::io::Result<Option<Observation>> {
    let root = match observe_path(fs) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if root.file_type() != libc::S_IFDIR {
        return Ok(Some(Observation {
            root: Some(root),
            entries: HashMap::new(),
        }));
    }
    let threads = threads.max(1);
    let (tx, rx) = crossbeam_channel::unbounded::<WalkJob>();
    // Directories queued or being read; the worker that takes it to 0 releases the others.
    let pending = AtomicUsize::new(1);
    let first_error: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let _ = tx.send(WalkJob::Dir(Vec::new()));
    let results = run_workers(threads, |_| {
        let _wake = ReleaseOnPanic {
            tx: &tx,
            workers: threads,
        };
        profile::role("walker");
        let mut found: HashMap<Vec<u8>, Observed> = HashMap::new();
        while let Ok(WalkJob::Dir(dir)) = rx.recv() {
            let _walking = profile::time(Stage::SnapshotWalk);
            let abs: PathBuf = if dir.is_empty() {
                fs.to_path_buf()
            } else {
                fs.join(OsStr::from_bytes(&dir))
            };
            if let Err(e) = walk_dir(&abs, &dir, &tx, &pending, &mut found)
                && let Ok(mut slot) = first_error.lock()
                && slot.is_none()
            {
                *slot = Some(e);
            }
            if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                release(&tx, threads);
            }
        }
        found
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut entries = HashMap::new();
    for r in results {
        entries.extend(r);
    }
    Ok(Some(Observation {
        root: Some(root),
        entries,
    }))
}

/// Work for the walkers: a directory (relative to `fs`) to read, or the end of the walk.
enum WalkJob {
    Dir(Vec<u8>),
    Stop,
}

fn release(tx: &crossbeam_channel::Sender<WalkJob>, workers: usize) {
    for _ in 0..workers {
        let _ = tx.send(WalkJob::Stop);
    }
}

/// A walker that panics still releases the others, so the panic reaches the caller
/// (`run_workers`) instead of leaving them waiting for directories that never come.
struct ReleaseOnPanic<'a> {
    tx: &'a crossbeam_channel::Sender<WalkJob>,
    workers: usize,
}

impl Drop for ReleaseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            release(self.tx, self.workers);
        }
    }
}

fn walk_dir(
    abs: &Path,
    rel: &[u8],
    tx: &crossbeam_channel::Sender<WalkJob>,
    pending: &AtomicUsize,
    found: &mut HashMap<Vec<u8>, Observed>,
) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(abs) {
        Ok(rd) => rd,
        // Removed or replaced while we walk: what is there is what we report.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for de in rd {
        let de = de?;
        let name = de.file_name();
        let child_rel = rel_join(rel, name.as_bytes());
        let child_abs = abs.join(&name);
        let o = match observe_path(&child_abs) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if o.file_type() == libc::S_IFDIR {
            pending.fetch_add(1, Ordering::AcqRel);
            let _ = tx.send(WalkJob::Dir(child_rel.clone()));
        }
        found.insert(child_rel, o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_every_entry_with_types_links_and_xattrs() {
        let d = tempfile::tempdir().unwrap();
        let fs = d.path().join("fs");
        std::fs::create_dir_all(fs.join("a/b/c")).unwrap();
        std::fs::write(fs.join("a/f"), b"x").unwrap();
        std::os::unix::fs::symlink("../f", fs.join("a/b/s")).unwrap();
        std::fs::hard_link(fs.join("a/f"), fs.join("a/b/c/h")).unwrap();
        let obs = observe_tree(&fs, 3).unwrap().unwrap();
        let mut keys: Vec<_> = obs
            .entries
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        keys.sort();
        assert_eq!(keys, vec!["a", "a/b", "a/b/c", "a/b/c/h", "a/b/s", "a/f"]);
        assert_eq!(
            obs.entries[b"a/b/s".as_slice()].link.as_deref(),
            Some(b"../f".as_slice())
        );
        assert_eq!(
            obs.entries[b"a/f".as_slice()].ino,
            obs.entries[b"a/b/c/h".as_slice()].ino
        );
        assert!(
            observe_tree(&d.path().join("missing"), 2)
                .unwrap()
                .is_none()
        );
    }
}
