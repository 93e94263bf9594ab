//! The metadata plugin's `meta.db`: images and the snapshot keys of each namespace
//! (containerd-layout.md §2).

use std::path::Path;

use super::bolt::{BoltDb, Bucket, Recorded};
use super::varint::varint;
use crate::error::{Error, Result};

/// A content descriptor as containerd stores an image target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetDescriptor {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    pub target: TargetDescriptor,
}

/// A snapshot entry of `v1/<ns>/snapshots/<snapshotter>/<key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSnapshot {
    pub key: String,
    /// What the snapshotter knows it as: `<namespace>/<N>/<key>`.
    pub backend_key: String,
    /// The parent's snapshot key (a chainID for image layers); `Absent` for a base layer.
    pub parent: Recorded,
}

/// A decoded meta.db.
#[derive(Clone, Debug)]
pub struct MetaDb {
    db: BoltDb,
}

impl MetaDb {
    pub fn read(path: &Path) -> Result<MetaDb> {
        Ok(MetaDb {
            db: BoltDb::read(path)?,
        })
    }

    pub fn from_bolt(db: BoltDb) -> MetaDb {
        MetaDb { db }
    }

    fn namespace(&self, ns: &str) -> Option<&Bucket> {
        self.db.root.path(&[b"v1", ns.as_bytes()])
    }

    /// The schema version (`v1/version`: 3 in containerd 1.6/1.7, 4 in 2.x).
    pub fn schema_version(&self) -> Option<i64> {
        self.db
            .root
            .bucket(b"v1")?
            .get(b"version")
            .and_then(varint)
            .map(|(v, _)| v)
    }

    /// Every namespace (each bucket directly under `v1`).
    pub fn namespaces(&self) -> Vec<String> {
        self.db
            .root
            .bucket(b"v1")
            .map(|v1| {
                v1.buckets()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn image_names(&self, ns: &str) -> Vec<String> {
        self.namespace(ns)
            .and_then(|n| n.bucket(b"images"))
            .map(|images| {
                images
                    .buckets()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The image named exactly `name`; `Ok(None)` when there is none.
    pub fn image(&self, ns: &str, name: &str) -> Result<Option<ImageRecord>> {
        let Some(image) = self
            .namespace(ns)
            .and_then(|n| n.path(&[b"images", name.as_bytes()]))
        else {
            return Ok(None);
        };
        let bad = |reason: &str| Error::Bolt {
            path: self.db.path.clone(),
            reason: format!("image {name:?} in namespace {ns:?}: {reason}"),
        };
        let target = image.bucket(b"target").ok_or_else(|| bad("no target"))?;
        let digest = target
            .get_str(b"digest")
            .ok_or_else(|| bad("target has no digest"))?;
        let media_type = target
            .get_str(b"mediatype")
            .ok_or_else(|| bad("target has no media type"))?;
        let size = match target.get(b"size") {
            Some(raw) => varint(raw)
                .and_then(|(v, _)| u64::try_from(v).ok())
                .ok_or_else(|| bad("target size is not a varint"))?,
            None => 0,
        };
        Ok(Some(ImageRecord {
            name: name.to_string(),
            target: TargetDescriptor {
                digest: digest.to_string(),
                media_type: media_type.to_string(),
                size,
            },
        }))
    }

    /// The labels of content blob `digest` in `ns` (`v1/<ns>/content/blob/<digest>/labels`);
    /// empty when the blob has no record (a discarded layer has none; its manifest keeps its own).
    pub fn content_labels(&self, ns: &str, digest: &str) -> Vec<(String, String)> {
        self.namespace(ns)
            .and_then(|n| n.path(&[b"content", b"blob", digest.as_bytes(), b"labels"]))
            .map(|labels| {
                labels
                    .entries
                    .keys()
                    .filter_map(|k| {
                        let v = labels.get_str(k)?;
                        Some((String::from_utf8_lossy(k).into_owned(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The snapshot `key` of `snapshotter` in `ns`; `None` when it is not recorded.
    pub fn snapshot(&self, ns: &str, snapshotter: &str, key: &str) -> Option<MetaSnapshot> {
        let entry =
            self.namespace(ns)?
                .path(&[b"snapshots", snapshotter.as_bytes(), key.as_bytes()])?;
        Some(MetaSnapshot {
            key: key.to_string(),
            backend_key: entry.get_str(b"name")?.to_string(),
            parent: entry.get_recorded(b"parent"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bolt::testing::{TBucket, build};

    fn fixture() -> MetaDb {
        let chain = "sha256:eedaef6ad9d9eccdb4a91112defae7c6f82fb597578f28721cccbacfbd30392f";
        let root = TBucket::new().bucket(
            "v1",
            TBucket::new().value("version", [0x06]).bucket(
                "k8s.io",
                TBucket::new()
                    .bucket(
                        "images",
                        TBucket::new()
                            .bucket(
                                "example.local/pause:3.9",
                                TBucket::new().bucket(
                                    "target",
                                    TBucket::new()
                                        .inline()
                                        .value("digest", "sha256:09cc")
                                        .value(
                                            "mediatype",
                                            "application/vnd.oci.image.manifest.v1+json",
                                        )
                                        .value("size", [0xa8, 0x06]),
                                ),
                            )
                            .bucket(
                                "broken",
                                TBucket::new().bucket("labels", TBucket::new().inline()),
                            ),
                    )
                    .bucket(
                        "snapshots",
                        TBucket::new().bucket(
                            "overlayfs",
                            TBucket::new()
                                .bucket(
                                    chain,
                                    TBucket::new()
                                        .value("name", format!("k8s.io/2/{chain}"))
                                        .bucket(
                                            "children",
                                            TBucket::new().inline().value("p1", ""),
                                        ),
                                )
                                .bucket(
                                    "sha256:child",
                                    TBucket::new()
                                        .inline()
                                        .value("name", "k8s.io/5/sha256:child")
                                        .value("parent", chain),
                                ),
                        ),
                    ),
            ),
        );
        MetaDb::from_bolt(
            BoltDb::from_bytes(Path::new("/r/meta.db"), &build(&root, 4096, 9)).unwrap(),
        )
    }

    #[test]
    fn images_decode_with_varint_size() {
        let db = fixture();
        let img = db
            .image("k8s.io", "example.local/pause:3.9")
            .unwrap()
            .unwrap();
        assert_eq!(img.target.digest, "sha256:09cc");
        assert_eq!(
            img.target.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(img.target.size, 404);
        assert_eq!(
            db.image("default", "example.local/pause:3.9").unwrap(),
            None
        );
        assert_eq!(db.image("k8s.io", "nope").unwrap(), None);
        assert_eq!(db.namespaces(), vec!["k8s.io".to_string()]);
        assert_eq!(db.schema_version(), Some(3));
        assert_eq!(
            db.image_names("k8s.io"),
            vec!["broken".to_string(), "example.local/pause:3.9".to_string()]
        );
    }

    #[test]
    fn an_image_without_target_is_an_error_naming_it() {
        let e = fixture().image("k8s.io", "broken").unwrap_err().to_string();
        assert!(
            e.contains("/r/meta.db") && e.contains("\"broken\"") && e.contains("no target"),
            "{e}"
        );
    }

    #[test]
    fn snapshots_give_backend_key_and_parent() {
        let db = fixture();
        let chain = "sha256:eedaef6ad9d9eccdb4a91112defae7c6f82fb597578f28721cccbacfbd30392f";
        let base = db.snapshot("k8s.io", "overlayfs", chain).unwrap();
        assert_eq!(base.backend_key, format!("k8s.io/2/{chain}"));
        assert_eq!(base.parent, Recorded::Absent);
        let child = db.snapshot("k8s.io", "overlayfs", "sha256:child").unwrap();
        assert_eq!(child.parent.text(), Some(chain));
        assert_eq!(db.snapshot("k8s.io", "native", chain), None);
    }
}
