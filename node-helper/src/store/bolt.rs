//! Read-only, lock-free bbolt reader.
//!
//! containerd holds an exclusive `flock` on `meta.db` and `metadata.db` for its whole life, so
//! a normal bbolt open (shared flock) would block, and would block containerd's next start.
//! Instead we copy the file into memory between two reads of the meta pages and accept the
//! copy only if the committed transaction id did not move, then decode the whole tree,
//! validating every page on the way. Any inconsistency (a write raced us) means: back off and
//! read again. Format: containerd-layout.md §4. Integers are little-endian (x86_64, arm64).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
const FLAG_BRANCH: u16 = 0x01;
const FLAG_LEAF: u16 = 0x02;
const LEAF_BUCKET: u32 = 0x01;
/// Bolt nests buckets a few levels deep; anything deeper than this is a corrupt (cyclic) file.
const MAX_DEPTH: usize = 64;
const READ_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// A value stored under a key: a plain value or a nested bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Value(Vec<u8>),
    Bucket(Bucket),
}

/// One bucket, fully decoded. Keys are raw bytes in bolt's (bytewise) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's `NextSequence` counter.
    pub sequence: u64,
    pub entries: BTreeMap<Vec<u8>, Node>,
}

impl Bucket {
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.entries.get(key) {
            Some(Node::Value(v)) => Some(v),
            _ => None,
        }
    }

    pub fn bucket(&self, key: &[u8]) -> Option<&Bucket> {
        match self.entries.get(key) {
            Some(Node::Bucket(b)) => Some(b),
            _ => None,
        }
    }

    /// Walks nested buckets by name.
    pub fn path(&self, keys: &[&[u8]]) -> Option<&Bucket> {
        keys.iter().try_fold(self, |b, k| b.bucket(k))
    }

    /// Sub-buckets in key order.
    pub fn buckets(&self) -> impl Iterator<Item = (&[u8], &Bucket)> {
        self.entries.iter().filter_map(|(k, n)| match n {
            Node::Bucket(b) => Some((k.as_slice(), b)),
            Node::Value(_) => None,
        })
    }

    /// The value under `key` as UTF-8 text.
    pub fn get_str(&self, key: &[u8]) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value under `key`, telling an absent key from one whose bytes are not text.
    pub fn get_recorded(&self, key: &[u8]) -> Recorded {
        match self.get(key) {
            None => Recorded::Absent,
            Some(v) => match std::str::from_utf8(v) {
                Ok(text) => Recorded::Text(text.to_string()),
                Err(_) => Recorded::NotText(v.to_vec()),
            },
        }
    }
}

/// A value as a database records it. Kept apart from `Option<String>` so that a damaged
/// value is never mistaken for an absent one (a snapshot whose parent became unreadable is
/// not a base layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    Absent,
    Text(String),
    NotText(Vec<u8>),
}

impl Recorded {
    pub fn text(&self) -> Option<&str> {
        match self {
            Recorded::Text(t) => Some(t),
            _ => None,
        }
    }

    /// For messages: `none`, the text quoted, or the first bytes in hex.
    pub fn describe(&self) -> String {
        match self {
            Recorded::Absent => "none".into(),
            Recorded::Text(t) => format!("{:?}", crate::error::bounded_text(t)),
            Recorded::NotText(b) => format!(
                "bytes that are not UTF-8 ({}{})",
                hex::encode(&b[..b.len().min(32)]),
                if b.len() > 32 { "…" } else { "" }
            ),
        }
    }
}

/// A consistent, decoded copy of a bolt file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoltDb {
    pub path: PathBuf,
    /// Transaction id of the meta page the copy was decoded from.
    pub txid: u64,
    pub root: Bucket,
}

impl BoltDb {
    /// Reads `path` without any lock, retrying with backoff while a writer races us.
    #[tracing::instrument(level = "debug", fields(path = %path.display()))]
    pub fn read(path: &Path) -> Result<BoltDb> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match read_once(path) {
                Ok(db) => return Ok(db),
                // An inconsistent copy: a writer raced us, or the file is damaged.
                Err(e @ Error::Bolt { .. }) if attempt < READ_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "bolt copy rejected, retrying");
                }
                Err(e) => return Err(e),
            }
            std::thread::sleep(backoff);
            backoff *= 2;
            attempt += 1;
        }
    }

    /// Decodes an in-memory copy (no stability check: the caller owns the bytes).
    pub fn from_bytes(path: &Path, data: &[u8]) -> Result<BoltDb> {
        let db = decode(data).map_err(|e| e.in_file(path))?;
        Ok(BoltDb {
            path: path.to_path_buf(),
            ..db
        })
    }
}

/// One attempt: `Error::Bolt` when the copy is inconsistent or invalid (worth a retry), any
/// other error when the file cannot be read at all.
fn read_once(path: &Path) -> Result<BoltDb> {
    let io = |e| Error::io(path, e);
    let before = read_head(path).map_err(io)?;
    let data = super::bounded::read_capped(path, "bolt database", super::bounded::BOLT_CAP)?;
    let after = read_head(path).map_err(io)?;

    let txid_before = max_valid_txid(&before);
    let txid_after = max_valid_txid(&after);
    let db = decode(&data).map_err(|e| e.in_file(path))?;
    if txid_before != Some(db.txid) || txid_after != Some(db.txid) {
        return Err(invalid(format!(
            "database changed while it was read (txid {:?} → copy {} → {:?})",
            txid_before, db.txid, txid_after
        ))
        .in_file(path));
    }
    Ok(BoltDb {
        path: path.to_path_buf(),
        ..db
    })
}

/// A decoding error; [`Error::in_file`] names the file at the boundary.
fn invalid(reason: impl Into<String>) -> Error {
    Error::Bolt {
        path: PathBuf::new(),
        reason: reason.into(),
    }
}

/// The first bytes of the file: enough for both meta pages at the largest page size we accept.
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    File::open(path)?.take(2 * 65536).read_to_end(&mut head)?;
    Ok(head)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    page_size: u32,
    root_pgid: u64,
    root_sequence: u64,
    high_water: u64,
    txid: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

/// FNV-1a 64, as bolt checksums its meta pages.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Parses and validates the meta struct of a page starting at `off`.
fn parse_meta(b: &[u8], off: usize) -> Option<Meta> {
    let m = b.get(off + PAGE_HEADER..off + 80)?;
    let magic = u32_at(m, 0)?;
    let version = u32_at(m, 4)?;
    let checksum = u64_at(m, 56)?;
    if magic != MAGIC || version != VERSION || checksum != fnv1a64(&m[..56]) {
        return None;
    }
    let page_size = u32_at(m, 8)?;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    Some(Meta {
        page_size,
        root_pgid: u64_at(m, 16)?,
        root_sequence: u64_at(m, 24)?,
        high_water: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// Both meta pages that validate. Page size comes from meta 0; when meta 0 is torn we probe
/// for meta 1 at the usual page sizes (as newer bbolt does).
fn valid_metas(b: &[u8]) -> Vec<Meta> {
    let mut metas = Vec::new();
    if let Some(m0) = parse_meta(b, 0) {
        metas.push(m0);
        if let Some(m1) = parse_meta(b, m0.page_size as usize) {
            metas.push(m1);
        }
        return metas;
    }
    for shift in 9..=16 {
        let ps = 1usize << shift;
        if let Some(m1) = parse_meta(b, ps)
            && m1.page_size as usize == ps
        {
            metas.push(m1);
            break;
        }
    }
    metas
}

fn max_valid_txid(head: &[u8]) -> Option<u64> {
    valid_metas(head).iter().map(|m| m.txid).max()
}

/// Decodes a whole bolt file from the valid meta with the highest txid (a torn newest meta is
/// invalid, so the other one is used, as bolt does).
fn decode(data: &[u8]) -> Result<BoltDb> {
    let meta = valid_metas(data)
        .into_iter()
        .max_by_key(|m| m.txid)
        .ok_or_else(|| {
            invalid("no valid meta page (magic 0xED0CDAED, version 2, FNV-1a checksum)")
        })?;
    let reader = PageReader { data, meta };
    let mut visited = HashSet::new();
    let root = reader
        .read_bucket(meta.root_pgid, meta.root_sequence, 0, &mut visited)
        .map_err(|e| e.within(format!("txid {}", meta.txid)))?;
    Ok(BoltDb {
        path: PathBuf::new(),
        txid: meta.txid,
        root,
    })
}

struct PageReader<'a> {
    data: &'a [u8],
    meta: Meta,
}

/// A page's bytes (including overflow pages) and its header fields.
struct Page<'a> {
    bytes: &'a [u8],
    flags: u16,
    count: usize,
}

impl<'a> PageReader<'a> {
    fn page(&self, pgid: u64) -> Result<Page<'a>> {
        if pgid < 2 || pgid >= self.meta.high_water {
            return Err(invalid(format!(
                "page {pgid} outside 2..{}",
                self.meta.high_water
            )));
        }
        let ps = self.meta.page_size as u64;
        let start = pgid
            .checked_mul(ps)
            .ok_or_else(|| invalid("page offset overflows"))?;
        let head = self
            .data
            .get(start as usize..(start + PAGE_HEADER as u64) as usize)
            .ok_or_else(|| invalid(format!("page {pgid} beyond end of file")))?;
        let id = u64_at(head, 0).unwrap_or(u64::MAX);
        if id != pgid {
            return Err(invalid(format!("page {pgid} carries id {id}")));
        }
        let overflow = u64::from(u32_at(head, 12).unwrap_or(u32::MAX));
        if pgid + overflow >= self.meta.high_water {
            return Err(invalid(format!(
                "page {pgid} overflow {overflow} passes the high-water mark"
            )));
        }
        let end = (pgid + overflow + 1) * ps;
        let bytes = self.data.get(start as usize..end as usize).ok_or_else(|| {
            invalid(format!(
                "page {pgid} (+{overflow} overflow) beyond end of file"
            ))
        })?;
        page_from_bytes(bytes).map_err(|e| e.within(format!("page {pgid}")))
    }

    /// Reads the bucket rooted at `root` (0 = inline, handled by the caller).
    fn read_bucket(
        &self,
        root: u64,
        sequence: u64,
        depth: usize,
        visited: &mut HashSet<u64>,
    ) -> Result<Bucket> {
        let mut bucket = Bucket {
            sequence,
            entries: BTreeMap::new(),
        };
        self.read_tree(root, depth, visited, &mut bucket)?;
        Ok(bucket)
    }

    fn read_tree(
        &self,
        pgid: u64,
        depth: usize,
        visited: &mut HashSet<u64>,
        into: &mut Bucket,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(invalid("tree deeper than any bolt file (cycle?)"));
        }
        if !visited.insert(pgid) {
            return Err(invalid(format!("page {pgid} reached twice")));
        }
        let page = self.page(pgid)?;
        match page.flags {
            FLAG_BRANCH => {
                for i in 0..page.count {
                    let (_, child) = branch_element(page.bytes, i)
                        .map_err(|e| e.within(format!("page {pgid}")))?;
                    self.read_tree(child, depth + 1, visited, into)?;
                }
                Ok(())
            }
            FLAG_LEAF => self
                .read_leaf(&page, depth, visited, into)
                .map_err(|e| e.within(format!("page {pgid}"))),
            other => Err(invalid(format!(
                "page {pgid} has flags {other:#x}, expected branch or leaf"
            ))),
        }
    }

    fn read_leaf(
        &self,
        page: &Page<'_>,
        depth: usize,
        visited: &mut HashSet<u64>,
        into: &mut Bucket,
    ) -> Result<()> {
        for i in 0..page.count {
            let (flags, key, value) = leaf_element(page.bytes, i)?;
            let node = if flags & LEAF_BUCKET != 0 {
                Node::Bucket(self.read_nested(value, depth, visited)?)
            } else {
                Node::Value(value.to_vec())
            };
            into.entries.insert(key.to_vec(), node);
        }
        Ok(())
    }

    /// A bucket stored as a leaf value: header, then either a root pgid or an inline page.
    fn read_nested(
        &self,
        value: &[u8],
        depth: usize,
        visited: &mut HashSet<u64>,
    ) -> Result<Bucket> {
        let root =
            u64_at(value, 0).ok_or_else(|| invalid("bucket header shorter than 16 bytes"))?;
        let sequence =
            u64_at(value, 8).ok_or_else(|| invalid("bucket header shorter than 16 bytes"))?;
        if root != 0 {
            return self.read_bucket(root, sequence, depth + 1, visited);
        }
        let inline = &value[BUCKET_HEADER..];
        let mut bucket = Bucket {
            sequence,
            entries: BTreeMap::new(),
        };
        if inline.is_empty() {
            return Ok(bucket);
        }
        let page = page_from_bytes(inline).map_err(|e| e.within("inline bucket"))?;
        if page.flags != FLAG_LEAF {
            return Err(invalid(format!(
                "inline bucket page has flags {:#x}",
                page.flags
            )));
        }
        for i in 0..page.count {
            let (flags, key, v) =
                leaf_element(page.bytes, i).map_err(|e| e.within("inline bucket"))?;
            if flags & LEAF_BUCKET != 0 {
                // bolt only inlines buckets without sub-buckets
                return Err(invalid("inline bucket contains a sub-bucket"));
            }
            bucket.entries.insert(key.to_vec(), Node::Value(v.to_vec()));
        }
        Ok(bucket)
    }
}

fn page_from_bytes(bytes: &[u8]) -> Result<Page<'_>> {
    let flags = u16_at(bytes, 8).ok_or_else(|| invalid("page header truncated"))?;
    let count = usize::from(u16_at(bytes, 10).ok_or_else(|| invalid("page header truncated"))?);
    if PAGE_HEADER + count * ELEMENT > bytes.len() {
        return Err(invalid(format!(
            "{count} elements do not fit in {} bytes",
            bytes.len()
        )));
    }
    Ok(Page {
        bytes,
        flags,
        count,
    })
}

/// Bytes `[start, start+len)` of the page, or an error naming what ran past the page.
fn span(page: &[u8], start: usize, len: usize, what: &str) -> Result<std::ops::Range<usize>> {
    let end = start
        .checked_add(len)
        .ok_or_else(|| invalid(format!("{what} length overflows")))?;
    if end > page.len() {
        return Err(invalid(format!(
            "{what} runs past its page ({start}+{len} > {})",
            page.len()
        )));
    }
    Ok(start..end)
}

fn leaf_element(page: &[u8], i: usize) -> Result<(u32, &[u8], &[u8])> {
    let at = PAGE_HEADER + i * ELEMENT;
    let field =
        |o| u32_at(page, at + o).ok_or_else(|| invalid(format!("leaf element {i} truncated")));
    let (flags, pos, ksize, vsize) = (field(0)?, field(4)?, field(8)?, field(12)?);
    let key = span(page, at + pos as usize, ksize as usize, "leaf key")?;
    let value = span(page, key.end, vsize as usize, "leaf value")?;
    Ok((flags, &page[key], &page[value]))
}

fn branch_element(page: &[u8], i: usize) -> Result<(&[u8], u64)> {
    let at = PAGE_HEADER + i * ELEMENT;
    let pos = u32_at(page, at).ok_or_else(|| invalid(format!("branch element {i} truncated")))?;
    let ksize =
        u32_at(page, at + 4).ok_or_else(|| invalid(format!("branch element {i} truncated")))?;
    let child =
        u64_at(page, at + 8).ok_or_else(|| invalid(format!("branch element {i} truncated")))?;
    let key = span(page, at + pos as usize, ksize as usize, "branch key")?;
    Ok((&page[key], child))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A tiny bolt page writer for tests: enough of the format to produce files with
    //! branch pages, overflow pages and inline buckets.

    use super::*;

    #[derive(Clone, Debug)]
    pub enum TValue {
        Value(Vec<u8>),
        Bucket(TBucket),
    }

    #[derive(Clone, Debug, Default)]
    pub struct TBucket {
        pub sequence: u64,
        pub entries: Vec<(Vec<u8>, TValue)>,
        /// Store inline (inside the parent's leaf value) instead of on its own pages.
        pub inline: bool,
        /// Split the leaf into pages of at most this many elements under one branch page.
        pub leaf_split: Option<usize>,
    }

    impl TBucket {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn inline(mut self) -> Self {
            self.inline = true;
            self
        }
        pub fn value(mut self, k: &str, v: impl AsRef<[u8]>) -> Self {
            self.entries
                .push((k.as_bytes().to_vec(), TValue::Value(v.as_ref().to_vec())));
            self
        }
        pub fn bucket(mut self, k: &str, b: TBucket) -> Self {
            self.entries
                .push((k.as_bytes().to_vec(), TValue::Bucket(b)));
            self
        }
    }

    pub struct Writer {
        pub page_size: usize,
        /// Pages from pgid 2 on, in id order, each possibly spanning several pages.
        pages: Vec<Vec<u8>>,
        next: u64,
    }

    impl Writer {
        pub fn new(page_size: usize) -> Self {
            Writer {
                page_size,
                pages: Vec::new(),
                next: 2,
            }
        }

        fn leaf_bytes(&mut self, id: u64, entries: &[(Vec<u8>, TValue)]) -> Vec<u8> {
            let mut data = Vec::new();
            let mut elems = Vec::new();
            let n = entries.len();
            for (i, (k, v)) in entries.iter().enumerate() {
                let (flags, val) = match v {
                    TValue::Value(v) => (0u32, v.clone()),
                    TValue::Bucket(b) => (LEAF_BUCKET, self.bucket_value(b)),
                };
                let elem_at = PAGE_HEADER + i * ELEMENT;
                let data_at = PAGE_HEADER + n * ELEMENT + data.len();
                elems.extend_from_slice(&flags.to_le_bytes());
                elems.extend_from_slice(&((data_at - elem_at) as u32).to_le_bytes());
                elems.extend_from_slice(&(k.len() as u32).to_le_bytes());
                elems.extend_from_slice(&(val.len() as u32).to_le_bytes());
                data.extend_from_slice(k);
                data.extend_from_slice(&val);
            }
            let mut page = header(id, FLAG_LEAF, n as u16, 0);
            page.extend(elems);
            page.extend(data);
            page
        }

        fn bucket_value(&mut self, b: &TBucket) -> Vec<u8> {
            let mut v = Vec::new();
            if b.inline {
                v.extend_from_slice(&0u64.to_le_bytes());
                v.extend_from_slice(&b.sequence.to_le_bytes());
                v.extend(self.leaf_bytes(0, &b.entries));
            } else {
                let root = self.write_bucket(b);
                v.extend_from_slice(&root.to_le_bytes());
                v.extend_from_slice(&b.sequence.to_le_bytes());
            }
            v
        }

        /// Writes a non-inline bucket's pages (children first), returns its root pgid.
        pub fn write_bucket(&mut self, b: &TBucket) -> u64 {
            match b.leaf_split {
                Some(n) if b.entries.len() > n => {
                    let mut children = Vec::new();
                    for chunk in b.entries.chunks(n) {
                        let bytes = self.leaf_bytes(0, chunk);
                        children.push((chunk[0].0.clone(), self.push(bytes)));
                    }
                    let mut page = header(0, FLAG_BRANCH, children.len() as u16, 0);
                    let mut keys = Vec::new();
                    for (i, (k, id)) in children.iter().enumerate() {
                        let elem_at = PAGE_HEADER + i * ELEMENT;
                        let key_at = PAGE_HEADER + children.len() * ELEMENT + keys.len();
                        page.extend_from_slice(&((key_at - elem_at) as u32).to_le_bytes());
                        page.extend_from_slice(&(k.len() as u32).to_le_bytes());
                        page.extend_from_slice(&id.to_le_bytes());
                        keys.extend_from_slice(k);
                    }
                    page.extend(keys);
                    self.push(page)
                }
                _ => {
                    let bytes = self.leaf_bytes(0, &b.entries);
                    self.push(bytes)
                }
            }
        }

        /// Appends a page (with overflow pages when it is larger than one page), sets its id.
        fn push(&mut self, mut bytes: Vec<u8>) -> u64 {
            let id = self.next;
            let span = bytes.len().div_ceil(self.page_size).max(1);
            bytes[0..8].copy_from_slice(&id.to_le_bytes());
            bytes[12..16].copy_from_slice(&((span - 1) as u32).to_le_bytes());
            bytes.resize(span * self.page_size, 0);
            self.next += span as u64;
            self.pages.push(bytes);
            id
        }

        /// Assembles the file: two metas (txids `txid` and `txid - 1`), then the pages.
        pub fn finish(self, root: u64, txid: u64) -> Vec<u8> {
            let ps = self.page_size;
            let mut out = vec![0u8; 2 * ps];
            for p in &self.pages {
                out.extend_from_slice(p);
            }
            let high = self.next;
            for (slot, t) in [(txid % 2, txid), ((txid + 1) % 2, txid.saturating_sub(1))] {
                let m = meta_page(slot, ps as u32, root, 0, high, t);
                out[slot as usize * ps..slot as usize * ps + m.len()].copy_from_slice(&m);
            }
            out
        }
    }

    pub fn header(id: u64, flags: u16, count: u16, overflow: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(PAGE_HEADER);
        h.extend_from_slice(&id.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&count.to_le_bytes());
        h.extend_from_slice(&overflow.to_le_bytes());
        h
    }

    pub fn meta_page(
        id: u64,
        page_size: u32,
        root: u64,
        seq: u64,
        high: u64,
        txid: u64,
    ) -> Vec<u8> {
        let mut p = header(id, 0x04, 0, 0);
        let mut m = Vec::new();
        m.extend_from_slice(&MAGIC.to_le_bytes());
        m.extend_from_slice(&VERSION.to_le_bytes());
        m.extend_from_slice(&page_size.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&root.to_le_bytes());
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&u64::MAX.to_le_bytes()); // freelist not persisted
        m.extend_from_slice(&high.to_le_bytes());
        m.extend_from_slice(&txid.to_le_bytes());
        let sum = fnv1a64(&m);
        m.extend_from_slice(&sum.to_le_bytes());
        p.extend(m);
        p
    }

    /// A complete file whose root bucket holds `root`'s entries.
    pub fn build(root: &TBucket, page_size: usize, txid: u64) -> Vec<u8> {
        let mut w = Writer::new(page_size);
        let root_id = w.write_bucket(root);
        w.finish(root_id, txid)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn sample() -> TBucket {
        TBucket::new().bucket(
            "v1",
            TBucket::new().value("version", [6u8]).bucket(
                "k8s.io",
                TBucket::new().bucket(
                    "images",
                    TBucket::new().bucket(
                        "example.local/pause:3.9",
                        TBucket::new().bucket(
                            "target",
                            TBucket::new()
                                .inline()
                                .value("digest", "sha256:09cc")
                                .value("mediatype", "application/vnd.oci.image.manifest.v1+json")
                                .value("size", [0xa8, 0x06]),
                        ),
                    ),
                ),
            ),
        )
    }

    fn decoded(bytes: &[u8]) -> BoltDb {
        BoltDb::from_bytes(Path::new("/test/meta.db"), bytes).unwrap()
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn nested_and_inline_buckets_decode() {
        let db = decoded(&build(&sample(), 4096, 44));
        assert_eq!(db.txid, 44);
        let target = db
            .root
            .path(&[
                b"v1",
                b"k8s.io",
                b"images",
                b"example.local/pause:3.9",
                b"target",
            ])
            .unwrap();
        assert_eq!(target.get_str(b"digest"), Some("sha256:09cc"));
        assert_eq!(target.get(b"size"), Some(&[0xa8, 0x06][..]));
        assert_eq!(
            db.root.bucket(b"v1").unwrap().get(b"version"),
            Some(&[6u8][..])
        );
    }

    #[test]
    fn the_newer_meta_wins_and_a_torn_newer_meta_falls_back() {
        let bytes = build(&sample(), 4096, 7);
        assert_eq!(decoded(&bytes).txid, 7);
        let mut torn = bytes.clone();
        torn[4096 + 30] ^= 0xff; // txid 7 lives in page 1; break its checksum
        assert_eq!(decoded(&torn).txid, 6);
    }

    #[test]
    fn a_torn_meta_zero_is_survived_by_probing_for_meta_one() {
        let mut bytes = build(&sample(), 1024, 5);
        bytes[16..20].copy_from_slice(&[0, 0, 0, 0]); // magic of page 0 gone
        assert_eq!(decoded(&bytes).txid, 5);
    }

    #[test]
    fn branch_pages_and_overflow_pages_decode() {
        let mut many = TBucket::new();
        for i in 0..300 {
            many = many.value(&format!("key-{i:04}"), format!("value-{i}"));
        }
        many.leaf_split = Some(64);
        let big = vec![0x5a; 10_000];
        let root = TBucket::new()
            .bucket("many", many)
            .bucket("big", TBucket::new().value("blob", &big));
        let db = decoded(&build(&root, 4096, 3));
        let many = db.root.bucket(b"many").unwrap();
        assert_eq!(many.entries.len(), 300);
        assert_eq!(many.get_str(b"key-0299"), Some("value-299"));
        assert_eq!(db.root.bucket(b"big").unwrap().get(b"blob"), Some(&big[..]));
    }

    #[test]
    fn garbage_is_a_clear_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        std::fs::write(&path, vec![0x42u8; 20_000]).unwrap();
        let err = BoltDb::read(&path).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Bolt { .. }), "{text}");
        assert!(
            text.contains("meta.db") && text.contains("no valid meta page"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(BoltDb::read(&empty), Err(Error::Bolt { .. })));
        assert!(matches!(
            BoltDb::read(&dir.path().join("nope.db")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn pages_that_lie_about_themselves_are_rejected() {
        let good = build(&sample(), 4096, 2);
        // page id field differs from its pgid
        let mut wrong_id = good.clone();
        wrong_id[2 * 4096] = 99;
        let e = BoltDb::from_bytes(Path::new("x"), &wrong_id)
            .unwrap_err()
            .to_string();
        assert!(e.contains("carries id 99"), "{e}");
        // a freelist-flagged page where a leaf should be
        let mut wrong_flags = good.clone();
        wrong_flags[2 * 4096 + 8] = 0x10;
        let e = BoltDb::from_bytes(Path::new("x"), &wrong_flags)
            .unwrap_err()
            .to_string();
        assert!(e.contains("flags 0x10"), "{e}");
        // an element whose key runs past the page
        let mut long_key = good.clone();
        long_key[2 * 4096 + 16 + 8..2 * 4096 + 16 + 12].copy_from_slice(&100_000u32.to_le_bytes());
        let e = BoltDb::from_bytes(Path::new("x"), &long_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("runs past its page"), "{e}");
        // too many elements for the page
        let mut count = good;
        count[2 * 4096 + 10..2 * 4096 + 12].copy_from_slice(&u16::MAX.to_le_bytes());
        let e = BoltDb::from_bytes(Path::new("x"), &count)
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not fit"), "{e}");
    }

    #[test]
    fn a_root_beyond_the_high_water_mark_is_rejected() {
        let mut bytes = vec![0u8; 4 * 4096];
        for slot in 0..2u64 {
            let m = meta_page(slot, 4096, 9, 0, 4, slot + 1);
            bytes[slot as usize * 4096..slot as usize * 4096 + m.len()].copy_from_slice(&m);
        }
        let e = BoltDb::from_bytes(Path::new("x"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("page 9 outside"), "{e}");
    }

    #[test]
    fn a_branch_cycle_is_rejected() {
        let mut bytes = vec![0u8; 4 * 4096];
        for slot in 0..2u64 {
            let m = meta_page(slot, 4096, 2, 0, 4, slot + 1);
            bytes[slot as usize * 4096..slot as usize * 4096 + m.len()].copy_from_slice(&m);
        }
        let mut branch = header(2, FLAG_BRANCH, 1, 0);
        branch.extend_from_slice(&16u32.to_le_bytes());
        branch.extend_from_slice(&1u32.to_le_bytes());
        branch.extend_from_slice(&2u64.to_le_bytes()); // points at itself
        branch.push(b'a');
        bytes[2 * 4096..2 * 4096 + branch.len()].copy_from_slice(&branch);
        let e = BoltDb::from_bytes(Path::new("x"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("reached twice"), "{e}");
    }

    #[test]
    fn a_file_under_an_exclusive_flock_is_still_read() {
        use nix::fcntl::{Flock, FlockArg};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        std::fs::write(&path, build(&sample(), 4096, 12)).unwrap();
        // containerd's lock: a reader that flocks would fail (non-blocking) or hang here.
        let held = Flock::lock(
            std::fs::File::open(&path).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let db = BoltDb::read(&path).unwrap();
        assert_eq!(db.txid, 12);
        drop(held);
    }

    #[test]
    fn reading_a_file_gives_the_same_tree_as_decoding_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let bytes = build(&sample(), 4096, 10);
        std::fs::write(&path, &bytes).unwrap();
        let db = BoltDb::read(&path).unwrap();
        assert_eq!(db.root, decoded(&bytes).root);
        assert_eq!(db.path, path);
    }
}
