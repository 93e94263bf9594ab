//! The snapshot side: what is actually in `fs`. A small pool of threads walks the tree
//! (lstat, readlink, xattrs) while the blob is being streamed on other threads.
//!
//! The walk resolves each directory once (beneath `fs`, no symlink followed) and looks at
//! its entries relative to the directory's fd: one `fstatat` per entry, and the xattrs with
//! `listxattrat`/`getxattrat` (Linux 6.13) where the kernel has them, so no entry's path is
//! resolved again from the root. Older kernels (or a seccomp filter refusing the calls) get
//! the path-based `llistxattr`, with the same result.

use crate::workers::run_workers;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::OFlag;

use super::header::Timestamp;
use super::safe_fs::Beneath;
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
    observe_tree_with(fs, threads, true)
}

/// `xattr_at`: read xattrs with the `*xattrat` calls when the kernel has them (else by path).
fn observe_tree_with(
    fs: &Path,
    threads: usize,
    xattr_at: bool,
) -> std::io::Result<Option<Observation>> {
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
    let beneath = match Beneath::open(fs) {
        Ok(b) => b,
        // Replaced by something else since the lstat: as good as missing.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let threads = threads.max(1);
    let (tx, rx) = crossbeam_channel::unbounded::<WalkJob>();
    // Directories queued or being read; the worker that takes it to 0 releases the others.
    let pending = AtomicUsize::new(1);
    let first_error: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let _ = tx.send(WalkJob::Dir(Vec::new()));
    let walk = Walk {
        fs,
        beneath: &beneath,
        xattr_at,
    };
    let results = run_workers(threads, |_| {
        let _wake = ReleaseOnPanic {
            tx: &tx,
            workers: threads,
        };
        profile::role("walker");
        let mut found: HashMap<Vec<u8>, Observed> = HashMap::new();
        while let Ok(WalkJob::Dir(dir)) = rx.recv() {
            let _walking = profile::time(Stage::SnapshotWalk);
            if let Err(e) = walk.dir(&dir, &tx, &pending, &mut found)
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
    let mut entries = HashMap::with_capacity(results.iter().map(HashMap::len).sum());
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

/// What every walker shares.
struct Walk<'a> {
    fs: &'a Path,
    beneath: &'a Beneath,
    /// Try `listxattrat`/`getxattrat` first.
    xattr_at: bool,
}

impl Walk<'_> {
    /// Observes every entry of one directory (relative to `fs`), queueing its subdirectories.
    fn dir(
        &self,
        rel: &[u8],
        tx: &crossbeam_channel::Sender<WalkJob>,
        pending: &AtomicUsize,
        found: &mut HashMap<Vec<u8>, Observed>,
    ) -> std::io::Result<()> {
        let fd = match self
            .beneath
            .open_at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        {
            Ok(fd) => fd,
            // Removed or replaced while we walk: what is there is what we report.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut dir = DirStream::open(fd)?;
        let dirfd = dir.fd();
        while let Some(name) = dir.next_name() {
            let name = name?;
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let child_rel = rel_join(rel, name.to_bytes());
            let o = match self.entry(dirfd, name, &child_rel) {
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

    /// lstat + readlink + xattrs of `name` in the directory `dirfd`.
    fn entry(&self, dirfd: RawFd, name: &CStr, rel: &[u8]) -> std::io::Result<Observed> {
        // SAFETY: `st` is written by fstatat; `name` is NUL-terminated; `dirfd` is open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let link = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            Some(readlink_at(dirfd, name)?)
        } else {
            None
        };
        let xattrs = match self.xattr_at.then(|| read_xattrs_at(dirfd, name)).flatten() {
            Some(x) => x?,
            None => read_xattrs(&self.fs.join(OsStr::from_bytes(rel)))?,
        };
        Ok(Observed {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            rdev: st.st_rdev,
            mtime: Timestamp {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
            link,
            xattrs,
        })
    }
}

/// A directory read with `readdir` (getdents64 in large batches), from an fd.
struct DirStream(std::ptr::NonNull<libc::DIR>);

impl DirStream {
    fn open(fd: std::os::fd::OwnedFd) -> std::io::Result<Self> {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open directory fd we own; fdopendir takes it over on success.
        let d = unsafe { libc::fdopendir(raw) };
        match std::ptr::NonNull::new(d) {
            Some(d) => Ok(DirStream(d)),
            None => {
                let e = std::io::Error::last_os_error();
                // SAFETY: on failure the fd is still ours to close.
                unsafe { libc::close(raw) };
                Err(e)
            }
        }
    }

    fn fd(&self) -> RawFd {
        // SAFETY: the stream is open until drop.
        unsafe { libc::dirfd(self.0.as_ptr()) }
    }

    /// The next entry's name (valid until the next call), `None` at the end.
    fn next_name(&mut self) -> Option<std::io::Result<&CStr>> {
        // SAFETY: readdir64 on an open stream; errno is reset first to tell the end from an
        // error; the name lives in the stream's buffer until the next call (&mut self).
        unsafe {
            *libc::__errno_location() = 0;
            let ent = libc::readdir64(self.0.as_ptr());
            if ent.is_null() {
                let e = std::io::Error::last_os_error();
                return (e.raw_os_error() != Some(0)).then_some(Err(e));
            }
            Some(Ok(CStr::from_ptr((*ent).d_name.as_ptr())))
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: closes the stream (and its fd) once.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

fn readlink_at(dirfd: RawFd, name: &CStr) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: the buffer pointer and length describe `buf`.
        let n =
            unsafe { libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// Linux 6.13's `getxattrat`/`listxattrat` (the same numbers on every architecture).
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
/// Cleared the first time the kernel (or a seccomp filter) refuses the `*xattrat` calls.
static XATTRAT_WORKS: AtomicBool = AtomicBool::new(true);

/// `struct xattr_args` of `getxattrat`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Xattrs as name-value pairs, sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// All xattrs of `name` in `dirfd` (not following a symlink), or `None` when this kernel
/// lacks the `*xattrat` calls.
fn read_xattrs_at(dirfd: RawFd, name: &CStr) -> Option<std::io::Result<Xattrs>> {
    if !XATTRAT_WORKS.load(Ordering::Relaxed) {
        return None;
    }
    let mut names = [0u8; 1024];
    // SAFETY: the buffer pointer and length describe `names`; `name` is NUL-terminated.
    let n = unsafe {
        libc::syscall(
            SYS_LISTXATTRAT,
            dirfd,
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            names.as_mut_ptr(),
            names.len(),
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM) => {
                XATTRAT_WORKS.store(false, Ordering::Relaxed);
                None
            }
            Some(libc::ENOTSUP) => Some(Ok(Vec::new())),
            // A long list: the path-based reader grows its buffer.
            Some(libc::ERANGE) => None,
            _ => Some(Err(err)),
        };
    }
    if n == 0 {
        return Some(Ok(Vec::new()));
    }
    let mut out = Vec::new();
    for attr in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
    {
        let Ok(cattr) = CString::new(attr) else {
            continue;
        };
        let mut value = vec![0u8; 256];
        loop {
            let args = XattrArgs {
                value: value.as_mut_ptr() as u64,
                size: value.len() as u32,
                flags: 0,
            };
            // SAFETY: `args` points at `value` with its length; the strings are NUL-terminated.
            let got = unsafe {
                libc::syscall(
                    SYS_GETXATTRAT,
                    dirfd,
                    name.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    cattr.as_ptr(),
                    &args as *const XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            };
            if got >= 0 {
                value.truncate(got as usize);
                out.push((attr.to_vec(), value));
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4 + 65536, 0),
                Some(libc::ENODATA) => break,
                _ => return Some(Err(err)),
            }
        }
    }
    out.sort();
    Some(Ok(out))
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

    /// The fd-relative walk (`fstatat`, `*xattrat`) and the path-based one see the same.
    #[test]
    fn both_xattr_readers_and_the_path_based_observer_agree() {
        let d = tempfile::tempdir().unwrap();
        let fs = d.path().join("fs");
        std::fs::create_dir_all(fs.join("x/y")).unwrap();
        std::fs::write(fs.join("x/y/f"), b"data").unwrap();
        std::os::unix::fs::symlink("y/f", fs.join("x/l")).unwrap();
        let big = vec![b'v'; 3000];
        for (p, k, v) in [
            ("x", "user.a", b"1".as_slice()),
            ("x/y/f", "user.big", big.as_slice()),
            ("x/y/f", "user.b", b""),
        ] {
            let (cp, ck) = (cpath(&fs.join(p)).unwrap(), CString::new(k).unwrap());
            // SAFETY: NUL-terminated strings and a buffer with its length.
            let r =
                unsafe { libc::lsetxattr(cp.as_ptr(), ck.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            if r != 0 {
                eprintln!("no user xattrs here: {}", std::io::Error::last_os_error());
            }
        }
        let at = observe_tree_with(&fs, 2, true).unwrap().unwrap();
        let by_path = observe_tree_with(&fs, 1, false).unwrap().unwrap();
        assert_eq!(at.entries, by_path.entries);
        assert_eq!(at.entries.len(), 4);
        for (rel, o) in &at.entries {
            let direct = observe_path(&fs.join(OsStr::from_bytes(rel))).unwrap();
            assert_eq!(o, &direct, "{}", String::from_utf8_lossy(rel));
        }
        assert_eq!(
            at.entries[b"x/l".as_slice()].link.as_deref(),
            Some(b"y/f".as_slice())
        );
    }
}
