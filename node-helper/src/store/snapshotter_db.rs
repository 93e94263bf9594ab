//! The overlayfs snapshotter's `metadata.db`: backend key → snapshot id, kind, parent
//! (containerd-layout.md §3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::bolt::{BoltDb, Recorded};
use super::varint::uvarint;
use crate::error::{Error, Result};
use crate::image::SnapshotKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub backend_key: String,
    /// Decimal id = directory name under `snapshots/`.
    pub id: u64,
    pub kind: SnapshotKind,
    /// Parent's backend key; `Absent` only for a base layer's snapshot.
    pub parent: Recorded,
}

/// All snapshot records of a metadata.db, by backend key.
#[derive(Clone, Debug)]
pub struct SnapshotterDb {
    pub path: PathBuf,
    pub snapshots: BTreeMap<String, SnapshotRecord>,
}

pub fn kind_from_byte(b: u8) -> SnapshotKind {
    match b {
        1 => SnapshotKind::View,
        2 => SnapshotKind::Active,
        3 => SnapshotKind::Committed,
        _ => SnapshotKind::Unknown,
    }
}

impl SnapshotterDb {
    pub fn read(path: &Path) -> Result<SnapshotterDb> {
        Self::from_bolt(BoltDb::read(path)?)
    }

    pub fn from_bolt(db: BoltDb) -> Result<SnapshotterDb> {
        let mut snapshots = BTreeMap::new();
        if let Some(bucket) = db.root.path(&[b"v1", b"snapshots"]) {
            for (key, entry) in bucket.buckets() {
                let backend_key = String::from_utf8_lossy(key).into_owned();
                let bad = |reason: &str| Error::Bolt {
                    path: db.path.clone(),
                    reason: format!("snapshot {backend_key:?}: {reason}"),
                };
                let id = entry
                    .get(b"id")
                    .and_then(uvarint)
                    .map(|(id, _)| id)
                    .ok_or_else(|| bad("id missing or not a uvarint"))?;
                let kind = entry
                    .get(b"kind")
                    .and_then(|k| k.first().copied())
                    .map(kind_from_byte)
                    .unwrap_or(SnapshotKind::Unknown);
                let parent = entry.get_recorded(b"parent");
                snapshots.insert(
                    backend_key.clone(),
                    SnapshotRecord {
                        backend_key,
                        id,
                        kind,
                        parent,
                    },
                );
            }
        }
        Ok(SnapshotterDb {
            path: db.path,
            snapshots,
        })
    }

    pub fn get(&self, backend_key: &str) -> Option<&SnapshotRecord> {
        self.snapshots.get(backend_key)
    }

    /// Parent records of `backend_key`, immediate parent first (containerd's lowerdir order).
    /// Errors on a missing or unreadable parent, or a cycle.
    pub fn parent_chain(&self, backend_key: &str) -> Result<Vec<&SnapshotRecord>> {
        let bad = |reason: String| Error::Bolt {
            path: self.path.clone(),
            reason: format!("snapshot {backend_key:?}: {reason}"),
        };
        let mut chain: Vec<&SnapshotRecord> = Vec::new();
        let mut current = match self.get(backend_key) {
            Some(record) => &record.parent,
            None => return Ok(chain),
        };
        loop {
            let parent = match current {
                Recorded::Absent => return Ok(chain),
                Recorded::Text(parent) => parent,
                Recorded::NotText(_) => {
                    let at = chain.last().map_or(backend_key, |r| r.backend_key.as_str());
                    return Err(bad(format!(
                        "the parent of {at:?} is {}",
                        current.describe()
                    )));
                }
            };
            let record = self
                .get(parent)
                .ok_or_else(|| bad(format!("parent {parent:?} is not recorded")))?;
            if chain.len() > self.snapshots.len() {
                return Err(bad("parent chain loops".into()));
            }
            chain.push(record);
            current = &record.parent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bolt::testing::{TBucket, build};

    fn entry(id: &[u8], kind: u8, parent: Option<&str>) -> TBucket {
        let mut b = TBucket::new()
            .inline()
            .value("id", id)
            .value("kind", [kind]);
        if let Some(p) = parent {
            b = b.value("parent", p);
        }
        b
    }

    fn fixture(loop_: bool) -> SnapshotterDb {
        let snaps = TBucket::new()
            .bucket(
                "k8s.io/2/sha256:base",
                entry(&[0x01], 3, loop_.then_some("k8s.io/7/sha256:top")),
            )
            .bucket(
                "k8s.io/3/p1",
                entry(&[0x02], 2, Some("k8s.io/7/sha256:top")),
            )
            .bucket(
                "k8s.io/6/sha256:mid",
                entry(&[0xac, 0x02], 3, Some("k8s.io/2/sha256:base")),
            )
            .bucket(
                "k8s.io/7/sha256:top",
                entry(&[0x04], 3, Some("k8s.io/6/sha256:mid")),
            );
        let root = TBucket::new().bucket(
            "v1",
            TBucket::new()
                .bucket("snapshots", snaps)
                .bucket("parents", TBucket::new().inline()),
        );
        SnapshotterDb::from_bolt(
            BoltDb::from_bytes(Path::new("/s/metadata.db"), &build(&root, 4096, 4)).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn records_decode_ids_kinds_and_parents() {
        let db = fixture(false);
        let mid = db.get("k8s.io/6/sha256:mid").unwrap();
        assert_eq!(mid.id, 300);
        assert_eq!(mid.kind, SnapshotKind::Committed);
        assert_eq!(db.get("k8s.io/3/p1").unwrap().kind, SnapshotKind::Active);
        assert_eq!(kind_from_byte(1), SnapshotKind::View);
        assert_eq!(kind_from_byte(0), SnapshotKind::Unknown);
        assert_eq!(kind_from_byte(9), SnapshotKind::Unknown);
    }

    #[test]
    fn parent_chain_is_nearest_first() {
        let db = fixture(false);
        let ids: Vec<u64> = db
            .parent_chain("k8s.io/3/p1")
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![4, 300, 1]);
        assert!(db.parent_chain("k8s.io/2/sha256:base").unwrap().is_empty());
    }

    #[test]
    fn a_parent_loop_is_an_error() {
        let e = fixture(true)
            .parent_chain("k8s.io/3/p1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("loops"), "{e}");
    }

    #[test]
    fn a_bad_id_is_an_error_naming_the_snapshot() {
        let snaps = TBucket::new().bucket(
            "k8s.io/2/x",
            TBucket::new()
                .inline()
                .value("id", [0x80])
                .value("kind", [3]),
        );
        let root = TBucket::new().bucket("v1", TBucket::new().bucket("snapshots", snaps));
        let e = SnapshotterDb::from_bolt(
            BoltDb::from_bytes(Path::new("/s/metadata.db"), &build(&root, 4096, 4)).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("k8s.io/2/x") && e.contains("uvarint"), "{e}");
    }
}
