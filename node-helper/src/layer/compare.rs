//! Model versus disk: the findings of a layer and what a repair has to restore. Pure: it only
//! looks at the model, the observed tree and the content verdicts.

use std::collections::{BTreeMap, HashMap, HashSet};

use snapmend_crds::{Finding, FindingKind};

use super::expected::{EntryKind, Inode, InodeId, LayerModel, display_path};
use super::observe::{Observation, Observed};

pub const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Result of comparing the content of one regular file while streaming its tar data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentVerdict {
    Same,
    Differs,
    /// Not compared (absent, not a regular file, size differs, or metadata-only mode).
    NotCompared,
}

/// What repair must do at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Build the (non-directory) entry afresh and rename it into place.
    Recreate,
    /// Create the directory (missing, or something else is in its place).
    CreateDir,
    /// The directory is there; fix owner, xattrs, opaque marker, mode in place.
    FixDir,
}

#[derive(Debug, Default)]
pub struct Diff {
    /// Every finding, sorted by path (not capped).
    pub findings: Vec<Finding>,
    pub needs: BTreeMap<Vec<u8>, Need>,
    /// Entries the layer does not explain, top-most only (their subtrees go with them).
    pub extras: Vec<Vec<u8>>,
    /// The `fs` root's opaque marker must be set (`Some(true)`) or removed (`Some(false)`).
    pub root_opaque: Option<bool>,
}

impl Diff {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

pub fn human_size(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.0} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / (K * K))
    } else {
        format!("{:.1} GiB", f / (K * K * K))
    }
}

/// "regular file, 732 KiB", "symlink -> /bin/sh", "char device 1:3", "whiteout".
pub fn describe_expected(inode: &Inode) -> String {
    match &inode.kind {
        EntryKind::File => format!("regular file, {}", human_size(inode.size)),
        EntryKind::Symlink(t) => format!("symlink -> {}", String::from_utf8_lossy(t)),
        EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => {
            format!("{} {major}:{minor}", inode.kind.describe())
        }
        EntryKind::Whiteout => "whiteout (char device 0:0)".into(),
        k => k.describe().into(),
    }
}

pub fn describe_observed(o: &Observed) -> String {
    match o.file_type() {
        libc::S_IFREG => format!("regular file, {}", human_size(o.size)),
        libc::S_IFDIR => "directory".into(),
        libc::S_IFLNK => format!(
            "symlink -> {}",
            String::from_utf8_lossy(o.link.as_deref().unwrap_or_default())
        ),
        libc::S_IFCHR => format!(
            "char device {}:{}",
            libc::major(o.rdev),
            libc::minor(o.rdev)
        ),
        libc::S_IFBLK => format!(
            "block device {}:{}",
            libc::major(o.rdev),
            libc::minor(o.rdev)
        ),
        libc::S_IFIFO => "fifo".into(),
        libc::S_IFSOCK => "socket".into(),
        _ => "unknown type".into(),
    }
}

fn expected_file_type(kind: &EntryKind) -> u32 {
    match kind {
        EntryKind::Dir => libc::S_IFDIR,
        EntryKind::File => libc::S_IFREG,
        EntryKind::Symlink(_) => libc::S_IFLNK,
        EntryKind::Char { .. } | EntryKind::Whiteout => libc::S_IFCHR,
        EntryKind::Block { .. } => libc::S_IFBLK,
        EntryKind::Fifo => libc::S_IFIFO,
    }
}

/// Observed xattrs that take part in the comparison: everything except the opaque marker
/// (compared on its own) and labels the host adds by itself unless the tar sets them.
fn compared_xattrs<'a>(
    o: &'a Observed,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> BTreeMap<&'a [u8], &'a [u8]> {
    o.xattrs
        .iter()
        .filter(|(k, _)| k.as_slice() != OPAQUE_XATTR)
        .filter(|(k, _)| {
            expected.contains_key(k)
                || !(k.as_slice() == b"security.selinux" || k.starts_with(b"system."))
        })
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect()
}

/// Short description of the first xattr difference, or `None` when they match.
pub fn xattr_difference(o: &Observed, expected: &BTreeMap<Vec<u8>, Vec<u8>>) -> Option<String> {
    let actual = compared_xattrs(o, expected);
    let mut problems = Vec::new();
    for (k, v) in expected {
        match actual.get(k.as_slice()) {
            None => problems.push(format!("missing {}", String::from_utf8_lossy(k))),
            Some(a) if *a != v.as_slice() => {
                problems.push(format!("{} differs", String::from_utf8_lossy(k)))
            }
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(*k) {
            problems.push(format!("unexpected {}", String::from_utf8_lossy(k)));
        }
    }
    match problems.len() {
        0 => None,
        1 => problems.pop(),
        n => Some(format!("{} and {} more", problems[0], n - 1)),
    }
}

fn opaque_difference(o: &Observed, expected: bool) -> Option<String> {
    let actual = o.xattr(OPAQUE_XATTR) == Some(b"y".as_slice());
    match (expected, actual) {
        (true, false) => Some("opaque marker lost (trusted.overlay.opaque)".into()),
        (false, true) => Some("unexpected opaque marker (trusted.overlay.opaque)".into()),
        _ => None,
    }
}

struct Collector {
    findings: Vec<Finding>,
}

impl Collector {
    fn push(&mut self, path: &[u8], kind: FindingKind, detail: String) {
        self.findings.push(Finding {
            path: display_path(path),
            kind,
            detail,
        });
    }
}

/// Compares one existing entry; returns whether anything differs.
fn compare_entry(
    c: &mut Collector,
    path: &[u8],
    inode: &Inode,
    o: &Observed,
    content: Option<ContentVerdict>,
) -> bool {
    let before = c.findings.len();
    let want_type = expected_file_type(&inode.kind);
    if o.file_type() != want_type {
        c.push(
            path,
            FindingKind::TypeMismatch,
            format!(
                "expected {}, found {}",
                inode.kind.describe(),
                describe_observed(o)
            ),
        );
        return true;
    }
    match &inode.kind {
        EntryKind::File => {
            if o.size != inode.size {
                c.push(
                    path,
                    FindingKind::SizeMismatch,
                    format!(
                        "expected {}, found {}",
                        human_size(inode.size),
                        human_size(o.size)
                    ),
                );
            } else if content == Some(ContentVerdict::Differs) {
                c.push(
                    path,
                    FindingKind::ContentMismatch,
                    format!("same size ({}), different bytes", human_size(o.size)),
                );
            }
        }
        EntryKind::Symlink(target) => {
            if o.link.as_deref() != Some(target.as_slice()) {
                c.push(
                    path,
                    FindingKind::LinkTargetMismatch,
                    format!(
                        "expected -> {}, found -> {}",
                        String::from_utf8_lossy(target),
                        String::from_utf8_lossy(o.link.as_deref().unwrap_or_default())
                    ),
                );
            }
        }
        EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => {
            if (libc::major(o.rdev), libc::minor(o.rdev)) != (*major, *minor) {
                c.push(
                    path,
                    FindingKind::DeviceMismatch,
                    format!(
                        "expected {major}:{minor}, found {}:{}",
                        libc::major(o.rdev),
                        libc::minor(o.rdev)
                    ),
                );
            }
        }
        EntryKind::Whiteout => {
            if o.rdev != 0 {
                c.push(
                    path,
                    FindingKind::DeviceMismatch,
                    format!(
                        "whiteout must be 0:0, found {}:{}",
                        libc::major(o.rdev),
                        libc::minor(o.rdev)
                    ),
                );
            }
        }
        EntryKind::Dir | EntryKind::Fifo => {}
    }
    if !matches!(inode.kind, EntryKind::Symlink(_)) && !inode.mode_ok(o.mode & 0o7777) {
        c.push(
            path,
            FindingKind::ModeMismatch,
            format!("expected {:04o}, found {:04o}", inode.mode, o.mode & 0o7777),
        );
    }
    if (o.uid, o.gid) != (inode.uid, inode.gid) {
        c.push(
            path,
            FindingKind::OwnerMismatch,
            format!(
                "expected {}:{}, found {}:{}",
                inode.uid, inode.gid, o.uid, o.gid
            ),
        );
    }
    if let Some(d) = xattr_difference(o, &inode.xattrs) {
        c.push(path, FindingKind::XattrMismatch, d);
    }
    if inode.kind.is_dir()
        && let Some(d) = opaque_difference(o, inode.opaque)
    {
        c.push(path, FindingKind::XattrMismatch, d);
    }
    c.findings.len() > before
}

/// Compares the model with what is on disk. `content` holds the verdicts per inode.
/// `anchors` names, per inode, the path its tar data was compared at: the member the other
/// hardlinks of a group must share an inode with.
pub fn diff(
    model: &LayerModel,
    obs: &Observation,
    content: &HashMap<InodeId, ContentVerdict>,
    anchors: &HashMap<InodeId, Vec<u8>>,
) -> Diff {
    diff_scoped(model, obs, content, anchors, None)
}

/// `diff` limited to the model entries in `scope` (when given): `obs` then holds only what
/// was observed at those paths, and an observed path the model lacks is still an extra.
/// A repair confirms what it touched this way without walking the whole snapshot again.
pub fn diff_scoped(
    model: &LayerModel,
    obs: &Observation,
    content: &HashMap<InodeId, ContentVerdict>,
    anchors: &HashMap<InodeId, Vec<u8>>,
    scope: Option<&HashSet<Vec<u8>>>,
) -> Diff {
    let in_scope = |p: &[u8]| scope.is_none_or(|s| s.contains(p));
    let mut c = Collector {
        findings: Vec::new(),
    };
    let mut needs = BTreeMap::new();

    let mut root_opaque = None;
    if let Some(root) = &obs.root
        && let Some(d) = opaque_difference(root, model.root_opaque())
    {
        c.push(b"", FindingKind::XattrMismatch, d);
        root_opaque = Some(model.root_opaque());
    }

    // Hardlink identity: each model inode's paths share one disk inode, and no disk inode
    // is shared by paths of different model inodes.
    let groups = model.hardlink_groups();
    let mut disk_owner: HashMap<(u64, u64), InodeId> = HashMap::new();
    let mut hardlink_broken: HashSet<Vec<u8>> = HashSet::new();
    for (path, id) in model.entries() {
        if model.inode(id).kind.is_dir() || !in_scope(path) {
            continue;
        }
        let Some(o) = obs.entries.get(path) else {
            continue;
        };
        match disk_owner.get(&(o.dev, o.ino)) {
            Some(&other) if other != id => {
                hardlink_broken.insert(path.to_vec());
            }
            Some(_) => {}
            None => {
                disk_owner.insert((o.dev, o.ino), id);
            }
        }
    }
    for (id, paths) in &groups {
        if !paths.iter().any(|p| in_scope(p)) {
            continue;
        }
        let inos: Vec<Option<(u64, u64)>> = paths
            .iter()
            .map(|p| obs.entries.get(p).map(|o| (o.dev, o.ino)))
            .collect();
        let mut counts: HashMap<(u64, u64), usize> = HashMap::new();
        for i in inos.iter().flatten() {
            *counts.entry(*i).or_default() += 1;
        }
        let anchor = anchors
            .get(id)
            .and_then(|p| obs.entries.get(p))
            .map(|o| (o.dev, o.ino));
        let majority = anchor.or_else(|| counts.iter().max_by_key(|(_, n)| **n).map(|(i, _)| *i));
        for (p, i) in paths.iter().zip(&inos) {
            if let (Some(i), Some(m)) = (i, majority)
                && *i != m
            {
                hardlink_broken.insert(p.clone());
            }
        }
    }

    // Observed entries the model names: when that is all of them, there is no extra.
    let mut matched = 0usize;
    for (path, id) in model.entries() {
        if !in_scope(path) {
            continue;
        }
        let inode = model.inode(id);
        let Some(o) = obs.entries.get(path) else {
            c.push(path, FindingKind::Missing, describe_expected(inode));
            needs.insert(
                path.to_vec(),
                if inode.kind.is_dir() {
                    Need::CreateDir
                } else {
                    Need::Recreate
                },
            );
            continue;
        };
        matched += 1;
        let differs = compare_entry(&mut c, path, inode, o, content.get(&id).copied());
        let mut need = None;
        if differs {
            need = Some(if !inode.kind.is_dir() {
                Need::Recreate
            } else if o.file_type() == libc::S_IFDIR {
                Need::FixDir
            } else {
                Need::CreateDir
            });
        }
        if hardlink_broken.contains(path) {
            let group = groups.get(&id).map(|g| {
                g.iter()
                    .filter(|p| p.as_slice() != path)
                    .map(|p| display_path(p))
                    .collect::<Vec<_>>()
            });
            let detail = match group {
                Some(g) if !g.is_empty() => format!("not the same inode as {}", g.join(", ")),
                _ => "shares its inode with an unrelated entry".into(),
            };
            c.push(path, FindingKind::HardlinkMismatch, detail);
            need = Some(Need::Recreate);
        }
        if let Some(n) = need {
            needs.insert(path.to_vec(), n);
        }
    }
    // A hardlink group is rebuilt as a whole when any member needs work.
    for paths in groups.values() {
        if paths.iter().any(|p| needs.contains_key(p)) {
            for p in paths {
                needs.insert(p.clone(), Need::Recreate);
            }
        }
    }

    // Distinct model paths match distinct observed paths, so equal counts mean every observed
    // entry was matched: a healthy layer skips a model lookup per entry.
    let mut extra_paths: Vec<&Vec<u8>> = if matched == obs.entries.len() {
        Vec::new()
    } else {
        obs.entries
            .keys()
            .filter(|p| model.get(p).is_none())
            .collect()
    };
    extra_paths.sort();
    let mut extras: Vec<Vec<u8>> = Vec::new();
    for p in extra_paths {
        c.push(p, FindingKind::Extra, describe_observed(&obs.entries[p]));
        let under_extra = extras
            .last()
            .is_some_and(|top| p.starts_with(top) && p.get(top.len()) == Some(&b'/'));
        if !under_extra {
            extras.push(p.clone());
        }
    }

    let mut findings = c.findings;
    findings.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
    Diff {
        findings,
        needs,
        extras,
        root_opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::expected::ModelOptions;
    use crate::layer::header::{HeaderType, TarHeader};

    fn obs(mode: u32, ino: u64) -> Observed {
        Observed {
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            dev: 1,
            ino,
            rdev: 0,
            mtime: Default::default(),
            link: None,
            xattrs: vec![],
        }
    }

    fn model(base: bool, hdrs: &[TarHeader]) -> LayerModel {
        let mut m = LayerModel::new(ModelOptions::new(base));
        for (i, h) in hdrs.iter().enumerate() {
            m.apply(h, i as u64).unwrap();
        }
        m.finish().unwrap();
        m
    }

    fn reg(name: &str, size: u64) -> TarHeader {
        let mut h = TarHeader::new(HeaderType::Regular, name.as_bytes());
        h.size = size;
        h.mode = 0o644;
        h
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(749_568), "732 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }

    #[test]
    fn missing_extra_and_healthy() {
        let m = model(true, &[reg("pause", 749_568), reg("ok", 0)]);
        let mut o = Observation {
            root: Some(obs(libc::S_IFDIR | 0o755, 1)),
            entries: HashMap::new(),
        };
        o.entries
            .insert(b"ok".to_vec(), obs(libc::S_IFREG | 0o644, 2));
        o.entries
            .insert(b"junk".to_vec(), obs(libc::S_IFDIR | 0o755, 3));
        o.entries
            .insert(b"junk/x".to_vec(), obs(libc::S_IFREG | 0o644, 4));
        let d = diff(&m, &o, &HashMap::new(), &HashMap::new());
        let got: Vec<(&str, FindingKind, &str)> = d
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.kind, f.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/junk", FindingKind::Extra, "directory"),
                ("/junk/x", FindingKind::Extra, "regular file, 0 B"),
                ("/pause", FindingKind::Missing, "regular file, 732 KiB"),
            ]
        );
        assert_eq!(d.extras, vec![b"junk".to_vec()]);
        assert_eq!(d.needs.get(b"pause".as_slice()), Some(&Need::Recreate));
    }

    #[test]
    fn mode_owner_size_content_and_type() {
        let m = model(
            true,
            &[
                reg("a", 5),
                reg("b", 5),
                reg("c", 5),
                TarHeader::new(HeaderType::Dir, b"d"),
            ],
        );
        let mut o = Observation {
            root: Some(obs(libc::S_IFDIR | 0o755, 1)),
            entries: HashMap::new(),
        };
        let mut a = obs(libc::S_IFREG | 0o600, 2);
        a.size = 5;
        a.uid = 9;
        o.entries.insert(b"a".to_vec(), a);
        let mut b = obs(libc::S_IFREG | 0o644, 3);
        b.size = 4;
        o.entries.insert(b"b".to_vec(), b);
        let mut cc = obs(libc::S_IFREG | 0o644, 4);
        cc.size = 5;
        o.entries.insert(b"c".to_vec(), cc);
        o.entries
            .insert(b"d".to_vec(), obs(libc::S_IFREG | 0o644, 5));
        let ci = m.get(b"c").unwrap().0;
        let content = HashMap::from([(ci, ContentVerdict::Differs)]);
        let d = diff(&m, &o, &content, &HashMap::new());
        let kinds: Vec<(&str, FindingKind)> = d
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("/a", FindingKind::ModeMismatch),
                ("/a", FindingKind::OwnerMismatch),
                ("/b", FindingKind::SizeMismatch),
                ("/c", FindingKind::ContentMismatch),
                ("/d", FindingKind::TypeMismatch),
            ]
        );
        assert_eq!(d.needs.get(b"d".as_slice()), Some(&Need::CreateDir));
    }

    #[test]
    fn lost_opaque_marker_and_missing_whiteout_are_reported_on_the_hidden_path() {
        let m = model(false, &[reg("d/.wh..wh..opq", 0), reg(".wh.gone", 0)]);
        let mut o = Observation {
            root: Some(obs(libc::S_IFDIR | 0o755, 1)),
            entries: HashMap::new(),
        };
        o.entries
            .insert(b"d".to_vec(), obs(libc::S_IFDIR | 0o755, 2));
        let d = diff(&m, &o, &HashMap::new(), &HashMap::new());
        let got: Vec<(&str, FindingKind)> = d
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/d", FindingKind::XattrMismatch),
                ("/gone", FindingKind::Missing)
            ]
        );
        assert_eq!(d.needs.get(b"d".as_slice()), Some(&Need::FixDir));
    }

    #[test]
    fn broken_hardlinks_rebuild_the_whole_group() {
        let mut l = TarHeader::new(HeaderType::Hardlink, b"b");
        l.linkname = b"a".to_vec();
        l.mode = 0o644;
        let m = model(true, &[reg("a", 0), l, reg("c", 0)]);
        let mut o = Observation {
            root: Some(obs(libc::S_IFDIR | 0o755, 1)),
            entries: HashMap::new(),
        };
        o.entries
            .insert(b"a".to_vec(), obs(libc::S_IFREG | 0o644, 10));
        o.entries
            .insert(b"b".to_vec(), obs(libc::S_IFREG | 0o644, 11));
        o.entries
            .insert(b"c".to_vec(), obs(libc::S_IFREG | 0o644, 12));
        let d = diff(&m, &o, &HashMap::new(), &HashMap::new());
        assert!(
            d.findings
                .iter()
                .any(|f| f.kind == FindingKind::HardlinkMismatch)
        );
        assert_eq!(d.needs.get(b"a".as_slice()), Some(&Need::Recreate));
        assert_eq!(d.needs.get(b"b".as_slice()), Some(&Need::Recreate));
        assert!(!d.needs.contains_key(b"c".as_slice()));
    }

    #[test]
    fn selinux_labels_are_not_extra_xattrs() {
        let m = model(true, &[reg("a", 0)]);
        let mut o = Observation {
            root: Some(obs(libc::S_IFDIR | 0o755, 1)),
            entries: HashMap::new(),
        };
        let mut a = obs(libc::S_IFREG | 0o644, 2);
        a.xattrs = vec![(b"security.selinux".to_vec(), b"x".to_vec())];
        o.entries.insert(b"a".to_vec(), a);
        assert!(diff(&m, &o, &HashMap::new(), &HashMap::new()).is_clean());
    }
}
