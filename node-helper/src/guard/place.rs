//! Where an event's directory lies: inside a snapshot's `fs` tree, the snapshotter's own
//! directory (its metadata.db), or elsewhere on the filesystem. Pure path logic plus the
//! snapshot id → kind map read from metadata.db.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::time::{Duration, Instant};

use crate::image::SnapshotKind;
use crate::store::snapshotter_db::SnapshotterDb;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// `snapshots/<id>/fs` + `dir` (absolute inside the layer, "" for the root).
    Snapshot {
        id: u64,
        dir: String,
    },
    /// `snapshots/<id>` itself (where a repair keeps its staging directory).
    SnapshotDir {
        id: u64,
    },
    /// The overlayfs snapshotter's root (metadata.db lives there).
    SnapshotterRoot,
    Elsewhere,
}

/// Classifies a resolved directory path.
pub fn place_of(dir: &Path, snapshotter_root: &Path) -> Place {
    if dir == snapshotter_root {
        return Place::SnapshotterRoot;
    }
    let Ok(rest) = dir.strip_prefix(snapshotter_root.join("snapshots")) else {
        return Place::Elsewhere;
    };
    let mut parts = rest.components();
    let id = match parts.next() {
        Some(Component::Normal(id)) => match id.to_str().and_then(|s| {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<u64>().ok())
                .flatten()
        }) {
            Some(id) => id,
            None => return Place::Elsewhere,
        },
        _ => return Place::Elsewhere,
    };
    match parts.next() {
        None => return Place::SnapshotDir { id },
        Some(Component::Normal(fs)) if fs == "fs" => {}
        _ => return Place::Elsewhere,
    }
    let mut inner = String::new();
    for part in parts {
        inner.push('/');
        inner.push_str(&part.as_os_str().to_string_lossy());
    }
    Place::Snapshot { id, dir: inner }
}

/// The path inside the layer of entry `name` of directory `dir` ("." is the directory).
pub fn inner_path(dir: &str, name: &str) -> String {
    match name {
        "." | "" if dir.is_empty() => "/".into(),
        "." | "" => dir.into(),
        _ => format!("{dir}/{name}"),
    }
}

/// Least time between two reads of metadata.db prompted by unknown ids.
const REFRESH_GAP: Duration = Duration::from_millis(100);

/// Snapshot id → kind, re-read when metadata.db changed or an unknown id shows up.
pub struct SnapshotKinds {
    db: std::path::PathBuf,
    kinds: HashMap<u64, SnapshotKind>,
    stale: bool,
    last_read: Option<Instant>,
}

impl SnapshotKinds {
    pub fn new(db: std::path::PathBuf) -> SnapshotKinds {
        let mut kinds = SnapshotKinds {
            db,
            kinds: HashMap::new(),
            stale: true,
            last_read: None,
        };
        kinds.refresh();
        kinds
    }

    /// metadata.db was written: read it again before the next answer that depends on it.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    fn refresh(&mut self) {
        self.last_read = Some(Instant::now());
        self.stale = false;
        match SnapshotterDb::read(&self.db) {
            Ok(db) => {
                self.kinds = db.snapshots.values().map(|r| (r.id, r.kind)).collect();
            }
            // A missing or mid-write database: keep the last good map, try again later.
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the snapshotter database yet");
                self.stale = true;
            }
        }
    }

    /// The kind of snapshot `id`, reading metadata.db again when it may have changed.
    pub fn kind(&mut self, id: u64) -> SnapshotKind {
        let known = self.kinds.get(&id).copied();
        let recently = self.last_read.is_some_and(|t| t.elapsed() < REFRESH_GAP);
        if (self.stale || known.is_none()) && !recently {
            self.refresh();
            return self
                .kinds
                .get(&id)
                .copied()
                .unwrap_or(SnapshotKind::Unknown);
        }
        known.unwrap_or(SnapshotKind::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_fs_trees_and_nothing_else() {
        let root = Path::new("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs");
        let s = |p: &str| place_of(&root.join(p), root);
        assert_eq!(
            s("snapshots/12/fs"),
            Place::Snapshot {
                id: 12,
                dir: "".into()
            }
        );
        assert_eq!(
            s("snapshots/12/fs/usr/bin"),
            Place::Snapshot {
                id: 12,
                dir: "/usr/bin".into()
            }
        );
        assert_eq!(place_of(root, root), Place::SnapshotterRoot);
        assert_eq!(s("snapshots/12"), Place::SnapshotDir { id: 12 });
        for elsewhere in [
            "snapshots",
            "snapshots/12/work",
            "snapshots/12/snapmend-staging",
            "snapshots/rm-12/fs",
            "snapshots/new-123/fs",
            "snapshots/+12/fs",
            "snapshots/99999999999999999999999/fs",
        ] {
            assert_eq!(s(elsewhere), Place::Elsewhere, "{elsewhere}");
        }
        assert_eq!(place_of(Path::new("/etc"), root), Place::Elsewhere);
        assert_eq!(
            place_of(Path::new("/var/lib/containerd"), root),
            Place::Elsewhere
        );
    }

    #[test]
    fn inner_paths() {
        assert_eq!(inner_path("", "pause"), "/pause");
        assert_eq!(inner_path("/usr/bin", "ls"), "/usr/bin/ls");
        assert_eq!(inner_path("/usr/bin", "."), "/usr/bin");
        assert_eq!(inner_path("", "."), "/");
    }

    #[test]
    fn an_absent_database_knows_no_snapshot() {
        let mut kinds = SnapshotKinds::new("/nonexistent/metadata.db".into());
        assert_eq!(kinds.kind(1), SnapshotKind::Unknown);
    }
}
