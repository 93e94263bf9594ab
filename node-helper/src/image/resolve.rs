//! Image name → manifest for this platform → config → diffIDs → chainIDs → committed
//! overlayfs snapshots (containerd-layout.md §3.1, §5).

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::chain_id::chain_ids;
use super::platform::Platform;
use super::snapshot_chain::{
    ChainMismatch, RecordedChain, check_chain_length, check_recorded_parents,
};
use super::{ResolvedImage, ResolvedLayer, SnapshotRef};
use crate::error::{Error, Result, bounded_text};
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

/// The fully qualified form of a Docker-style short name, as CRI records images:
/// `busybox` → `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`.
/// `None` when the reference already names a registry (or is a bare digest).
pub fn normalize_docker_reference(reference: &str) -> Option<String> {
    if reference.starts_with("sha256:") || reference.is_empty() {
        return None;
    }
    let first = reference.split('/').next().unwrap_or_default();
    let has_domain =
        reference.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_domain {
        return None;
    }
    let path = if reference.contains('/') {
        reference.to_string()
    } else {
        format!("library/{reference}")
    };
    let last = path.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || path.contains('@');
    Some(format!(
        "docker.io/{path}{}",
        if tagged { "" } else { ":latest" }
    ))
}

/// containerd's media-type sanity check: a document must not contradict how it is described
/// (its own `mediaType`, or the fields only the other kind has).
pub fn check_document_kind(
    doc: &serde_json::Value,
    described_as_index: bool,
) -> std::result::Result<(), String> {
    let own = doc.get("mediaType").and_then(|m| m.as_str());
    let (wrong_types, wrong_fields, kind): (&[&str], &[&str], &str) = if described_as_index {
        (&MANIFEST_TYPES, &["config", "layers"], "an index")
    } else {
        (&INDEX_TYPES, &["manifests"], "a manifest")
    };
    if let Some(own) = own.filter(|o| wrong_types.contains(o)) {
        return Err(format!("is described as {kind} but is a {own}"));
    }
    if let Some(field) = wrong_fields.iter().find(|f| doc.get(**f).is_some()) {
        return Err(format!("is described as {kind} but has a {field:?} field"));
    }
    Ok(())
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
        let normalized = normalize_docker_reference(reference);
        let picked = pick_image_name(reference, &images).or_else(|| {
            normalized
                .as_deref()
                .and_then(|n| pick_image_name(n, &images))
        });
        match picked {
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
        let mut layers: Vec<ResolvedLayer> = Vec::with_capacity(diff_ids.len());
        // meta.db's backend key of the layer below, which the snapshotter must record as parent.
        let mut below_backend_key: Option<String> = None;
        for (i, (desc, (diff_id, chain_id))) in manifest
            .layers()
            .iter()
            .zip(diff_ids.iter().zip(&chains))
            .enumerate()
        {
            let digest = desc.digest().to_string();
            let parent_chain = i.checked_sub(1).map(|p| chains[p].as_str());
            let snapshot = self.snapshot_for(
                namespace,
                i,
                chain_id,
                parent_chain,
                below_backend_key.as_deref(),
            )?;
            below_backend_key = self
                .meta
                .snapshot(namespace, SNAPSHOTTER, chain_id)
                .map(|m| m.backend_key);
            layers.push(ResolvedLayer {
                index: i as u32,
                blob_path: self.content.blob_path(&digest)?,
                digest,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                snapshot,
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
        let is_index = INDEX_TYPES.contains(&media_type);
        if !is_index && !MANIFEST_TYPES.contains(&media_type) {
            return Err(image_error(
                reference,
                format!("{digest} has unsupported media type {media_type:?}"),
            ));
        }
        let bytes = self.content.read_document(digest)?;
        let what = if is_index { "index" } else { "manifest" };
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| image_error(reference, format!("{what} {digest}: {e}")))?;
        check_document_kind(&doc, is_index)
            .map_err(|e| image_error(reference, format!("{digest} {e}")))?;
        if is_index {
            let index: ImageIndex = serde_json::from_value(doc)
                .map_err(|e| image_error(reference, format!("index {digest}: {e}")))?;
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
        let manifest: ImageManifest = serde_json::from_value(doc)
            .map_err(|e| image_error(reference, format!("manifest {digest}: {e}")))?;
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
        Ok(Some((digest.to_string(), manifest)))
    }

    fn config(&self, reference: &str, digest: &str) -> Result<ImageConfiguration> {
        let bytes = self.content.read_document(digest)?;
        serde_json::from_slice::<ImageConfiguration>(&bytes)
            .map_err(|e| image_error(reference, format!("config {digest}: {e}")))
    }

    /// The committed snapshot keyed by `chain_id`, if both databases record it. Its recorded
    /// parents must agree with the image's layer order (`snapshot_chain`).
    fn snapshot_for(
        &self,
        namespace: &str,
        index: usize,
        chain_id: &str,
        parent_chain: Option<&str>,
        parent_backend_key: Option<&str>,
    ) -> Result<Option<SnapshotRef>> {
        let Some(meta) = self.meta.snapshot(namespace, SNAPSHOTTER, chain_id) else {
            tracing::debug!(chain_id, "no snapshot recorded in meta.db");
            return Ok(None);
        };
        let Some(record) = self.snapshots.get(&meta.backend_key) else {
            tracing::debug!(backend_key = %meta.backend_key, "snapshot not in the snapshotter's metadata.db");
            return Ok(None);
        };
        let mismatch = |m: ChainMismatch| Error::SnapshotChain {
            db: if m.in_snapshotter_db {
                self.snapshots.path.clone()
            } else {
                self.layout.meta_db()
            },
            snapshot: format!("{} ({})", record.id, bounded_text(&meta.backend_key)),
            index: index as u32,
            expected: m.expected,
            recorded: m.recorded,
        };
        check_recorded_parents(&RecordedChain {
            parent_chain_id: parent_chain,
            meta_parent: &meta.parent,
            parent_backend_key,
            backend_parent: &record.parent,
        })
        .map_err(mismatch)?;
        let lowers = self.snapshots.parent_chain(&meta.backend_key)?;
        check_chain_length(index, lowers.len()).map_err(mismatch)?;
        let dir_of = |id: u64| self.layout.snapshots_dir().join(id.to_string());
        let lower_fs = lowers.iter().map(|r| dir_of(r.id).join("fs")).collect();
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
    fn documents_must_not_contradict_their_descriptor() {
        let index = serde_json::json!({"mediaType": INDEX_TYPES[0], "manifests": []});
        let manifest =
            serde_json::json!({"mediaType": MANIFEST_TYPES[1], "config": {}, "layers": []});
        let untyped_index = serde_json::json!({"manifests": []});
        assert_eq!(check_document_kind(&index, true), Ok(()));
        assert_eq!(check_document_kind(&manifest, false), Ok(()));
        assert_eq!(check_document_kind(&untyped_index, true), Ok(()));
        assert!(
            check_document_kind(&index, false)
                .unwrap_err()
                .contains("but is a application/vnd.oci.image.index.v1+json")
        );
        assert!(
            check_document_kind(&manifest, true)
                .unwrap_err()
                .contains("but is a application/vnd.docker")
        );
        assert!(
            check_document_kind(&untyped_index, false)
                .unwrap_err()
                .contains("\"manifests\" field")
        );
        let untyped_manifest = serde_json::json!({"layers": []});
        assert!(
            check_document_kind(&untyped_manifest, true)
                .unwrap_err()
                .contains("\"layers\" field")
        );
    }

    #[test]
    fn docker_short_names_are_qualified_like_cri_records_them() {
        let n = |r: &str| normalize_docker_reference(r);
        assert_eq!(
            n("busybox").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            n("busybox:1.36").as_deref(),
            Some("docker.io/library/busybox:1.36")
        );
        assert_eq!(n("me/app:1").as_deref(), Some("docker.io/me/app:1"));
        assert_eq!(
            n("busybox@sha256:beef").as_deref(),
            Some("docker.io/library/busybox@sha256:beef")
        );
        assert_eq!(n("registry.k8s.io/pause:3.10"), None);
        assert_eq!(n("localhost/pause"), None);
        assert_eq!(n("localhost:5000/pause:1"), None);
        assert_eq!(n("sha256:578b"), None);
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

#[cfg(test)]
mod synthetic_store_tests {
    //! Documents written by hand into a temporary content store: Docker manifest lists,
    //! nested indexes, manifests without a platform, and malformed documents.

    use serde_json::json;
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::store::bolt::BoltDb;
    use crate::store::bolt::testing::{TBucket, build};
    use crate::store::content::ContentStore;
    use crate::store::meta_db::MetaDb;
    use crate::store::snapshotter_db::SnapshotterDb;
    use crate::store::{Store, StoreLayout};

    struct Synth {
        dir: tempfile::TempDir,
        images: Vec<(String, String, String)>,
    }

    impl Synth {
        fn new() -> Synth {
            Synth {
                dir: tempfile::tempdir().unwrap(),
                images: Vec::new(),
            }
        }

        fn blob(&self, bytes: &[u8]) -> String {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
            let path = self
                .dir
                .path()
                .join("io.containerd.content.v1.content/blobs/sha256")
                .join(&digest[7..]);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            digest
        }

        fn json(&self, v: serde_json::Value) -> (String, u64) {
            let bytes = serde_json::to_vec(&v).unwrap();
            (self.blob(&bytes), bytes.len() as u64)
        }

        /// A manifest of `media_type` with one layer per diff id; returns its descriptor.
        fn manifest(
            &self,
            media_type: &str,
            arch: &str,
            diff_ids: &[&str],
            layers: usize,
        ) -> serde_json::Value {
            let (config, config_size) = self.json(json!({
                "architecture": arch, "os": "linux",
                "container_config": {"Hostname": "x"}, "docker_version": "20.10",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }));
            let layer_descs: Vec<_> = (0..layers)
                .map(|i| {
                    json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                "digest": format!("sha256:{:064x}", i + 1), "size": 10})
                })
                .collect();
            let (digest, size) = self.json(json!({
                "schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": config_size},
                "layers": layer_descs,
            }));
            json!({"mediaType": media_type, "digest": digest, "size": size})
        }

        fn index(&self, media_type: &str, manifests: Vec<serde_json::Value>) -> serde_json::Value {
            let (digest, size) = self
                .json(json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}));
            json!({"mediaType": media_type, "digest": digest, "size": size})
        }

        fn image(&mut self, name: &str, target: &serde_json::Value) {
            self.images.push((
                name.to_string(),
                target["digest"].as_str().unwrap().to_string(),
                target["mediaType"].as_str().unwrap().to_string(),
            ));
        }

        fn store(&self) -> Store {
            let mut images = TBucket::new();
            for (name, digest, mt) in &self.images {
                images = images.bucket(
                    name,
                    TBucket::new().bucket(
                        "target",
                        TBucket::new()
                            .inline()
                            .value("digest", digest)
                            .value("mediatype", mt)
                            .value("size", [0x02]),
                    ),
                );
            }
            let root = TBucket::new().bucket(
                "v1",
                TBucket::new().bucket("k8s.io", TBucket::new().bucket("images", images)),
            );
            let meta = BoltDb::from_bytes(Path::new("/m/meta.db"), &build(&root, 4096, 2)).unwrap();
            let layout = StoreLayout::new(self.dir.path(), None);
            Store {
                content: ContentStore::new(&layout.content_root()),
                snapshots: SnapshotterDb {
                    path: layout.snapshotter_db(),
                    snapshots: Default::default(),
                },
                meta: MetaDb::from_bolt(meta),
                layout,
            }
        }
    }

    use std::path::Path;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn with_platform(
        mut d: serde_json::Value,
        arch: &str,
        variant: Option<&str>,
    ) -> serde_json::Value {
        d["platform"] = json!({"architecture": arch, "os": "linux", "features": ["sse4"]});
        if let Some(v) = variant {
            d["platform"]["variant"] = json!(v);
        }
        d
    }

    #[test]
    fn a_docker_manifest_list_picks_this_platform() {
        let mut s = Synth::new();
        let arm = with_platform(
            s.manifest(DOCKER_MANIFEST, "arm64", &[D1], 1),
            "arm64",
            Some("v8"),
        );
        let amd = with_platform(
            s.manifest(DOCKER_MANIFEST, "amd64", &[D1, D2], 2),
            "amd64",
            None,
        );
        let list = s.index(DOCKER_LIST, vec![arm.clone(), amd.clone()]);
        s.image("docker.io/library/busybox:1", &list);
        let store = s.store();
        let amd64 = store
            .resolve_image(
                "k8s.io",
                "docker.io/library/busybox:1",
                &Platform::new("linux", "amd64", None),
            )
            .unwrap();
        assert_eq!(amd64.manifest_digest, amd["digest"].as_str().unwrap());
        assert_eq!(amd64.layers.len(), 2);
        assert_eq!(
            amd64.layers[1].chain_id,
            chain_ids(&[D1.into(), D2.into()])[1]
        );
        assert!(amd64.layers.iter().all(|l| l.snapshot.is_none()));
        let arm64 = store
            .resolve_image(
                "k8s.io",
                "docker.io/library/busybox:1",
                &Platform::new("linux", "arm64", None),
            )
            .unwrap();
        assert_eq!(arm64.manifest_digest, arm["digest"].as_str().unwrap());
        let short = store
            .resolve_image(
                "k8s.io",
                "busybox:1",
                &Platform::new("linux", "arm64", None),
            )
            .unwrap();
        assert_eq!(
            short.name, "docker.io/library/busybox:1",
            "a short name finds the qualified record"
        );
    }

    #[test]
    fn the_best_ranked_fallback_wins_and_platformless_entries_come_last() {
        let mut s = Synth::new();
        let v6 = with_platform(s.manifest(OCI_MANIFEST, "arm", &[D1], 1), "arm", Some("v6"));
        let v7 = with_platform(s.manifest(OCI_MANIFEST, "arm", &[D2], 1), "arm", Some("v7"));
        let bare = s.manifest(OCI_MANIFEST, "arm64", &[D1, D2], 2);
        let index = s.index(OCI_INDEX, vec![bare.clone(), v6, v7.clone()]);
        s.image("i:1", &index);
        let store = s.store();
        let on_arm64 = store
            .resolve_image("k8s.io", "i:1", &Platform::new("linux", "arm64", None))
            .unwrap();
        assert_eq!(
            on_arm64.manifest_digest,
            v7["digest"].as_str().unwrap(),
            "arm/v7 ranks above a platform-less entry"
        );
        // amd64 runs none of the arm entries; the platform-less one is checked via its config (arm64)
        let e = store
            .resolve_image("k8s.io", "i:1", &Platform::new("linux", "amd64", None))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("no manifest for platform linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn a_platformless_manifest_is_matched_by_its_config_and_nested_indexes_are_followed() {
        let mut s = Synth::new();
        let bare = s.manifest(OCI_MANIFEST, "amd64", &[D1], 1);
        let inner = s.index(OCI_INDEX, vec![bare.clone()]);
        let outer = s.index(OCI_INDEX, vec![inner]);
        s.image("nested:1", &outer);
        let img = s
            .store()
            .resolve_image("k8s.io", "nested:1", &Platform::new("linux", "amd64", None))
            .unwrap();
        assert_eq!(img.manifest_digest, bare["digest"].as_str().unwrap());
    }

    #[test]
    fn malformed_documents_are_errors_naming_the_image() {
        let mut s = Synth::new();
        // diff_ids and layers disagree
        let short = s.manifest(DOCKER_MANIFEST, "amd64", &[D1], 2);
        s.image("short:1", &short);
        // an index described as a manifest
        let list = s.index(OCI_INDEX, vec![]);
        let lying =
            json!({"mediaType": OCI_MANIFEST, "digest": list["digest"], "size": list["size"]});
        s.image("lying:1", &lying);
        // an unsupported media type
        let schema1 = json!({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws", "digest": list["digest"], "size": 1});
        s.image("old:1", &schema1);
        // a blob that is not JSON
        let junk = s.blob(b"\x00\x01 not json");
        s.image(
            "junk:1",
            &json!({"mediaType": OCI_MANIFEST, "digest": junk, "size": 3}),
        );
        let store = s.store();
        let host = Platform::new("linux", "amd64", None);
        for (name, expect) in [
            ("short:1", "lists 1 diff_ids for 2 layers"),
            ("lying:1", "is described as a manifest but is a"),
            ("old:1", "unsupported media type"),
            ("junk:1", "manifest sha256:"),
        ] {
            let e = store.resolve_image("k8s.io", name, &host).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, Error::Image { .. }), "{name}: {text}");
            assert!(
                text.contains(name) && text.contains(expect),
                "{name}: {text}"
            );
        }
    }
}
