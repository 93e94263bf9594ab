//! Getting a layer blob that the content store lacks (or has corrupt): snapmend's cache first,
//! then every source of the image (its name, then the `distribution.source` labels) through
//! every pull-capable host containerd would use, in containerd's order. The bytes land in
//! the cache (or a private temp file) with their digest checked; the layer pass then reads
//! them exactly as it reads a local blob, so the diffID is checked before anything is written.

use std::path::{Path, PathBuf};

use snapmend_crds::BlobSource;

use super::auth::DockerConfig;
use super::cache::BlobCache;
use super::client::{BlobRequest, HostClient, HostFailure, LazyFile};
use super::containerd_config::{HostsSource, hosts_source};
use super::credential_provider::CredentialProviders;
use super::hosts::{RegistryHost, legacy_mirror_hosts, resolve_hosts};
use super::reference::Source;
use super::{FetchMode, FetchOptions};
use crate::error::{Error, Result};

/// Blob bytes ready for the layer pass.
#[derive(Debug)]
pub struct Obtained {
    pub path: PathBuf,
    pub source: BlobSource,
    /// `host/repository` contacted (Registry) or recorded (Cache).
    pub fetched_from: Option<String>,
    /// What failed on earlier hosts before this one answered.
    pub notes: Vec<String>,
    /// A download kept outside any cache; removed when dropped.
    _temp: Option<TempBlob>,
}

/// Why no source could supply the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unobtainable {
    /// Some registry served other bytes (the report says DigestMismatch).
    pub digest_mismatch: bool,
    /// `host: what it answered`, per host tried, `; `-joined.
    pub detail: String,
}

#[derive(Debug)]
struct TempBlob(PathBuf);

impl Drop for TempBlob {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Per job: where to look and with which credentials.
pub struct BlobFetcher {
    sources: Vec<Source>,
    hosts: std::result::Result<HostsSource, String>,
    auth: std::result::Result<DockerConfig, String>,
    providers: Option<std::result::Result<CredentialProviders, String>>,
    cache: Option<BlobCache>,
}

impl BlobFetcher {
    /// `None` when fetching is off. Configuration errors do not fail the job: they become the
    /// blob detail of any layer that needs a fetch.
    pub fn new(
        opts: &FetchOptions,
        containerd_config: &Path,
        sources: Vec<Source>,
    ) -> Option<BlobFetcher> {
        if opts.mode == FetchMode::Never {
            return None;
        }
        let hosts = load_hosts_source(containerd_config, opts.registry_config.as_deref())
            .map_err(|e| e.to_string());
        let auth = DockerConfig::load(&auth_files(opts)).map_err(|e| e.to_string());
        let providers = opts.credential_provider.as_ref().map(|(config, bin_dir)| {
            CredentialProviders::load(config, bin_dir).map_err(|e| e.to_string())
        });
        let cache = opts.cache_dir.as_ref().map(|dir| BlobCache {
            dir: dir.clone(),
            max_bytes: opts.cache_max_bytes,
        });
        Some(BlobFetcher {
            sources,
            hosts,
            auth,
            providers,
            cache,
        })
    }

    /// A cached copy of the blob, if any.
    pub fn cached(&self, digest: &str) -> Option<Obtained> {
        let path = self.cache.as_ref()?.lookup(digest)?;
        Some(Obtained {
            path,
            source: BlobSource::Cache,
            fetched_from: None,
            notes: Vec::new(),
            _temp: None,
        })
    }

    /// Drops a cached copy that the layer pass found unusable.
    pub fn forget(&self, digest: &str) {
        if let Some(c) = &self.cache {
            c.forget(digest);
        }
    }

    /// Downloads the blob from the first host that serves exactly its bytes.
    #[tracing::instrument(skip_all, fields(digest))]
    pub fn fetch(&self, digest: &str, size: u64) -> std::result::Result<Obtained, Unobtainable> {
        let setup = |detail: String| Unobtainable {
            digest_mismatch: false,
            detail,
        };
        let hosts_source = self.hosts.as_ref().map_err(|e| setup(e.clone()))?;
        let auth = self.auth.as_ref().map_err(|e| setup(e.clone()))?;
        if self.sources.is_empty() {
            return Err(setup(
                "the image name and its content labels name no registry to fetch from".into(),
            ));
        }
        let mut notes: Vec<String> = Vec::new();
        let mut mismatch = false;
        for source in &self.sources {
            // kubelet's exec plugins answer per image; their keys are matched like auths.
            let plugin_auth = match &self.providers {
                None => DockerConfig::default(),
                Some(Err(e)) => {
                    notes.push(e.clone());
                    DockerConfig::default()
                }
                Some(Ok(p)) => {
                    let (auth, plugin_notes) = p.credentials_for(&source.to_string());
                    notes.extend(plugin_notes);
                    auth
                }
            };
            let hosts = match hosts_for(hosts_source, &source.host) {
                Ok(h) => h,
                Err(e) => {
                    notes.push(format!("{}: {e}", source.host));
                    continue;
                }
            };
            for host in hosts.iter().filter(|h| h.serves_blobs()) {
                let place = format!("{}/{}", host.host, source.repository);
                let request = BlobRequest {
                    image_host: &source.host,
                    repository: &source.repository,
                    digest,
                    size,
                };
                // Credentials of the host contacted; a mirror never gets the upstream's.
                let creds = plugin_auth
                    .find(&host.host, &source.repository)
                    .or_else(|| auth.find(&host.host, &source.repository));
                let started = std::time::Instant::now();
                match self.fetch_from(host, &request, creds) {
                    Ok((path, temp)) => {
                        // The duration is what the registry benchmark reads (bench/registry.sh).
                        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
                        tracing::info!(from = %place, bytes = size, elapsed_ms = format!("{elapsed_ms:.1}"), "fetched layer blob");
                        return Ok(Obtained {
                            path,
                            source: BlobSource::Registry,
                            fetched_from: Some(place),
                            notes,
                            _temp: temp,
                        });
                    }
                    Err(failure) => {
                        mismatch |= matches!(failure, HostFailure::Digest { .. });
                        tracing::info!(host = %place, error = %failure, "blob not fetched from this host");
                        notes.push(format!("{}: {failure}", host.host));
                    }
                }
            }
        }
        Err(Unobtainable {
            digest_mismatch: mismatch,
            detail: notes.join("; "),
        })
    }

    fn fetch_from(
        &self,
        host: &RegistryHost,
        request: &BlobRequest<'_>,
        creds: Option<&super::auth::Credentials>,
    ) -> std::result::Result<(PathBuf, Option<TempBlob>), HostFailure> {
        let client = HostClient::new(host)?;
        let local = |e: Error| HostFailure::Local(e.to_string());
        let open = || -> std::result::Result<(PathBuf, std::fs::File), HostFailure> {
            match &self.cache {
                Some(cache) => cache.temp_file(request.digest).map_err(local),
                None => private_temp_file(request.digest).map_err(local),
            }
        };
        let mut out = LazyFile::new(&open);
        let downloaded = client.download(request, creds, &mut out);
        let opened = out.into_opened();
        match (downloaded, opened) {
            (Ok(_), Some((tmp, file))) => match &self.cache {
                Some(cache) => {
                    let guard = TempBlob(tmp.clone());
                    let path = cache.commit(&tmp, &file, request.digest).map_err(local)?;
                    std::mem::forget(guard);
                    Ok((path, None))
                }
                None => Ok((tmp.clone(), Some(TempBlob(tmp)))),
            },
            (Ok(_), None) => Err(HostFailure::Local("the download wrote no file".into())),
            (Err(e), opened) => {
                if let Some((tmp, _)) = opened {
                    let _ = std::fs::remove_file(tmp);
                }
                Err(e)
            }
        }
    }
}

/// The docker config files of a job, in the order their entries win ties: the request's pull
/// secrets, then `--auth` (or kubelet's node-wide file, skipped when absent).
fn auth_files(opts: &FetchOptions) -> Vec<(PathBuf, bool)> {
    let node: Vec<(PathBuf, bool)> = if opts.auth_files.is_empty() {
        vec![(PathBuf::from(super::DEFAULT_AUTH_FILE), true)]
    } else {
        opts.auth_files.iter().map(|f| (f.clone(), false)).collect()
    };
    opts.pull_secret_files
        .iter()
        .map(|f| (f.clone(), false))
        .chain(node)
        .collect()
}

/// A new file only this process can open, in the temp directory (`--cache-dir none`);
/// `O_EXCL`, so a planted file or symlink is never followed.
fn private_temp_file(digest: &str) -> Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let hex = crate::store::content::parse_sha256_digest(digest).unwrap_or("blob");
    for n in 0u32..1000 {
        let path = dir.join(format!("snapmend-blob-{hex}-{}-{n}", std::process::id()));
        match std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Err(Error::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "no free temporary blob name",
        ),
    ))
}

fn load_hosts_source(config: &Path, explicit: Option<&Path>) -> Result<HostsSource> {
    let doc = if config.exists() {
        crate::store::config::load_with_imports(config)?
    } else {
        toml::Table::new()
    };
    hosts_source(config, &doc, explicit)
}

fn hosts_for(source: &HostsSource, image_host: &str) -> Result<Vec<RegistryHost>> {
    match source {
        HostsSource::Dirs(roots) => resolve_hosts(roots, image_host),
        HostsSource::Legacy(legacy) => Ok(legacy_mirror_hosts(legacy, image_host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secrets_come_first_and_keep_the_node_default() {
        let mut opts = FetchOptions {
            mode: FetchMode::Auto,
            pull_secret_files: vec![PathBuf::from("/tmp/p/config.json")],
            ..Default::default()
        };
        assert_eq!(
            auth_files(&opts),
            [
                (PathBuf::from("/tmp/p/config.json"), false),
                (PathBuf::from(super::super::DEFAULT_AUTH_FILE), true),
            ]
        );
        opts.auth_files = vec![PathBuf::from("/etc/a.json")];
        assert_eq!(
            auth_files(&opts),
            [
                (PathBuf::from("/tmp/p/config.json"), false),
                (PathBuf::from("/etc/a.json"), false),
            ]
        );
        opts.pull_secret_files.clear();
        assert_eq!(auth_files(&opts), [(PathBuf::from("/etc/a.json"), false)]);
    }
}
