//! Path resolution that cannot leave a snapshot's `fs`: every lookup is `openat2` relative to
//! an fd of `fs` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV, so no symlink (planted in the snapshot or in a hostile layer) is followed
//! and `..` cannot climb out. Model paths are already resolved, so they never need a symlink.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// An open `fs` directory to resolve model paths beneath.
pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
}

/// nix's errno as the `io::Error` the rest of the engine speaks.
pub fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Refuses anything but plain components: no `..`, `.`, empty or absolute parts.
pub fn check_relative(rel: &[u8]) -> io::Result<()> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel
        .split(|&b| b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing path {:?}: it would leave the snapshot",
                String::from_utf8_lossy(rel)
            ),
        ));
    }
    Ok(())
}

impl Beneath {
    pub fn open(fs: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            fs,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Beneath {
            root: fd,
            path: fs.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (a model path; empty = `fs` itself) without following any symlink.
    pub fn open_at(&self, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
        check_relative(rel)?;
        let p: &OsStr = if rel.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(rel)
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        openat2(self.root.as_fd(), p, how).map_err(errno)
    }

    /// The directory holding `rel`, opened beneath `fs`, and `rel`'s last component.
    pub fn open_parent<'a>(&self, rel: &'a [u8]) -> io::Result<(OwnedFd, &'a [u8])> {
        check_relative(rel)?;
        let (parent, base) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&[][..], rel),
        };
        if base.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the fs root has no parent",
            ));
        }
        Ok((
            self.open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?,
            base,
        ))
    }
}

pub fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `/proc/self/fd/<dirfd>/<name>`: a path for the *xattr calls that have no `*at` form;
/// the magic link names the already-resolved directory, `name` is not followed by `l*xattr`.
pub fn fd_child_path(dir: &impl AsRawFd, name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(OsStr::from_bytes(name));
    p
}

pub fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let n = cstr(name)?;
    // SAFETY: pointers come from live CStrings and a slice with its exact length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn lremovexattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let n = cstr(name)?;
    // SAFETY: both are live NUL-terminated strings.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_dot_dot_never_leave_fs() {
        let d = tempfile::tempdir().unwrap();
        let fs = d.path().join("fs");
        std::fs::create_dir_all(fs.join("sub")).unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("../outside", fs.join("esc")).unwrap();
        std::os::unix::fs::symlink("/", fs.join("sub/root")).unwrap();
        let b = Beneath::open(&fs).unwrap();
        assert!(b.open_at(b"esc", OFlag::O_RDONLY).is_err());
        assert!(b.open_at(b"sub/root/etc", OFlag::O_RDONLY).is_err());
        assert_eq!(
            b.open_at(b"../outside", OFlag::O_RDONLY)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(
            b.open_at(b"sub", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .is_ok()
        );
        let (_, base) = b.open_parent(b"sub/x").unwrap();
        assert_eq!(base, b"x");
    }
}
