//! Images (config, manifest, optional multi-platform index) and the OCI layout tarball that
//! `ctr images import` reads: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::tar_layer::{BuiltLayer, Compression, LayerSpec, build_layer};
use super::{chain_ids, digest_of};
use crate::TestError;

/// Annotation `ctr images import` takes the image name from.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Which family of media types the manifest, config and layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestStyle {
    Oci,
    /// Docker schema2, like registry.k8s.io's pause image.
    Docker,
}

impl ManifestStyle {
    fn manifest_type(self) -> &'static str {
        match self {
            ManifestStyle::Oci => "application/vnd.oci.image.manifest.v1+json",
            ManifestStyle::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    fn index_type(self) -> &'static str {
        match self {
            ManifestStyle::Oci => "application/vnd.oci.image.index.v1+json",
            ManifestStyle::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            ManifestStyle::Oci => "application/vnd.oci.image.config.v1+json",
            ManifestStyle::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    /// Layer media type for a compression (Docker schema2 has no zstd type; the OCI one is used).
    pub fn layer_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (ManifestStyle::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (ManifestStyle::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (_, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (_, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// An OCI platform (`os`/`architecture`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Self {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
        }
    }

    /// This machine's platform in OCI spelling (what containerd unpacks by default).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform::new("linux", arch)
    }

    /// Platforms that are surely not this host's, for multi-platform indexes.
    pub fn foreign() -> Vec<Platform> {
        let host = Platform::host();
        [
            Platform::new("linux", "s390x"),
            Platform::new("linux", "riscv64"),
            Platform::new("windows", "amd64"),
        ]
        .into_iter()
        .filter(|p| *p != host)
        .take(2)
        .collect()
    }

    fn to_json(&self) -> Value {
        json!({"os": self.os, "architecture": self.architecture})
    }
}

/// An image to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Name as containerd will record it, e.g. `snapmend.test/pause:1`.
    pub name: String,
    pub style: ManifestStyle,
    /// Bottom layer first; for this host's platform.
    pub layers: Vec<LayerSpec>,
    pub entrypoint: Vec<String>,
    /// When not empty, the image is an index: this host's manifest plus one per entry here.
    pub other_platforms: Vec<(Platform, Vec<LayerSpec>)>,
}

impl ImageSpec {
    pub fn new(name: &str, style: ManifestStyle, layers: Vec<LayerSpec>) -> Self {
        ImageSpec {
            name: name.into(),
            style,
            layers,
            entrypoint: vec!["/pause".into()],
            other_platforms: Vec::new(),
        }
    }

    pub fn entrypoint(mut self, entrypoint: &[&str]) -> Self {
        self.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn with_platform(mut self, platform: Platform, layers: Vec<LayerSpec>) -> Self {
        self.other_platforms.push((platform, layers));
        self
    }
}

/// One layer of a built image, with the identities containerd will derive from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayer {
    pub media_type: String,
    pub chain_id: String,
    pub built: BuiltLayer,
}

impl ImageLayer {
    pub fn digest(&self) -> &str {
        &self.built.digest
    }

    pub fn diff_id(&self) -> &str {
        &self.built.diff_id
    }
}

/// What was written for an image (this host's platform).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub name: String,
    /// The image record's target: the index when there is one, else the manifest.
    pub target_digest: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<ImageLayer>,
}

/// Content-addressed blobs of one archive.
#[derive(Default)]
struct BlobSet {
    blobs: BTreeMap<String, Vec<u8>>,
}

impl BlobSet {
    /// Stores a blob and returns its descriptor.
    fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Value {
        let digest = digest_of(&bytes);
        let size = bytes.len();
        self.blobs.insert(digest.clone(), bytes);
        json!({"mediaType": media_type, "digest": digest, "size": size})
    }
}

fn to_json_bytes(value: &Value) -> Result<Vec<u8>, TestError> {
    serde_json::to_vec(value).map_err(|e| TestError::Build(format!("serializing JSON: {e}")))
}

/// Builds one platform's layers, config and manifest; returns the manifest descriptor.
fn add_manifest(
    blobs: &mut BlobSet,
    style: ManifestStyle,
    platform: &Platform,
    layers: &[LayerSpec],
    entrypoint: &[String],
) -> Result<(Value, String, Vec<ImageLayer>), TestError> {
    let built: Vec<BuiltLayer> = layers.iter().map(build_layer).collect::<Result<_, _>>()?;
    let diff_ids: Vec<String> = built.iter().map(|l| l.diff_id.clone()).collect();
    let chains = chain_ids(&diff_ids);
    let mut layer_descs = Vec::new();
    let mut image_layers = Vec::new();
    for (layer, chain_id) in built.into_iter().zip(chains) {
        let media_type = style.layer_type(layer.compression);
        layer_descs.push(blobs.add(media_type, layer.blob.clone()));
        image_layers.push(ImageLayer {
            media_type: media_type.into(),
            chain_id,
            built: layer,
        });
    }
    let config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_desc = blobs.add(style.config_type(), to_json_bytes(&config)?);
    let config_digest = config_desc["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": style.manifest_type(),
        "config": config_desc,
        "layers": layer_descs,
    });
    let desc = blobs.add(style.manifest_type(), to_json_bytes(&manifest)?);
    Ok((desc, config_digest, image_layers))
}

fn add_image(blobs: &mut BlobSet, image: &ImageSpec) -> Result<(Value, BuiltImage), TestError> {
    let host = Platform::host();
    let (manifest_desc, config_digest, layers) =
        add_manifest(blobs, image.style, &host, &image.layers, &image.entrypoint)?;
    let manifest_digest = manifest_desc["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let target = if image.other_platforms.is_empty() {
        manifest_desc
    } else {
        let mut manifests = Vec::new();
        // Foreign platforms first, so that a resolver that just takes the first entry is caught.
        for (platform, layers) in &image.other_platforms {
            let (mut desc, _, _) =
                add_manifest(blobs, image.style, platform, layers, &image.entrypoint)?;
            desc["platform"] = platform.to_json();
            manifests.push(desc);
        }
        let mut host_desc = manifest_desc;
        host_desc["platform"] = host.to_json();
        manifests.push(host_desc);
        let index = json!({"schemaVersion": 2, "mediaType": image.style.index_type(), "manifests": manifests});
        blobs.add(image.style.index_type(), to_json_bytes(&index)?)
    };
    let built = BuiltImage {
        name: image.name.clone(),
        target_digest: target["digest"].as_str().unwrap_or_default().to_string(),
        manifest_digest,
        config_digest,
        layers,
    };
    let mut entry = target;
    entry["annotations"] = json!({ IMAGE_NAME_ANNOTATION: image.name });
    Ok((entry, built))
}

/// Builds the images and writes them as one OCI layout tarball at `path` (blobs shared between
/// images are stored once). Returns what was built, in the order given.
pub fn write_oci_archive(images: &[ImageSpec], path: &Path) -> Result<Vec<BuiltImage>, TestError> {
    let mut blobs = BlobSet::default();
    let mut entries = Vec::new();
    let mut built = Vec::new();
    for image in images {
        let (entry, image) = add_image(&mut blobs, image)?;
        entries.push(entry);
        built.push(image);
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), to_json_bytes(&index)?),
    ];
    for (digest, bytes) in blobs.blobs {
        let hex = digest.trim_start_matches("sha256:");
        files.push((format!("blobs/sha256/{hex}"), bytes));
    }
    let archive = plain_tar(&files)?;
    std::fs::write(path, archive).map_err(|e| TestError::io(path, e))?;
    Ok(built)
}

/// A plain tar of regular files (directories implied), for the layout itself.
fn plain_tar(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, TestError> {
    let io = |e: std::io::Error| TestError::Build(format!("writing the OCI layout tar: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path(dir).map_err(io)?;
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        builder.append(&h, &[][..]).map_err(io)?;
    }
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).map_err(io)?;
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_cksum();
        builder.append(&h, bytes.as_slice()).map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_builder::TarEntry;

    fn layer(name: &str) -> LayerSpec {
        LayerSpec::gzip(vec![TarEntry::file(name, name.as_bytes())])
    }

    fn read_archive(path: &Path) -> BTreeMap<String, Vec<u8>> {
        let data = std::fs::read(path).unwrap();
        let mut archive = tar::Archive::new(data.as_slice());
        let mut out = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            out.insert(name, bytes);
        }
        out
    }

    #[test]
    fn blobs_are_named_by_their_digest_and_shared_layers_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let images = [
            ImageSpec::new("t/a:1", ManifestStyle::Oci, vec![layer("base"), layer("a")]),
            ImageSpec::new("t/b:1", ManifestStyle::Oci, vec![layer("base"), layer("b")]),
        ];
        let built = write_oci_archive(&images, &path).unwrap();
        assert_eq!(built[0].layers[0].chain_id, built[1].layers[0].chain_id);
        let files = read_archive(&path);
        for (name, bytes) in &files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(digest_of(bytes), format!("sha256:{hex}"));
            }
        }
        // 3 distinct layers + 2 configs + 2 manifests.
        assert_eq!(
            files
                .keys()
                .filter(|k| k.starts_with("blobs/sha256/") && k.len() > 13)
                .count(),
            7
        );
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(
            index["manifests"][1]["annotations"][IMAGE_NAME_ANNOTATION],
            "t/b:1"
        );
    }

    #[test]
    fn docker_style_uses_schema2_media_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.tar");
        let built = write_oci_archive(
            &[ImageSpec::new(
                "t/p:1",
                ManifestStyle::Docker,
                vec![layer("pause")],
            )],
            &path,
        )
        .unwrap();
        let files = read_archive(&path);
        let hex = built[0].manifest_digest.trim_start_matches("sha256:");
        let manifest: Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{hex}")]).unwrap();
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }

    #[test]
    fn multi_platform_image_is_an_index_with_the_host_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.tar");
        let mut spec = ImageSpec::new("t/i:1", ManifestStyle::Oci, vec![layer("host")]);
        for p in Platform::foreign() {
            spec = spec.with_platform(p, vec![layer("foreign")]);
        }
        let built = write_oci_archive(&[spec], &path).unwrap();
        assert_ne!(built[0].target_digest, built[0].manifest_digest);
        let files = read_archive(&path);
        let hex = built[0].target_digest.trim_start_matches("sha256:");
        let index: Value = serde_json::from_slice(&files[&format!("blobs/sha256/{hex}")]).unwrap();
        let platforms: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                )
            })
            .collect();
        let host = Platform::host();
        assert_eq!(platforms.len(), 3);
        assert_eq!(
            platforms.last().unwrap(),
            &format!("{}/{}", host.os, host.architecture)
        );
    }
}
