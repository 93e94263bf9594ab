//! A tar header reduced to what containerd's applier looks at, and a tar reader that walks a
//! stream exactly like Go's `archive/tar` (which containerd 1.6 uses): PAX records override the
//! header, `SCHILY.xattr.*` records are xattrs, GNU long names are cut at their first NUL, a V7
//! regular file whose name ends in `/` is a dir, header-only types (links, dirs, devices,
//! fifos) have no data whatever their size field says, checksums may be summed signed, GNU
//! PAX sparse files (0.0, 0.1, 1.0) are expanded, and the end is two zero blocks or EOF.

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
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp { sec: 0, nsec: 0 };

    /// The latest time Go's `UnixNano` holds (2262-04-11), containerd's `maxTime`.
    pub const MAX: Timestamp = Timestamp {
        sec: 9_223_372_036,
        nsec: 854_775_807,
    };

    /// containerd's `boundTime`: times before 1970 or after [`Timestamp::MAX`] become
    /// 1970-01-01T00:00:00Z.
    pub fn bounded(self) -> Timestamp {
        if self.sec < 0 || self > Timestamp::MAX {
            Timestamp::EPOCH
        } else {
            self
        }
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

    /// Applies one PAX record the way Go's `mergePAX` does (an empty value keeps the header's
    /// own field; every `SCHILY.xattr.` record is an xattr, as containerd reads `PAXRecords`).
    fn merge_pax(&mut self, key: &[u8], value: &[u8]) -> Result<(), TarError> {
        if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
            self.xattrs.insert(xname.to_vec(), value.to_vec());
            return Ok(());
        }
        if value.is_empty() {
            return Ok(());
        }
        let bad = || {
            TarError::new(format!(
                "invalid PAX {} record",
                String::from_utf8_lossy(key)
            ))
        };
        match key {
            b"path" => self.name = value.to_vec(),
            b"linkpath" => self.linkname = value.to_vec(),
            // Go keeps `int(id64)`; lchown takes the low 32 bits.
            b"uid" => self.uid = parse_decimal(value).ok_or_else(bad)? as u32,
            b"gid" => self.gid = parse_decimal(value).ok_or_else(bad)? as u32,
            b"mtime" => self.mtime = parse_pax_time(value).ok_or_else(bad)?,
            b"atime" => self.atime = Some(parse_pax_time(value).ok_or_else(bad)?),
            b"ctime" => {
                parse_pax_time(value).ok_or_else(bad)?;
            }
            b"size" => {
                let n = parse_decimal(value).ok_or_else(bad)?;
                self.size = u64::try_from(n).map_err(|_| bad())?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why a tar stream cannot be read (Go's reader would fail at the same point).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarError(pub String);

impl TarError {
    fn new(msg: impl Into<String>) -> Self {
        TarError(msg.into())
    }
}

impl std::fmt::Display for TarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TarError> for std::io::Error {
    fn from(e: TarError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.0)
    }
}

pub const BLOCK: usize = 512;
/// Go's `maxSpecialFileSize`: PAX and GNU long-name data beyond this is refused.
const MAX_SPECIAL_FILE: u64 = 1 << 20;

/// Go's `parseInt(s, 10, 64)`: optional sign, decimal digits, nothing else.
fn parse_decimal(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Bytes up to the first NUL (Go's `parseString`).
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Go's `parseOctal`: spaces and NULs trimmed at both ends, then octal up to the first NUL.
fn parse_octal(b: &[u8]) -> Result<i64, TarError> {
    let start = b.iter().position(|&c| c != b' ' && c != 0);
    let Some(start) = start else { return Ok(0) };
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .unwrap_or(start);
    let t = cstr(&b[start..=end]);
    let s = std::str::from_utf8(t).map_err(|_| TarError::new("invalid octal field"))?;
    if s.is_empty() || !s.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
        return Err(TarError::new("invalid octal field"));
    }
    let v = u64::from_str_radix(s, 8).map_err(|_| TarError::new("octal field overflows"))?;
    Ok(v as i64)
}

/// Go's `parseNumeric`: base-256 (two's complement, first bit set) or octal.
fn parse_numeric(b: &[u8]) -> Result<i64, TarError> {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        let inv: u8 = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return Err(TarError::new("base-256 field overflows"));
            }
            x = (x << 8) | c as u64;
        }
        if x >> 63 > 0 {
            return Err(TarError::new("base-256 field overflows"));
        }
        return Ok(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    parse_octal(b)
}

fn is_zero_block(b: &[u8]) -> bool {
    b.iter().all(|&c| c == 0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

/// Go's `getFormat`: the checksum (summed unsigned or signed) must match, then the magic.
fn block_format(b: &[u8; BLOCK]) -> Result<Format, TarError> {
    let stored = parse_octal(&b[148..156]).map_err(|_| TarError::new("invalid tar header"))?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as i64;
        signed += c as i8 as i64;
    }
    if stored != unsigned && stored != signed {
        return Err(TarError::new("invalid tar header (checksum mismatch)"));
    }
    let magic = &b[257..263];
    let version = &b[263..265];
    Ok(if magic == b"ustar\0" && &b[508..512] == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && version == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    })
}

/// A raw header block decoded like Go's `readHeader`, before PAX and long names apply.
fn decode_block(b: &[u8; BLOCK], format: Format) -> Result<TarHeader, TarError> {
    let typeflag = b[156];
    let mut h = TarHeader::new(HeaderType::Unsupported(typeflag), cstr(&b[0..100]));
    h.linkname = cstr(&b[157..257]).to_vec();
    let size = parse_numeric(&b[124..136])?;
    h.mode = parse_numeric(&b[100..108])? as u32;
    h.uid = parse_numeric(&b[108..116])? as u32;
    h.gid = parse_numeric(&b[116..124])? as u32;
    h.mtime = Timestamp {
        sec: parse_numeric(&b[136..148])?,
        nsec: 0,
    };
    h.size = u64::try_from(size).map_err(|_| TarError::new("negative size"))?;
    if format == Format::V7 {
        return Ok(h);
    }
    h.devmajor = parse_numeric(&b[329..337])? as u32;
    h.devminor = parse_numeric(&b[337..345])? as u32;
    let mut prefix: &[u8] = &[];
    match format {
        Format::Ustar => prefix = cstr(&b[345..500]),
        Format::Star => {
            prefix = cstr(&b[345..476]);
            h.atime = Some(Timestamp {
                sec: parse_numeric(&b[476..488])?,
                nsec: 0,
            });
            parse_numeric(&b[488..500])?;
        }
        Format::Gnu => {
            // Go reads GNU atime/ctime skeptically: when they do not parse, the field was a
            // ustar prefix written by old Go versions.
            let atime = (b[345] != 0).then(|| parse_numeric(&b[345..357]));
            let ctime = (b[357] != 0).then(|| parse_numeric(&b[357..369]));
            let broken = matches!(atime, Some(Err(_))) || matches!(ctime, Some(Err(_)));
            if broken {
                let p = cstr(&b[345..500]);
                if p.is_ascii() {
                    prefix = p;
                }
            } else if let Some(Ok(sec)) = atime {
                h.atime = Some(Timestamp { sec, nsec: 0 });
            }
        }
        Format::V7 => {}
    }
    if !prefix.is_empty() {
        let mut name = prefix.to_vec();
        name.push(b'/');
        name.extend_from_slice(&h.name);
        h.name = name;
    }
    Ok(h)
}

fn kind_of(typeflag: u8, name: &[u8]) -> HeaderType {
    match typeflag {
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
    }
}

/// Go's `isHeaderOnlyType`: these never have a data section, whatever the size field says.
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// PAX records (key, value) in the order they last appeared.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Go's `parsePAX`: `"%d %s=%s\n"` records; GNU sparse 0.0 offset/numbytes pairs are
/// collected into a `GNU.sparse.map` record. Later records replace earlier ones.
pub fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, TarError> {
    let bad = || TarError::new("invalid PAX record");
    let mut records: PaxRecords = Vec::new();
    let mut sparse_map: Vec<&[u8]> = Vec::new();
    while !data.is_empty() {
        let sp = data.iter().position(|&c| c == b' ').ok_or_else(bad)?;
        let n = parse_decimal(&data[..sp]).ok_or_else(bad)?;
        if n < 5 || n as u64 > data.len() as u64 || (n as usize) <= sp + 1 {
            return Err(bad());
        }
        let n = n as usize;
        let rec = &data[sp + 1..n - 1];
        if data[n - 1] != b'\n' {
            return Err(bad());
        }
        data = &data[n..];
        let eq = rec.iter().position(|&c| c == b'=').ok_or_else(bad)?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        let nul_checked = match k {
            b"path" | b"linkpath" | b"uname" | b"gname" => v,
            _ => k,
        };
        if k.is_empty() || nul_checked.contains(&0) {
            return Err(bad());
        }
        if k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes" {
            let want = if sparse_map.len().is_multiple_of(2) {
                b"GNU.sparse.offset".as_slice()
            } else {
                b"GNU.sparse.numbytes".as_slice()
            };
            if k != want || v.contains(&b',') {
                return Err(bad());
            }
            sparse_map.push(v);
            continue;
        }
        records.retain(|(rk, _)| rk != k);
        records.push((k.to_vec(), v.to_vec()));
    }
    if !sparse_map.is_empty() {
        records.retain(|(rk, _)| rk != b"GNU.sparse.map");
        records.push((b"GNU.sparse.map".to_vec(), sparse_map.join(&b',')));
    }
    Ok(records)
}

fn pax_get<'a>(records: &'a [(Vec<u8>, Vec<u8>)], key: &str) -> &'a [u8] {
    records
        .iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default()
}

/// A data region of a sparse file: `len` stored bytes at logical `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    offset: u64,
    len: u64,
}

/// Go's `validateSparseEntries`: in order, no overlap, within the size.
fn valid_regions(regions: &[(i64, i64)], size: u64) -> Option<Vec<Region>> {
    let mut out = Vec::with_capacity(regions.len());
    let mut prev_end = 0u64;
    for &(off, len) in regions {
        let off = u64::try_from(off).ok()?;
        let len = u64::try_from(len).ok()?;
        let end = off.checked_add(len).filter(|&e| e <= i64::MAX as u64)?;
        if end > size || prev_end > off {
            return None;
        }
        prev_end = end;
        out.push(Region { offset: off, len });
    }
    Some(out)
}

fn parse_map_numbers(tokens: &[&[u8]]) -> Result<Vec<(i64, i64)>, TarError> {
    tokens
        .chunks(2)
        .map(|pair| {
            let off = parse_decimal(pair[0]);
            let len = pair.get(1).and_then(|l| parse_decimal(l));
            match (off, len) {
                (Some(o), Some(l)) => Ok((o, l)),
                _ => Err(TarError::new("invalid GNU sparse map")),
            }
        })
        .collect()
}

/// The entry being read: stored bytes left, padding after them, and the sparse layout.
#[derive(Default)]
struct Current {
    stored_left: u64,
    pad: u64,
    sparse: Option<Sparse>,
}

struct Sparse {
    regions: Vec<Region>,
    /// Logical position and size.
    pos: u64,
    size: u64,
}

/// Walks a tar stream the way Go's `archive/tar` Reader does (see the module docs).
pub struct TarReader<R> {
    r: R,
    cur: Current,
    done: bool,
}

/// Reads until `buf` is full or EOF; returns how much was read.
pub(super) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            cur: Current::default(),
            done: false,
        }
    }

    fn io_err(e: std::io::Error) -> TarError {
        TarError::new(format!("reading the tar stream: {e}"))
    }

    /// Reads stored data of the current entry (no sparse expansion).
    fn read_stored(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.cur.stored_left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "tar entry data is truncated",
            ));
        }
        self.cur.stored_left -= n as u64;
        Ok(n)
    }

    /// Go's sparseFileReader: data regions from the stored bytes, zeros in the holes; the
    /// stored bytes must be exactly the regions' bytes.
    fn read_sparse(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(sp) = self.cur.sparse.as_ref() else {
            return self.read_stored(buf);
        };
        let (pos, size) = (sp.pos, sp.size);
        if pos >= size {
            if self.cur.stored_left > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "sparse file contains unreferenced data",
                ));
            }
            return Ok(0);
        }
        let region = sp.regions.iter().find(|r| r.offset + r.len > pos).copied();
        let n = match region {
            Some(r) if r.offset <= pos => {
                let want = ((r.offset + r.len - pos) as usize).min(buf.len());
                if self.cur.stored_left == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "sparse file references non-existent data",
                    ));
                }
                self.read_stored(&mut buf[..want])?
            }
            other => {
                let hole_end = other.map(|r| r.offset).unwrap_or(size);
                let want = ((hole_end - pos) as usize).min(buf.len());
                buf[..want].fill(0);
                want
            }
        };
        if let Some(sp) = self.cur.sparse.as_mut() {
            sp.pos += n as u64;
        }
        Ok(n)
    }

    /// Skips the rest of the current entry and its padding. Missing padding at the very end
    /// is Go's normal EOF.
    fn skip_current(&mut self) -> Result<bool, TarError> {
        let mut sink = [0u8; 8192];
        while self.cur.stored_left > 0 {
            let want = (self.cur.stored_left as usize).min(sink.len());
            let n = read_full(&mut self.r, &mut sink[..want]).map_err(Self::io_err)?;
            if n < want {
                return Err(TarError::new("unexpected EOF in tar entry data"));
            }
            self.cur.stored_left -= n as u64;
        }
        let pad = std::mem::take(&mut self.cur.pad) as usize;
        let n = read_full(&mut self.r, &mut sink[..pad]).map_err(Self::io_err)?;
        self.cur.sparse = None;
        Ok(n == pad)
    }

    fn start_data(&mut self, typeflag: u8, size: u64) {
        let stored = if header_only(typeflag) { 0 } else { size };
        self.cur = Current {
            stored_left: stored,
            pad: (BLOCK as u64 - stored % BLOCK as u64) % BLOCK as u64,
            sparse: None,
        };
    }

    /// Go's `readSpecialFile`: the whole data of a PAX or long-name entry.
    fn read_special(&mut self) -> Result<Vec<u8>, TarError> {
        if self.cur.stored_left > MAX_SPECIAL_FILE {
            return Err(TarError::new("PAX or GNU long-name data is too long"));
        }
        let mut v = vec![0u8; self.cur.stored_left as usize];
        let n = read_full(&mut self.r, &mut v).map_err(Self::io_err)?;
        if n < v.len() {
            return Err(TarError::new("unexpected EOF in a PAX or long-name entry"));
        }
        self.cur.stored_left = 0;
        Ok(v)
    }

    /// Reads one header block: `None` at the end (two zero blocks, or EOF at a block
    /// boundary).
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut blk = [0u8; BLOCK];
        let n = read_full(&mut self.r, &mut blk).map_err(Self::io_err)?;
        if n == 0 {
            return Ok(None);
        }
        if n < BLOCK {
            return Err(TarError::new("unexpected EOF in a tar header"));
        }
        if is_zero_block(&blk) {
            let n = read_full(&mut self.r, &mut blk).map_err(Self::io_err)?;
            if n == 0 {
                return Ok(None);
            }
            if n < BLOCK {
                return Err(TarError::new("unexpected EOF after a zero block"));
            }
            if is_zero_block(&blk) {
                return Ok(None);
            }
            return Err(TarError::new(
                "invalid tar header (a zero block, then a non-zero one)",
            ));
        }
        Ok(Some(blk))
    }

    /// The next entry as Go's `Reader.Next` returns it, `None` at the end of the archive.
    /// The previous entry's unread data is skipped.
    pub fn next_header(&mut self) -> Result<Option<TarHeader>, TarError> {
        if self.done {
            return Ok(None);
        }
        let mut pax: PaxRecords = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            if !self.skip_current()? {
                self.done = true;
                return Ok(None);
            }
            let Some(blk) = self.read_block()? else {
                self.done = true;
                return Ok(None);
            };
            let format = block_format(&blk)?;
            let mut h = decode_block(&blk, format)?;
            let typeflag = blk[156];
            self.start_data(typeflag, h.size);
            match typeflag {
                b'x' | b'g' => {
                    pax = parse_pax(&self.read_special()?)?;
                    if typeflag == b'g' {
                        let mut g = TarHeader::new(HeaderType::GlobalPax, &h.name);
                        // Go ignores mergePAX errors on a global header.
                        for (k, v) in &pax {
                            let _ = g.merge_pax(k, v);
                        }
                        g.size = 0;
                        return Ok(Some(g));
                    }
                }
                b'L' | b'K' => {
                    let data = self.read_special()?;
                    let value = cstr(&data).to_vec();
                    if typeflag == b'L' {
                        long_name = Some(value);
                    } else {
                        long_link = Some(value);
                    }
                }
                _ => {
                    for (k, v) in &pax {
                        h.merge_pax(k, v)?;
                    }
                    if let Some(n) = long_name.filter(|n| !n.is_empty()) {
                        h.name = n;
                    }
                    if let Some(l) = long_link.filter(|l| !l.is_empty()) {
                        h.linkname = l;
                    }
                    h.kind = kind_of(typeflag, &h.name);
                    let effective = match h.kind {
                        HeaderType::Dir => b'5',
                        _ => typeflag,
                    };
                    self.start_data(effective, h.size);
                    self.start_sparse(&mut h, effective, &pax)?;
                    return Ok(Some(h));
                }
            }
        }
    }

    /// Go's `readGNUSparsePAXHeaders`: PAX sparse formats 0.0/0.1 (map in the records) and
    /// 1.0 (map at the start of the data); the header's size becomes the real size.
    fn start_sparse(
        &mut self,
        h: &mut TarHeader,
        typeflag: u8,
        pax: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), TarError> {
        let major = pax_get(pax, "GNU.sparse.major");
        let minor = pax_get(pax, "GNU.sparse.minor");
        let v1 = match (major, minor) {
            (b"0", b"0") | (b"0", b"1") => false,
            (b"1", b"0") => true,
            (a, b) if !a.is_empty() || !b.is_empty() => return Ok(()),
            _ if !pax_get(pax, "GNU.sparse.map").is_empty() => false,
            _ => return Ok(()),
        };
        let name = pax_get(pax, "GNU.sparse.name");
        if !name.is_empty() {
            h.name = name.to_vec();
        }
        let mut size = pax_get(pax, "GNU.sparse.size");
        if size.is_empty() {
            size = pax_get(pax, "GNU.sparse.realsize");
        }
        if !size.is_empty() {
            let n = parse_decimal(size).ok_or_else(|| TarError::new("invalid GNU sparse size"))?;
            h.size = n as u64;
            if n < 0 {
                return Err(TarError::new("invalid GNU sparse size"));
            }
        }
        let pairs = if v1 {
            self.read_sparse_map_1_0()?
        } else {
            let count = parse_decimal(pax_get(pax, "GNU.sparse.numblocks"))
                .filter(|&n| n >= 0)
                .ok_or_else(|| TarError::new("invalid GNU sparse numblocks"))?;
            let map = pax_get(pax, "GNU.sparse.map");
            let tokens: Vec<&[u8]> = if map.is_empty() {
                Vec::new()
            } else {
                map.split(|&c| c == b',').collect()
            };
            if tokens.len() as u64 != 2 * count as u64 {
                return Err(TarError::new("GNU sparse map does not match numblocks"));
            }
            parse_map_numbers(&tokens)?
        };
        if header_only(typeflag) {
            return Err(TarError::new("sparse map on a header-only entry"));
        }
        let regions =
            valid_regions(&pairs, h.size).ok_or_else(|| TarError::new("invalid GNU sparse map"))?;
        self.cur.sparse = Some(Sparse {
            regions,
            pos: 0,
            size: h.size,
        });
        Ok(())
    }

    /// Go's `readGNUSparseMap1x0`: newline-terminated decimals in whole blocks of the data.
    fn read_sparse_map_1_0(&mut self) -> Result<Vec<(i64, i64)>, TarError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut newlines = 0usize;
        let mut consumed = 0usize;
        let mut feed = |this: &mut Self, buf: &mut Vec<u8>, want: usize| -> Result<(), TarError> {
            while newlines < want {
                let mut blk = [0u8; BLOCK];
                if this.cur.stored_left < BLOCK as u64 {
                    return Err(TarError::new("unexpected EOF in a GNU sparse map"));
                }
                let n = read_full(&mut this.r, &mut blk).map_err(Self::io_err)?;
                if n < BLOCK {
                    return Err(TarError::new("unexpected EOF in a GNU sparse map"));
                }
                this.cur.stored_left -= BLOCK as u64;
                newlines += blk.iter().filter(|&&c| c == b'\n').count();
                buf.extend_from_slice(&blk);
            }
            Ok(())
        };
        let mut next_token = |buf: &Vec<u8>| -> Vec<u8> {
            let rest = &buf[consumed..];
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            consumed += (end + 1).min(rest.len());
            rest[..end].to_vec()
        };
        feed(self, &mut buf, 1)?;
        let count = parse_decimal(&next_token(&buf))
            .filter(|n| (0..=i64::MAX / 2).contains(n))
            .ok_or_else(|| TarError::new("invalid GNU sparse map"))? as usize;
        feed(self, &mut buf, 1 + 2 * count)?;
        let mut tokens = Vec::with_capacity(2 * count);
        for _ in 0..2 * count {
            tokens.push(next_token(&buf));
        }
        let refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        parse_map_numbers(&refs)
    }

    /// A reader of the current entry's (logical) data.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData(self)
    }
}

/// The data of the entry [`TarReader::next_header`] returned last.
pub struct EntryData<'a, R>(&'a mut TarReader<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_sparse(buf)
    }
}

/// PAX time as Go's `parsePAXTime` reads it: `[+-]seconds[.fraction]`, seconds required,
/// no spaces, fraction digits beyond nanoseconds dropped.
pub fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec = parse_decimal(whole.as_bytes())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !whole.starts_with('-') || nsec == 0 {
        return Some(Timestamp { sec, nsec });
    }
    // time.Unix(sec, -nsec): -1.25 = -2 s + 0.75 s
    Some(Timestamp {
        sec: sec.checked_sub(1)?,
        nsec: 1_000_000_000 - nsec,
    })
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
        assert_eq!(
            parse_pax_time(b"-0.5"),
            Some(Timestamp {
                sec: -1,
                nsec: 500_000_000
            })
        );
        assert_eq!(parse_pax_time(b"+7."), Some(Timestamp { sec: 7, nsec: 0 }));
        // Go's ParseInt: no spaces, the seconds are required.
        for bad in [&b" 5"[..], b"5 ", b".5", b"-.5", b"", b"1.2.3", b"1.-2"] {
            assert_eq!(
                parse_pax_time(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn times_outside_1970_to_2262_are_bounded_to_the_epoch() {
        assert_eq!(Timestamp { sec: -5, nsec: 3 }.bounded(), Timestamp::EPOCH);
        assert_eq!(Timestamp::MAX.bounded(), Timestamp::MAX);
        assert_eq!(
            Timestamp {
                sec: 10_000_000_000,
                nsec: 0
            }
            .bounded(),
            Timestamp::EPOCH
        );
        assert_eq!(
            Timestamp { sec: 5, nsec: 3 }.bounded(),
            Timestamp { sec: 5, nsec: 3 }
        );
    }

    /// A header block: name, type, size in octal, ustar magic, unsigned checksum; `edit`
    /// changes fields before the checksum is computed.
    fn block(name: &[u8], typeflag: u8, size: u64, edit: impl FnOnce(&mut [u8; BLOCK])) -> Vec<u8> {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name);
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0000000");
        b[116..123].copy_from_slice(b"0000000");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[136..147].copy_from_slice(b"13560174400");
        b[156] = typeflag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        edit(&mut b);
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&c| c as u32).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b.to_vec()
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
        v
    }

    fn pax(typeflag: u8, records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut n = rest + 1;
            while n.to_string().len() + rest != n {
                n = n.to_string().len() + rest;
            }
            body.extend_from_slice(format!("{n} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut out = block(b"PaxHeaders/x", typeflag, body.len() as u64, |_| {});
        out.extend(padded(&body));
        out
    }

    fn file(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = block(name, b'0', data.len() as u64, |_| {});
        out.extend(padded(data));
        out
    }

    /// (name, kind, size, data) of one entry.
    type Read4 = (Vec<u8>, HeaderType, u64, Vec<u8>);

    /// Every entry, or the error.
    fn read_all(tar: &[u8]) -> Result<Vec<Read4>, String> {
        let mut r = TarReader::new(tar);
        let mut out = Vec::new();
        while let Some(h) = r.next_header().map_err(|e| e.0)? {
            let mut data = Vec::new();
            r.data().read_to_end(&mut data).map_err(|e| e.to_string())?;
            out.push((h.name.clone(), h.kind, h.size, data));
        }
        Ok(out)
    }

    fn names(tar: &[u8]) -> Vec<Vec<u8>> {
        read_all(tar).unwrap().into_iter().map(|e| e.0).collect()
    }

    const END: [u8; 1024] = [0; 1024];

    #[test]
    fn pax_records_override_the_header() {
        let mut tar = pax(
            b'x',
            &[
                ("SCHILY.xattr.user.a", b"v"),
                ("SCHILY.xattr.user.empty", b""),
                ("uid", b"70000"),
                ("gid", b""),
                ("mtime", b"100.25"),
                ("path", b"long/pax/name"),
                ("size", b"3"),
            ],
        );
        tar.extend(block(b"short", b'0', 0, |b| {
            b[100..107].copy_from_slice(b"0004755");
            b[116..123].copy_from_slice(b"0000002");
        }));
        tar.extend(padded(b"abc"));
        tar.extend(END);
        let mut r = TarReader::new(tar.as_slice());
        let th = r.next_header().unwrap().unwrap();
        assert_eq!(th.kind, HeaderType::Regular);
        assert_eq!(th.name, b"long/pax/name");
        assert_eq!(th.mode & 0o7777, 0o4755);
        assert_eq!(
            (th.uid, th.gid),
            (70000, 2),
            "an empty record keeps the header's"
        );
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
        assert_eq!(
            th.xattrs.get(b"user.empty".as_slice()).map(Vec::as_slice),
            Some(b"".as_slice())
        );
        assert_eq!(th.size, 3);
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn a_nul_in_a_pax_path_is_refused_like_go() {
        let mut tar = pax(b'x', &[("path", b"a\0b")]);
        tar.extend(file(b"f", b""));
        assert!(read_all(&tar).is_err());
    }

    #[test]
    fn gnu_long_names_are_cut_at_the_first_nul() {
        let mut tar = block(b"././@LongLink", b'L', 20, |_| {});
        tar.extend(padded(b"padded\0\0\0garbage\0\0\0"));
        tar.extend(block(b"x", b'2', 0, |b| b[157] = b'y'));
        tar.extend(block(b"././@LongLink", b'K', 4, |_| {}));
        tar.extend(padded(b"t\0u\0"));
        tar.extend(block(b"h", b'1', 0, |_| {}));
        let mut r = TarReader::new(tar.as_slice());
        let a = r.next_header().unwrap().unwrap();
        assert_eq!(
            (a.name.as_slice(), a.linkname.as_slice()),
            (b"padded".as_slice(), b"y".as_slice())
        );
        let b = r.next_header().unwrap().unwrap();
        assert_eq!(
            (b.name.as_slice(), b.linkname.as_slice()),
            (b"h".as_slice(), b"t".as_slice())
        );
    }

    #[test]
    fn signed_checksums_are_accepted_and_wrong_ones_refused() {
        let mut signed = block("caf\u{e9}".as_bytes(), b'0', 0, |_| {});
        let sum: i64 = signed
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    c as i8 as i64
                }
            })
            .sum();
        signed[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(names(&signed), vec!["caf\u{e9}".as_bytes().to_vec()]);
        signed[153] ^= 1;
        assert!(read_all(&signed).is_err());
    }

    #[test]
    fn end_of_archive_like_go() {
        let f = file(b"f", b"abc");
        // Two zero blocks, one, none, trailing bytes after the two.
        for tail in [&END[..], &END[..512], &[][..]] {
            assert_eq!(names(&[f.as_slice(), tail].concat()), vec![b"f".to_vec()]);
        }
        let mut garbage = f.clone();
        garbage.extend(END);
        garbage.extend([0xA5; 100]);
        assert_eq!(names(&garbage), vec![b"f".to_vec()]);
        // EOF in the padding of the last entry is the normal end.
        assert_eq!(names(&f[..512 + 3]), vec![b"f".to_vec()]);
        assert_eq!(names(&f[..512 + 100]), vec![b"f".to_vec()]);
        // A zero block then a non-zero one, a partial header, truncated data: refused.
        let mut zero_then = f.clone();
        zero_then.extend(&END[..512]);
        zero_then.extend([0x5A; 512]);
        assert!(read_all(&zero_then).is_err());
        assert!(read_all(&[f.as_slice(), &[1; 100]].concat()).is_err());
        assert!(read_all(&f[..512 + 2]).is_err());
        assert_eq!(names(&END), Vec::<Vec<u8>>::new());
        assert_eq!(names(&[]), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn header_only_types_have_no_data_whatever_their_size() {
        let mut tar = block(b"d/", b'5', 512, |_| {});
        tar.extend(file(b"smuggled", b"x"));
        tar.extend(block(b"v7dir/", 0, 512, |_| {}));
        tar.extend(file(b"also", b"y"));
        let got = read_all(&tar).unwrap();
        let kinds: Vec<_> = got.iter().map(|e| (e.0.clone(), e.1)).collect();
        assert_eq!(
            kinds,
            vec![
                (b"d/".to_vec(), HeaderType::Dir),
                (b"smuggled".to_vec(), HeaderType::Regular),
                (b"v7dir/".to_vec(), HeaderType::Dir),
                (b"also".to_vec(), HeaderType::Regular),
            ]
        );
    }

    #[test]
    fn numeric_fields_octal_and_base256() {
        assert_eq!(parse_numeric(b" 0000755\0"), Ok(0o755));
        assert_eq!(parse_numeric(b"\0\0\0"), Ok(0));
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]),
            Ok(3_000_000)
        );
        assert_eq!(parse_numeric(&[0xff; 8]), Ok(-1));
        assert!(parse_numeric(b"12x4").is_err());
        let tar = block(b"big", b'0', 0, |b| {
            b[108..116].copy_from_slice(&[0x80, 0, 0, 0, 0, 0x2d, 0xc6, 0xc0]);
            b[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        });
        let mut tar = tar;
        tar.extend(padded(b"hi"));
        let mut r = TarReader::new(tar.as_slice());
        let h = r.next_header().unwrap().unwrap();
        assert_eq!((h.uid, h.size), (3_000_000, 2));
    }

    #[test]
    fn ustar_prefix_and_v7_names() {
        let tar = block(b"name", b'0', 0, |b| b[345..348].copy_from_slice(b"pre"));
        assert_eq!(names(&tar), vec![b"pre/name".to_vec()]);
        // V7: no magic, the prefix area is not a prefix.
        let tar = block(b"name", b'0', 0, |b| {
            b[257..265].fill(0);
            b[345..348].copy_from_slice(b"pre");
        });
        assert_eq!(names(&tar), vec![b"name".to_vec()]);
    }

    #[test]
    fn global_headers_are_entries_named_by_their_path_record() {
        let mut tar = pax(b'g', &[("comment", b"x"), ("path", b"tmp/GlobalHead.1")]);
        tar.extend(file(b"f", b""));
        let got = read_all(&tar).unwrap();
        assert_eq!(got[0].0, b"tmp/GlobalHead.1");
        assert_eq!(got[0].1, HeaderType::GlobalPax);
        assert_eq!(got[1].0, b"f");
    }

    fn sparse_expected() -> Vec<u8> {
        let mut want = vec![0u8; 10_000];
        want[..3].copy_from_slice(b"abc");
        want[5000..5004].copy_from_slice(b"WXYZ");
        want
    }

    #[test]
    fn pax_sparse_formats_are_expanded() {
        let packed = b"abcWXYZ";
        // 0.0: offset/numbytes pairs.
        let mut t00 = pax(
            b'x',
            &[
                ("GNU.sparse.size", b"10000"),
                ("GNU.sparse.numblocks", b"2"),
                ("GNU.sparse.offset", b"0"),
                ("GNU.sparse.numbytes", b"3"),
                ("GNU.sparse.offset", b"5000"),
                ("GNU.sparse.numbytes", b"4"),
                ("path", b"s00"),
            ],
        );
        t00.extend(file(b"GNUSparseFile.0/s00", packed));
        // 0.1: one map record.
        let mut t01 = pax(
            b'x',
            &[
                ("GNU.sparse.major", b"0"),
                ("GNU.sparse.minor", b"1"),
                ("GNU.sparse.name", b"s01"),
                ("GNU.sparse.size", b"10000"),
                ("GNU.sparse.numblocks", b"2"),
                ("GNU.sparse.map", b"0,3,5000,4"),
            ],
        );
        t01.extend(file(b"GNUSparseFile.0/s01", packed));
        // 1.0: the map is in the data, in whole blocks.
        let mut body = padded(b"2\n0\n3\n5000\n4\n");
        body.extend(packed);
        let mut t10 = pax(
            b'x',
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"s10"),
                ("GNU.sparse.realsize", b"10000"),
            ],
        );
        t10.extend(file(b"GNUSparseFile.0/s10", &body));
        for (tar, name) in [(t00, "s00"), (t01, "s01"), (t10, "s10")] {
            let mut tar = tar;
            tar.extend(file(b"after", b"z"));
            let got = read_all(&tar).unwrap();
            assert_eq!(got[0].0, name.as_bytes());
            assert_eq!(got[0].1, HeaderType::Regular);
            assert_eq!(got[0].2, 10_000, "{name}");
            assert!(got[0].3 == sparse_expected(), "{name}");
            assert_eq!(got[1].0, b"after");
        }
    }

    #[test]
    fn sparse_data_must_match_the_map() {
        for stored in [&b"abcWX"[..], &b"abcWXYZ!"[..]] {
            let mut tar = pax(
                b'x',
                &[
                    ("GNU.sparse.major", b"0"),
                    ("GNU.sparse.minor", b"1"),
                    ("GNU.sparse.size", b"10000"),
                    ("GNU.sparse.numblocks", b"2"),
                    ("GNU.sparse.map", b"0,3,5000,4"),
                ],
            );
            tar.extend(file(b"s", stored));
            assert!(read_all(&tar).is_err(), "{} stored bytes", stored.len());
        }
        // Overlapping regions, or beyond the size.
        for map in [&b"0,3,2,4"[..], &b"0,3,9999,4"[..]] {
            let mut tar = pax(
                b'x',
                &[
                    ("GNU.sparse.size", b"10000"),
                    ("GNU.sparse.numblocks", b"2"),
                    ("GNU.sparse.map", map),
                ],
            );
            tar.extend(file(b"s", b"abcWXYZ"));
            assert!(read_all(&tar).is_err());
        }
    }

    #[test]
    fn old_gnu_sparse_is_an_unsupported_type() {
        let tar = block(b"old", b'S', 0, |_| {});
        assert_eq!(read_all(&tar).unwrap()[0].1, HeaderType::Unsupported(b'S'));
    }
}
