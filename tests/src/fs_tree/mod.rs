//! What a directory tree looks like on disk, entry by entry, so that a repaired snapshot can be
//! compared with the pristine one containerd unpacked: type, permission bits, owner, size,
//! content hash, link target, device numbers, every xattr (`trusted.overlay.opaque` included),
//! hardlink groups and, for entries that came from the tar, mtimes.

mod xattr;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use xattr::{list_xattrs, remove_xattr, set_xattr};

use crate::TestError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (not compared for symlinks).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: u64,
    /// sha256 of a regular file's content.
    pub content: Option<String>,
    pub link_target: Option<Vec<u8>>,
    /// (major, minor) of devices.
    pub device: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The smallest path of the tree that shares this inode, when more than one does.
    pub hardlink_group: Option<String>,
    /// (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

/// Every entry under a root, keyed by its path inside the tree (`/` is the root itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSnapshot {
    pub nodes: BTreeMap<String, Node>,
}

fn kind_of(ft: std::fs::FileType) -> NodeKind {
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

fn hash_file(path: &Path) -> Result<String, TestError> {
    let mut file = std::fs::File::open(path).map_err(|e| TestError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| TestError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn tree_key(rel: &Path) -> String {
    format!("/{}", String::from_utf8_lossy(rel.as_os_str().as_bytes()))
}

/// Reads every entry beneath `root` (not following symlinks).
pub fn capture_tree(root: &Path) -> Result<TreeSnapshot, TestError> {
    capture_tree_except(root, &[])
}

/// Like [`capture_tree`], skipping the subtrees at the given paths (absolute on the host).
pub fn capture_tree_except(root: &Path, skip: &[PathBuf]) -> Result<TreeSnapshot, TestError> {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        if skip.contains(&path) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| TestError::io(&path, e))?;
        let kind = kind_of(meta.file_type());
        let rel = path.strip_prefix(root).unwrap_or(Path::new(""));
        let key = if rel.as_os_str().is_empty() {
            "/".to_string()
        } else {
            tree_key(rel)
        };
        if kind == NodeKind::Dir {
            let entries = std::fs::read_dir(&path).map_err(|e| TestError::io(&path, e))?;
            for entry in entries {
                pending.push(entry.map_err(|e| TestError::io(&path, e))?.path());
            }
        } else {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(key.clone());
        }
        let rdev = meta.rdev();
        let node = Node {
            kind,
            mode: if kind == NodeKind::Symlink {
                0
            } else {
                meta.mode() & 0o7777
            },
            uid: meta.uid(),
            gid: meta.gid(),
            size: if kind == NodeKind::File {
                meta.size()
            } else {
                0
            },
            content: if kind == NodeKind::File {
                Some(hash_file(&path)?)
            } else {
                None
            },
            link_target: if kind == NodeKind::Symlink {
                Some(
                    std::fs::read_link(&path)
                        .map_err(|e| TestError::io(&path, e))?
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else {
                None
            },
            device: matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice)
                .then(|| (libc::major(rdev), libc::minor(rdev))),
            xattrs: list_xattrs(&path)?,
            hardlink_group: None,
            mtime: (meta.mtime(), meta.mtime_nsec()),
        };
        nodes.insert(key, node);
    }
    for mut group in inodes.into_values().filter(|g| g.len() > 1) {
        group.sort();
        for key in &group {
            if let Some(node) = nodes.get_mut(key) {
                node.hardlink_group = Some(group[0].clone());
            }
        }
    }
    Ok(TreeSnapshot { nodes })
}

impl TreeSnapshot {
    /// Differences from `expected` to `self`, one line each; mtimes are compared only for the
    /// paths in `mtime_paths` (entries whose times come from the tar).
    pub fn differences_from(
        &self,
        expected: &TreeSnapshot,
        mtime_paths: &BTreeSet<String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (path, want) in &expected.nodes {
            let Some(got) = self.nodes.get(path) else {
                out.push(format!("{path}: missing (expected {:?})", want.kind));
                continue;
            };
            let mut field = |name: &str, differs: bool, w: String, g: String| {
                if differs {
                    out.push(format!("{path}: {name} {g} != expected {w}"));
                }
            };
            field(
                "kind",
                want.kind != got.kind,
                format!("{:?}", want.kind),
                format!("{:?}", got.kind),
            );
            field(
                "mode",
                want.mode != got.mode,
                format!("{:o}", want.mode),
                format!("{:o}", got.mode),
            );
            field(
                "owner",
                (want.uid, want.gid) != (got.uid, got.gid),
                format!("{}:{}", want.uid, want.gid),
                format!("{}:{}", got.uid, got.gid),
            );
            field(
                "size",
                want.size != got.size,
                want.size.to_string(),
                got.size.to_string(),
            );
            field(
                "content",
                want.content != got.content,
                format!("{:?}", want.content),
                format!("{:?}", got.content),
            );
            field(
                "link",
                want.link_target != got.link_target,
                format!(
                    "{:?}",
                    want.link_target.as_deref().map(String::from_utf8_lossy)
                ),
                format!(
                    "{:?}",
                    got.link_target.as_deref().map(String::from_utf8_lossy)
                ),
            );
            field(
                "device",
                want.device != got.device,
                format!("{:?}", want.device),
                format!("{:?}", got.device),
            );
            field(
                "xattrs",
                want.xattrs != got.xattrs,
                format!("{:?}", want.xattrs.keys()),
                format!("{:?}", got.xattrs.keys()),
            );
            field(
                "hardlink group",
                want.hardlink_group != got.hardlink_group,
                format!("{:?}", want.hardlink_group),
                format!("{:?}", got.hardlink_group),
            );
            if mtime_paths.contains(path) {
                field(
                    "mtime",
                    want.mtime != got.mtime,
                    format!("{:?}", want.mtime),
                    format!("{:?}", got.mtime),
                );
            }
        }
        for path in self
            .nodes
            .keys()
            .filter(|p| !expected.nodes.contains_key(*p))
        {
            out.push(format!("{path}: extra ({:?})", self.nodes[path].kind));
        }
        out
    }

    /// Every path whose mtime is comparable between two captures of the same tree.
    pub fn all_paths(&self) -> BTreeSet<String> {
        self.nodes.keys().cloned().collect()
    }
}

/// Cleans a tar entry name like containerd does (`filepath.Clean`, rooted): no `.`, `..`
/// clamped at the root, no trailing slash.
pub fn clean_tar_name(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Paths (as [`TreeSnapshot`] keys) of the entries of a layer tar whose mtime the applier sets:
/// every entry except whiteout markers and the root.
pub fn tar_mtime_paths(tar: &[u8]) -> Result<BTreeSet<String>, TestError> {
    let io = |e: std::io::Error| TestError::Build(format!("reading a layer tar: {e}"));
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeSet::new();
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = clean_tar_name(&entry.path_bytes());
        let base = path.rsplit('/').next().unwrap_or("");
        if path != "/" && !base.starts_with(".wh.") {
            out.insert(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tar_names_are_cleaned_like_containerd() {
        assert_eq!(clean_tar_name(b"./etc/passwd"), "/etc/passwd");
        assert_eq!(clean_tar_name(b"/abs//x/"), "/abs/x");
        assert_eq!(clean_tar_name(b"../../escape"), "/escape");
        assert_eq!(clean_tar_name(b"a/../b/./c"), "/b/c");
        assert_eq!(clean_tar_name(b"./"), "/");
    }

    #[test]
    fn capture_sees_content_modes_links_and_hardlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"one").unwrap();
        std::fs::hard_link(root.join("d/f"), root.join("g")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("s")).unwrap();
        let before = capture_tree(root).unwrap();
        assert_eq!(before.nodes["/g"].hardlink_group.as_deref(), Some("/d/f"));
        assert_eq!(before.nodes["/s"].link_target.as_deref(), Some(&b"d/f"[..]));
        let all = before.all_paths();
        assert!(
            capture_tree(root)
                .unwrap()
                .differences_from(&before, &all)
                .is_empty()
        );

        std::fs::write(root.join("d/f"), b"two").unwrap();
        std::fs::set_permissions(root.join("g"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(root.join("s")).unwrap();
        std::fs::write(root.join("new"), b"").unwrap();
        let diffs = capture_tree(root)
            .unwrap()
            .differences_from(&before, &BTreeSet::new());
        let joined = diffs.join("\n");
        assert!(joined.contains("/d/f: content"), "{joined}");
        assert!(joined.contains("/g: mode 600"), "{joined}");
        assert!(joined.contains("/s: missing"), "{joined}");
        assert!(joined.contains("/new: extra"), "{joined}");
        assert!(!joined.contains("mtime"), "{joined}");
    }

    #[test]
    fn broken_hardlink_and_lost_xattr_are_differences() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a"), b"x").unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        set_xattr(root, "user.k", b"v").unwrap();
        let before = capture_tree(root).unwrap();
        assert_eq!(
            before.nodes["/"].xattrs.get("user.k").map(Vec::as_slice),
            Some(&b"v"[..])
        );
        std::fs::remove_file(root.join("b")).unwrap();
        std::fs::copy(root.join("a"), root.join("b")).unwrap();
        remove_xattr(root, "user.k").unwrap();
        let joined = capture_tree(root)
            .unwrap()
            .differences_from(&before, &BTreeSet::new())
            .join("\n");
        assert!(joined.contains("/b: hardlink group"), "{joined}");
        assert!(joined.contains("/: xattrs"), "{joined}");
    }

    #[test]
    fn tar_mtime_paths_skip_whiteouts() {
        use crate::image_builder::{TarEntry, write_tar};
        let tar = write_tar(&[
            TarEntry::dir("./"),
            TarEntry::file("./etc/a", b""),
            TarEntry::whiteout("etc/b"),
            TarEntry::opaque("var"),
        ])
        .unwrap();
        let paths: Vec<String> = tar_mtime_paths(&tar).unwrap().into_iter().collect();
        assert_eq!(paths, vec!["/etc/a".to_string()]);
    }
}
