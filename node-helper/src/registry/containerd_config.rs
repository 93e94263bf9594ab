//! The CRI `registry` section of containerd's config.toml: `config_path` (the hosts
//! directories) or the legacy `mirrors` / `configs`. Pure over the parsed document.

use std::path::{Path, PathBuf};

use toml::Value;

use super::hosts::{LegacyRegistry, LegacyTls};
use crate::error::{Error, Result};

/// containerd 2.x's Linux default when neither `config_path` nor `mirrors` is set.
pub const DEFAULT_CONFIG_PATH_2X: &str = "/etc/containerd/certs.d:/etc/docker/certs.d";

/// Where host configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostsSource {
    /// hosts directories (`config_path` split at `:`).
    Dirs(Vec<PathBuf>),
    /// The legacy `registry.mirrors` / `registry.configs` sections.
    Legacy(LegacyRegistry),
}

/// The registry section for the file's version: 1.x (`version = 2`) under the
/// `io.containerd.grpc.v1.cri` plugin, 2.x (`version = 3`+) under `io.containerd.cri.v1.images`,
/// legacy version 1 under `cri`.
fn registry_section(doc: &toml::Table) -> Option<&toml::Table> {
    let version = doc.get("version").and_then(Value::as_integer);
    let plugins = doc.get("plugins")?.as_table()?;
    let ids: &[&str] = match version {
        Some(v) if v >= 3 => &["io.containerd.cri.v1.images"],
        Some(2) => &["io.containerd.grpc.v1.cri"],
        _ => &["cri", "io.containerd.grpc.v1.cri"],
    };
    ids.iter()
        .find_map(|id| plugins.get(*id)?.as_table()?.get("registry")?.as_table())
}

/// Splits a `config_path` like Go's `filepath.SplitList`.
pub fn split_config_path(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// What containerd would use for host resolution, given `explicit` (`--registry-config`).
pub fn hosts_source(
    file: &Path,
    doc: &toml::Table,
    explicit: Option<&Path>,
) -> Result<HostsSource> {
    if let Some(dir) = explicit {
        return Ok(HostsSource::Dirs(split_config_path(&dir.to_string_lossy())));
    }
    let bad = |reason: String| Error::Config {
        path: file.to_path_buf(),
        reason,
    };
    let section = registry_section(doc);
    let config_path = match section.and_then(|s| s.get("config_path")) {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("registry.config_path must be a string".into())),
    };
    let mirrors = section
        .and_then(|s| s.get("mirrors"))
        .and_then(Value::as_table);
    if let Some(path) = config_path {
        if mirrors.is_some_and(|m| !m.is_empty()) {
            return Err(bad(
                "registry.config_path and registry.mirrors are both set (containerd refuses to start)".into(),
            ));
        }
        return Ok(HostsSource::Dirs(split_config_path(&path)));
    }
    let configs = section
        .and_then(|s| s.get("configs"))
        .and_then(Value::as_table);
    if mirrors.is_some_and(|m| !m.is_empty()) || configs.is_some_and(|c| !c.is_empty()) {
        return Ok(HostsSource::Legacy(
            parse_legacy(mirrors, configs).map_err(bad)?,
        ));
    }
    let version = doc.get("version").and_then(Value::as_integer);
    Ok(match version {
        Some(v) if v >= 3 => HostsSource::Dirs(split_config_path(DEFAULT_CONFIG_PATH_2X)),
        // containerd 1.x without config_path uses the image's own host only.
        _ => HostsSource::Dirs(Vec::new()),
    })
}

fn parse_legacy(
    mirrors: Option<&toml::Table>,
    configs: Option<&toml::Table>,
) -> std::result::Result<LegacyRegistry, String> {
    let mut legacy = LegacyRegistry::default();
    for (host, m) in mirrors.into_iter().flatten() {
        let endpoints = match m.get("endpoint") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or(format!(
                        "registry.mirrors.{host:?}.endpoint must be strings"
                    ))
                })
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => Vec::new(),
            Some(_) => {
                return Err(format!(
                    "registry.mirrors.{host:?}.endpoint must be an array"
                ));
            }
        };
        legacy.mirrors.push((host.clone(), endpoints));
    }
    for (host, c) in configs.into_iter().flatten() {
        let Some(tls) = c.get("tls").and_then(Value::as_table) else {
            continue;
        };
        let path = |k: &str| {
            tls.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        legacy.tls.push((
            host.clone(),
            LegacyTls {
                ca_file: path("ca_file"),
                cert_file: path("cert_file"),
                key_file: path("key_file"),
                insecure_skip_verify: tls
                    .get("insecure_skip_verify")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        ));
    }
    Ok(legacy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str, explicit: Option<&str>) -> Result<HostsSource> {
        let doc: toml::Table = toml::from_str(text).expect("toml");
        hosts_source(Path::new("/c.toml"), &doc, explicit.map(Path::new))
    }

    fn dirs(v: &[&str]) -> HostsSource {
        HostsSource::Dirs(v.iter().map(PathBuf::from).collect())
    }

    #[test]
    fn config_path_v2_and_v3() {
        let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d:/x\"\n";
        assert_eq!(
            source(v2, None).expect("ok"),
            dirs(&["/etc/containerd/certs.d", "/x"])
        );
        let v3 = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\nconfig_path = \"/hosts\"\n";
        assert_eq!(source(v3, None).expect("ok"), dirs(&["/hosts"]));
        // The other version's key is not read.
        let wrong = "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/hosts\"\n";
        assert_eq!(
            source(wrong, None).expect("ok"),
            dirs(&["/etc/containerd/certs.d", "/etc/docker/certs.d"])
        );
        let v1 = "[plugins.cri.registry]\nconfig_path = \"/old\"\n";
        assert_eq!(source(v1, None).expect("ok"), dirs(&["/old"]));
    }

    #[test]
    fn defaults_differ_between_1x_and_2x() {
        assert_eq!(source("version = 2\n", None).expect("ok"), dirs(&[]));
        assert_eq!(source("", None).expect("ok"), dirs(&[]));
        assert_eq!(
            source("version = 3\n", None).expect("ok"),
            dirs(&["/etc/containerd/certs.d", "/etc/docker/certs.d"])
        );
    }

    #[test]
    fn the_flag_overrides_the_file() {
        let v2 =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/a\"\n";
        assert_eq!(source(v2, Some("/flag")).expect("ok"), dirs(&["/flag"]));
    }

    #[test]
    fn legacy_mirrors_and_tls() {
        let text = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://mirror.example"]
[plugins."io.containerd.grpc.v1.cri".registry.configs."mirror.example".tls]
  ca_file = "/ca.pem"
  insecure_skip_verify = true
"#;
        let HostsSource::Legacy(l) = source(text, None).expect("ok") else {
            panic!("legacy expected")
        };
        assert_eq!(
            l.mirrors,
            [(
                "docker.io".to_string(),
                vec!["https://mirror.example".to_string()]
            )]
        );
        assert_eq!(l.tls[0].1.ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(l.tls[0].1.insecure_skip_verify);
    }

    #[test]
    fn both_set_or_wrong_types_are_errors() {
        let both = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/a"
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://m"]
"#;
        assert!(
            source(both, None)
                .expect_err("both")
                .to_string()
                .contains("both set")
        );
        let bad =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = 1\n";
        assert!(
            source(bad, None)
                .expect_err("type")
                .to_string()
                .contains("/c.toml")
        );
    }
}
