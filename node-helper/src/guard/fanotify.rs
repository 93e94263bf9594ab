//! A small safe wrapper over fanotify in FID mode (`FAN_REPORT_DFID_NAME`).
//!
//! Why libc and not `nix::sys::fanotify`: nix 0.30's `read_events` keeps only the fixed
//! metadata of each event and drops the information records that follow it, which in FID
//! mode are the whole point (directory file handle and entry name); it also reads into a
//! 4 KiB stack buffer. The unsafe surface here is three syscalls and one handle buffer;
//! parsing the event stream is safe code over bytes, unit-tested below.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Directory-entry and inode changes the guard listens to.
pub const EVENTS: u64 = libc::FAN_DELETE
    | libc::FAN_CREATE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;

/// Why the kernel refused the guard.
#[derive(Debug)]
pub enum Unavailable {
    /// No CAP_SYS_ADMIN (FID reporting and filesystem marks need it).
    Permission(io::Error),
    /// The kernel lacks fanotify, FID reporting (5.1), DFID_NAME (5.9) or filesystem marks.
    Unsupported(io::Error),
    /// The filesystem cannot encode file handles, or another error.
    Other(io::Error),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Permission(e) => write!(
                f,
                "fanotify needs CAP_SYS_ADMIN for filesystem marks with file handles ({e})"
            ),
            Unavailable::Unsupported(e) => write!(
                f,
                "this kernel lacks fanotify with FAN_REPORT_DFID_NAME and FAN_MARK_FILESYSTEM (Linux 5.9 or later) ({e})"
            ),
            Unavailable::Other(e) => write!(f, "{e}"),
        }
    }
}

fn classify(e: io::Error) -> Unavailable {
    match e.raw_os_error() {
        Some(libc::EPERM) => Unavailable::Permission(e),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            Unavailable::Unsupported(e)
        }
        _ => Unavailable::Other(e),
    }
}

/// One fanotify group with a filesystem mark, plus the fd that file handles resolve against.
pub struct Group {
    fd: OwnedFd,
    mount: OwnedFd,
}

impl Group {
    /// Creates a notification-class, non-blocking group reporting directory handles and
    /// entry names, and marks the whole filesystem holding `dir`.
    pub fn watch_filesystem_of(dir: &Path) -> Result<Group, Unavailable> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME;
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain syscall with integer arguments.
        let raw = unsafe { libc::fanotify_init(flags, event_flags) };
        if raw < 0 {
            return Err(classify(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mount = std::fs::File::open(dir).map_err(Unavailable::Other)?.into();
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| Unavailable::Other(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: valid fd and NUL-terminated path that live across the call.
        let rc = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                EVENTS,
                libc::AT_FDCWD,
                c_dir.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(classify(io::Error::last_os_error()));
        }
        Ok(Group { fd, mount })
    }

    /// Reads what is queued into `buf`; `Ok(0)` when nothing is (non-blocking group).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match nix::unistd::read(&self.fd, buf) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `timeout_ms` for events; false on timeout or a signal.
    pub fn wait(&self, timeout_ms: u16) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the length given (libc directly: nix's `poll`
        // feature is not enabled in this workspace).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, libc::c_int::from(timeout_ms)) };
        n > 0
    }

    /// The path of the directory behind a file handle, as seen through the marked mount;
    /// None when it is gone (ESTALE) or unreachable.
    pub fn directory_path(&self, handle: &FileHandle<'_>) -> Option<PathBuf> {
        // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, built in
        // u32 words so the header is aligned.
        let words = 2 + handle.bytes.len().div_ceil(4);
        let mut buf = vec![0u32; words];
        buf[0] = handle.bytes.len() as u32;
        buf[1] = handle.handle_type as u32;
        // SAFETY: the byte view covers exactly `buf`, which outlives it.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), words * 4) };
        bytes[8..8 + handle.bytes.len()].copy_from_slice(handle.bytes);
        // SAFETY: `buf` holds a complete file_handle; the kernel only reads it.
        let raw = unsafe {
            libc::open_by_handle_at(
                self.mount.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return None;
        }
        // SAFETY: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        // A directory removed since the event resolves to "<path> (deleted)".
        (!link.as_os_str().as_bytes().ends_with(b" (deleted)")).then_some(link)
    }
}

/// The directory file handle of an event (without the fsid: one filesystem is marked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHandle<'a> {
    pub handle_type: i32,
    pub bytes: &'a [u8],
}

impl FileHandle<'_> {
    /// A key for caches: type and handle bytes, written into `key` (reused: no allocation
    /// per event on the hot path).
    pub fn key_into(&self, key: &mut Vec<u8>) {
        key.clear();
        key.extend_from_slice(&self.handle_type.to_ne_bytes());
        key.extend_from_slice(self.bytes);
    }
}

/// One event of the stream, borrowing from the read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub mask: u64,
    pub pid: i32,
    /// The parent directory and the entry's name ("." for the directory itself).
    pub dir: Option<FileHandle<'a>>,
    pub name: &'a OsStr,
}

impl Event<'_> {
    pub fn overflow(&self) -> bool {
        self.mask & libc::FAN_Q_OVERFLOW != 0
    }
}

const METADATA_LEN: usize = 24;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Splits a read buffer into events. Records other than DFID_NAME are skipped; a truncated
/// or malformed event ends the parse (the kernel never writes one; this guards the parser).
pub fn parse_events(buf: &[u8]) -> Vec<Event<'_>> {
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(event) = parse_one(buf, at) {
        at += event.0;
        events.push(event.1);
    }
    events
}

fn parse_one(buf: &[u8], at: usize) -> Option<(usize, Event<'_>)> {
    let event_len = u32_at(buf, at)? as usize;
    let vers = *buf.get(at + 4)?;
    let metadata_len = u16_at(buf, at + 6)? as usize;
    if vers != libc::FANOTIFY_METADATA_VERSION
        || event_len < METADATA_LEN
        || metadata_len < METADATA_LEN
        || metadata_len > event_len
        || at + event_len > buf.len()
    {
        return None;
    }
    let mask = u64_at(buf, at + 8)?;
    let pid = i32::from_ne_bytes(buf.get(at + 20..at + 24)?.try_into().ok()?);
    let mut event = Event {
        mask,
        pid,
        dir: None,
        name: OsStr::new(""),
    };
    let end = at + event_len;
    let mut info = at + metadata_len;
    while info + 4 <= end {
        let info_type = buf[info];
        let len = u16_at(buf, info + 2)? as usize;
        if len < 4 || info + len > end {
            break;
        }
        if info_type == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
            let record = &buf[info..info + len];
            // header (4) + fsid (8) + handle_bytes (4) + handle_type (4) + handle + name\0
            let handle_bytes = u32_at(record, 12)? as usize;
            let handle_type = i32::from_ne_bytes(record.get(16..20)?.try_into().ok()?);
            let bytes = record.get(20..20 + handle_bytes)?;
            let rest = record.get(20 + handle_bytes..)?;
            let name_end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            event.dir = Some(FileHandle { handle_type, bytes });
            event.name = OsStr::from_bytes(&rest[..name_end]);
        }
        info += len;
    }
    Some((event_len, event))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Encodes one event as the kernel would (for parser and pipeline tests).
    pub fn encode(mask: u64, pid: i32, handle: Option<(&[u8], &str)>) -> Vec<u8> {
        let mut info = Vec::new();
        if let Some((h, name)) = handle {
            let mut body = vec![0u8; 8]; // fsid
            body.extend_from_slice(&(h.len() as u32).to_ne_bytes());
            body.extend_from_slice(&1i32.to_ne_bytes());
            body.extend_from_slice(h);
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            while !(body.len() + 4).is_multiple_of(4) {
                body.push(0);
            }
            info.push(libc::FAN_EVENT_INFO_TYPE_DFID_NAME);
            info.push(0);
            info.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
            info.extend_from_slice(&body);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_LEN + info.len()) as u32).to_ne_bytes());
        out.push(libc::FANOTIFY_METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes()); // FAN_NOFD
        out.extend_from_slice(&pid.to_ne_bytes());
        out.extend_from_slice(&info);
        out
    }

    #[test]
    fn events_with_directory_handles_and_names() {
        let mut buf = encode(
            libc::FAN_DELETE,
            42,
            Some((&[1, 2, 3, 4, 5, 6, 7, 8], "pause")),
        );
        buf.extend(encode(
            libc::FAN_ATTRIB | libc::FAN_ONDIR,
            7,
            Some((&[9; 12], ".")),
        ));
        buf.extend(encode(libc::FAN_Q_OVERFLOW, -1, None));
        let events = parse_events(&buf);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].pid, 42);
        assert_eq!(events[0].mask, libc::FAN_DELETE);
        assert_eq!(events[0].name, "pause");
        assert_eq!(events[0].dir.unwrap().bytes, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(events[0].dir.unwrap().handle_type, 1);
        assert_eq!(events[1].name, ".");
        assert_eq!(events[1].dir.unwrap().bytes.len(), 12);
        assert!(events[2].overflow());
        assert!(events[2].dir.is_none());
    }

    #[test]
    fn truncated_or_foreign_input_stops_the_parse() {
        let one = encode(libc::FAN_CREATE, 1, Some((&[1; 8], "x")));
        assert!(parse_events(&one[..one.len() - 1]).is_empty());
        assert!(parse_events(&one[..10]).is_empty());
        let mut bad_version = one.clone();
        bad_version[4] = 99;
        assert!(parse_events(&bad_version).is_empty());
        // A record claiming more than the event holds is ignored, the event kept.
        let mut bad_record = one.clone();
        bad_record[METADATA_LEN + 2..METADATA_LEN + 4].copy_from_slice(&500u16.to_ne_bytes());
        let events = parse_events(&bad_record);
        assert_eq!(events.len(), 1);
        assert!(events[0].dir.is_none());
        // A handle longer than its record.
        let mut long_handle = one;
        long_handle[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&400u32.to_ne_bytes());
        assert!(parse_events(&long_handle).is_empty());
    }
}
