//! Image names as containerd normalises them (`reference/docker.ParseNormalizedNamed`): the
//! registry host (the key of the hosts directory) and the repository path. Pure.

/// Where an image (or one of its `containerd.io/distribution.source.*` labels) says its blobs live.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    /// Registry host as written in the name, port included (`docker.io`, `127.0.0.1:5443`).
    pub host: String,
    /// Repository path (`library/nginx`).
    pub repository: String,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)
    }
}

const DOCKER_HUB: &str = "docker.io";

/// Parses an image reference (`nginx`, `docker.io/library/nginx:1`, `host:5000/a/b@sha256:…`)
/// into its normalised registry host and repository. `None` for a bare digest or ID, which
/// names no registry.
pub fn parse_reference(reference: &str) -> Option<Source> {
    if reference.starts_with("sha256:") {
        return None;
    }
    let name = reference.split('@').next().unwrap_or_default();
    // A tag follows the last ':' after the last '/' (a ':' before it is a port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].find(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    if name.is_empty() || is_bare_id(name) {
        return None;
    }
    let (host, path) = match name.split_once('/') {
        Some((first, rest)) if is_domain(first) => (first.to_string(), rest.to_string()),
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let host = if host == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        host
    };
    if path.is_empty() || path.split('/').any(str::is_empty) {
        return None;
    }
    let repository = if host == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Some(Source { host, repository })
}

/// docker/distribution: the first component is a domain when it has a `.` or a `:`, is
/// `localhost`, or has upper-case letters (repository paths cannot).
fn is_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// A 64-hex image ID used as a name.
fn is_bare_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sources in `containerd.io/distribution.source.<host>=<repo>[,<repo>]` labels. The
/// label's host has no port (containerd strips it), so it is matched to the image's own host
/// when they agree without the port.
pub fn sources_from_labels<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    image_host: Option<&str>,
) -> Vec<Source> {
    const PREFIX: &str = "containerd.io/distribution.source.";
    let mut out = Vec::new();
    for (key, value) in labels {
        let Some(label_host) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if label_host.is_empty() {
            continue;
        }
        let host = match image_host {
            Some(h) if strip_port(h) == label_host => h.to_string(),
            _ => label_host.to_string(),
        };
        for repo in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let source = Source {
                host: host.clone(),
                repository: repo.to_string(),
            };
            if !out.contains(&source) {
                out.push(source);
            }
        }
    }
    out
}

/// `host:port` → `host` (IPv6 in brackets kept whole).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// containerd's `docker.IsLocalhost`: `localhost`, `127.0.0.0/8` and `::1`, any port.
pub fn is_localhost(host: &str) -> bool {
    let h = strip_port(host);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h == "localhost" {
        return true;
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(r: &str) -> Option<(String, String)> {
        parse_reference(r).map(|s| (s.host, s.repository))
    }

    fn pair(h: &str, r: &str) -> Option<(String, String)> {
        Some((h.to_string(), r.to_string()))
    }

    #[test]
    fn docker_hub_names_are_normalised_like_containerd() {
        assert_eq!(src("nginx"), pair("docker.io", "library/nginx"));
        assert_eq!(src("nginx:1.25"), pair("docker.io", "library/nginx"));
        assert_eq!(src("docker.io/nginx"), pair("docker.io", "library/nginx"));
        assert_eq!(
            src("index.docker.io/nginx"),
            pair("docker.io", "library/nginx")
        );
        assert_eq!(
            src("docker.io/library/nginx:latest"),
            pair("docker.io", "library/nginx")
        );
        assert_eq!(src("bitnami/redis:7"), pair("docker.io", "bitnami/redis"));
        assert_eq!(
            src("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            pair("docker.io", "library/nginx")
        );
    }

    #[test]
    fn other_registries_keep_host_port_and_path() {
        assert_eq!(
            src("registry.k8s.io/pause:3.10"),
            pair("registry.k8s.io", "pause")
        );
        assert_eq!(
            src("127.0.0.1:5443/snapmend/pause:1"),
            pair("127.0.0.1:5443", "snapmend/pause")
        );
        assert_eq!(src("localhost/app"), pair("localhost", "app"));
        assert_eq!(
            src("localhost:5000/a/b/c:tag@sha256:ab"),
            pair("localhost:5000", "a/b/c")
        );
        assert_eq!(src("Registry/app"), pair("Registry", "app"));
        assert_eq!(src("[::1]:5000/app"), pair("[::1]:5000", "app"));
    }

    #[test]
    fn names_without_a_registry_are_none() {
        assert_eq!(src(""), None);
        assert_eq!(
            src("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            None
        );
        assert_eq!(
            src("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            None
        );
        assert_eq!(src("host.example/"), None);
        assert_eq!(src("host.example//a"), None);
    }

    #[test]
    fn labels_name_sources_and_regain_the_image_port() {
        let labels = [
            (
                "containerd.io/distribution.source.127.0.0.1",
                "snapmend/a,snapmend/b",
            ),
            (
                "containerd.io/distribution.source.docker.io",
                "library/busybox",
            ),
            ("containerd.io/uncompressed", "sha256:x"),
            ("containerd.io/distribution.source.", "x"),
        ];
        let got = sources_from_labels(labels, Some("127.0.0.1:5443"));
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "127.0.0.1:5443/snapmend/a",
                "127.0.0.1:5443/snapmend/b",
                "docker.io/library/busybox"
            ]
        );
        let got = sources_from_labels(labels, None);
        assert_eq!(got[0].host, "127.0.0.1");
    }

    #[test]
    fn localhost_and_ports() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("localhost:5000"));
        assert!(is_localhost("127.0.0.1:5443"));
        assert!(is_localhost("127.1.2.3"));
        assert!(is_localhost("[::1]:5000"));
        assert!(!is_localhost("registry.local"));
        assert!(!is_localhost("10.0.0.1:5000"));
        assert_eq!(strip_port("a.b:5000"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
