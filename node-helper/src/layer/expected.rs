//! The expected-entry model: what containerd's applier leaves in a snapshot's `fs` for one
//! layer, computed from the tar headers alone (containerd-layout.md §6.2–6.4). Verify and
//! repair both compare against this model, so they can never disagree.
//!
//! Paths are relative to `fs`, components joined by `/`, no leading slash; the `fs` root
//! itself is the empty path and is never an entry.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::header::{HeaderType, TarHeader, Timestamp};
use super::root_path::{SymlinkLoop, resolve_root_path};

pub type InodeId = usize;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// A uid or gid of -1 in the tar: `lchown` leaves that id as it is.
const UNCHANGED_ID: u32 = u32::MAX;
/// Go's continuity `RootPath` gives up after this many symlinks.

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    File,
    Symlink(Vec<u8>),
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// Overlay whiteout: char device 0:0, mode 0000.
    Whiteout,
}

impl EntryKind {
    pub fn is_dir(&self) -> bool {
        matches!(self, EntryKind::Dir)
    }

    /// Short human name, used in finding details.
    pub fn describe(&self) -> &'static str {
        match self {
            EntryKind::Dir => "directory",
            EntryKind::File => "regular file",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::Char { .. } => "char device",
            EntryKind::Block { .. } => "block device",
            EntryKind::Fifo => "fifo",
            EntryKind::Whiteout => "whiteout",
        }
    }
}

/// One inode as the applier leaves it. Hardlinked paths share one inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777`); meaningless for symlinks.
    pub mode: u32,
    /// A second acceptable mode: containerd applies a hardlink header's mode only when its
    /// link name happens to exist relative to containerd's working directory.
    pub alt_mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: u64,
    /// `None` when the tar does not determine it (implicit dirs, whiteouts).
    pub mtime: Option<Timestamp>,
    pub atime: Option<Timestamp>,
    /// Non-`trusted.*` xattrs from the tar.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `trusted.overlay.opaque=y` (non-base layers only).
    pub opaque: bool,
    /// Created by `mkparent`, never named by a dir header: mode/owner/xattrs come from the
    /// first lower layer that has a directory there (I/O side resolves them).
    pub implicit: bool,
    /// Ordinal of the header whose data is this file's content.
    pub data_header: Option<u64>,
    /// Made by `mkparent` in a non-base layer, so the lower dir's xattrs were copied at
    /// creation; they stay when a dir header later names it (a dir merge adds, never removes).
    pub made_by_mkparent: bool,
    /// Implicit dirs of non-base layers: the implicit dir this one was made in, whose
    /// attributes (maybe setgid) come from the lowers (see [`LayerModel::resolve_mkparent_dir`]).
    pub setgid_parent: Option<InodeId>,
    /// sha256 of a regular file's content, when the pass hashed its tar data (it does so
    /// only to keep a TOC; the TOC's full-content check compares the disk with it).
    pub content_sha256: Option<[u8; 32]>,
}

/// The directory `mkparent` found at a path in the first lower layer that has the path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LowerDir {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Inode {
    fn new(kind: EntryKind) -> Self {
        Inode {
            kind,
            mode: 0,
            alt_mode: None,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: None,
            atime: None,
            xattrs: BTreeMap::new(),
            opaque: false,
            implicit: false,
            data_header: None,
            made_by_mkparent: false,
            setgid_parent: None,
            content_sha256: None,
        }
    }

    pub fn mode_ok(&self, actual: u32) -> bool {
        actual == self.mode || self.alt_mode == Some(actual)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tar entry {name:?}: {reason} (containerd's unpack fails on this layer)")]
pub struct ModelError {
    pub name: String,
    pub reason: String,
}

/// What applying one header did, for the stream driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing happens for this header (global PAX header, an entry resolving to the root).
    Skipped,
    /// A regular file was created at `path`; the header's data is its content.
    File { path: Vec<u8>, inode: InodeId },
    /// Any other change.
    Other,
}

/// Decides, from a hardlink's raw link name, whether containerd's chmod reaches the inode.
pub type HardlinkChmodProbe = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

pub struct ModelOptions {
    /// A base layer (no parent): whiteouts and opaque markers delete, nothing is written.
    pub base: bool,
    /// Whether containerd applies a hardlink header's mode to the shared inode. Its source
    /// guards the chmod with an `lstat` of the raw link name; containerd 1.6.20 was observed
    /// applying it (tests/ compare against a real unpack), so `new` says yes. Verify accepts
    /// either outcome through `Inode::alt_mode`.
    pub hardlink_chmod_applies: HardlinkChmodProbe,
}

impl ModelOptions {
    /// containerd as observed: a hardlink header's mode lands on the shared inode.
    pub fn new(base: bool) -> Self {
        ModelOptions {
            base,
            hardlink_chmod_applies: Box::new(|_| true),
        }
    }
}

pub struct LayerModel {
    opts: ModelOptions,
    entries: BTreeMap<Vec<u8>, InodeId>,
    inodes: Vec<Inode>,
    root_opaque: bool,
    /// containerd's `unpackedPaths`: never shrinks.
    unpacked: HashSet<Vec<u8>>,
    /// Dir headers in stream order: cleaned name, atime, mtime (times re-applied at the end).
    dir_headers: Vec<(Vec<u8>, Timestamp, Timestamp)>,
    finished: bool,
}

/// A finished model as a TOC stores it: what `apply` and `finish` computed, nothing of the
/// stream state (`unpacked`). The options are the TOC's key, except `base`, kept to check it.
#[derive(Serialize)]
struct StoredModelRef<'a> {
    base: bool,
    entries: &'a BTreeMap<Vec<u8>, InodeId>,
    inodes: &'a [Inode],
    root_opaque: bool,
    dir_headers: &'a [(Vec<u8>, Timestamp, Timestamp)],
}

#[derive(Deserialize)]
struct StoredModel {
    base: bool,
    entries: BTreeMap<Vec<u8>, InodeId>,
    inodes: Vec<Inode>,
    root_opaque: bool,
    dir_headers: Vec<(Vec<u8>, Timestamp, Timestamp)>,
}

impl Serialize for LayerModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredModelRef {
            base: self.opts.base,
            entries: &self.entries,
            inodes: &self.inodes,
            root_opaque: self.root_opaque,
            dir_headers: &self.dir_headers,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for LayerModel {
    /// A stored model, finished; inode references are checked so that no lookup can panic.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let m = StoredModel::deserialize(d)?;
        let n = m.inodes.len();
        if let Some(id) = m.entries.values().find(|&&i| i >= n) {
            return Err(D::Error::custom(format!("entry names inode {id} of {n}")));
        }
        if let Some(id) = m
            .inodes
            .iter()
            .find_map(|i| i.setgid_parent.filter(|&p| p >= n))
        {
            return Err(D::Error::custom(format!("setgid parent {id} of {n}")));
        }
        Ok(LayerModel {
            opts: ModelOptions::new(m.base),
            entries: m.entries,
            inodes: m.inodes,
            root_opaque: m.root_opaque,
            unpacked: HashSet::new(),
            dir_headers: m.dir_headers,
            finished: true,
        })
    }
}

fn join(parent: &[u8], base: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        base.to_vec()
    } else {
        let mut p = Vec::with_capacity(parent.len() + 1 + base.len());
        p.extend_from_slice(parent);
        p.push(b'/');
        p.extend_from_slice(base);
        p
    }
}

/// Go's `filepath.Clean`, as components. Leading `..` survive only for relative names.
pub fn clean_components(name: &[u8]) -> Vec<&[u8]> {
    let rooted = name.first() == Some(&b'/');
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.last().is_some_and(|l| *l != b"..") {
                    out.pop();
                } else if !rooted {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Display form of a model path: absolute inside the layer.
pub fn display_path(path: &[u8]) -> String {
    let mut s = String::with_capacity(path.len() + 1);
    s.push('/');
    s.push_str(&String::from_utf8_lossy(path));
    s
}

impl LayerModel {
    pub fn new(opts: ModelOptions) -> Self {
        LayerModel {
            opts,
            entries: BTreeMap::new(),
            inodes: Vec::new(),
            root_opaque: false,
            unpacked: HashSet::new(),
            dir_headers: Vec::new(),
            finished: false,
        }
    }

    /// Whether this is a base layer's model (whiteouts delete instead of being kept).
    pub fn is_base(&self) -> bool {
        self.opts.base
    }

    /// Records the sha256 of a regular file's tar data.
    pub fn set_content_sha256(&mut self, id: InodeId, digest: [u8; 32]) {
        if let Some(inode) = self.inodes.get_mut(id) {
            inode.content_sha256 = Some(digest);
        }
    }

    /// `trusted.overlay.opaque=y` on the `fs` directory itself.
    pub fn root_opaque(&self) -> bool {
        self.root_opaque
    }

    pub fn entries(&self) -> impl Iterator<Item = (&[u8], InodeId)> {
        self.entries.iter().map(|(p, &i)| (p.as_slice(), i))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, path: &[u8]) -> Option<(InodeId, &Inode)> {
        self.entries.get(path).map(|&i| (i, &self.inodes[i]))
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id]
    }

    /// Dirs `mkparent` made in this (non-base) layer that still exist, in path order
    /// (parents first): the I/O side looks each up in the lowers and calls
    /// [`LayerModel::resolve_mkparent_dir`].
    pub fn mkparent_dirs(&self) -> Vec<(Vec<u8>, InodeId)> {
        self.entries
            .iter()
            .filter(|(_, i)| self.inodes[**i].made_by_mkparent)
            .map(|(p, i)| (p.clone(), *i))
            .collect()
    }

    /// containerd's `mkparent` after its `mkdir`: with a lower dir at the path, copy its mode,
    /// owner and (non-`trusted.*`) xattrs; a dir header that named the path later replaced
    /// mode and owner but only added xattrs. Without one, the dir keeps 0755/root, except
    /// that `mkdir` inside a setgid dir took that dir's gid (here: an implicit parent whose
    /// attributes came from a lower; call for parents before children).
    pub fn resolve_mkparent_dir(&mut self, id: InodeId, lower: Option<LowerDir>) {
        let setgid_parent = self.inodes[id].setgid_parent;
        let inherited = setgid_parent
            .map(|p| &self.inodes[p])
            .filter(|p| p.mode & 0o2000 != 0)
            .map(|p| p.gid);
        let inode = &mut self.inodes[id];
        match lower {
            Some(l) => {
                if inode.implicit {
                    inode.mode = l.mode & 0o7777;
                    inode.uid = l.uid;
                    inode.gid = l.gid;
                }
                for (k, v) in l.xattrs {
                    if !k.starts_with(b"trusted.") {
                        inode.xattrs.entry(k).or_insert(v);
                    }
                }
            }
            None => {
                if inode.implicit
                    && let Some(gid) = inherited
                {
                    inode.gid = gid;
                }
            }
        }
    }

    /// Paths of every inode that has more than one path (hardlink groups), in path order.
    pub fn hardlink_groups(&self) -> HashMap<InodeId, Vec<Vec<u8>>> {
        let mut all: HashMap<InodeId, Vec<Vec<u8>>> = HashMap::new();
        for (p, &i) in &self.entries {
            all.entry(i).or_default().push(p.clone());
        }
        all.retain(|_, v| v.len() > 1);
        all
    }

    /// Explicit directories in the order their times are applied (stream order of headers).
    pub fn dir_time_order(&self) -> Vec<Vec<u8>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (name, _, _) in self.dir_headers.iter().rev() {
            let comps: Vec<&[u8]> = name
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            if let Ok(p) = self.root_path(&comps)
                && !p.is_empty()
                && self
                    .entries
                    .get(&p)
                    .is_some_and(|&i| self.inodes[i].kind.is_dir())
                && seen.insert(p.clone())
            {
                out.push(p);
            }
        }
        out.reverse();
        out
    }

    /// continuity's `RootPath`: follow symlinks of this layer chroot-style (absolute targets
    /// and `..` are clamped at the layer root), every component including the last.
    fn root_path(&self, comps: &[&[u8]]) -> Result<Vec<u8>, String> {
        resolve_root_path(comps.iter().copied(), |p| {
            let &i = self.entries.get(p)?;
            match &self.inodes[i].kind {
                EntryKind::Symlink(target) => Some(target.clone()),
                _ => None,
            }
        })
        .map_err(|SymlinkLoop| "too many levels of symbolic links".to_string())
    }

    fn remove_all(&mut self, path: &[u8]) {
        self.entries.remove(path);
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        let doomed: Vec<Vec<u8>> = self.entries.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    fn descendants(&self, dir: &[u8]) -> Vec<Vec<u8>> {
        if dir.is_empty() {
            return self.entries.keys().cloned().collect();
        }
        let mut lo = dir.to_vec();
        lo.push(b'/');
        let mut hi = dir.to_vec();
        hi.push(b'/' + 1);
        self.entries.range(lo..hi).map(|(k, _)| k.clone()).collect()
    }

    fn new_inode(&mut self, inode: Inode) -> InodeId {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// `mkparent`: create missing ancestors as implicit 0755 dirs; a non-dir is ENOTDIR.
    /// `mkdir` inside a setgid dir gives the new dir that dir's gid (the kernel's BSD group
    /// semantics; containerd's chmod 0755 then drops the inherited setgid bit, not the gid).
    fn mkparent(&mut self, parent: &[u8]) -> Result<(), String> {
        let mut end = 0;
        let mut above: Option<InodeId> = None;
        loop {
            let next = parent[end..]
                .iter()
                .position(|&b| b == b'/')
                .map(|p| end + p)
                .unwrap_or(parent.len());
            let prefix = &parent[..next];
            match self.entries.get(prefix) {
                Some(&i) if self.inodes[i].kind.is_dir() => above = Some(i),
                Some(_) => return Err(format!("{}: not a directory", display_path(prefix))),
                None => {
                    let mut dir = Inode::new(EntryKind::Dir);
                    dir.mode = 0o755;
                    dir.implicit = true;
                    dir.made_by_mkparent = !self.opts.base;
                    if let Some(p) = above.map(|p| &self.inodes[p]) {
                        if !p.implicit {
                            if p.mode & 0o2000 != 0 {
                                dir.gid = p.gid;
                            }
                        } else if !self.opts.base {
                            // Its attributes (maybe setgid) come from a lower: decided later.
                            dir.setgid_parent = above;
                        }
                    }
                    let id = self.new_inode(dir);
                    self.entries.insert(prefix.to_vec(), id);
                    above = Some(id);
                }
            }
            if next == parent.len() {
                return Ok(());
            }
            end = next + 1;
        }
    }

    /// Applies one header in stream order. `ordinal` numbers headers from 0.
    pub fn apply(&mut self, hdr: &TarHeader, ordinal: u64) -> Result<Applied, ModelError> {
        let err = |reason: String| ModelError {
            name: String::from_utf8_lossy(&hdr.name).into_owned(),
            reason,
        };
        // A PAX global header goes through containerd's loop like any entry (mkparent,
        // whiteout conversion, removal of what is at its path) and is only ignored after that.
        let comps = clean_components(&hdr.name);
        let Some((&base, parent_comps)) = comps.split_last() else {
            return Ok(Applied::Skipped);
        };
        if base == b".." {
            return Ok(Applied::Skipped);
        }
        let parent = self.root_path(parent_comps).map_err(err)?;
        let path = join(&parent, base);
        if !parent.is_empty() {
            self.mkparent(&parent).map_err(err)?;
        }

        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            if base == OPAQUE_MARKER {
                self.apply_opaque(&parent);
                return Ok(Applied::Other);
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(err("invalid whiteout name".into()));
            }
            let target = join(&parent, hidden);
            if self.opts.base {
                self.remove_all(&target);
            } else {
                if self.entries.contains_key(&target) {
                    return Err(err(format!(
                        "whiteout {}: file exists",
                        display_path(&target)
                    )));
                }
                let mut wh = Inode::new(EntryKind::Whiteout);
                if hdr.uid != UNCHANGED_ID {
                    wh.uid = hdr.uid;
                }
                if hdr.gid != UNCHANGED_ID {
                    wh.gid = hdr.gid;
                }
                let id = self.new_inode(wh);
                self.entries.insert(target, id);
            }
            return Ok(Applied::Other);
        }

        let kind = match hdr.kind {
            HeaderType::Unsupported(t) => {
                return Err(err(format!("unhandled tar header type {t}")));
            }
            k => k,
        };
        if let Some(&existing) = self.entries.get(&path)
            && !(self.inodes[existing].kind.is_dir() && kind == HeaderType::Dir)
        {
            self.remove_all(&path);
        }

        let id = match kind {
            HeaderType::Dir => match self.entries.get(&path) {
                Some(&i) => i,
                None => self.new_inode(Inode::new(EntryKind::Dir)),
            },
            HeaderType::Regular => {
                let mut f = Inode::new(EntryKind::File);
                f.size = hdr.size;
                f.data_header = Some(ordinal);
                self.new_inode(f)
            }
            HeaderType::Hardlink => self.hardlink_target(&hdr.linkname).map_err(err)?,
            HeaderType::Symlink if hdr.linkname.is_empty() => {
                // symlink(2) refuses an empty target (ENOENT), and so containerd's unpack fails.
                return Err(err("symlink with an empty target".into()));
            }
            HeaderType::Symlink => {
                self.new_inode(Inode::new(EntryKind::Symlink(hdr.linkname.clone())))
            }
            HeaderType::Char => self.new_inode(Inode::new(EntryKind::Char {
                major: hdr.devmajor,
                minor: hdr.devminor,
            })),
            HeaderType::Block => self.new_inode(Inode::new(EntryKind::Block {
                major: hdr.devmajor,
                minor: hdr.devminor,
            })),
            HeaderType::Fifo => self.new_inode(Inode::new(EntryKind::Fifo)),
            HeaderType::GlobalPax => {
                self.unpacked.insert(path);
                return Ok(Applied::Skipped);
            }
            HeaderType::Unsupported(_) => return Ok(Applied::Skipped),
        };
        self.entries.insert(path.clone(), id);

        let chmod_applies = match kind {
            HeaderType::Symlink => false,
            HeaderType::Hardlink => (self.opts.hardlink_chmod_applies)(&hdr.linkname),
            _ => true,
        };
        let inode = &mut self.inodes[id];
        // lchown: -1 leaves an id alone, but the kernel clears setuid, setgid (if
        // group-executable) and file capabilities of non-directories on every chown.
        if hdr.uid != UNCHANGED_ID {
            inode.uid = hdr.uid;
        }
        if hdr.gid != UNCHANGED_ID {
            inode.gid = hdr.gid;
        }
        if !inode.kind.is_dir() {
            inode.mode &= !0o4000;
            if inode.mode & 0o010 != 0 {
                inode.mode &= !0o2000;
            }
            inode.xattrs.remove(b"security.capability".as_slice());
        }
        let user_xattrs_allowed = matches!(inode.kind, EntryKind::File | EntryKind::Dir);
        for (k, v) in &hdr.xattrs {
            if k.starts_with(b"trusted.") || (!user_xattrs_allowed && k.starts_with(b"user.")) {
                continue;
            }
            inode.xattrs.insert(k.clone(), v.clone());
        }
        let header_mode = hdr.mode & 0o7777;
        if kind == HeaderType::Hardlink {
            let (chosen, other) = if chmod_applies {
                (header_mode, inode.mode)
            } else {
                (inode.mode, header_mode)
            };
            inode.mode = chosen;
            inode.alt_mode = (other != chosen).then_some(other);
        } else if chmod_applies {
            inode.mode = header_mode;
            inode.alt_mode = None;
        }
        // containerd: boundTime(latestTime(atime, mtime)), boundTime(mtime).
        let mtime = hdr.mtime.bounded();
        let atime = hdr
            .atime
            .filter(|a| *a > hdr.mtime)
            .unwrap_or(hdr.mtime)
            .bounded();
        inode.mtime = Some(mtime);
        inode.atime = Some(atime);
        if kind == HeaderType::Dir {
            inode.implicit = false;
            let cleaned: Vec<u8> = comps.join(&b'/');
            self.dir_headers.push((cleaned, atime, mtime));
        }
        self.unpacked.insert(path.clone());
        Ok(if kind == HeaderType::Regular {
            Applied::File { path, inode: id }
        } else {
            Applied::Other
        })
    }

    fn apply_opaque(&mut self, dir: &[u8]) {
        if !self.opts.base {
            if dir.is_empty() {
                self.root_opaque = true;
            } else if let Some(&i) = self.entries.get(dir) {
                self.inodes[i].opaque = true;
            }
            return;
        }
        // Base layer: delete every child not unpacked from this tar (with its subtree).
        for p in self.descendants(dir) {
            if self.entries.contains_key(&p) && !self.unpacked.contains(&p) {
                self.remove_all(&p);
            }
        }
    }

    /// containerd's `hardlinkRootPath`: the link name's parent is resolved inside the layer,
    /// its last component is not followed; the target must exist in this layer.
    fn hardlink_target(&self, linkname: &[u8]) -> Result<InodeId, String> {
        let (ppath, base) = match linkname.iter().rposition(|&b| b == b'/') {
            Some(i) => (&linkname[..i], &linkname[i + 1..]),
            None => (&[][..], linkname),
        };
        if base.is_empty() || base == b"." || base == b".." {
            return Err("hardlink to a directory or outside the layer".into());
        }
        let comps: Vec<&[u8]> = ppath.split(|&b| b == b'/').collect();
        let parent = self.root_path(&comps)?;
        let target = join(&parent, base);
        match self.entries.get(&target) {
            None => Err(format!(
                "hardlink target {}: no such file in this layer",
                display_path(&target)
            )),
            Some(&i) if self.inodes[i].kind.is_dir() => Err("hardlink to a directory".into()),
            Some(&i) => Ok(i),
        }
    }

    /// Re-applies directory times in header order (containerd does this after the stream).
    /// A dir header whose path no longer resolves makes containerd's unpack fail.
    pub fn finish(&mut self) -> Result<(), ModelError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let headers = std::mem::take(&mut self.dir_headers);
        for (name, atime, mtime) in &headers {
            let comps: Vec<&[u8]> = name
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let err = |reason: String| ModelError {
                name: String::from_utf8_lossy(name).into_owned(),
                reason,
            };
            let p = self.root_path(&comps).map_err(err)?;
            if p.is_empty() {
                continue;
            }
            match self.entries.get(&p) {
                Some(&i) => {
                    self.inodes[i].mtime = Some(*mtime);
                    self.inodes[i].atime = Some(*atime);
                }
                None => return Err(err("directory removed before its times were applied".into())),
            }
        }
        self.dir_headers = headers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(kind: HeaderType, name: &str) -> TarHeader {
        TarHeader::new(kind, name.as_bytes())
    }
    fn file(name: &str, mode: u32, size: u64) -> TarHeader {
        let mut t = h(HeaderType::Regular, name);
        t.mode = mode;
        t.size = size;
        t
    }
    fn dir(name: &str, mode: u32) -> TarHeader {
        let mut t = h(HeaderType::Dir, name);
        t.mode = mode;
        t
    }
    fn link(kind: HeaderType, name: &str, target: &str) -> TarHeader {
        let mut t = h(kind, name);
        t.linkname = target.as_bytes().to_vec();
        t.mode = 0o777;
        t
    }
    fn build(base: bool, hdrs: &[TarHeader]) -> Result<LayerModel, ModelError> {
        let mut m = LayerModel::new(ModelOptions::new(base));
        for (i, hd) in hdrs.iter().enumerate() {
            m.apply(hd, i as u64)?;
        }
        m.finish()?;
        Ok(m)
    }
    fn paths(m: &LayerModel) -> Vec<String> {
        m.entries()
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
    fn kind<'a>(m: &'a LayerModel, p: &str) -> &'a EntryKind {
        &m.get(p.as_bytes()).expect(p).1.kind
    }

    #[test]
    fn a_pax_global_header_makes_parents_and_removes_its_path_like_any_entry() {
        let m = build(
            true,
            &[
                file("victim", 0o644, 1),
                h(HeaderType::GlobalPax, "victim"),
                h(HeaderType::GlobalPax, "tmp/GlobalHead.1.1"),
            ],
        )
        .unwrap();
        assert_eq!(
            paths(&m),
            vec!["tmp"],
            "victim removed, tmp made by mkparent"
        );
        assert!(m.get(b"tmp").unwrap().1.implicit);
    }

    #[test]
    fn owner_minus_one_leaves_that_id_alone() {
        let mut f = file("f", 0o644, 0);
        f.uid = u32::MAX;
        f.gid = 7;
        let mut g = file("g", 0o644, 0);
        g.uid = 5;
        g.gid = u32::MAX;
        let m = build(true, &[f, g]).unwrap();
        let owner = |p: &str| {
            let i = m.get(p.as_bytes()).unwrap().1;
            (i.uid, i.gid)
        };
        assert_eq!(owner("f"), (0, 7));
        assert_eq!(owner("g"), (5, 0));
    }

    #[test]
    fn a_symlink_with_an_empty_target_fails_like_containerd() {
        let Err(e) = build(true, &[link(HeaderType::Symlink, "l", "")]) else {
            panic!("an empty symlink target was accepted");
        };
        assert!(e.reason.contains("empty target"), "{e:?}");
    }

    #[test]
    fn atime_is_the_later_of_atime_and_mtime_then_bounded() {
        // An atime past 2262 is later than the mtime, so both end at the epoch bound rule:
        // containerd picks the later time first and bounds it after.
        let mut f = file("f", 0o644, 0);
        f.mtime = Timestamp { sec: 100, nsec: 0 };
        f.atime = Some(Timestamp {
            sec: 10_000_000_000,
            nsec: 0,
        });
        let mut g = file("g", 0o644, 0);
        g.mtime = Timestamp { sec: 100, nsec: 0 };
        g.atime = Some(Timestamp { sec: 50, nsec: 0 });
        let m = build(true, &[f, g]).unwrap();
        let times = |p: &str| {
            let i = m.get(p.as_bytes()).unwrap().1;
            (i.atime.unwrap().sec, i.mtime.unwrap().sec)
        };
        assert_eq!(times("f"), (0, 100));
        assert_eq!(times("g"), (100, 100));
    }

    #[test]
    fn names_are_cleaned_like_go_filepath_clean() {
        let c = |s: &str| {
            clean_components(s.as_bytes())
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(c("./a//b/./c/"), "a/b/c");
        assert_eq!(c("/../../etc/passwd"), "etc/passwd");
        assert_eq!(c("../x"), "../x");
        assert_eq!(c("a/../../b"), "../b");
        assert_eq!(c("a/b/.."), "a");
        assert_eq!(c("./"), "");
    }

    #[test]
    fn dot_dot_and_absolute_names_are_clamped_inside_the_layer() {
        let m = build(
            true,
            &[
                file("../../evil", 0o644, 1),
                file("/etc/passwd", 0o644, 1),
                file("a/../../../b", 0o600, 1),
            ],
        )
        .unwrap();
        assert_eq!(paths(&m), vec!["b", "etc", "etc/passwd", "evil"]);
        assert!(m.get(b"etc").unwrap().1.implicit);
    }

    #[test]
    fn entries_resolving_to_the_root_are_skipped() {
        let mut m = LayerModel::new(ModelOptions::new(true));
        assert_eq!(m.apply(&dir("./", 0o700), 0).unwrap(), Applied::Skipped);
        assert_eq!(m.apply(&file("..", 0o644, 0), 1).unwrap(), Applied::Skipped);
        assert_eq!(
            m.apply(&h(HeaderType::GlobalPax, "pax_global_header"), 2)
                .unwrap(),
            Applied::Skipped
        );
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn implicit_parents_are_0755_root_owned_without_times() {
        let m = build(true, &[file("a/b/c", 0o644, 3)]).unwrap();
        for p in ["a", "a/b"] {
            let (_, i) = m.get(p.as_bytes()).unwrap();
            assert_eq!(
                (i.kind.clone(), i.mode, i.uid, i.gid, i.implicit, i.mtime),
                (EntryKind::Dir, 0o755, 0, 0, true, None)
            );
        }
        let (_, f) = m.get(b"a/b/c").unwrap();
        assert_eq!((f.size, f.mode, f.data_header), (3, 0o644, Some(0)));
    }

    #[test]
    fn implicit_dirs_made_in_a_setgid_dir_take_its_gid() {
        let mut sg = dir("d", 0o2775);
        sg.gid = 50;
        let mut plain = dir("p", 0o775);
        plain.gid = 60;
        let m = build(
            true,
            &[
                sg,
                plain,
                file("d/x/y/f", 0o644, 0),
                file("p/x/f", 0o644, 0),
            ],
        )
        .unwrap();
        let gid_mode = |p: &str| {
            let i = m.get(p.as_bytes()).unwrap().1;
            (i.gid, i.mode)
        };
        // The setgid bit itself is dropped by containerd's chmod 0755; x/y is made in x,
        // which is not setgid.
        assert_eq!(gid_mode("d/x"), (50, 0o755));
        assert_eq!(gid_mode("d/x/y"), (0, 0o755));
        assert_eq!(gid_mode("p/x"), (0, 0o755));
        // A setgid dir that only becomes setgid after the child was made passes nothing on.
        let mut late = dir("q", 0o2775);
        late.gid = 70;
        let m = build(true, &[file("q/x/f", 0o644, 0), late]).unwrap();
        assert_eq!(m.get(b"q/x").unwrap().1.gid, 0);
    }

    #[test]
    fn non_base_implicit_dirs_inherit_from_a_setgid_dir_resolved_from_the_lowers() {
        let mut m = build(false, &[file("m/n/f", 0o644, 0)]).unwrap();
        let (pm, _) = m.get(b"m").unwrap();
        let (pn, n) = m.get(b"m/n").unwrap();
        assert_eq!(n.setgid_parent, Some(pm));
        // The I/O side found a setgid dir with gid 1 at `m` in a lower, nothing at `m/n`.
        m.resolve_mkparent_dir(
            pm,
            Some(LowerDir {
                mode: 0o2775,
                gid: 1,
                ..LowerDir::default()
            }),
        );
        m.resolve_mkparent_dir(pn, None);
        assert_eq!((m.inode(pn).gid, m.inode(pn).mode), (1, 0o755));
        assert_eq!((m.inode(pm).gid, m.inode(pm).mode), (1, 0o2775));
        let paths: Vec<Vec<u8>> = m.mkparent_dirs().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec![b"m".to_vec(), b"m/n".to_vec()]);
    }

    #[test]
    fn a_dir_header_after_mkparent_keeps_the_xattrs_copied_from_the_lower() {
        let mut d = dir("a", 0o700);
        d.uid = 33;
        d.xattrs.insert(b"user.mine".to_vec(), b"header".to_vec());
        let mut m = build(false, &[file("a/g", 0o644, 0), d]).unwrap();
        let (ia, a) = m.get(b"a").unwrap();
        assert!(!a.implicit && a.made_by_mkparent);
        let mut xattrs = BTreeMap::new();
        xattrs.insert(b"user.a".to_vec(), b"lower".to_vec());
        xattrs.insert(b"user.mine".to_vec(), b"lower".to_vec());
        xattrs.insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
        m.resolve_mkparent_dir(
            ia,
            Some(LowerDir {
                mode: 0o2775,
                uid: 1,
                gid: 1,
                xattrs,
            }),
        );
        let a = m.inode(ia);
        assert_eq!(
            (a.mode, a.uid),
            (0o700, 33),
            "the header's mode and owner win"
        );
        let got: Vec<(&[u8], &[u8])> = a
            .xattrs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![(&b"user.a"[..], &b"lower"[..]), (b"user.mine", b"header")]
        );
        // Base layers have no lowers: nothing to resolve.
        let m = build(true, &[file("a/g", 0o644, 0)]).unwrap();
        assert!(m.mkparent_dirs().is_empty());
    }

    #[test]
    fn an_explicit_dir_after_its_children_makes_the_implicit_dir_explicit() {
        let mut d = dir("a", 0o700);
        d.uid = 5;
        d.mtime = Timestamp { sec: 77, nsec: 0 };
        let m = build(true, &[file("a/f", 0o644, 0), d]).unwrap();
        let (_, a) = m.get(b"a").unwrap();
        assert_eq!(
            (a.mode, a.uid, a.implicit, a.mtime),
            (0o700, 5, false, Some(Timestamp { sec: 77, nsec: 0 }))
        );
    }

    #[test]
    fn same_path_twice_last_wins_and_dirs_merge() {
        let mut d1 = dir("d", 0o755);
        d1.xattrs.insert(b"user.one".to_vec(), b"1".to_vec());
        d1.mtime = Timestamp { sec: 1, nsec: 0 };
        let mut d2 = dir("d", 0o711);
        d2.xattrs.insert(b"user.two".to_vec(), b"2".to_vec());
        d2.mtime = Timestamp { sec: 2, nsec: 0 };
        let m = build(
            true,
            &[
                d1,
                file("d/x", 0o644, 1),
                d2,
                file("f", 0o600, 5),
                file("f", 0o644, 9),
            ],
        )
        .unwrap();
        let (_, d) = m.get(b"d").unwrap();
        assert_eq!(d.mode, 0o711);
        assert_eq!(d.xattrs.len(), 2, "old xattrs are kept on a merge");
        assert_eq!(d.mtime, Some(Timestamp { sec: 2, nsec: 0 }));
        assert!(m.get(b"d/x").is_some(), "merge keeps children");
        let (_, f) = m.get(b"f").unwrap();
        assert_eq!((f.size, f.mode, f.data_header), (9, 0o644, Some(4)));
    }

    #[test]
    fn a_file_replacing_a_dir_removes_the_subtree() {
        let m = build(
            true,
            &[
                dir("d", 0o755),
                file("d/x", 0o644, 1),
                file("d/y/z", 0o644, 1),
                file("d", 0o644, 2),
            ],
        )
        .unwrap();
        assert_eq!(paths(&m), vec!["d"]);
        assert_eq!(kind(&m, "d"), &EntryKind::File);
    }

    #[test]
    fn a_dir_replacing_a_file_or_symlink_is_a_new_dir() {
        let m = build(
            true,
            &[link(HeaderType::Symlink, "s", "/etc"), dir("s", 0o750)],
        )
        .unwrap();
        assert_eq!(kind(&m, "s"), &EntryKind::Dir);
        assert_eq!(m.get(b"s").unwrap().1.mode, 0o750);
    }

    #[test]
    fn hardlinks_share_one_inode_and_the_link_header_owns_it() {
        let mut target = file("bin/a", 0o4755, 10);
        target
            .xattrs
            .insert(b"security.capability".to_vec(), b"cap".to_vec());
        let mut l = link(HeaderType::Hardlink, "bin/b", "bin/a");
        l.mode = 0o700;
        l.uid = 3;
        l.mtime = Timestamp { sec: 9, nsec: 0 };
        let hdrs = [target, l];
        let m = build(true, &hdrs).unwrap();
        let (ia, a) = m.get(b"bin/a").unwrap();
        let (ib, _) = m.get(b"bin/b").unwrap();
        assert_eq!(ia, ib);
        assert_eq!((a.mode, a.alt_mode), (0o700, Some(0o755)));
        // Without the chmod, lchown has dropped setuid and the capability.
        let mut m = LayerModel::new(ModelOptions {
            base: true,
            hardlink_chmod_applies: Box::new(|_| false),
        });
        for (i, h) in hdrs.iter().enumerate() {
            m.apply(h, i as u64).unwrap();
        }
        let (_, a) = m.get(b"bin/a").unwrap();
        assert_eq!(a.mode, 0o755);
        assert_eq!(a.alt_mode, Some(0o700));
        assert!(a.mode_ok(0o700) && a.mode_ok(0o755) && !a.mode_ok(0o4755));
        assert_eq!(a.uid, 3);
        assert!(a.xattrs.is_empty());
        assert_eq!(a.mtime, Some(Timestamp { sec: 9, nsec: 0 }));
        assert_eq!(m.hardlink_groups().get(&ia).map(Vec::len), Some(2));
    }

    #[test]
    fn hardlink_mode_applies_by_default() {
        let mut l = link(HeaderType::Hardlink, "b", "a");
        l.mode = 0o700;
        let mut m = LayerModel::new(ModelOptions::new(true));
        m.apply(&file("a", 0o644, 1), 0).unwrap();
        m.apply(&l, 1).unwrap();
        let (_, a) = m.get(b"a").unwrap();
        assert_eq!((a.mode, a.alt_mode), (0o700, Some(0o644)));
    }

    #[test]
    fn hardlinks_must_point_inside_this_layer_at_a_non_dir() {
        assert!(build(false, &[link(HeaderType::Hardlink, "b", "lower-only")]).is_err());
        assert!(
            build(
                true,
                &[dir("d", 0o755), link(HeaderType::Hardlink, "b", "d")]
            )
            .is_err()
        );
        assert!(
            build(
                true,
                &[file("a", 0o644, 0), link(HeaderType::Hardlink, "b", "..")]
            )
            .is_err()
        );
        // `../../a` is clamped at the root and finds `a`.
        let m = build(
            true,
            &[
                file("a", 0o644, 0),
                link(HeaderType::Hardlink, "x/b", "../../a"),
            ],
        )
        .unwrap();
        assert_eq!(m.get(b"x/b").unwrap().0, m.get(b"a").unwrap().0);
    }

    #[test]
    fn a_hardlink_to_a_symlink_links_the_symlink_itself() {
        let m = build(
            true,
            &[
                link(HeaderType::Symlink, "s", "/nowhere"),
                link(HeaderType::Hardlink, "t", "s"),
            ],
        )
        .unwrap();
        assert_eq!(kind(&m, "t"), &EntryKind::Symlink(b"/nowhere".to_vec()));
    }

    #[test]
    fn symlinks_in_parents_are_followed_inside_the_layer_only() {
        let m = build(
            true,
            &[
                dir("real", 0o755),
                link(HeaderType::Symlink, "abs", "/real"),
                link(HeaderType::Symlink, "rel", "../../real"),
                link(HeaderType::Symlink, "out", "/../../../../tmp"),
                file("abs/x", 0o644, 1),
                file("rel/y", 0o644, 1),
                file("out/z", 0o644, 1),
            ],
        )
        .unwrap();
        assert!(m.get(b"real/x").is_some());
        assert!(m.get(b"real/y").is_some());
        assert!(
            m.get(b"tmp/z").is_some(),
            "escaping symlink is clamped to the layer root"
        );
        assert_eq!(
            kind(&m, "abs"),
            &EntryKind::Symlink(b"/real".to_vec()),
            "symlink text is verbatim"
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        assert!(
            build(
                true,
                &[
                    link(HeaderType::Symlink, "a", "b"),
                    link(HeaderType::Symlink, "b", "a"),
                    file("a/x", 0o644, 0)
                ]
            )
            .is_err()
        );
    }

    #[test]
    fn a_parent_that_is_a_file_is_enotdir() {
        assert!(build(true, &[file("f", 0o644, 0), file("f/x", 0o644, 0)]).is_err());
    }

    #[test]
    fn overlay_whiteouts_are_0_0_char_devices_owned_by_the_whiteout_entry() {
        let mut wh = file("etc/.wh.passwd", 0o644, 0);
        wh.uid = 7;
        wh.gid = 8;
        let m = build(false, &[wh]).unwrap();
        let (_, w) = m.get(b"etc/passwd").unwrap();
        assert_eq!(
            (w.kind.clone(), w.mode, w.uid, w.gid, w.mtime),
            (EntryKind::Whiteout, 0, 7, 8, None)
        );
        assert!(m.get(b"etc").unwrap().1.implicit);
        assert!(m.get(b"etc/.wh.passwd").is_none());
    }

    #[test]
    fn overlay_whiteout_over_an_entry_of_the_same_layer_fails_like_containerd() {
        assert!(build(false, &[file("a", 0o644, 0), file(".wh.a", 0o644, 0)]).is_err());
    }

    #[test]
    fn invalid_whiteout_names_fail() {
        for name in [".wh..", ".wh.", "d/.wh.."] {
            assert!(build(false, &[file(name, 0o644, 0)]).is_err(), "{name}");
            assert!(build(true, &[file(name, 0o644, 0)]).is_err(), "{name}");
        }
    }

    #[test]
    fn overlay_opaque_marker_sets_the_flag_and_deletes_nothing() {
        let m = build(
            false,
            &[
                file("d/keep", 0o644, 0),
                file("d/.wh..wh..opq", 0o644, 0),
                file(".wh..wh..opq", 0o644, 0),
            ],
        )
        .unwrap();
        assert!(m.get(b"d").unwrap().1.opaque);
        assert!(m.get(b"d/keep").is_some());
        assert!(m.root_opaque());
        assert_eq!(paths(&m), vec!["d", "d/keep"]);
    }

    #[test]
    fn base_whiteout_deletes_earlier_entries_and_writes_nothing() {
        let m = build(
            true,
            &[
                file("d/a", 0o644, 0),
                file("d/b", 0o644, 0),
                file("d/.wh.a", 0o644, 0),
                file("d/.wh.never", 0o644, 0),
            ],
        )
        .unwrap();
        assert_eq!(paths(&m), vec!["d", "d/b"]);
    }

    #[test]
    fn base_opaque_removes_children_not_unpacked_from_this_tar() {
        // `d/sub` is implicit (never unpacked), so the opaque marker removes it with its
        // explicitly unpacked child; `d/kept` was unpacked and stays.
        let m = build(
            true,
            &[
                file("d/sub/x", 0o644, 0),
                file("d/kept", 0o644, 0),
                file("d/.wh..wh..opq", 0o644, 0),
            ],
        )
        .unwrap();
        assert_eq!(paths(&m), vec!["d", "d/kept"]);
        assert!(!m.get(b"d").unwrap().1.opaque);
    }

    #[test]
    fn devices_fifos_and_special_bits() {
        let mut c = h(HeaderType::Char, "dev/null");
        c.devmajor = 1;
        c.devminor = 3;
        c.mode = 0o666;
        let mut b = h(HeaderType::Block, "dev/sda");
        b.devmajor = 8;
        b.mode = 0o660;
        let mut f = h(HeaderType::Fifo, "run/p");
        f.mode = 0o1620;
        let m = build(
            true,
            &[
                c,
                b,
                f,
                dir("tmp", 0o1777),
                file("bin/su", 0o4755, 1),
                file("bin/g", 0o2711, 1),
            ],
        )
        .unwrap();
        assert_eq!(
            kind(&m, "dev/null"),
            &EntryKind::Char { major: 1, minor: 3 }
        );
        assert_eq!(
            kind(&m, "dev/sda"),
            &EntryKind::Block { major: 8, minor: 0 }
        );
        assert_eq!(m.get(b"run/p").unwrap().1.mode, 0o1620);
        assert_eq!(m.get(b"tmp").unwrap().1.mode, 0o1777);
        assert_eq!(m.get(b"bin/su").unwrap().1.mode, 0o4755);
        assert_eq!(m.get(b"bin/g").unwrap().1.mode, 0o2711);
    }

    #[test]
    fn unsupported_types_fail_the_layer() {
        assert!(build(true, &[h(HeaderType::Unsupported(b'S'), "sparse")]).is_err());
        assert!(build(true, &[h(HeaderType::Unsupported(b'7'), "cont")]).is_err());
    }

    #[test]
    fn xattrs_skip_trusted_and_user_on_special_files() {
        let mut f = file("f", 0o644, 0);
        f.xattrs
            .insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
        f.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
        f.xattrs
            .insert(b"security.capability".to_vec(), b"c".to_vec());
        let mut s = link(HeaderType::Symlink, "s", "f");
        s.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
        let m = build(true, &[f, s]).unwrap();
        let keys: Vec<&[u8]> = m
            .get(b"f")
            .unwrap()
            .1
            .xattrs
            .keys()
            .map(Vec::as_slice)
            .collect();
        assert_eq!(keys, vec![b"security.capability".as_slice(), b"user.k"]);
        assert!(m.get(b"s").unwrap().1.xattrs.is_empty());
    }

    #[test]
    fn times_are_bounded_and_atime_is_the_later_one() {
        let mut f = file("f", 0o644, 0);
        f.mtime = Timestamp { sec: -100, nsec: 0 };
        let mut g = file("g", 0o644, 0);
        g.mtime = Timestamp { sec: 50, nsec: 5 };
        g.atime = Some(Timestamp { sec: 10, nsec: 0 });
        let m = build(true, &[f, g]).unwrap();
        assert_eq!(m.get(b"f").unwrap().1.mtime, Some(Timestamp::EPOCH));
        let gi = m.get(b"g").unwrap().1;
        assert_eq!(
            (gi.mtime, gi.atime),
            (
                Some(Timestamp { sec: 50, nsec: 5 }),
                Some(Timestamp { sec: 50, nsec: 5 })
            )
        );
    }

    #[test]
    fn dir_times_are_reapplied_after_the_stream() {
        let mut d = dir("d", 0o755);
        d.mtime = Timestamp { sec: 42, nsec: 0 };
        let m = build(true, &[d, file("d/x", 0o644, 0)]).unwrap();
        assert_eq!(
            m.get(b"d").unwrap().1.mtime,
            Some(Timestamp { sec: 42, nsec: 0 })
        );
        assert_eq!(m.dir_time_order(), vec![b"d".to_vec()]);
    }

    #[test]
    fn a_dir_whited_out_before_its_times_are_applied_fails_like_containerd() {
        assert!(build(true, &[dir("d", 0o755), file(".wh.d", 0o644, 0)]).is_err());
    }
}
