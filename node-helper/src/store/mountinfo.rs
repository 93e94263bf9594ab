//! Counting live mounts that use given snapshot `fs` directories, from the host's
//! mountinfo (containerd-layout.md §8: the shim mounts rootfs in the host mount namespace).

use std::path::{Path, PathBuf};

use crate::error::Result;

/// One line of `/proc/<pid>/mountinfo`, escapes decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub device: (u32, u32),
    /// Path of the mounted directory inside its filesystem (the bind source for binds).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// Superblock options, still comma-joined and escaped (values may contain `\054`).
    pub super_options: String,
}

/// A snapshot directory to look for, with the device it lives on when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFs {
    pub fs: PathBuf,
    pub device: Option<(u32, u32)>,
}

/// Decodes the kernel's `\NNN` octal escapes (space, tab, newline, backslash, comma, …).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let root = unescape(l.next()?);
    let mount_point = unescape(l.next()?);
    let mut r = right.split(' ');
    let fs_type = r.next()?.to_string();
    let _source = r.next()?;
    let super_options = r.next().unwrap_or("").to_string();
    Some(MountEntry {
        device: (major.parse().ok()?, minor.parse().ok()?),
        root,
        mount_point,
        fs_type,
        super_options,
    })
}

/// The overlay's lower and upper directories; relative lowerdirs (containerd's compact form
/// for long option strings) are resolved against `snapshots_dir`.
pub fn overlay_dirs(super_options: &str, snapshots_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for opt in super_options.split(',') {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        let parts: Vec<String> = match key {
            "lowerdir" => split_unescaped_colons(value)
                .into_iter()
                .map(|p| unescape(&p))
                .collect(),
            "upperdir" => vec![unescape(value)],
            _ => continue,
        };
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            let path = PathBuf::from(p);
            dirs.push(if path.is_absolute() {
                path
            } else {
                snapshots_dir.join(path)
            });
        }
    }
    dirs
}

/// Splits overlay's `lowerdir` on `:` except where the kernel escaped it as `\:`.
fn split_unescaped_colons(value: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                chars.next();
                if let Some(p) = parts.last_mut() {
                    p.push(':');
                }
            }
            ':' => parts.push(String::new()),
            _ => {
                if let Some(p) = parts.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    parts
}

/// Whether a path from mountinfo names `target`: equal, or `target` is the same path seen
/// under a prefix (the agent sees the host's `/var/lib/containerd` as `/host/var/lib/containerd`).
fn names_same_dir(target: &Path, seen: &Path) -> bool {
    target == seen
        || seen
            .strip_prefix("/")
            .is_ok_and(|rel| rel.components().count() >= 3 && target.ends_with(rel))
}

/// Whether a non-overlay mount is a bind of `target` (its root is a tail of the target path
/// on the same device).
fn is_bind_of(entry: &MountEntry, target: &SnapshotFs) -> bool {
    let rel = entry.root.trim_start_matches('/');
    if rel.is_empty() || !target.fs.ends_with(rel) {
        return false;
    }
    target.device.is_none_or(|d| d == entry.device)
}

/// How many mounts use any of `targets`: overlays naming one as lower/upper dir, and bind
/// mounts of one.
pub fn count_mounts_using(
    entries: &[MountEntry],
    snapshots_dir: &Path,
    targets: &[SnapshotFs],
) -> u32 {
    let uses = |e: &MountEntry| {
        if e.fs_type == "overlay" {
            let dirs = overlay_dirs(&e.super_options, snapshots_dir);
            targets
                .iter()
                .any(|t| dirs.iter().any(|d| names_same_dir(&t.fs, d)))
        } else {
            targets.iter().any(|t| is_bind_of(e, t))
        }
    };
    entries.iter().filter(|e| uses(e)).count() as u32
}

/// Linux `dev_t` → (major, minor), glibc encoding.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major as u32, minor as u32)
}

/// The host's mount table: PID 1's view (the agent runs with hostPID), else our own.
pub fn read_host_mountinfo() -> Result<String> {
    use super::bounded::{MOUNTINFO_CAP, read_text_capped};
    read_text_capped(Path::new("/proc/1/mountinfo"), "mountinfo", MOUNTINFO_CAP).or_else(|_| {
        read_text_capped(
            Path::new("/proc/self/mountinfo"),
            "mountinfo",
            MOUNTINFO_CAP,
        )
    })
}

/// The device of a path, for bind-mount matching; `None` if it cannot be stat'ed.
pub fn device_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| split_dev(m.dev()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAP: &str = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";

    fn target(id: u32, device: Option<(u32, u32)>) -> SnapshotFs {
        SnapshotFs {
            fs: PathBuf::from(format!("{SNAP}/{id}/fs")),
            device,
        }
    }

    fn text() -> String {
        [
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
            // running container p1: lower = image layer 1
            &format!("301 22 0:52 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/p1/rootfs rw,relatime shared:150 - overlay overlay rw,lowerdir={SNAP}/1/fs,upperdir={SNAP}/2/fs,workdir={SNAP}/2/work"),
            // compact form: relative lowerdirs
            &format!("302 22 0:53 / /run/x/rootfs rw,relatime - overlay overlay rw,index=off,lowerdir=4/fs:3/fs:1/fs,upperdir={SNAP}/5/fs,workdir={SNAP}/5/work"),
            // a view of a single-parent snapshot: bind of layer 3's fs
            "303 22 8:1 /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/3/fs /run/view rw,relatime - ext4 /dev/sda1 rw",
            // unrelated overlay with escaped space and colon in paths
            "304 22 0:54 / /mnt/o\\040x rw - overlay overlay rw,lowerdir=/srv/a\\040b\\:c:/srv/d,upperdir=/srv/u,workdir=/srv/w",
            "garbage line",
        ]
        .join("\n")
    }

    #[test]
    fn lines_are_parsed_with_escapes() {
        let m = parse_mountinfo(&text());
        assert_eq!(m.len(), 5);
        assert_eq!(m[3].root, format!("{SNAP}/3/fs"));
        assert_eq!(m[3].device, (8, 1));
        assert_eq!(m[4].mount_point, "/mnt/o x");
        assert_eq!(m[1].fs_type, "overlay");
    }

    #[test]
    fn overlay_dirs_resolve_relative_and_escaped_paths() {
        let m = parse_mountinfo(&text());
        let snap = Path::new(SNAP);
        let d = overlay_dirs(&m[2].super_options, snap);
        assert_eq!(d[0], snap.join("4/fs"));
        assert_eq!(d[2], snap.join("1/fs"));
        assert_eq!(d[3], snap.join("5/fs"));
        let d = overlay_dirs(&m[4].super_options, snap);
        assert_eq!(d[0], PathBuf::from("/srv/a b:c"));
        assert_eq!(d[1], PathBuf::from("/srv/d"));
    }

    #[test]
    fn counts_overlays_and_binds_that_use_the_targets() {
        let m = parse_mountinfo(&text());
        let snap = Path::new(SNAP);
        assert_eq!(count_mounts_using(&m, snap, &[target(1, None)]), 2);
        assert_eq!(count_mounts_using(&m, snap, &[target(3, Some((8, 1)))]), 2);
        assert_eq!(
            count_mounts_using(&m, snap, &[target(3, Some((9, 9)))]),
            1,
            "bind on another device"
        );
        assert_eq!(
            count_mounts_using(&m, snap, &[target(1, None), target(3, None)]),
            3,
            "each mount counted once"
        );
        assert_eq!(count_mounts_using(&m, snap, &[target(7, None)]), 0);
    }

    #[test]
    fn a_separately_mounted_containerd_root_still_matches_binds() {
        let line = "40 22 253:3 /io.containerd.snapshotter.v1.overlayfs/snapshots/3/fs /run/v rw - xfs /dev/dm-3 rw";
        let m = parse_mountinfo(line);
        assert_eq!(
            count_mounts_using(&m, Path::new(SNAP), &[target(3, Some((253, 3)))]),
            1
        );
        assert_eq!(
            count_mounts_using(&m, Path::new(SNAP), &[target(13, Some((253, 3)))]),
            0
        );
    }

    #[test]
    fn a_root_seen_under_a_host_prefix_still_matches_overlays() {
        let m = parse_mountinfo(&text());
        let host_view = SnapshotFs {
            fs: PathBuf::from(format!("/host{SNAP}/1/fs")),
            device: None,
        };
        let snap = PathBuf::from(format!("/host{SNAP}"));
        assert_eq!(count_mounts_using(&m, &snap, &[host_view]), 2);
        assert!(!names_same_dir(
            Path::new("/a/snapshots/1/fs"),
            Path::new("/b/snapshots/1/fs")
        ));
        assert!(!names_same_dir(
            Path::new("/a/snapshots/1/fs"),
            Path::new("/fs")
        ));
    }

    #[test]
    fn unescape_handles_octal_and_leaves_other_backslashes() {
        assert_eq!(unescape("a\\040b\\011c\\134d\\054e"), "a b\tc\\d,e");
        assert_eq!(unescape("x\\9y\\"), "x\\9y\\");
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        assert_eq!(split_dev(0x0801), (8, 1));
        assert_eq!(split_dev((253 << 8) | 3), (253, 3));
        let makedev_4097_2 = (1u64 << 8) | (4096u64 << 32) | 2;
        assert_eq!(split_dev(makedev_4097_2), (4097, 2));
    }

    #[test]
    fn the_host_mountinfo_is_readable() {
        let m = parse_mountinfo(&read_host_mountinfo().unwrap());
        assert!(m.iter().any(|e| e.mount_point == "/"));
    }
}
