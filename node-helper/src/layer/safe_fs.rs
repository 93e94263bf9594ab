//! Path resolution that cannot leave a snapshot's `fs`: every lookup is `openat2` relative to
//! an fd of `fs` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV, so no symlink (planted in the snapshot or in a hostile layer) is followed
//! and `..` cannot climb out. Model paths are already resolved, so they never need a symlink.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, fstat, fstatat};

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
        match openat2(self.root.as_fd(), p, how) {
            Err(nix::errno::Errno::ENOSYS) => self.open_by_components(rel, flags),
            r => r.map_err(errno),
        }
    }

    /// `open_at` where `openat2` does not exist (kernels before 5.6; valgrind, which the
    /// instruction-count benchmark runs under): the same resolution one component at a time.
    /// Each component is opened relative to the previous one with `O_NOFOLLOW` (a symlink
    /// fails with ELOOP, as with RESOLVE_NO_SYMLINKS; `..` and `.` were refused already), the
    /// directories as `O_PATH | O_DIRECTORY`, and each must be on `fs`'s device (EXDEV, as
    /// with RESOLVE_NO_XDEV).
    pub(crate) fn open_by_components(&self, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
        check_relative(rel)?;
        let device = fstat(&self.root).map_err(errno)?.st_dev;
        let last_flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if rel.is_empty() {
            return openat(&self.root, ".", last_flags, Mode::empty()).map_err(errno);
        }
        let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        let mut at: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let dir = at.as_ref().unwrap_or(&self.root);
            let f = if i + 1 == parts.len() {
                last_flags
            } else {
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
            };
            let name = OsStr::from_bytes(part);
            let fd = match openat(dir, name, f, Mode::empty()) {
                Ok(fd) => fd,
                // A symlink where a directory goes: ELOOP, as openat2 says it.
                Err(nix::errno::Errno::ENOTDIR)
                    if fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK) =>
                {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                Err(e) => return Err(errno(e)),
            };
            if fstat(&fd).map_err(errno)?.st_dev != device {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
            at = Some(fd);
        }
        at.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
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

    #[test]
    fn without_openat2_the_component_walk_refuses_the_same_paths() {
        let d = tempfile::tempdir().unwrap();
        let fs = d.path().join("fs");
        std::fs::create_dir_all(fs.join("sub/deeper")).unwrap();
        std::fs::write(fs.join("sub/deeper/file"), b"inside").unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("../outside", fs.join("esc")).unwrap();
        std::os::unix::fs::symlink("/", fs.join("sub/root")).unwrap();
        std::os::unix::fs::symlink("deeper", fs.join("sub/link")).unwrap();
        let b = Beneath::open(&fs).unwrap();
        let walk = |rel: &[u8]| b.open_by_components(rel, OFlag::O_RDONLY);
        let code = |r: io::Result<OwnedFd>| r.unwrap_err().raw_os_error();
        assert_eq!(code(walk(b"esc")), Some(libc::ELOOP));
        assert_eq!(code(walk(b"sub/root/etc")), Some(libc::ELOOP));
        assert_eq!(code(walk(b"sub/link/file")), Some(libc::ELOOP));
        assert_eq!(code(walk(b"sub/missing")), Some(libc::ENOENT));
        assert_eq!(
            walk(b"../outside").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut content = String::new();
        std::io::Read::read_to_string(
            &mut std::fs::File::from(walk(b"sub/deeper/file").unwrap()),
            &mut content,
        )
        .unwrap();
        assert_eq!(content, "inside");
        assert!(
            b.open_by_components(b"", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .is_ok()
        );
        // /proc is another filesystem: a bind of it inside fs is not crossed.
        let mnt = fs.join("proc");
        std::fs::create_dir(&mnt).unwrap();
        let bound = nix::mount::mount(
            Some("/proc"),
            &mnt,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
        if bound.is_ok() {
            let r = code(b.open_by_components(b"proc/self", OFlag::O_RDONLY | OFlag::O_DIRECTORY));
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
            assert_eq!(r, Some(libc::EXDEV));
        }
    }
}
