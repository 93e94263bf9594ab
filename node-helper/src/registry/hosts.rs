//! Registry host resolution exactly as containerd's `remotes/docker/config` does it: the hosts
//! directory per registry (`<host>_<port>_`, `<host:port>`, `_default`; the first root of
//! `config_path` with a match wins), `hosts.toml` (`[host."…"]` in file order, then `server`),
//! Docker-style certificate files when a directory has no `hosts.toml`, and the default host.
//! Parsing is pure; [`resolve_hosts`] does the small, bounded file reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::reference::is_localhost;
use crate::error::{Error, Result};
use crate::store::bounded::read_capped;
use snapmend_crds::runtime::go_duration::parse_go_duration;

/// hosts.toml files are a few lines; anything larger is not one.
pub const MAX_HOSTS_TOML: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint to try, in order, for a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryHost {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]` to connect to.
    pub host: String,
    /// API root path, normally `/v2`.
    pub path: String,
    pub capabilities: Capabilities,
    /// CA files added to the system pool.
    pub ca: Vec<PathBuf>,
    /// Client certificate and its key (a `.pem` holding both has no separate key).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: bool,
    /// Extra request headers (`[header]`).
    pub headers: Vec<(String, String)>,
    /// `dial_timeout` (containerd 2.1+): how long a connection to this host may take.
    pub dial_timeout: Option<Duration>,
    /// `scheme` is `https` because the host was configured for plain http with TLS settings:
    /// when the server answers the TLS handshake in plain http, the request is retried over
    /// http (containerd's `NewHTTPFallback`).
    pub http_fallback: bool,
}

impl RegistryHost {
    /// containerd's `RegistryHost.isProxy`: any host other than the image's own is a mirror
    /// and gets `?ns=<image host>` on its requests.
    pub fn is_mirror_for(&self, image_host: &str) -> bool {
        image_host != self.host
            && !(image_host == "docker.io" && self.host == "registry-1.docker.io")
    }

    /// Whether blobs may be fetched from this host: containerd fetches blobs from hosts that
    /// can pull (resolve alone is for tags and manifests, but such hosts serve blobs too).
    pub fn serves_blobs(&self) -> bool {
        self.capabilities.pull
    }

    /// `scheme://host/path/<repo>/blobs/<digest>[?ns=…]`; `plain_http` after a fallback.
    pub fn blob_url(
        &self,
        image_host: &str,
        repository: &str,
        digest: &str,
        plain_http: bool,
    ) -> String {
        let scheme = if plain_http { "http" } else { &self.scheme };
        let mut url = format!(
            "{scheme}://{}{}/{repository}/blobs/{digest}",
            self.host, self.path
        );
        if self.is_mirror_for(image_host) {
            url.push_str("?ns=");
            url.push_str(image_host);
        }
        url
    }
}

/// Candidate directories for `host` under one root, in containerd's order.
pub fn host_dir_candidates(root: &Path, host: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(i) = host.rfind(':').filter(|&i| i > 0) {
        out.push(root.join(format!("{}_{}_", &host[..i], &host[i + 1..])));
    }
    out.push(root.join(host));
    out.push(root.join("_default"));
    out
}

/// The hosts directory for `host`: the first root (of a `:`-separated `config_path`) that has
/// any candidate; within it the first candidate that exists.
pub fn find_host_dir(roots: &[PathBuf], host: &str) -> Option<PathBuf> {
    roots
        .iter()
        .flat_map(|root| host_dir_candidates(root, host))
        .find(|dir| dir.is_dir())
}

/// A parsed host entry before the default host fills in a missing server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostEntry {
    /// `None`: the `server`-less default (the image's own host).
    url: Option<(String, String, String)>,
    capabilities: Option<Capabilities>,
    ca: Vec<PathBuf>,
    client: Vec<(PathBuf, Option<PathBuf>)>,
    /// `Some` when the file sets it, even to `false`: containerd counts that as TLS settings.
    skip_verify: Option<bool>,
    headers: Vec<(String, String)>,
    dial_timeout: Option<Duration>,
}

/// Parses a hosts.toml. `dir` anchors relative `ca`/`client` paths. Entries come out in
/// containerd's order: every `[host."…"]` in file order, then `server` (or the default host).
pub fn parse_hosts_toml(file: &Path, dir: &Path, text: &str) -> Result<Vec<HostEntry>> {
    let bad = |reason: String| Error::Config {
        path: file.to_path_buf(),
        reason,
    };
    let doc: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut entries = Vec::new();
    if let Some(hosts) = doc.get("host") {
        let Value::Table(hosts) = hosts else {
            return Err(bad(
                "`host` must be a table of `[host.\"<url>\"]` sections".into()
            ));
        };
        for (server, section) in hosts {
            let Value::Table(section) = section else {
                return Err(bad(format!("host.{server:?} must be a table")));
            };
            let mut entry =
                parse_section(section, dir).map_err(|r| bad(format!("host.{server:?}: {r}")))?;
            entry.url = Some(
                parse_server(server, override_path(section))
                    .map_err(|r| bad(format!("host.{server:?}: {r}")))?,
            );
            entries.push(entry);
        }
    }
    // The top level is the `server` entry, last.
    let mut top = parse_section(&doc, dir).map_err(bad)?;
    match doc.get("server") {
        Some(Value::String(server)) => {
            top.url = Some(
                parse_server(server, override_path(&doc))
                    .map_err(|r| bad(format!("server: {r}")))?,
            );
            entries.push(top);
        }
        Some(other) => {
            return Err(bad(format!(
                "server must be a string, found {}",
                other.type_str()
            )));
        }
        None => entries.push(top),
    }
    Ok(entries)
}

fn override_path(section: &toml::Table) -> bool {
    matches!(section.get("override_path"), Some(Value::Boolean(true)))
}

/// `https://host[:port][/path]` → (scheme, host, path), `/v2` appended unless `override_path`.
fn parse_server(server: &str, override_path: bool) -> Result<(String, String, String), String> {
    let with_scheme = if server.contains("://") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let (scheme, rest) = with_scheme
        .split_once("://")
        .unwrap_or(("https", &with_scheme));
    if scheme != "https" && scheme != "http" {
        return Err(format!("unsupported scheme {scheme:?} (https or http)"));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(['?', '#', '@']) {
        return Err(format!("{server:?} is not a registry URL"));
    }
    let path = clean_path(path);
    let path = if path.is_empty() {
        if override_path {
            String::new()
        } else {
            "/v2".to_string()
        }
    } else if path.ends_with("/v2") || override_path {
        path
    } else {
        format!("{path}/v2")
    };
    Ok((scheme.to_string(), host.to_string(), path))
}

/// Go's `path.Clean` for an absolute URL path, without the trailing slash; `/` → empty.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("/{}", parts.join("/"))
    }
}

fn parse_section(section: &toml::Table, dir: &Path) -> Result<HostEntry, String> {
    let rel = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut entry = HostEntry::default();
    if let Some(caps) = section.get("capabilities") {
        let Value::Array(items) = caps else {
            return Err("capabilities must be an array of \"pull\", \"resolve\", \"push\"".into());
        };
        let mut c = Capabilities::default();
        for item in items {
            match item.as_str() {
                Some("pull") => c.pull = true,
                Some("resolve") => c.resolve = true,
                Some("push") => c.push = true,
                _ => return Err(format!("unknown capability {item}")),
            }
        }
        entry.capabilities = Some(c);
    }
    match section.get("ca") {
        None => {}
        Some(Value::String(s)) => entry.ca.push(rel(s)),
        Some(Value::Array(items)) => {
            for item in items {
                let s = item
                    .as_str()
                    .ok_or("ca must be a path or a list of paths")?;
                entry.ca.push(rel(s));
            }
        }
        Some(_) => return Err("ca must be a path or a list of paths".into()),
    }
    match section.get("client") {
        None => {}
        Some(Value::String(s)) => entry.client.push((rel(s), None)),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => entry.client.push((rel(s), None)),
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::String(cert)] => entry.client.push((rel(cert), None)),
                        [Value::String(cert), Value::String(key)] => {
                            entry.client.push((rel(cert), Some(rel(key))));
                        }
                        _ => return Err("client pairs must be [\"cert\", \"key\"]".into()),
                    },
                    _ => return Err("client must be a path, a list, or [[cert, key]] pairs".into()),
                }
            }
        }
        Some(_) => return Err("client must be a path, a list, or [[cert, key]] pairs".into()),
    }
    match section.get("skip_verify") {
        None => {}
        Some(Value::Boolean(b)) => entry.skip_verify = Some(*b),
        Some(_) => return Err("skip_verify must be a boolean".into()),
    }
    match section.get("dial_timeout") {
        None => {}
        Some(Value::String(text)) => {
            let timeout = parse_go_duration(text).map_err(|e| format!("dial_timeout: {e}"))?;
            // Go's net.Dialer treats zero as "no timeout of its own": our default applies.
            entry.dial_timeout = Some(timeout).filter(|t| !t.is_zero());
        }
        Some(_) => return Err("dial_timeout must be a duration string such as \"3s\"".into()),
    }
    if let Some(header) = section.get("header") {
        let Value::Table(header) = header else {
            return Err("header must be a table".into());
        };
        for (name, value) in header {
            match value {
                Value::String(v) => entry.headers.push((name.clone(), v.clone())),
                Value::Array(vs) => {
                    for v in vs {
                        let v = v.as_str().ok_or("header values must be strings")?;
                        entry.headers.push((name.clone(), v.to_string()));
                    }
                }
                _ => return Err("header values must be strings".into()),
            }
        }
    }
    Ok(entry)
}

/// The port of `host[:port]` (`[v6]:port` too), if it names one.
fn port_of(host: &str) -> Option<&str> {
    let after_bracket = match host.rfind(']') {
        Some(i) => &host[i + 1..],
        None if host.matches(':').count() == 1 => host,
        None => return None,
    };
    after_bracket.rsplit_once(':').map(|(_, port)| port)
}

/// containerd's HTTP fallback rule (`ConfigureHosts`): a host configured for plain http that
/// also has TLS settings (`ca`, `client` or `skip_verify`) is tried over https first, and
/// over http only when the server answers the handshake in plain http. Port 80 is
/// unambiguous and stays http.
pub fn tries_https_first(scheme: &str, host: &str, has_tls_settings: bool) -> bool {
    scheme == "http" && has_tls_settings && port_of(host) != Some("80")
}

/// containerd's default endpoint for a registry whose hosts.toml names no `server`:
/// (scheme, host, skip_verify override). docker.io → `https://registry-1.docker.io`;
/// localhost and loopback addresses → https (no verification) on no port or 443, http on
/// port 80, else http with TLS settings, hence https first with the http fallback; anything
/// else https.
pub fn default_endpoint(image_host: &str) -> (&'static str, String, Option<bool>) {
    if image_host == "docker.io" {
        return ("https", "registry-1.docker.io".to_string(), None);
    }
    if !is_localhost(image_host) {
        return ("https", image_host.to_string(), None);
    }
    let port = port_of(image_host);
    let scheme = match port {
        None | Some("443") => "https",
        Some(_) => "http",
    };
    let skip_verify = (port != Some("80")).then_some(true);
    (scheme, image_host.to_string(), skip_verify)
}

/// Fills in the default host for a missing `server` ([`default_endpoint`]), `/v2`, every
/// capability, and applies [`tries_https_first`] to every entry.
pub fn finish_hosts(image_host: &str, entries: Option<Vec<HostEntry>>) -> Vec<RegistryHost> {
    // No hosts directory: one default entry.
    let entries = entries.unwrap_or_else(|| vec![HostEntry::default()]);
    let last = entries.len().saturating_sub(1);
    entries
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let mut skip_verify = e.skip_verify;
            let (scheme, host, path, caps) = match e.url {
                Some((scheme, host, path)) => (
                    scheme,
                    host,
                    path,
                    e.capabilities.unwrap_or(Capabilities::ALL),
                ),
                None if i == last => {
                    let (scheme, host, skip) = default_endpoint(image_host);
                    if skip.is_some() {
                        skip_verify = skip;
                    }
                    // containerd ignores the top-level capabilities of a server-less file.
                    (
                        scheme.to_string(),
                        host,
                        "/v2".to_string(),
                        Capabilities::ALL,
                    )
                }
                None => return None,
            };
            let has_tls_settings =
                !e.ca.is_empty() || !e.client.is_empty() || skip_verify.is_some();
            let http_fallback = tries_https_first(&scheme, &host, has_tls_settings);
            Some(RegistryHost {
                scheme: if http_fallback {
                    "https".to_string()
                } else {
                    scheme
                },
                host,
                path,
                capabilities: caps,
                ca: e.ca,
                client: e.client,
                skip_verify: skip_verify.unwrap_or(false),
                headers: e.headers,
                dial_timeout: e.dial_timeout,
                http_fallback,
            })
        })
        .collect()
}

/// A directory without hosts.toml: Docker's `certs.d` layout (`*.crt` CAs, `*.cert` + `*.key`
/// client pairs) for the default host.
pub fn cert_dir_entry(files: &[String], dir: &Path) -> HostEntry {
    let mut entry = HostEntry::default();
    let mut names: Vec<&String> = files.iter().collect();
    names.sort();
    for name in names {
        if name.ends_with(".crt") {
            entry.ca.push(dir.join(name));
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            if files.contains(&key) {
                entry.client.push((dir.join(name), Some(dir.join(key))));
            }
        }
    }
    entry
}

/// Every endpoint to try for `image_host`, given containerd's hosts roots.
pub fn resolve_hosts(roots: &[PathBuf], image_host: &str) -> Result<Vec<RegistryHost>> {
    let Some(dir) = find_host_dir(roots, image_host) else {
        return Ok(finish_hosts(image_host, None));
    };
    let file = dir.join("hosts.toml");
    let entries = match read_capped(&file, "registry hosts.toml", MAX_HOSTS_TOML) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| Error::Config {
                path: file.clone(),
                reason: "not UTF-8".into(),
            })?;
            parse_hosts_toml(&file, &dir, &text)?
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            vec![cert_dir_entry(&names, &dir)]
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(host = image_host, dir = %dir.display(), "registry hosts directory");
    Ok(finish_hosts(image_host, Some(entries)))
}

/// The legacy CRI `registry.mirrors` section: the endpoints for `image_host` (or `"*"`), then
/// the default host unless already listed. TLS comes from `registry.configs."<host>".tls`.
pub fn legacy_mirror_hosts(legacy: &LegacyRegistry, image_host: &str) -> Vec<RegistryHost> {
    let endpoints = legacy
        .mirrors
        .iter()
        .find(|(h, _)| h == image_host)
        .or_else(|| legacy.mirrors.iter().find(|(h, _)| h == "*"))
        .map(|(_, e)| e.clone())
        .unwrap_or_default();
    let default = finish_hosts(image_host, None);
    let mut hosts: Vec<RegistryHost> = Vec::new();
    for endpoint in endpoints {
        if let Ok((scheme, host, path)) = parse_server(&endpoint, false) {
            hosts.push(RegistryHost {
                scheme,
                host,
                path,
                capabilities: Capabilities::ALL,
                ca: Vec::new(),
                client: Vec::new(),
                skip_verify: false,
                headers: Vec::new(),
                dial_timeout: None,
                http_fallback: false,
            });
        }
    }
    for d in default {
        if !hosts.iter().any(|h| h.host == d.host) {
            hosts.push(d);
        }
    }
    for h in &mut hosts {
        if let Some((_, tls)) = legacy.tls.iter().find(|(k, _)| *k == h.host) {
            h.ca.extend(tls.ca_file.clone());
            if let Some(cert) = &tls.cert_file {
                h.client.push((cert.clone(), tls.key_file.clone()));
            }
            h.skip_verify |= tls.insecure_skip_verify;
        }
    }
    hosts
}

/// What the legacy `registry.mirrors` / `registry.configs` sections say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyRegistry {
    pub mirrors: Vec<(String, Vec<String>)>,
    pub tls: Vec<(String, LegacyTls)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<RegistryHost> {
        let dir = Path::new("/etc/containerd/certs.d/r.example");
        let entries = parse_hosts_toml(&dir.join("hosts.toml"), dir, text).expect("parses");
        finish_hosts("r.example", Some(entries))
    }

    fn urls(hosts: &[RegistryHost]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| format!("{}://{}{}", h.scheme, h.host, h.path))
            .collect()
    }

    #[test]
    fn host_directories_are_tried_in_containerds_order() {
        let root = Path::new("/r");
        assert_eq!(
            host_dir_candidates(root, "127.0.0.1:5443"),
            [
                PathBuf::from("/r/127.0.0.1_5443_"),
                PathBuf::from("/r/127.0.0.1:5443"),
                PathBuf::from("/r/_default")
            ]
        );
        assert_eq!(
            host_dir_candidates(root, "docker.io"),
            [PathBuf::from("/r/docker.io"), PathBuf::from("/r/_default")]
        );
    }

    #[test]
    fn first_root_with_a_match_wins() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(a.path().join("_default")).expect("mkdir");
        std::fs::create_dir(b.path().join("r.example")).expect("mkdir");
        let roots = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_host_dir(&roots, "r.example"),
            Some(a.path().join("_default"))
        );
        std::fs::create_dir(a.path().join("r.example_5000_")).expect("mkdir");
        std::fs::create_dir(a.path().join("r.example:5000")).expect("mkdir");
        assert_eq!(
            find_host_dir(&roots, "r.example:5000"),
            Some(a.path().join("r.example_5000_"))
        );
        assert_eq!(find_host_dir(&[b.path().to_path_buf()], "other"), None);
    }

    #[test]
    fn no_hosts_dir_gives_the_default_host() {
        assert_eq!(
            urls(&finish_hosts("docker.io", None)),
            ["https://registry-1.docker.io/v2"]
        );
        assert_eq!(
            urls(&finish_hosts("r.example", None)),
            ["https://r.example/v2"]
        );
        assert!(!finish_hosts("r.example", None)[0].http_fallback);
        assert_eq!(
            finish_hosts("r.example", None)[0].capabilities,
            Capabilities::ALL
        );
    }

    #[test]
    fn hosts_come_in_file_order_then_server() {
        let hosts = parse(
            r#"
server = "https://upstream.example"
[host."https://z-mirror.example"]
  capabilities = ["pull"]
[host."http://a-mirror.example:5000/base"]
  capabilities = ["pull", "resolve"]
"#,
        );
        assert_eq!(
            urls(&hosts),
            [
                "https://z-mirror.example/v2",
                "http://a-mirror.example:5000/base/v2",
                "https://upstream.example/v2"
            ]
        );
        assert_eq!(
            hosts[0].capabilities,
            Capabilities {
                pull: true,
                resolve: false,
                push: false
            }
        );
        assert_eq!(hosts[2].capabilities, Capabilities::ALL);
    }

    #[test]
    fn without_server_the_image_host_is_last() {
        let hosts = parse("[host.\"https://m.example\"]\n");
        assert_eq!(
            urls(&hosts),
            ["https://m.example/v2", "https://r.example/v2"]
        );
    }

    #[test]
    fn override_path_and_v2_suffix() {
        let hosts = parse(
            r#"
[host."https://m.example/custom/path"]
  override_path = true
[host."https://n.example/v2"]
[host."https://o.example/a/../b/"]
"#,
        );
        assert_eq!(
            urls(&hosts),
            [
                "https://m.example/custom/path",
                "https://n.example/v2",
                "https://o.example/b/v2",
                "https://r.example/v2"
            ]
        );
    }

    #[test]
    fn a_bare_server_is_https() {
        assert_eq!(
            urls(&parse("server = \"r2.example:5000\"")),
            ["https://r2.example:5000/v2"]
        );
    }

    #[test]
    fn tls_settings_are_relative_to_the_directory() {
        let hosts = parse(
            r#"
server = "https://r.example"
ca = "ca.crt"
skip_verify = false
[host."https://m.example"]
  ca = ["/abs/ca.pem", "rel.pem"]
  client = [["c.cert", "c.key"], "both.pem"]
  skip_verify = true
  [host."https://m.example".header]
    x-one = "1"
    x-two = ["a", "b"]
"#,
        );
        let d = Path::new("/etc/containerd/certs.d/r.example");
        assert_eq!(
            hosts[0].ca,
            [PathBuf::from("/abs/ca.pem"), d.join("rel.pem")]
        );
        assert_eq!(
            hosts[0].client,
            [
                (d.join("c.cert"), Some(d.join("c.key"))),
                (d.join("both.pem"), None)
            ]
        );
        assert!(hosts[0].skip_verify);
        assert_eq!(
            hosts[0].headers,
            [
                ("x-one".to_string(), "1".to_string()),
                ("x-two".to_string(), "a".to_string()),
                ("x-two".to_string(), "b".to_string())
            ]
        );
        assert_eq!(hosts[1].ca, [d.join("ca.crt")]);
        assert!(!hosts[1].skip_verify);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = Path::new("/d");
        for (text, needle) in [
            ("server = 3", "server must be a string"),
            ("capabilities = [\"fly\"]", "unknown capability"),
            ("ca = 1", "ca must be"),
            ("skip_verify = \"yes\"", "skip_verify must be a boolean"),
            ("[host.\"ftp://x\"]", "unsupported scheme"),
            ("server = \"https://\"", "is not a registry URL"),
            ("client = [[1, 2]]", "client pairs"),
            ("not toml [", ""),
        ] {
            let err = parse_hosts_toml(&dir.join("hosts.toml"), dir, text).expect_err(text);
            let msg = err.to_string();
            assert!(
                msg.contains("/d/hosts.toml") && msg.contains(needle),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn mirrors_get_the_ns_parameter_and_upstream_does_not() {
        let hosts = parse("server = \"https://r.example\"\n[host.\"https://m.example\"]\n");
        let digest = "sha256:abc";
        assert_eq!(
            hosts[0].blob_url("r.example", "app/x", digest, false),
            "https://m.example/v2/app/x/blobs/sha256:abc?ns=r.example"
        );
        assert_eq!(
            hosts[1].blob_url("r.example", "app/x", digest, false),
            "https://r.example/v2/app/x/blobs/sha256:abc"
        );
        assert_eq!(
            hosts[1].blob_url("r.example", "app/x", digest, true),
            "http://r.example/v2/app/x/blobs/sha256:abc",
            "after an http fallback"
        );
        let hub = finish_hosts("docker.io", None);
        assert!(!hub[0].is_mirror_for("docker.io"));
    }

    #[test]
    fn only_pull_hosts_serve_blobs() {
        let hosts = parse(
            "[host.\"https://a\"]\ncapabilities = [\"resolve\"]\n[host.\"https://b\"]\ncapabilities = [\"push\"]\n[host.\"https://c\"]\ncapabilities = [\"pull\"]\n",
        );
        let serving: Vec<&str> = hosts
            .iter()
            .filter(|h| h.serves_blobs())
            .map(|h| h.host.as_str())
            .collect();
        assert_eq!(serving, ["c", "r.example"]);
    }

    #[test]
    fn cert_files_without_hosts_toml() {
        let dir = Path::new("/etc/docker/certs.d/r.example");
        let files: Vec<String> = [
            "ca.crt",
            "client.cert",
            "client.key",
            "lonely.cert",
            "x.txt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let hosts = finish_hosts("r.example", Some(vec![cert_dir_entry(&files, dir)]));
        assert_eq!(urls(&hosts), ["https://r.example/v2"]);
        assert_eq!(hosts[0].ca, [dir.join("ca.crt")]);
        assert_eq!(
            hosts[0].client,
            [(dir.join("client.cert"), Some(dir.join("client.key")))]
        );
    }

    #[test]
    fn resolve_reads_the_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("127.0.0.1_5443_");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(
            dir.join("hosts.toml"),
            "server = \"https://127.0.0.1:5443\"\nca = \"ca.pem\"\n",
        )
        .expect("write");
        let hosts =
            resolve_hosts(&[root.path().to_path_buf()], "127.0.0.1:5443").expect("resolves");
        assert_eq!(urls(&hosts), ["https://127.0.0.1:5443/v2"]);
        assert_eq!(hosts[0].ca, [dir.join("ca.pem")]);
        // Without a directory: the default (loopback: https unverified, then http).
        let hosts =
            resolve_hosts(&[root.path().to_path_buf()], "127.0.0.1:6000").expect("resolves");
        assert_eq!(urls(&hosts), ["https://127.0.0.1:6000/v2"]);
        assert!(hosts[0].http_fallback && hosts[0].skip_verify);
        // Oversized files are refused with the path.
        std::fs::write(
            dir.join("hosts.toml"),
            vec![b'#'; (MAX_HOSTS_TOML + 1) as usize],
        )
        .expect("write");
        let err =
            resolve_hosts(&[root.path().to_path_buf()], "127.0.0.1:5443").expect_err("too big");
        assert!(err.to_string().contains("hosts.toml"), "{err}");
    }

    #[test]
    fn loopback_defaults_follow_containerd() {
        // (image host, URL, skip_verify, https first with http fallback)
        for (image_host, url, skip, fallback) in [
            ("localhost", "https://localhost/v2", true, false),
            ("localhost:443", "https://localhost:443/v2", true, false),
            ("localhost:80", "http://localhost:80/v2", false, false),
            ("localhost:5000", "https://localhost:5000/v2", true, true),
            ("127.0.0.1:5443", "https://127.0.0.1:5443/v2", true, true),
            ("[::1]:5000", "https://[::1]:5000/v2", true, true),
            ("[::1]:80", "http://[::1]:80/v2", false, false),
            ("127.0.0.2", "https://127.0.0.2/v2", true, false),
            ("r.example:5000", "https://r.example:5000/v2", false, false),
        ] {
            let hosts = finish_hosts(image_host, None);
            assert_eq!(urls(&hosts), [url], "{image_host}");
            assert_eq!(hosts[0].skip_verify, skip, "{image_host}");
            assert_eq!(hosts[0].http_fallback, fallback, "{image_host}");
        }
        // A server-less hosts.toml: the same default, containerd overriding skip_verify.
        let dir = Path::new("/d");
        let entries =
            parse_hosts_toml(&dir.join("hosts.toml"), dir, "skip_verify = false\n").expect("ok");
        let hosts = finish_hosts("localhost:5000", Some(entries));
        assert!(hosts[0].skip_verify && hosts[0].http_fallback);
    }

    #[test]
    fn http_hosts_with_tls_settings_try_https_first() {
        // The pure rule.
        for (scheme, host, tls, want) in [
            ("http", "m.example:5000", true, true),
            ("http", "m.example", true, true),
            ("http", "m.example:80", true, false),
            ("http", "[::1]:80", true, false),
            ("http", "[::1]:8080", true, true),
            ("http", "m.example:5000", false, false),
            ("https", "m.example:5000", true, false),
        ] {
            assert_eq!(
                tries_https_first(scheme, host, tls),
                want,
                "{scheme} {host} {tls}"
            );
        }
        // Through hosts.toml: `ca`, `client` and even `skip_verify = false` are TLS settings.
        let hosts = parse(
            r#"
server = "http://plain.example:5000"
[host."http://a.example:5000"]
  ca = "ca.pem"
[host."http://b.example:5000"]
  client = "c.pem"
[host."http://c.example:5000"]
  skip_verify = false
[host."http://d.example:80"]
  ca = "ca.pem"
[host."https://e.example"]
  ca = "ca.pem"
"#,
        );
        assert_eq!(
            urls(&hosts),
            [
                "https://a.example:5000/v2",
                "https://b.example:5000/v2",
                "https://c.example:5000/v2",
                "http://d.example:80/v2",
                "https://e.example/v2",
                "http://plain.example:5000/v2",
            ]
        );
        let fallback: Vec<bool> = hosts.iter().map(|h| h.http_fallback).collect();
        assert_eq!(fallback, [true, true, true, false, false, false]);
        assert!(!hosts[2].skip_verify, "skip_verify = false stays false");
    }

    #[test]
    fn dial_timeout_is_parsed_per_host() {
        let hosts = parse(
            r#"
server = "https://r.example"
dial_timeout = "3s"
[host."https://m.example"]
  dial_timeout = "500ms"
[host."https://n.example"]
[host."https://o.example"]
  dial_timeout = "0s"
"#,
        );
        let timeouts: Vec<Option<Duration>> = hosts.iter().map(|h| h.dial_timeout).collect();
        assert_eq!(
            timeouts,
            [
                Some(Duration::from_millis(500)),
                None,
                None,
                Some(Duration::from_secs(3))
            ]
        );
        let dir = Path::new("/d");
        for (text, needle) in [
            (
                "dial_timeout = \"3\"",
                "dial_timeout: invalid duration \"3\": missing unit",
            ),
            ("dial_timeout = \"-1s\"", "negative"),
            ("dial_timeout = \"1d\"", "unknown unit"),
            ("dial_timeout = 3", "dial_timeout must be a duration string"),
            (
                "[host.\"https://m\"]\ndial_timeout = \"x\"",
                "host.\"https://m\": dial_timeout",
            ),
        ] {
            let err = parse_hosts_toml(&dir.join("hosts.toml"), dir, text).expect_err(text);
            let msg = err.to_string();
            assert!(
                msg.contains("/d/hosts.toml") && msg.contains(needle),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn legacy_mirrors_append_the_upstream() {
        let legacy = LegacyRegistry {
            mirrors: vec![
                ("docker.io".into(), vec!["https://mirror.example".into()]),
                ("*".into(), vec!["http://any.example:5000".into()]),
                ("r.example".into(), vec!["https://r.example".into()]),
            ],
            tls: vec![(
                "mirror.example".into(),
                LegacyTls {
                    ca_file: Some("/ca.pem".into()),
                    insecure_skip_verify: true,
                    ..Default::default()
                },
            )],
        };
        let hub = legacy_mirror_hosts(&legacy, "docker.io");
        assert_eq!(
            urls(&hub),
            [
                "https://mirror.example/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert_eq!(hub[0].ca, [PathBuf::from("/ca.pem")]);
        assert!(hub[0].skip_verify && !hub[1].skip_verify);
        assert_eq!(
            urls(&legacy_mirror_hosts(&legacy, "q.example")),
            ["http://any.example:5000/v2", "https://q.example/v2"]
        );
        assert_eq!(
            urls(&legacy_mirror_hosts(&legacy, "r.example")),
            ["https://r.example/v2"]
        );
    }
}
