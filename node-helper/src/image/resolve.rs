//! Image name → manifest for this platform → config → diffIDs → chainIDs → committed
//! overlayfs snapshots (containerd-layout.md §3.1, §5).

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::chain_id::chain_ids;
use super::platform::Platform;
use super::{ResolvedImage, ResolvedLayer, SnapshotRef};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::meta_db::ImageRecord;

/// The snapshotter whose snapshots snapmend understands.
pub const SNAPSHOTTER: &str = "overlayfs";

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Indexes nest rarely and shallowly; deeper means a loop.
const MAX_INDEX_DEPTH: usize = 8;

/// Chooses among names: an exact name first; for a digest reference (`repo@sha256:…` or a
/// bare `sha256:…`) an image whose target has that digest, preferring the same repository.
pub fn pick_image_name<'a>(reference: &str, images: &'a [(String, String)]) -> Option<&'a str> {
    if let Some((name, _)) = images.iter().find(|(name, _)| name == reference) {
        return Some(name);
    }
    let (repo, digest) = match reference.rsplit_once('@') {
        Some((repo, digest)) => (Some(repo), digest),
        None if reference.starts_with("sha256:") => (None, reference),
        None => return None,
    };
    let same_repo = |name: &str| {
        repo.is_some_and(|r| {
            name.strip_prefix(r)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
        })
    };
    let mut matching: Vec<&(String, String)> = images
        .iter()
        .filter(|(_, target)| target == digest)
        .collect();
    matching.sort_by_key(|(name, _)| !same_repo(name));
    matching.first().map(|(name, _)| name.as_str())
}

fn image_error(reference: &str, reason: impl Into<String>) -> Error {
    Error::Image {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    d.platform().as_ref().map(|p| {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    })
}

impl Store {
    /// The image record for `reference` in `namespace`.
    pub fn find_image(&self, namespace: &str, reference: &str) -> Result<Option<ImageRecord>> {
        if let Some(record) = self.meta.image(namespace, reference)? {
            return Ok(Some(record));
        }
        let mut images = Vec::new();
        for name in self.meta.image_names(namespace) {
            if let Some(record) = self.meta.image(namespace, &name)? {
                images.push((name, record.target.digest));
            }
        }
        match pick_image_name(reference, &images) {
            Some(name) => self.meta.image(namespace, name),
            None => Ok(None),
        }
    }

    /// Resolves `reference` for `host` down to its snapshots.
    #[tracing::instrument(level = "debug", skip(self, host), fields(%host))]
    pub fn resolve_image(
        &self,
        namespace: &str,
        reference: &str,
        host: &Platform,
    ) -> Result<ResolvedImage> {
        let record =
            self.find_image(namespace, reference)?
                .ok_or_else(|| Error::ImageNotFound {
                    reference: reference.to_string(),
                    namespace: namespace.to_string(),
                })?;
        let target = &record.target;
        let (manifest_digest, manifest) = self
            .select_manifest(reference, &target.digest, &target.media_type, None, host, 0)?
            .ok_or_else(|| {
                image_error(
                    reference,
                    format!("no manifest for platform {host} in {}", target.digest),
                )
            })?;
        let config_digest = manifest.config().digest().to_string();
        let config = self.config(reference, &config_digest)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(image_error(
                reference,
                format!(
                    "config {config_digest} lists {} diff_ids for {} layers",
                    diff_ids.len(),
                    manifest.layers().len()
                ),
            ));
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (i, (desc, (diff_id, chain_id))) in manifest
            .layers()
            .iter()
            .zip(diff_ids.iter().zip(&chains))
            .enumerate()
        {
            let digest = desc.digest().to_string();
            let parent_chain = i.checked_sub(1).map(|p| chains[p].as_str());
            layers.push(ResolvedLayer {
                index: i as u32,
                blob_path: self.content.blob_path(&digest)?,
                digest,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                snapshot: self.snapshot_for(namespace, chain_id, parent_chain)?,
            });
        }
        Ok(ResolvedImage {
            name: record.name,
            manifest_digest,
            config_digest,
            layers,
        })
    }

    /// Follows indexes to the manifest for `host` (containerd keeps the best-ranked child).
    fn select_manifest(
        &self,
        reference: &str,
        digest: &str,
        media_type: &str,
        platform: Option<Platform>,
        host: &Platform,
        depth: usize,
    ) -> Result<Option<(String, ImageManifest)>> {
        if depth > MAX_INDEX_DEPTH {
            return Err(image_error(
                reference,
                format!("indexes nested deeper than {MAX_INDEX_DEPTH} at {digest}"),
            ));
        }
        let bytes = self.content.read_document(digest)?;
        let parse_err = |what: &str, e: oci_spec::OciSpecError| {
            image_error(reference, format!("{what} {digest}: {e}"))
        };
        if INDEX_TYPES.contains(&media_type) {
            let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| parse_err("index", e))?;
            if let Some(own) = index.media_type().as_ref().map(ToString::to_string)
                && MANIFEST_TYPES.contains(&own.as_str())
            {
                return Err(image_error(
                    reference,
                    format!("{digest} is described as an index but is a {own}"),
                ));
            }
            let mut children: Vec<(usize, &Descriptor, Option<Platform>)> = index
                .manifests()
                .iter()
                .filter_map(|d| {
                    let p = descriptor_platform(d);
                    match &p {
                        Some(p) => host.rank(p).map(|r| (r, d, Some(p.clone()))),
                        None => Some((usize::MAX, d, None)),
                    }
                })
                .collect();
            children.sort_by_key(|(rank, _, _)| *rank);
            for (_, child, p) in children {
                let found = self.select_manifest(
                    reference,
                    child.digest().as_ref(),
                    child.media_type().as_ref(),
                    p,
                    host,
                    depth + 1,
                )?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            return Ok(None);
        }
        if MANIFEST_TYPES.contains(&media_type) {
            let manifest =
                ImageManifest::from_reader(&bytes[..]).map_err(|e| parse_err("manifest", e))?;
            if let Some(own) = manifest.media_type().as_ref().map(ToString::to_string)
                && INDEX_TYPES.contains(&own.as_str())
            {
                return Err(image_error(
                    reference,
                    format!("{digest} is described as a manifest but is a {own}"),
                ));
            }
            // Reached through an index without a platform: the config says what it runs on.
            if depth > 0 && platform.is_none() {
                let config = self.config(reference, manifest.config().digest().as_ref())?;
                let p = Platform::new(
                    &config.os().to_string(),
                    &config.architecture().to_string(),
                    config.variant().as_deref(),
                );
                if host.rank(&p).is_none() {
                    return Ok(None);
                }
            }
            return Ok(Some((digest.to_string(), manifest)));
        }
        Err(image_error(
            reference,
            format!("{digest} has unsupported media type {media_type:?}"),
        ))
    }

    fn config(&self, reference: &str, digest: &str) -> Result<ImageConfiguration> {
        let bytes = self.content.read_document(digest)?;
        ImageConfiguration::from_reader(&bytes[..])
            .map_err(|e| image_error(reference, format!("config {digest}: {e}")))
    }

    /// The committed snapshot keyed by `chain_id`, if both databases record it.
    fn snapshot_for(
        &self,
        namespace: &str,
        chain_id: &str,
        parent_chain: Option<&str>,
    ) -> Result<Option<SnapshotRef>> {
        let Some(meta) = self.meta.snapshot(namespace, SNAPSHOTTER, chain_id) else {
            tracing::debug!(chain_id, "no snapshot recorded in meta.db");
            return Ok(None);
        };
        if meta.parent.as_deref() != parent_chain {
            tracing::warn!(chain_id, recorded = ?meta.parent, expected = ?parent_chain, "snapshot parent differs from the image's layer order");
        }
        let Some(record) = self.snapshots.get(&meta.backend_key) else {
            tracing::debug!(backend_key = %meta.backend_key, "snapshot not in the snapshotter's metadata.db");
            return Ok(None);
        };
        let dir_of = |id: u64| self.layout.snapshots_dir().join(id.to_string());
        let lower_fs = self
            .snapshots
            .parent_chain(&meta.backend_key)?
            .iter()
            .map(|r| dir_of(r.id).join("fs"))
            .collect();
        let dir = dir_of(record.id);
        Ok(Some(SnapshotRef {
            id: record.id.to_string(),
            backend_key: meta.backend_key,
            kind: record.kind,
            fs: dir.join("fs"),
            dir,
            lower_fs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> Vec<(String, String)> {
        [
            ("example.local/pause:3.9", "sha256:09cc"),
            ("example.local/pause@sha256:09cc", "sha256:09cc"),
            ("other.local/pause:1", "sha256:09cc"),
            ("sha256:578b", "sha256:09cc"),
            ("busybox:1", "sha256:beef"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn exact_names_win() {
        let i = images();
        assert_eq!(
            pick_image_name("example.local/pause:3.9", &i),
            Some("example.local/pause:3.9")
        );
        assert_eq!(pick_image_name("sha256:578b", &i), Some("sha256:578b"));
        assert_eq!(pick_image_name("example.local/pause:4", &i), None);
    }

    #[test]
    fn digest_references_match_targets_preferring_the_repository() {
        let i = images();
        assert_eq!(
            pick_image_name("other.local/pause@sha256:09cc", &i),
            Some("other.local/pause:1")
        );
        assert_eq!(
            pick_image_name("busybox@sha256:beef", &i),
            Some("busybox:1")
        );
        assert_eq!(pick_image_name("sha256:beef", &i), Some("busybox:1"));
        assert_eq!(pick_image_name("nobody@sha256:beef", &i), Some("busybox:1"));
        assert_eq!(pick_image_name("busybox@sha256:dead", &i), None);
    }
}

#[cfg(test)]
mod store_fixture_tests {
    //! Against `testdata/store`, written by a real containerd 1.6.20 (see testdata/README.md).

    use std::path::{Path, PathBuf};

    use super::*;
    use crate::image::SnapshotKind;
    use crate::store::StoreLayout;

    fn fixture_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/store")
    }

    fn store() -> Store {
        Store::open(StoreLayout::new(&fixture_root(), None)).unwrap()
    }

    fn amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }

    #[test]
    fn schema2_single_layer_image_resolves_to_a_base_snapshot() {
        let img = store()
            .resolve_image("k8s.io", "snapmend.test/pause:schema2", &amd64())
            .unwrap();
        assert_eq!(img.layers.len(), 1);
        let layer = &img.layers[0];
        assert_eq!(
            layer.media_type,
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(layer.chain_id, layer.diff_id);
        assert!(layer.blob_path.is_file());
        let snap = layer.snapshot.as_ref().unwrap();
        assert_eq!(snap.kind, SnapshotKind::Committed);
        assert!(snap.is_base());
        assert_eq!(
            snap.backend_key.rsplit('/').next(),
            Some(layer.chain_id.as_str())
        );
        assert_eq!(
            snap.fs,
            fixture_root()
                .join("io.containerd.snapshotter.v1.overlayfs/snapshots")
                .join(&snap.id)
                .join("fs")
        );
    }

    #[test]
    fn an_index_resolves_to_this_platforms_manifest_and_chains_snapshots() {
        let s = store();
        let record = s
            .find_image("k8s.io", "snapmend.test/multi:1")
            .unwrap()
            .unwrap();
        assert_eq!(
            record.target.media_type,
            "application/vnd.oci.image.index.v1+json"
        );
        let img = s
            .resolve_image("k8s.io", "snapmend.test/multi:1", &amd64())
            .unwrap();
        assert_ne!(img.manifest_digest, record.target.digest);
        assert_eq!(img.layers.len(), 2);
        assert_eq!(
            img.layers[1].media_type,
            "application/vnd.oci.image.layer.v1.tar"
        );
        // containerd found its snapshots by the chain ids we computed
        let base = img.layers[0].snapshot.as_ref().unwrap();
        let top = img.layers[1].snapshot.as_ref().unwrap();
        assert_eq!(top.lower_fs, vec![base.fs.clone()]);
        assert_ne!(img.layers[1].chain_id, img.layers[1].diff_id);
    }

    #[test]
    fn a_platform_whose_blobs_were_not_imported_or_not_listed_is_an_error() {
        let s = store();
        let e = s
            .resolve_image(
                "k8s.io",
                "snapmend.test/multi:1",
                &Platform::new("linux", "arm64", None),
            )
            .unwrap_err();
        assert!(
            matches!(e, Error::Io { .. }),
            "arm64 manifest blob is absent: {e}"
        );
        let e = s
            .resolve_image(
                "k8s.io",
                "snapmend.test/multi:1",
                &Platform::new("linux", "riscv64", None),
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("no manifest for platform linux/riscv64"),
            "{e}"
        );
    }

    #[test]
    fn unknown_images_and_namespaces_are_image_not_found() {
        let s = store();
        for (ns, name) in [
            ("k8s.io", "snapmend.test/nope:1"),
            ("default", "snapmend.test/pause:schema2"),
        ] {
            let e = s.resolve_image(ns, name, &amd64()).unwrap_err();
            assert!(matches!(e, Error::ImageNotFound { .. }), "{e}");
        }
    }

    #[test]
    fn a_digest_reference_finds_the_tagged_image() {
        let s = store();
        let target = s
            .find_image("k8s.io", "snapmend.test/pause:schema2")
            .unwrap()
            .unwrap()
            .target
            .digest;
        let img = s
            .resolve_image("k8s.io", &format!("snapmend.test/pause@{target}"), &amd64())
            .unwrap();
        assert_eq!(img.name, "snapmend.test/pause:schema2");
        assert_eq!(img.manifest_digest, target);
    }

    #[test]
    fn the_real_meta_db_has_schema_version_3_inside_v1() {
        let s = store();
        assert_eq!(s.meta.namespaces(), vec!["k8s.io".to_string()]);
        assert_eq!(s.meta.schema_version(), Some(3));
        assert_eq!(s.snapshots.snapshots.len(), 3);
        assert!(
            s.snapshots
                .snapshots
                .values()
                .all(|r| r.kind == SnapshotKind::Committed)
        );
    }
}
