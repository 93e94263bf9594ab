//! Seeded random images for differential tests against containerd's own unpack: 1–4 layers
//! (plain, gzip, zstd) whose entries use a small name space, so that later entries and later
//! layers keep hitting earlier paths. Every entry kind and attribute the applier handles shows
//! up: files of 0 bytes to over 256 KiB, dirs, relative/absolute/dangling symlinks (also used
//! as parents), hardlinks with their own header mode, devices, fifos, whiteouts, opaque dirs,
//! implicit parents, the same path twice, special mode bits, owners, mtimes, xattrs and PAX
//! names. A small tracker of what each layer's `fs` holds keeps every entry to what
//! containerd accepts (no ENOTDIR parent, no hardlink to a missing target, no overlay whiteout
//! over an entry of the same layer, every dir header still there when its times are applied).

use std::collections::{BTreeMap, BTreeSet};

use super::oci_archive::{ImageSpec, ManifestStyle};
use super::tar_layer::{Compression, EntryBody, LayerSpec, TarEntry};

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Paths entries are drawn from: few enough that collisions are frequent.
const PATHS: &[&str] = &[
    "a",
    "b",
    "c",
    "f",
    "g",
    "a/f",
    "a/g",
    "a/sub",
    "a/sub/f",
    "a/sub/g",
    "b/f",
    "b/sub",
    "b/sub/f",
    "c/f",
    "c/g",
    "m/n/f",
    "m/n/o/g",
    "a/sub/deep/h",
    "s",
    "t",
];
/// Paths that are usually directories.
const DIRS: &[&str] = &["a", "b", "c", "a/sub", "b/sub", "m", "m/n"];
const SYMLINK_TARGETS: &[&str] = &[
    "f",
    "a",
    "sub",
    "../a",
    "../../b/sub",
    "/a",
    "/a/sub",
    "/c",
    "/nowhere/x",
    "missing",
    "/",
    ".",
    "../f",
    "/b/f",
    // Longer than the 100-byte ustar link field: a PAX `linkpath` record.
    "/a-symlink-target-that-is-far-too-long-for-the-ustar-header/because-it-goes-on-and-on/and-on",
];

/// What the tracker knows about a path of the layer being built.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(String),
    /// Devices, fifos, overlay whiteouts.
    Other,
}

/// Which paths exist in one layer's `fs` while its tar is applied (containerd-layout.md §6.2).
#[derive(Clone, Debug)]
struct Tracker {
    base: bool,
    /// Final contents of the lower layers, nearest first (mkparent looks there).
    lowers: Vec<BTreeMap<String, Kind>>,
    nodes: BTreeMap<String, Kind>,
    /// Inode number of each non-dir path (hardlinks share one).
    inodes: BTreeMap<String, usize>,
    next_inode: usize,
    /// (inode, path) of every regular-file header: where its bytes were written.
    data_paths: Vec<(usize, String)>,
    unpacked: BTreeSet<String>,
    dir_headers: Vec<Vec<String>>,
}

fn components(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn join(parent: &str, base: &str) -> String {
    if parent.is_empty() {
        base.to_string()
    } else {
        format!("{parent}/{base}")
    }
}

/// continuity's `RootPath` inside one layer: symlinks followed chroot-style (every component,
/// the last one too). Err on a symlink loop, and, when `strict`, when a component that is
/// not a directory has more components after it (Lstat gives ENOTDIR, which RootPath returns).
fn root_path(nodes: &BTreeMap<String, Kind>, comps: &[String], strict: bool) -> Result<String, ()> {
    let mut resolved: Vec<String> = Vec::new();
    let mut queue: std::collections::VecDeque<String> = comps.iter().cloned().collect();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = join(&resolved.join("/"), &c);
        match nodes.get(&candidate) {
            Some(Kind::Symlink(target)) => {
                links += 1;
                if links > 40 {
                    return Err(());
                }
                if target.starts_with('/') {
                    resolved.clear();
                }
                for t in target.split('/').rev() {
                    queue.push_front(t.to_string());
                }
                continue;
            }
            Some(Kind::Dir) | None => {}
            Some(_) if strict && queue.iter().any(|q| !q.is_empty() && q != ".") => {
                return Err(());
            }
            Some(_) => {}
        }
        resolved.push(c);
    }
    Ok(resolved.join("/"))
}

impl Tracker {
    fn new(base: bool) -> Self {
        Tracker {
            base,
            lowers: Vec::new(),
            nodes: BTreeMap::new(),
            inodes: BTreeMap::new(),
            next_inode: 0,
            data_paths: Vec::new(),
            unpacked: BTreeSet::new(),
            dir_headers: Vec::new(),
        }
    }

    fn resolve(&self, comps: &[String]) -> Option<String> {
        root_path(&self.nodes, comps, false).ok()
    }

    fn remove_all(&mut self, path: &str) {
        let prefix = format!("{path}/");
        let keep = |p: &String| p != path && !(p.starts_with(&prefix) || path.is_empty());
        self.nodes.retain(|p, _| keep(p));
        self.inodes.retain(|p, _| keep(p));
    }

    /// `mkparent`: every existing prefix must be a dir; missing ones become (implicit) dirs.
    fn mkparent(&mut self, parent: &str) -> bool {
        if parent.is_empty() {
            return true;
        }
        let parts: Vec<&str> = parent.split('/').collect();
        for i in 1..=parts.len() {
            let prefix = parts[..i].join("/");
            match self.nodes.get(&prefix) {
                Some(Kind::Dir) => {}
                Some(_) => return false,
                None => {
                    if !self.lowers_allow(&prefix) {
                        return false;
                    }
                    self.nodes.insert(prefix, Kind::Dir);
                }
            }
        }
        true
    }

    /// mkparent copies a new dir's attributes from the first lower that has the path; the
    /// lookup (`RootPath` + `Lstat` in that lower) fails the unpack on ENOTDIR.
    fn lowers_allow(&self, path: &str) -> bool {
        let comps = components(path);
        for lower in &self.lowers {
            let Ok(p) = root_path(lower, &comps, true) else {
                return false;
            };
            // Lstat of the resolved path: under a non-dir it is ENOTDIR.
            let parts: Vec<&str> = p.split('/').collect();
            for i in 1..parts.len() {
                if lower
                    .get(&parts[..i].join("/"))
                    .is_some_and(|k| *k != Kind::Dir)
                {
                    return false;
                }
            }
            if lower.contains_key(&p) {
                return true;
            }
        }
        true
    }

    /// Applies an entry; false (and no change) when containerd would refuse it.
    fn try_apply(&mut self, entry: &TarEntry) -> bool {
        let mut next = self.clone();
        if next.apply(entry).is_some() {
            *self = next;
            true
        } else {
            false
        }
    }

    fn apply(&mut self, entry: &TarEntry) -> Option<()> {
        let name = String::from_utf8(entry.name.clone()).ok()?;
        let comps = components(&name);
        let (base, parent_comps) = comps.split_last()?;
        let parent = self.resolve(parent_comps)?;
        if !self.mkparent(&parent) {
            return None;
        }
        let path = join(&parent, base);
        if let Some(hidden) = base.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                if self.base {
                    let prefix = if parent.is_empty() {
                        String::new()
                    } else {
                        format!("{parent}/")
                    };
                    let doomed: Vec<String> = self
                        .nodes
                        .keys()
                        .filter(|p| p.starts_with(&prefix) && !self.unpacked.contains(*p))
                        .cloned()
                        .collect();
                    for p in doomed {
                        self.remove_all(&p);
                    }
                }
                return Some(());
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return None;
            }
            let target = join(&parent, hidden);
            if self.base {
                self.remove_all(&target);
            } else {
                if self.nodes.contains_key(&target) {
                    return None;
                }
                self.next_inode += 1;
                self.inodes.insert(target.clone(), self.next_inode);
                self.nodes.insert(target, Kind::Other);
            }
            return Some(());
        }
        let is_dir = entry.body == EntryBody::Dir;
        if self
            .nodes
            .get(&path)
            .is_some_and(|k| !(is_dir && *k == Kind::Dir))
        {
            self.remove_all(&path);
        }
        let kind = match &entry.body {
            EntryBody::Dir => Kind::Dir,
            EntryBody::File(_) => Kind::File,
            EntryBody::Symlink(t) => Kind::Symlink(String::from_utf8(t.clone()).ok()?),
            EntryBody::Hardlink(target) => {
                let target = String::from_utf8(target.clone()).ok()?;
                let (tparent, tbase) = match target.rfind('/') {
                    Some(i) => (&target[..i], &target[i + 1..]),
                    None => ("", target.as_str()),
                };
                if tbase.is_empty() || tbase == "." || tbase == ".." {
                    return None;
                }
                let tpath = join(&self.resolve(&components(tparent))?, tbase);
                match self.nodes.get(&tpath) {
                    None | Some(Kind::Dir) => return None,
                    Some(k) => k.clone(),
                }
            }
            EntryBody::CharDevice { .. } | EntryBody::BlockDevice { .. } | EntryBody::Fifo => {
                Kind::Other
            }
        };
        let inode = match &entry.body {
            EntryBody::Dir => None,
            EntryBody::Hardlink(_) => {
                let target = String::from_utf8(entry_link(entry)?).ok()?;
                let (tparent, tbase) = match target.rfind('/') {
                    Some(i) => (&target[..i], &target[i + 1..]),
                    None => ("", target.as_str()),
                };
                let tpath = join(&self.resolve(&components(tparent))?, tbase);
                self.inodes.get(&tpath).copied()
            }
            _ => {
                self.next_inode += 1;
                Some(self.next_inode)
            }
        };
        if let Some(id) = inode {
            self.inodes.insert(path.clone(), id);
            if matches!(entry.body, EntryBody::File(_)) {
                self.data_paths.push((id, path.clone()));
            }
        }
        self.nodes.insert(path.clone(), kind);
        self.unpacked.insert(path);
        if is_dir {
            self.dir_headers.push(comps);
        }
        Some(())
    }

    /// After the stream containerd re-applies dir times; a dir header that no longer
    /// resolves to anything fails the unpack.
    fn times_apply(&self) -> bool {
        self.dir_headers.iter().all(|comps| {
            self.resolve(comps)
                .is_some_and(|p| p.is_empty() || self.nodes.contains_key(&p))
        })
    }

    /// A file whose header path was later replaced while a hardlink keeps its inode alive.
    fn keeps_replaced_file_alive(&self) -> bool {
        self.data_paths.iter().any(|(id, path)| {
            self.inodes.get(path) != Some(id) && self.inodes.values().any(|v| v == id)
        })
    }

    fn non_dirs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, k)| **k != Kind::Dir)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

fn entry_link(entry: &TarEntry) -> Option<Vec<u8>> {
    match &entry.body {
        EntryBody::Symlink(t) | EntryBody::Hardlink(t) => Some(t.clone()),
        _ => None,
    }
}

/// Sorts of entries that [`random_image_with`] can leave out (each found a helper bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// xattr values with `\n` bytes (PAX records that are not line-shaped).
    pub newline_in_xattr_values: bool,
    /// A regular file whose header path is replaced later in the same layer while a
    /// hardlink to it survives (the inode's bytes are no longer at the path they were
    /// written to).
    pub hardlink_outlives_first_name: bool,
}

impl Features {
    pub const ALL: Features = Features {
        newline_in_xattr_values: true,
        hardlink_outlives_first_name: true,
    };
}

/// How many entries of each sort a generated image has (for reports of what a seed covered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub layers: usize,
    pub counts: BTreeMap<&'static str, usize>,
}

impl Coverage {
    fn add(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} layers:", self.layers)?;
        for (k, v) in &self.counts {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

struct LayerGen<'a> {
    rng: &'a mut SplitMix64,
    features: Features,
    tracker: Tracker,
    entries: Vec<TarEntry>,
    coverage: Coverage,
    /// Paths of the lower layers (whiteout and opaque targets).
    lower_paths: &'a BTreeSet<String>,
}

impl LayerGen<'_> {
    fn random_mode(&mut self, dir: bool) -> u32 {
        let common: &[u32] = if dir {
            &[0o755, 0o700, 0o1777, 0o2775, 0o555, 0o750]
        } else {
            &[
                0o644, 0o755, 0o600, 0o4755, 0o2755, 0o6711, 0o1644, 0o000, 0o444,
            ]
        };
        if self.rng.chance(60) {
            *self.rng.pick(common)
        } else {
            (self.rng.below(0o10000)) as u32
        }
    }

    fn decorate(&mut self, mut entry: TarEntry, dir: bool) -> TarEntry {
        entry.mode = self.random_mode(dir);
        if self.rng.chance(40) {
            let ids = [0u64, 1, 1000, 65534, 33, 1_000_000];
            entry.uid = *self.rng.pick(&ids);
            entry.gid = if self.rng.chance(50) {
                entry.uid
            } else {
                *self.rng.pick(&ids)
            };
            if entry.uid != 0 || entry.gid != 0 {
                self.coverage.add("owner");
            }
        }
        entry.mtime = match self.rng.below(4) {
            0 => super::tar_layer::DEFAULT_MTIME,
            1 => 0,
            2 => self.rng.below(1 << 33),
            _ => 1_700_000_000 + self.rng.below(10_000_000),
        };
        let xattr_ok = matches!(entry.body, EntryBody::File(_) | EntryBody::Dir);
        if self.rng.chance(if xattr_ok { 20 } else { 5 }) {
            let n = 1 + self.rng.below(2);
            for _ in 0..n {
                let name = *self
                    .rng
                    .pick(&["user.a", "user.b", "user.comment", "trusted.skip"]);
                let len = self.rng.below(40) as usize;
                let mut value = self.rng.bytes(len);
                if self.features.newline_in_xattr_values {
                    if value.contains(&b'\n') {
                        self.coverage.add("xattr value with newline");
                    }
                } else {
                    value
                        .iter_mut()
                        .filter(|b| **b == b'\n')
                        .for_each(|b| *b = 0x0b);
                }
                entry = entry.xattr(name, value);
                self.coverage.add("xattr");
            }
        }
        if matches!(entry.body, EntryBody::File(_) | EntryBody::Hardlink(_)) && self.rng.chance(6) {
            // Set after lchown (which clears it), also through a hardlink header.
            entry = entry.xattr(
                "security.capability",
                super::catalog::CAP_NET_BIND_SERVICE_XATTR,
            );
            self.coverage.add("security.capability");
        }
        if self.rng.chance(8) {
            entry = entry.pax_path();
            self.coverage.add("pax_path");
        }
        entry
    }

    fn file_content(&mut self) -> Vec<u8> {
        match self.rng.below(10) {
            0 | 1 => Vec::new(),
            2 => {
                self.coverage.add("file>256KiB");
                let n = 256 * 1024 + 1 + self.rng.below(64 * 1024) as usize;
                // Half random, half repetitive, so compression has something to do.
                let mut v = self.rng.bytes(n / 2);
                v.resize(n, b'z');
                v
            }
            3 | 4 => {
                let n = 1 + self.rng.below(16 * 1024) as usize;
                self.rng.bytes(n)
            }
            _ => {
                let n = 1 + self.rng.below(200) as usize;
                self.rng.bytes(n)
            }
        }
    }

    /// Spelling of a path in a header: plain, `./`-prefixed or absolute.
    fn spell(&mut self, path: &str) -> String {
        match self.rng.below(8) {
            0 => format!("./{path}"),
            1 => format!("/{path}"),
            // `filepath.Clean` folds these away (and clamps `..` at the root).
            2 => format!("zz/../{path}"),
            3 => format!("../{path}"),
            _ => path.to_string(),
        }
    }

    fn candidate(&mut self) -> Option<(TarEntry, &'static str)> {
        let path = self.rng.pick(PATHS).to_string();
        let any = if self.rng.chance(30) {
            self.rng.pick(DIRS).to_string()
        } else {
            path
        };
        let name = self.spell(&any);
        let entry = match self.rng.below(100) {
            0..=17 => (TarEntry::dir(format!("{name}/")), "dir"),
            18..=44 => {
                let content = self.file_content();
                let what = if content.is_empty() {
                    "file(empty)"
                } else {
                    "file"
                };
                (TarEntry::file(&name, content), what)
            }
            45..=54 => {
                let target = self.rng.pick(SYMLINK_TARGETS).to_string();
                (TarEntry::symlink(&name, target), "symlink")
            }
            55..=64 => {
                let targets = self.tracker.non_dirs();
                if targets.is_empty() {
                    return None;
                }
                let target = self.rng.pick(&targets).clone();
                let spelled = self.spell(&target);
                (TarEntry::hardlink(&name, spelled), "hardlink")
            }
            65..=68 => {
                let (maj, min) = (self.rng.below(300) as u32, self.rng.below(300) as u32);
                (TarEntry::char_device(&name, maj, min), "char device")
            }
            69..=71 => {
                let (maj, min) = (self.rng.below(300) as u32, self.rng.below(300) as u32);
                (TarEntry::block_device(&name, maj, min), "block device")
            }
            72..=75 => (TarEntry::fifo(&name), "fifo"),
            76..=85 => {
                // Whiteout: half of the time of something a lower layer has.
                let lower: Vec<&String> = self.lower_paths.iter().collect();
                let hidden = if !lower.is_empty() && self.rng.chance(60) {
                    (*self.rng.pick(&lower)).clone()
                } else {
                    format!("{any}-gone")
                };
                (TarEntry::whiteout(&hidden), "whiteout")
            }
            86..=90 => {
                let lower_dirs: Vec<&str> = DIRS.to_vec();
                let dir = if self.rng.chance(15) {
                    ""
                } else {
                    *self.rng.pick(&lower_dirs)
                };
                (TarEntry::opaque(dir), "opaque")
            }
            91..=94 => {
                let long = format!(
                    "{}/{}-{}",
                    self.rng.pick(DIRS),
                    "long-name".repeat(12),
                    self.rng.below(3)
                );
                (TarEntry::file(long, self.file_content()), "pax long name")
            }
            _ => {
                let deep = format!(
                    "{}/impl{}/x{}/f",
                    self.rng.pick(DIRS),
                    self.rng.below(3),
                    self.rng.below(2)
                );
                (
                    TarEntry::file(deep, self.file_content()),
                    "implicit parents",
                )
            }
        };
        let (entry, what) = entry;
        let is_marker = what == "whiteout" || what == "opaque";
        let entry = if is_marker {
            entry
        } else {
            let dir = what == "dir";
            self.decorate(entry, dir)
        };
        Some((entry, what))
    }

    /// An entry at a path this layer already wrote, of another (or the same) sort.
    fn repeat_path(&mut self) -> Option<(TarEntry, &'static str)> {
        let written: Vec<String> = self.tracker.unpacked.iter().cloned().collect();
        if written.is_empty() {
            return None;
        }
        let path = self.rng.pick(&written).clone();
        let (entry, what) = match self.rng.below(3) {
            0 => (TarEntry::dir(format!("{path}/")), "same path: then dir"),
            _ => (
                TarEntry::file(&path, self.file_content()),
                "same path: then file",
            ),
        };
        let dir = what.ends_with("dir");
        Some((self.decorate(entry, dir), what))
    }

    fn generate(mut self, count: usize) -> (Vec<TarEntry>, Tracker, Coverage) {
        let mut attempts = 0;
        while self.entries.len() < count && attempts < count * 20 {
            attempts += 1;
            let next = if self.rng.chance(12) {
                self.repeat_path()
            } else {
                self.candidate()
            };
            let Some((entry, what)) = next else { continue };
            if self.rng.chance(3) {
                // The layer root named: containerd skips it.
                let root = TarEntry::dir(*self.rng.pick(&["./", "/", "."]));
                let root = self.decorate(root, true);
                self.coverage.add("root entry");
                self.entries.push(root);
            }
            if self.tracker.try_apply(&entry) {
                self.coverage.add(what);
                self.entries.push(entry);
            }
        }
        (self.entries, self.tracker, self.coverage)
    }
}

/// The image of a seed: 1–4 layers, each 6–40 entries, mixed compression.
pub fn random_image(name: &str, seed: u64) -> (ImageSpec, Coverage) {
    random_image_with(name, seed, Features::ALL)
}

/// Like [`random_image`], leaving out the sorts of entries `features` turns off.
pub fn random_image_with(name: &str, seed: u64, features: Features) -> (ImageSpec, Coverage) {
    let mut rng = SplitMix64::new(seed);
    let n_layers = 1 + rng.below(4) as usize;
    let mut layers = Vec::new();
    let mut coverage = Coverage {
        layers: n_layers,
        ..Coverage::default()
    };
    let mut lower_paths: BTreeSet<String> = BTreeSet::new();
    let mut lowers: Vec<BTreeMap<String, Kind>> = Vec::new();
    for index in 0..n_layers {
        let count = 6 + rng.below(35) as usize;
        // A layer whose dir times would fail is drawn again from the continuing sequence.
        let (entries, tracker, layer_coverage) = loop {
            let generator = LayerGen {
                rng: &mut rng,
                features,
                tracker: Tracker {
                    lowers: lowers.clone(),
                    ..Tracker::new(index == 0)
                },
                entries: Vec::new(),
                coverage: Coverage::default(),
                lower_paths: &lower_paths,
            };
            let (entries, tracker, c) = generator.generate(count);
            let relinked = tracker.keeps_replaced_file_alive();
            if tracker.times_apply() && (features.hardlink_outlives_first_name || !relinked) {
                let mut c = c;
                if relinked {
                    c.add("hardlink outlives first name");
                }
                break (entries, tracker, c);
            }
        };
        for (k, v) in layer_coverage.counts {
            *coverage.counts.entry(k).or_default() += v;
        }
        lower_paths.extend(tracker.nodes.keys().cloned());
        lowers.insert(0, tracker.nodes);
        let compression = *rng.pick(&[Compression::None, Compression::Gzip, Compression::Zstd]);
        layers.push(LayerSpec::new(compression, entries));
    }
    let style = if rng.chance(30) {
        ManifestStyle::Docker
    } else {
        ManifestStyle::Oci
    };
    // Docker schema2 has no zstd layer type of its own; keep Docker images to gzip/plain.
    let style = if style == ManifestStyle::Docker
        && layers.iter().any(|l| l.compression == Compression::Zstd)
    {
        ManifestStyle::Oci
    } else {
        style
    };
    (ImageSpec::new(name, style, layers), coverage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_image() {
        for seed in 0..20 {
            assert_eq!(random_image("t/x:1", seed).0, random_image("t/x:1", seed).0);
        }
        assert_ne!(random_image("t/x:1", 1).0, random_image("t/x:1", 2).0);
    }

    #[test]
    fn features_turned_off_are_left_out() {
        let off = Features {
            newline_in_xattr_values: false,
            hardlink_outlives_first_name: false,
        };
        for seed in 0..16 {
            let (spec, c) = random_image_with("t/x:1", seed, off);
            assert!(!c.counts.contains_key("hardlink outlives first name"));
            for e in spec.layers.iter().flat_map(|l| &l.entries) {
                assert!(e.xattrs.iter().all(|(_, v)| !v.contains(&b'\n')));
            }
        }
    }

    #[test]
    fn seeds_cover_every_sort_of_entry() {
        let mut all: BTreeSet<&str> = BTreeSet::new();
        for seed in 0..16 {
            let (_, c) = random_image("t/x:1", seed);
            all.extend(c.counts.keys());
            assert!((1..=4).contains(&c.layers));
        }
        for want in [
            "dir",
            "file",
            "file(empty)",
            "file>256KiB",
            "symlink",
            "hardlink",
            "char device",
            "block device",
            "fifo",
            "whiteout",
            "opaque",
            "pax long name",
            "implicit parents",
            "same path: then dir",
            "same path: then file",
            "owner",
            "xattr",
            "xattr value with newline",
            "security.capability",
            "root entry",
            "hardlink outlives first name",
        ] {
            assert!(all.contains(want), "no seed of 0..16 has {want}: {all:?}");
        }
    }

    #[test]
    fn tracker_refuses_what_containerd_refuses() {
        let mut t = Tracker::new(false);
        assert!(t.try_apply(&TarEntry::file("a", b"")));
        assert!(!t.try_apply(&TarEntry::file("a/x", b"")), "ENOTDIR");
        assert!(!t.try_apply(&TarEntry::whiteout("a")), "EEXIST");
        assert!(!t.try_apply(&TarEntry::hardlink("h", "nope")), "ENOENT");
        assert!(t.try_apply(&TarEntry::symlink("s", "/d")));
        assert!(t.try_apply(&TarEntry::file("s/x", b"")));
        assert!(t.nodes.contains_key("d/x"), "parent symlink followed");
        let mut t = Tracker::new(true);
        assert!(t.try_apply(&TarEntry::file("s", b"one")));
        assert!(t.try_apply(&TarEntry::hardlink("b", "s")));
        assert!(!t.keeps_replaced_file_alive());
        assert!(t.try_apply(&TarEntry::file("s", b"two")));
        assert!(t.keeps_replaced_file_alive(), "b keeps the first s");
        let mut base = Tracker::new(true);
        assert!(base.try_apply(&TarEntry::dir("d/")));
        assert!(base.try_apply(&TarEntry::whiteout("d")));
        assert!(!base.times_apply(), "dir removed before its times");
    }
}
