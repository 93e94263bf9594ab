//! A tar header reduced to what containerd's applier looks at, read the way Go's
//! `archive/tar` presents it (PAX `uid`/`gid`/`mtime`/`atime` override the ustar fields,
//! `SCHILY.xattr.*` records are xattrs, a V7 regular file whose name ends in `/` is a dir).

use std::collections::BTreeMap;
use std::io::Read;

/// Header types, after the reader consumed PAX/GNU long-name records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderType {
    Regular,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// PAX global header: containerd ignores it.
    GlobalPax,
    /// Anything containerd refuses ("unhandled tar header type"), with the raw type byte.
    Unsupported(u8),
}

/// Seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp { sec: 0, nsec: 0 };

    /// containerd's `boundTime`: times before 1970 become 1970-01-01T00:00:00Z.
    pub fn bounded(self) -> Timestamp {
        if self.sec < 0 { Timestamp::EPOCH } else { self }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarHeader {
    pub kind: HeaderType,
    /// Raw name bytes (PAX `path` / GNU long name applied), not cleaned.
    pub name: Vec<u8>,
    /// Raw link name bytes (hardlink target or symlink text).
    pub linkname: Vec<u8>,
    /// Mode bits from the header, only `0o7777` is meaningful.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub atime: Option<Timestamp>,
    pub devmajor: u32,
    pub devminor: u32,
    /// `SCHILY.xattr.<name>` records, last one wins (a PAX record map in Go).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl TarHeader {
    /// A header with everything zero, for building tests and synthetic entries.
    pub fn new(kind: HeaderType, name: &[u8]) -> Self {
        TarHeader {
            kind,
            name: name.to_vec(),
            linkname: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: Timestamp::EPOCH,
            atime: None,
            devmajor: 0,
            devminor: 0,
            xattrs: BTreeMap::new(),
        }
    }

    /// Reads the header of a `tar` crate entry (consumes nothing of its data).
    pub fn from_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<TarHeader> {
        let name = entry.path_bytes().into_owned();
        let linkname = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let size = entry.size();
        let h = entry.header();
        let raw_type = h.as_old().linkflag[0];
        let kind = match raw_type {
            b'0' => HeaderType::Regular,
            0 if name.ends_with(b"/") => HeaderType::Dir,
            0 => HeaderType::Regular,
            b'1' => HeaderType::Hardlink,
            b'2' => HeaderType::Symlink,
            b'3' => HeaderType::Char,
            b'4' => HeaderType::Block,
            b'5' => HeaderType::Dir,
            b'6' => HeaderType::Fifo,
            b'g' => HeaderType::GlobalPax,
            other => HeaderType::Unsupported(other),
        };
        let mode = h.mode().unwrap_or(0);
        let mut uid = h.uid().unwrap_or(0) as u32;
        let mut gid = h.gid().unwrap_or(0) as u32;
        let mut mtime = Timestamp {
            sec: h.mtime().unwrap_or(0) as i64,
            nsec: 0,
        };
        let mut atime = None;
        let devmajor = h.device_major().ok().flatten().unwrap_or(0);
        let devminor = h.device_minor().ok().flatten().unwrap_or(0);
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.insert(xname.to_vec(), value.to_vec());
                    continue;
                }
                match key {
                    b"uid" => uid = parse_u32(value).unwrap_or(uid),
                    b"gid" => gid = parse_u32(value).unwrap_or(gid),
                    b"mtime" => mtime = parse_pax_time(value).unwrap_or(mtime),
                    b"atime" => atime = parse_pax_time(value),
                    _ => {}
                }
            }
        }
        Ok(TarHeader {
            kind,
            name,
            linkname,
            mode,
            uid,
            gid,
            size,
            mtime,
            atime,
            devmajor,
            devminor,
            xattrs,
        })
    }
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX time: `[-]seconds[.fraction]`.
pub fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    let sec: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !neg {
        return Some(Timestamp { sec, nsec });
    }
    // -1.25 = -2 s + 0.75 s
    if nsec == 0 {
        Some(Timestamp { sec: -sec, nsec: 0 })
    } else {
        Some(Timestamp {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds_and_sign() {
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some(Timestamp {
                sec: 1_700_000_000,
                nsec: 500_000_000
            })
        );
        assert_eq!(parse_pax_time(b"12"), Some(Timestamp { sec: 12, nsec: 0 }));
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Timestamp {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"1.1234567891"),
            Some(Timestamp {
                sec: 1,
                nsec: 123_456_789
            })
        );
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn times_before_1970_are_bounded_to_the_epoch() {
        assert_eq!(Timestamp { sec: -5, nsec: 3 }.bounded(), Timestamp::EPOCH);
        assert_eq!(
            Timestamp { sec: 5, nsec: 3 }.bounded(),
            Timestamp { sec: 5, nsec: 3 }
        );
    }

    #[test]
    fn headers_are_read_like_go_archive_tar() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o4755);
        h.set_uid(1);
        h.set_gid(2);
        h.set_mtime(100);
        b.append_pax_extensions([
            ("SCHILY.xattr.user.a", b"v".as_slice()),
            ("uid", b"70000"),
            ("mtime", b"100.25"),
        ])
        .unwrap();
        b.append_data(&mut h, "bin/x", &b"abc"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(&data[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        let th = TarHeader::from_entry(&mut e).unwrap();
        assert_eq!(th.kind, HeaderType::Regular);
        assert_eq!(th.name, b"bin/x");
        assert_eq!(th.mode & 0o7777, 0o4755);
        assert_eq!((th.uid, th.gid), (70000, 2));
        assert_eq!(
            th.mtime,
            Timestamp {
                sec: 100,
                nsec: 250_000_000
            }
        );
        assert_eq!(
            th.xattrs.get(b"user.a".as_slice()).map(Vec::as_slice),
            Some(b"v".as_slice())
        );
        assert_eq!(th.size, 3);
    }
}
