//! Layer blobs from the registry (contract: "Layer blobs from the registry"): when the content
//! store lacks a layer blob or holds a corrupt one, fetch it from where containerd would, keep
//! it only in snapmend's own cache, and let the layer pass check it like a local blob.
//!
//! ```text
//! reference          image name → registry host + repository; distribution.source labels
//! containerd_config  config.toml's CRI registry section: config_path or legacy mirrors
//! hosts              hosts directories and hosts.toml → ordered RegistryHost list
//! auth               docker config.json auths, WWW-Authenticate, token responses
//! credential_provider kubelet's exec plugins (credentialprovider.kubelet.k8s.io/v1)
//! client             reqwest + rustls per host; streaming, hashing, Range-free retries
//! cache              verified fetched blobs, size cap, LRU
//! fetch              per job: cache, then every source through every host
//! ```

pub mod auth;
pub mod cache;
pub mod client;
pub mod containerd_config;
pub mod credential_provider;
pub mod fetch;
pub mod hosts;
pub mod layer_blob;
pub mod reference;

use std::path::PathBuf;

pub use fetch::BlobFetcher;

/// kubelet's node-wide docker config, read when no `--auth` is given (skipped if absent).
pub const DEFAULT_AUTH_FILE: &str = "/var/lib/kubelet/config.json";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/snapmend/blobs";
/// Default cap of the blob cache.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 10 << 30;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FetchMode {
    /// Fetch when the content store lacks the blob or it fails its digest.
    Auto,
    /// Never contact a registry (the behaviour before blob fetching).
    #[default]
    Never,
}

/// How a job gets blobs the node does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    pub mode: FetchMode,
    /// containerd's hosts directory (`:`-separated list); `None`: from config.toml.
    pub registry_config: Option<PathBuf>,
    /// docker config.json files; empty: [`DEFAULT_AUTH_FILE`] when present.
    pub auth_files: Vec<PathBuf>,
    /// docker config.json files of the request's pull secrets (agent only), tried before
    /// `auth_files` as kubelet tries a pod's pull secrets before the node's credentials.
    pub pull_secret_files: Vec<PathBuf>,
    /// kubelet's `--image-credential-provider-config` and `--image-credential-provider-bin-dir`.
    pub credential_provider: Option<(PathBuf, PathBuf)>,
    /// Verified fetched blobs; `None`: a temporary file per fetch, removed afterwards.
    pub cache_dir: Option<PathBuf>,
    pub cache_max_bytes: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mode: FetchMode::Never,
            registry_config: None,
            auth_files: Vec::new(),
            pull_secret_files: Vec::new(),
            credential_provider: None,
            cache_dir: None,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

/// Where the image says its blobs are: its own name first, then every
/// `containerd.io/distribution.source.*` label of its manifest and config (which survive
/// `discard_unpacked_layers`) and of the layer blob when it still has a record.
pub fn image_sources(name: &str, labels: &[(String, String)]) -> Vec<reference::Source> {
    let own = reference::parse_reference(name);
    let mut out: Vec<reference::Source> = own.iter().cloned().collect();
    let from_labels = reference::sources_from_labels(
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        own.as_ref().map(|s| s.host.as_str()),
    );
    for s in from_labels {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_comes_first_then_new_label_sources() {
        let labels = vec![
            (
                "containerd.io/distribution.source.127.0.0.1".to_string(),
                "snapmend/pause,snapmend/other".to_string(),
            ),
            (
                "containerd.io/uncompressed".to_string(),
                "sha256:x".to_string(),
            ),
        ];
        let got: Vec<String> = image_sources("127.0.0.1:5443/snapmend/pause:1", &labels)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "127.0.0.1:5443/snapmend/pause",
                "127.0.0.1:5443/snapmend/other"
            ]
        );
        let got: Vec<String> = image_sources(
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            &labels,
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            got,
            ["127.0.0.1/snapmend/pause", "127.0.0.1/snapmend/other"]
        );
    }
}
