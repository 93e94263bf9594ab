//! The TOC cache (`--toc-cache DIR`, default `/var/lib/snapmend/toc`): after a pass over a
//! verified blob, the layer's expected-entry model (the very [`LayerModel`] the verifier
//! compares with, each regular file's content sha256 included) is kept, so that a later
//! verification needs no blob: metadata checks only `lstat`, full checks hash the files.
//!
//! File format, version 1 (little endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `SMENDTOC` |
//! | 4 | format version (1) |
//! | 1 | 1 = base layer (the model's only option that changes it), else 0 |
//! | 2 + n | diffID, length-prefixed ASCII |
//! | 8 | length of the decompressed body (bounded on read) |
//! | 8 | length of the compressed body |
//! | … | body: zstd of postcard([`TocBody`]) |
//! | 32 | sha256 of everything before it |
//!
//! postcard (a documented, stable serde wire format) keeps the model's byte paths compact and
//! decodes fast; zstd shrinks the repetitive paths a few times more. The checksum covers the
//! header too, so a flipped byte anywhere is caught before anything is decoded.
//!
//! The key is the diffID plus the base flag: the model of a layer depends on its headers and on
//! whether it is a base layer, nothing else (what the lower layers hold is applied after
//! loading, as after a blob pass). A file that fails any check is removed and rebuilt from the
//! blob, never trusted.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::expected::{EntryKind, InodeId, LayerModel};
use crate::error::{Error, Result};
use crate::lru_dir::{create_private_dir, evict_least_recently_used, touch};

const MAGIC: &[u8; 8] = b"SMENDTOC";
/// Bumped whenever the model's meaning or layout changes: an older file is then rebuilt.
pub const FORMAT_VERSION: u32 = 1;
const CHECKSUM_LEN: usize = 32;
/// A decompressed body larger than this is refused (a layer of millions of entries is ~100 MiB).
const MAX_BODY: u64 = 1 << 30;
const SUFFIX: &str = ".toc";

/// Why a TOC file was not trusted: the `reason` label of `snapmend_agent_toc_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The file could not be read.
    Unreadable,
    /// Shorter than its header says (an interrupted copy, a full disk).
    Truncated,
    /// The sha256 over the file does not match (a flipped bit, an edit).
    Checksum,
    /// Not a snapmend TOC at all.
    Magic,
    /// Another format version (written by an older or newer snapmend).
    Version,
    /// Made for another diffID or layer kind than the name says.
    DiffIdMismatch,
    /// The body is larger than snapmend decodes.
    TooLarge,
    /// The checksum held but the body does not decode.
    Undecodable,
    /// A regular file lacks its content digest or anchor.
    Incomplete,
}

impl RejectReason {
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Unreadable => "unreadable",
            RejectReason::Truncated => "truncated",
            RejectReason::Checksum => "checksum",
            RejectReason::Magic => "magic",
            RejectReason::Version => "version",
            RejectReason::DiffIdMismatch => "diffid_mismatch",
            RejectReason::TooLarge => "too_large",
            RejectReason::Undecodable => "undecodable",
            RejectReason::Incomplete => "incomplete",
        }
    }
}

/// Why a TOC's bytes cannot be trusted: the class (for the metric) and a line for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Process-wide counters of the TOC cache. Lookups happen deep in the layer engine, so they
/// count here; the agent registers these same counters (clones share the value) on /metrics.
#[derive(Clone, Default)]
pub struct TocCounters {
    pub hits: Counter,
    pub misses: Counter,
    pub writes: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
}

impl TocCounters {
    #[cfg(test)]
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.label().into(),
            })
            .get()
    }
}

/// The counters of this process.
pub fn counters() -> &'static TocCounters {
    static COUNTERS: std::sync::LazyLock<TocCounters> = std::sync::LazyLock::new(Default::default);
    &COUNTERS
}

/// What a TOC holds besides its key.
#[derive(Serialize, Deserialize)]
pub struct TocBody {
    pub model: LayerModel,
    /// Per regular-file inode, the path its tar data was compared at in the blob pass (the
    /// member of a hardlink group the others must share an inode with).
    pub anchors: Vec<(InodeId, Vec<u8>)>,
}

/// The lookup key of one layer's TOC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocKey {
    pub diff_id: String,
    pub base: bool,
}

impl TocKey {
    /// `sha256-<hex>-base.toc` or `sha256-<hex>-upper.toc`; `None` for a diffID that is not a
    /// plain `algorithm:hex` digest (it never names a file then).
    pub fn file_name(&self) -> Option<String> {
        let (alg, hex) = self.diff_id.split_once(':')?;
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !plain(alg) || !plain(hex) {
            return None;
        }
        let kind = if self.base { "base" } else { "upper" };
        Some(format!("{alg}-{hex}-{kind}{SUFFIX}"))
    }
}

/// Serialises a finished model into a TOC file's bytes.
pub fn encode(key: &TocKey, model: &LayerModel, anchors: &HashMap<InodeId, Vec<u8>>) -> Vec<u8> {
    let mut anchors: Vec<(InodeId, Vec<u8>)> =
        anchors.iter().map(|(i, p)| (*i, p.clone())).collect();
    anchors.sort();
    #[derive(Serialize)]
    struct BodyRef<'a> {
        model: &'a LayerModel,
        anchors: &'a [(InodeId, Vec<u8>)],
    }
    let plain = postcard::to_stdvec(&BodyRef {
        model,
        anchors: &anchors,
    })
    .unwrap_or_default();
    let packed = zstd::bulk::compress(&plain, 3).unwrap_or_default();
    let mut out = Vec::with_capacity(packed.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(u8::from(key.base));
    let id = key.diff_id.as_bytes();
    out.extend_from_slice(&(id.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&id[..id.len().min(u16::MAX as usize)]);
    out.extend_from_slice(&(plain.len() as u64).to_le_bytes());
    out.extend_from_slice(&(packed.len() as u64).to_le_bytes());
    out.extend_from_slice(&packed);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Reads fixed fields off the front of a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Rejection> {
        if self.0.len() < n {
            return Err(reject(RejectReason::Truncated, "truncated header"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> std::result::Result<u64, Rejection> {
        let b: [u8; 8] = self.take(8)?.try_into().unwrap_or_default();
        Ok(u64::from_le_bytes(b))
    }
}

/// The fixed header fields, read without trusting them.
struct Header {
    version: u32,
    base: u8,
    diff_id: String,
    plain_len: u64,
    packed_len: u64,
}

fn read_header<'a>(c: &mut Cursor<'a>) -> std::result::Result<Header, Rejection> {
    if c.take(MAGIC.len())? != MAGIC {
        return Err(reject(
            RejectReason::Magic,
            "not a snapmend TOC (bad magic)",
        ));
    }
    let version = u32::from_le_bytes(c.take(4)?.try_into().unwrap_or_default());
    let base = c.take(1)?[0];
    let id_len = u16::from_le_bytes(c.take(2)?.try_into().unwrap_or_default());
    let diff_id = String::from_utf8_lossy(c.take(id_len as usize)?).into_owned();
    Ok(Header {
        version,
        base,
        diff_id,
        plain_len: c.u64()?,
        packed_len: c.u64()?,
    })
}

/// Why a file failed its checksum: shorter than its (untrusted) header says, or damaged.
fn checksum_failure(bytes: &[u8]) -> Rejection {
    let mut c = Cursor(bytes);
    if let Ok(h) = read_header(&mut c) {
        let header_len = (bytes.len() - c.0.len()) as u64;
        let declared = header_len
            .saturating_add(h.packed_len)
            .saturating_add(CHECKSUM_LEN as u64);
        if declared > bytes.len() as u64 {
            return reject(
                RejectReason::Truncated,
                format!(
                    "truncated: {} bytes, the header says {declared}",
                    bytes.len()
                ),
            );
        }
    }
    reject(
        RejectReason::Checksum,
        "checksum mismatch (damaged or truncated)",
    )
}

/// Checks and decodes a TOC file's bytes for `key`; `Err` says why it cannot be trusted.
pub fn decode(key: &TocKey, bytes: &[u8]) -> std::result::Result<TocBody, Rejection> {
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN {
        return Err(reject(
            RejectReason::Truncated,
            format!("truncated ({} bytes)", bytes.len()),
        ));
    }
    let (data, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(data).as_slice() != sum {
        return Err(checksum_failure(bytes));
    }
    let mut c = Cursor(data);
    let h = read_header(&mut c)?;
    if h.version != FORMAT_VERSION {
        return Err(reject(
            RejectReason::Version,
            format!(
                "format version {}, this snapmend reads {FORMAT_VERSION}",
                h.version
            ),
        ));
    }
    let base = match h.base {
        0 => false,
        1 => true,
        b => {
            return Err(reject(
                RejectReason::Undecodable,
                format!("bad layer kind byte {b}"),
            ));
        }
    };
    if h.diff_id != key.diff_id || base != key.base {
        return Err(reject(
            RejectReason::DiffIdMismatch,
            format!(
                "made for diffID {} (base {base}), not {} (base {})",
                h.diff_id, key.diff_id, key.base
            ),
        ));
    }
    if h.plain_len > MAX_BODY {
        return Err(reject(
            RejectReason::TooLarge,
            format!("body of {} bytes exceeds {MAX_BODY}", h.plain_len),
        ));
    }
    if h.packed_len != c.0.len() as u64 {
        return Err(reject(
            RejectReason::Undecodable,
            format!("body is {} bytes, header says {}", c.0.len(), h.packed_len),
        ));
    }
    let undecodable = |d: String| reject(RejectReason::Undecodable, d);
    let plain = zstd::bulk::decompress(c.0, h.plain_len as usize)
        .map_err(|e| undecodable(format!("body does not decompress: {e}")))?;
    if plain.len() as u64 != h.plain_len {
        return Err(undecodable("body length differs from the header".into()));
    }
    let body: TocBody = postcard::from_bytes(&plain)
        .map_err(|e| undecodable(format!("body does not decode: {e}")))?;
    check_body(key, &body).map_err(|d| reject(RejectReason::Incomplete, d))?;
    Ok(body)
}

/// What the verifier relies on: the model's kind matches the key, every regular file has its
/// content digest and an anchor that names it.
fn check_body(key: &TocKey, body: &TocBody) -> std::result::Result<(), String> {
    let m = &body.model;
    if m.is_base() != key.base {
        return Err("model's layer kind differs from the header".into());
    }
    let anchors: HashMap<InodeId, &[u8]> = body
        .anchors
        .iter()
        .map(|(i, p)| (*i, p.as_slice()))
        .collect();
    for (path, id) in m.entries() {
        let inode = m.inode(id);
        if !matches!(inode.kind, EntryKind::File) {
            continue;
        }
        if inode.content_sha256.is_none() {
            return Err(format!(
                "{}: no content digest",
                String::from_utf8_lossy(path)
            ));
        }
        let Some(anchor) = anchors.get(&id) else {
            return Err(format!("{}: no anchor", String::from_utf8_lossy(path)));
        };
        if m.get(anchor).map(|(i, _)| i) != Some(id) {
            return Err(format!(
                "anchor {} does not name its inode",
                String::from_utf8_lossy(anchor)
            ));
        }
    }
    Ok(())
}

/// The TOC cache directory with its size cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// What a lookup found.
pub enum Lookup {
    Found(TocBody),
    Absent,
    /// A file was there but failed a check; it has been removed. `reason` is for the log.
    Rejected {
        path: PathBuf,
        why: Rejection,
    },
}

impl TocCache {
    pub const DEFAULT_DIR: &'static str = "/var/lib/snapmend/toc";
    /// Default cap: TOCs are a few MiB for large layers, so this keeps thousands.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

    pub fn path(&self, key: &TocKey) -> Option<PathBuf> {
        key.file_name().map(|n| self.dir.join(n))
    }

    /// Whether a TOC file for `key` is there (not yet checked); counts a miss when not.
    pub fn probe(&self, key: &TocKey) -> bool {
        let there = self
            .path(key)
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok());
        if !there {
            counters().misses.inc();
        }
        there
    }

    /// The TOC for `key`, checked. A file failing any check is removed (never trusted).
    pub fn lookup(&self, key: &TocKey) -> Lookup {
        let Some(path) = self.path(key) else {
            return Lookup::Absent;
        };
        let stats = counters();
        let decoded = match std::fs::read(&path) {
            Ok(bytes) => decode(key, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stats.misses.inc();
                return Lookup::Absent;
            }
            Err(e) => Err(reject(
                RejectReason::Unreadable,
                format!("cannot read: {e}"),
            )),
        };
        match decoded {
            Ok(body) => {
                stats.hits.inc();
                touch(&path);
                Lookup::Found(body)
            }
            Err(why) => {
                stats
                    .rejected
                    .get_or_create(&ReasonLabel {
                        reason: why.reason.label().into(),
                    })
                    .inc();
                let _ = std::fs::remove_file(&path);
                Lookup::Rejected { path, why }
            }
        }
    }

    /// Writes a TOC atomically (temp file 0600, fsync, rename, fsync of the directory), then
    /// evicts the least recently used TOCs beyond the cap.
    pub fn store(&self, key: &TocKey, bytes: &[u8]) -> Result<PathBuf> {
        let dest = self.path(key).ok_or_else(|| Error::Layer {
            digest: key.diff_id.clone(),
            reason: "diffID is not a digest; no TOC kept".into(),
        })?;
        create_private_dir(&self.dir)?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let mut n = 0u32;
        let (tmp, mut file) = loop {
            let tmp = self
                .dir
                .join(format!(".{name}.{}.{n}.tmp", std::process::id()));
            match std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(&tmp, e)),
            }
        };
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &dest));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&dest, e));
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        counters().writes.inc();
        // Temp files of a crashed writer are an hour old at least before they go.
        sweep_stale_temps(&self.dir);
        evict_least_recently_used(&self.dir, self.max_bytes, &dest, Duration::ZERO, |p| {
            p.extension().is_some_and(|e| e == "toc")
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        });
        Ok(dest)
    }
}

fn sweep_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > Duration::from_secs(3600));
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::expected::ModelOptions;
    use crate::layer::header::{HeaderType, TarHeader};

    fn key(base: bool) -> TocKey {
        TocKey {
            diff_id: format!("sha256:{}", "ab".repeat(32)),
            base,
        }
    }

    /// A model with every kind of entry, a hardlink and xattrs; files carry digests.
    fn sample(base: bool) -> (LayerModel, HashMap<InodeId, Vec<u8>>) {
        let mut m = LayerModel::new(ModelOptions::new(base));
        let mut anchors = HashMap::new();
        let mut hdrs = Vec::new();
        let mut d = TarHeader::new(HeaderType::Dir, b"etc/");
        d.mode = 0o755;
        hdrs.push(d);
        let mut f = TarHeader::new(HeaderType::Regular, b"etc/passwd");
        f.mode = 0o644;
        f.size = 5;
        f.uid = 7;
        f.xattrs.insert(b"user.note".to_vec(), b"kept".to_vec());
        hdrs.push(f);
        let mut l = TarHeader::new(HeaderType::Hardlink, b"etc/passwd-");
        l.linkname = b"etc/passwd".to_vec();
        l.mode = 0o644;
        hdrs.push(l);
        let mut s = TarHeader::new(HeaderType::Symlink, b"bin");
        s.linkname = b"usr/bin".to_vec();
        hdrs.push(s);
        let mut c = TarHeader::new(HeaderType::Char, b"dev/null");
        c.devmajor = 1;
        c.devminor = 3;
        hdrs.push(c);
        hdrs.push(TarHeader::new(HeaderType::Regular, b"gone/.wh.old"));
        hdrs.push(TarHeader::new(HeaderType::Regular, b"opq/.wh..wh..opq"));
        for (i, h) in hdrs.iter().enumerate() {
            if let Ok(crate::layer::expected::Applied::File { path, inode }) = m.apply(h, i as u64)
            {
                m.set_content_sha256(inode, [i as u8; 32]);
                anchors.insert(inode, path);
            }
        }
        m.finish().expect("finish");
        (m, anchors)
    }

    fn same_model(a: &LayerModel, b: &LayerModel) {
        let ea: Vec<_> = a
            .entries()
            .map(|(p, i)| (p.to_vec(), a.inode(i).clone()))
            .collect();
        let eb: Vec<_> = b
            .entries()
            .map(|(p, i)| (p.to_vec(), b.inode(i).clone()))
            .collect();
        assert_eq!(ea, eb);
        assert_eq!(a.root_opaque(), b.root_opaque());
        assert_eq!(a.is_base(), b.is_base());
        assert_eq!(a.hardlink_groups().len(), b.hardlink_groups().len());
        assert_eq!(a.dir_time_order(), b.dir_time_order());
    }

    #[test]
    fn a_model_round_trips_with_every_field() {
        for base in [true, false] {
            let (m, anchors) = sample(base);
            let bytes = encode(&key(base), &m, &anchors);
            let body = decode(&key(base), &bytes).expect("decodes");
            same_model(&m, &body.model);
            let back: HashMap<_, _> = body.anchors.into_iter().collect();
            assert_eq!(back, anchors);
            assert!(m.get(b"etc/passwd").unwrap().1.content_sha256.is_some());
            assert_eq!(
                m.get(b"etc/passwd").unwrap().0,
                m.get(b"etc/passwd-").unwrap().0,
                "hardlink group kept"
            );
            if !base {
                assert_eq!(m.get(b"gone/old").unwrap().1.kind, EntryKind::Whiteout);
                assert!(body.model.get(b"opq").unwrap().1.opaque);
            }
        }
    }

    #[test]
    fn a_changed_byte_anywhere_is_detected() {
        let (m, anchors) = sample(false);
        let bytes = encode(&key(false), &m, &anchors);
        // Every position: header, body and checksum alike.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let Err(why) = decode(&key(false), &bad) else {
                panic!("flipped byte {i} of {} was accepted", bytes.len());
            };
            assert!(!why.detail.is_empty());
        }
        for len in [0, 7, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode(&key(false), &bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn a_wrong_version_key_or_layer_kind_is_refused_even_with_a_good_checksum() {
        let (m, anchors) = sample(true);
        let mut bytes = encode(&key(true), &m, &anchors);
        let reseal = |b: &mut Vec<u8>| {
            let n = b.len() - CHECKSUM_LEN;
            b.truncate(n);
            let sum = Sha256::digest(&b[..]);
            b.extend_from_slice(&sum);
        };
        bytes[8] = 2;
        reseal(&mut bytes);
        let err = decode(&key(true), &bytes).err().expect("version 2 refused");
        assert!(err.detail.contains("version 2"), "{err}");
        assert_eq!(err.reason, RejectReason::Version);
        let bytes = encode(&key(true), &m, &anchors);
        let err = decode(&key(false), &bytes).err().expect("kind refused");
        assert!(err.detail.contains("base"), "{err}");
        assert_eq!(err.reason, RejectReason::DiffIdMismatch);
        let other = TocKey {
            diff_id: format!("sha256:{}", "cd".repeat(32)),
            base: true,
        };
        assert_eq!(
            decode(&other, &bytes).err().map(|r| r.reason),
            Some(RejectReason::DiffIdMismatch),
            "other diffID refused"
        );
    }

    #[test]
    fn a_file_without_a_content_digest_is_refused() {
        let (m, mut anchors) = sample(true);
        anchors.clear();
        let bytes = encode(&key(true), &m, &anchors);
        let err = decode(&key(true), &bytes).err().expect("refused");
        assert!(err.detail.contains("anchor"), "{err}");
        assert_eq!(err.reason, RejectReason::Incomplete);
    }

    #[test]
    fn files_are_private_stored_atomically_and_bad_ones_removed() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cache = TocCache {
            dir: d.path().join("toc"),
            max_bytes: 1 << 20,
        };
        let (m, anchors) = sample(true);
        let path = cache
            .store(&key(true), &encode(&key(true), &m, &anchors))
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&cache.dir), 0o700);
        assert_eq!(
            std::fs::read_dir(&cache.dir).unwrap().count(),
            1,
            "no temp left"
        );
        assert!(matches!(cache.lookup(&key(true)), Lookup::Found(_)));
        assert!(matches!(cache.lookup(&key(false)), Lookup::Absent));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let truncated_before = counters().rejected_for(RejectReason::Truncated);
        let Lookup::Rejected { why, .. } = cache.lookup(&key(true)) else {
            panic!("a truncated TOC was used");
        };
        assert_eq!(why.reason, RejectReason::Truncated, "{why}");
        assert!(counters().rejected_for(RejectReason::Truncated) > truncated_before);
        assert!(!path.exists(), "a rejected TOC is removed");
    }

    #[test]
    fn rejections_are_classified_and_lookups_counted() {
        let d = tempfile::tempdir().unwrap();
        let cache = TocCache {
            dir: d.path().to_path_buf(),
            max_bytes: 1 << 20,
        };
        let k = TocKey {
            diff_id: format!("sha256:{}", "5e".repeat(32)),
            base: false,
        };
        let (m, anchors) = sample(false);
        let c = counters();
        let (hits, misses, writes) = (c.hits.get(), c.misses.get(), c.writes.get());
        assert!(matches!(cache.lookup(&k), Lookup::Absent));
        let path = cache.store(&k, &encode(&k, &m, &anchors)).unwrap();
        assert!(matches!(cache.lookup(&k), Lookup::Found(_)));
        // Counters are process-wide and tests run in parallel: at least ours were counted.
        assert!(c.misses.get() > misses && c.hits.get() > hits && c.writes.get() > writes);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let before = c.rejected_for(RejectReason::Checksum);
        let Lookup::Rejected { why, path: p } = cache.lookup(&k) else {
            panic!("a damaged TOC was used");
        };
        assert_eq!(why.reason, RejectReason::Checksum, "{why}");
        assert_eq!(p, path);
        assert!(c.rejected_for(RejectReason::Checksum) > before);
        std::fs::write(&path, b"not a toc at all, but long enough to be read").unwrap();
        let Lookup::Rejected { why, .. } = cache.lookup(&k) else {
            panic!("garbage was used");
        };
        assert_eq!(why.reason, RejectReason::Checksum, "{why}");
    }

    #[test]
    fn the_size_cap_evicts_the_least_recently_used_toc() {
        let d = tempfile::tempdir().unwrap();
        let (m, anchors) = sample(true);
        let one = encode(&key(true), &m, &anchors).len() as u64;
        let cache = TocCache {
            dir: d.path().to_path_buf(),
            max_bytes: 2 * one + one / 2,
        };
        let keys: Vec<TocKey> = (1..=3u8)
            .map(|n| TocKey {
                diff_id: format!("sha256:{}", hex::encode([n; 32])),
                base: true,
            })
            .collect();
        let old = std::time::SystemTime::now() - Duration::from_secs(100);
        for (i, k) in keys.iter().take(2).enumerate() {
            let p = cache.store(k, &encode(k, &m, &anchors)).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(old + Duration::from_secs(i as u64)).unwrap();
        }
        // Using the first makes the second the least recently used.
        assert!(matches!(cache.lookup(&keys[0]), Lookup::Found(_)));
        cache
            .store(&keys[2], &encode(&keys[2], &m, &anchors))
            .unwrap();
        assert!(cache.path(&keys[0]).unwrap().exists());
        assert!(!cache.path(&keys[1]).unwrap().exists(), "LRU evicted");
        assert!(cache.path(&keys[2]).unwrap().exists());
    }

    #[test]
    fn only_plain_digests_name_files() {
        let k = |d: &str| TocKey {
            diff_id: d.into(),
            base: false,
        };
        assert_eq!(
            k("sha256:abc").file_name().as_deref(),
            Some("sha256-abc-upper.toc")
        );
        assert_eq!(k("sha256:../x").file_name(), None);
        assert_eq!(k("nocolon").file_name(), None);
    }
}
