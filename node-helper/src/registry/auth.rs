//! Credentials and challenges: docker `config.json` `auths` (as kubelet reads
//! `/var/lib/kubelet/config.json`), the `WWW-Authenticate` challenge, token responses. Pure,
//! except [`DockerConfig::load`]. Secrets never appear in `Debug` or `Display` output.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::reference::strip_port;
use crate::error::{Error, Result};
use crate::store::bounded::read_capped;

/// docker config files are small; refuse anything larger.
pub const MAX_AUTH_FILE: u64 = 4 << 20;

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a registry may be given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: Secret,
    },
    /// A refresh token for the token endpoint (`identitytoken`).
    IdentityToken(Secret),
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, RawAuth>,
}

#[derive(Deserialize, Default)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// One `auths` entry: where it applies, and what it gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthEntry {
    /// Host pattern (`*.example.com` globs per label, as kubelet), port included.
    pub host: String,
    /// Repository prefix the entry is limited to (empty: the whole registry).
    pub path: String,
    pub credentials: Credentials,
}

/// The `auths` of every `--auth` file, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerConfig {
    pub entries: Vec<AuthEntry>,
}

impl DockerConfig {
    /// Reads the files; a missing file is skipped only when `optional`.
    pub fn load(files: &[(std::path::PathBuf, bool)]) -> Result<DockerConfig> {
        let mut config = DockerConfig::default();
        for (file, optional) in files {
            let bytes = match read_capped(file, "docker config.json", MAX_AUTH_FILE) {
                Ok(b) => b,
                Err(Error::Io { source, .. })
                    if *optional && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            config.entries.extend(parse_docker_config(file, &bytes)?);
        }
        Ok(config)
    }

    /// The credentials for `host` (as contacted) and `repository`: the entry with the longest
    /// matching path wins, then file order (kubelet's keyring does the same).
    pub fn find(&self, host: &str, repository: &str) -> Option<&Credentials> {
        let host = canonical_host(host);
        self.entries
            .iter()
            .filter(|e| host_matches(&e.host, &host) && path_matches(&e.path, repository))
            .fold(None::<&AuthEntry>, |best, e| match best {
                Some(b) if b.path.len() >= e.path.len() => Some(b),
                _ => Some(e),
            })
            .map(|e| &e.credentials)
    }
}

/// Parses one docker config.json. Errors name the file and the entry, never a secret.
pub fn parse_docker_config(file: &Path, bytes: &[u8]) -> Result<Vec<AuthEntry>> {
    let bad = |reason: String| Error::Config {
        path: file.to_path_buf(),
        reason,
    };
    // serde_json's error text can quote input; say only where it failed.
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "not a docker config.json (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let mut out = Vec::new();
    for (key, a) in raw.auths {
        let (host, path) = parse_auth_key(&key);
        let credentials = if let Some(token) = a.identitytoken.filter(|t| !t.is_empty()) {
            Credentials::IdentityToken(Secret(token))
        } else if let (Some(u), Some(p)) = (&a.username, &a.password)
            && !u.is_empty()
        {
            Credentials::Basic {
                username: u.clone(),
                password: Secret(p.clone()),
            }
        } else if let Some(auth) = a.auth.filter(|s| !s.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| bad(format!("auths.{key:?}.auth is not base64 of user:password")))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| bad(format!("auths.{key:?}.auth is not base64 of user:password")))?;
            Credentials::Basic {
                username: u.to_string(),
                password: Secret(p.to_string()),
            }
        } else {
            continue;
        };
        out.push(AuthEntry {
            host,
            path,
            credentials,
        });
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → (`docker.io`, ``); `r.example/team` → (`r.example`, `team`).
pub fn parse_auth_key(key: &str) -> (String, String) {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_matches('/');
    // The Docker Hub keys carry an API version path, not a repository.
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    (canonical_host(host), path.to_string())
}

/// Docker Hub has several names; credentials for any apply to all.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_ascii_lowercase(),
    }
}

/// kubelet: ports must agree; each dot-separated label may be a glob (`*`).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let port = |h: &str| h.strip_prefix(strip_port(h)).unwrap_or("").to_string();
    if port(pattern) != port(host) {
        return false;
    }
    let (p, h): (Vec<&str>, Vec<&str>) = (
        strip_port(pattern).split('.').collect(),
        strip_port(host).split('.').collect(),
    );
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .all(|(p, h)| crate::store::config::wildcard_match(p, h))
}

pub fn path_matches(prefix: &str, repository: &str) -> bool {
    prefix.is_empty() || repository == prefix || repository.starts_with(&format!("{prefix}/"))
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased scheme: `bearer`, `basic`.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Bearer realm="…",service="…",scope="…", Basic realm="…"` (RFC 7235).
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize, f: &dyn Fn(u8) -> bool| {
        while *i < s.len() && f(s[*i]) {
            *i += 1;
        }
    };
    while i < s.len() {
        skip(&mut i, &|c| c == b' ' || c == b',' || c == b'\t');
        let start = i;
        skip(&mut i, &|c| !matches!(c, b' ' | b',' | b'=' | b'\t'));
        if start == i {
            break;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' && !out.is_empty() {
            // A parameter of the current challenge.
            i = j + 1;
            skip(&mut i, &|c| c == b' ' || c == b'\t');
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    let ch_len = header[i..].chars().next().map_or(1, char::len_utf8);
                    v.push_str(&header[i..i + ch_len]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                let vs = i;
                skip(&mut i, &|c| c != b',');
                header[vs..i].trim().to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.push((token.to_ascii_lowercase(), value));
            }
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// The token endpoint's answer (`token`, or OAuth2's `access_token`).
pub fn token_from_response(body: &[u8]) -> Option<Secret> {
    #[derive(Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    r.token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
        .map(Secret)
}

/// `Basic base64(user:password)`.
pub fn basic_header(username: &str, password: &Secret) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/var/lib/kubelet/config.json";

    fn parse(json: &str) -> Vec<AuthEntry> {
        parse_docker_config(Path::new(FILE), json.as_bytes()).expect("parses")
    }

    #[test]
    fn every_credential_form_is_read() {
        let entries = parse(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzOndpdGg6Y29sb25z"},
                "r.example:5443": {"username": "u", "password": "p"},
                "tok.example": {"identitytoken": "refresh-me", "auth": "eDp5"},
                "empty.example": {},
                "http://team.example/org/team/": {"auth": "YTpi"}
            }}"#,
        );
        let by_host = |h: &str| entries.iter().find(|e| e.host == h).expect(h).clone();
        assert_eq!(
            by_host("docker.io").credentials,
            Credentials::Basic {
                username: "user".into(),
                password: Secret::new("pass:with:colons")
            }
        );
        assert_eq!(
            by_host("r.example:5443").credentials,
            Credentials::Basic {
                username: "u".into(),
                password: Secret::new("p")
            }
        );
        assert_eq!(
            by_host("tok.example").credentials,
            Credentials::IdentityToken(Secret::new("refresh-me"))
        );
        assert_eq!(by_host("team.example").path, "org/team");
        assert!(!entries.iter().any(|e| e.host == "empty.example"));
    }

    #[test]
    fn errors_never_quote_secrets() {
        for json in [
            r#"{"auths": {"r": {"auth": "not base64 s3cr3t!"}}}"#,
            r#"{"auths": {"r": {"auth": "czNjcjN0"}}}"#,
            r#"{"auths": {"r": {"password": s3cr3t}}}"#,
        ] {
            let err = parse_docker_config(Path::new(FILE), json.as_bytes()).expect_err(json);
            let msg = err.to_string();
            assert!(msg.contains(FILE), "{msg}");
            assert!(
                !msg.contains("s3cr3t") && !msg.contains("czNjcjN0"),
                "{msg}"
            );
        }
        let creds = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("s3cr3t"),
        };
        assert!(!format!("{creds:?}").contains("s3cr3t"));
    }

    #[test]
    fn lookup_matches_host_port_globs_and_paths_like_kubelet() {
        let config = DockerConfig {
            entries: parse(
                r#"{"auths": {
                    "r.example:5443": {"auth": "cG9ydDpw"},
                    "r.example": {"auth": "bm9wb3J0OnA="},
                    "*.wild.example": {"auth": "d2lsZDpw"},
                    "r.example/team": {"auth": "dGVhbTpw"},
                    "docker.io": {"auth": "aHViOnA="}
                }}"#,
            ),
        };
        let user = |host: &str, repo: &str| match config.find(host, repo) {
            Some(Credentials::Basic { username, .. }) => Some(username.clone()),
            _ => None,
        };
        assert_eq!(user("r.example:5443", "x").as_deref(), Some("port"));
        assert_eq!(user("r.example", "x").as_deref(), Some("noport"));
        assert_eq!(user("r.example", "team/app").as_deref(), Some("team"));
        assert_eq!(user("r.example", "teamx/app").as_deref(), Some("noport"));
        assert_eq!(user("a.wild.example", "x").as_deref(), Some("wild"));
        assert_eq!(user("a.b.wild.example", "x"), None);
        assert_eq!(
            user("registry-1.docker.io", "library/x").as_deref(),
            Some("hub")
        );
        assert_eq!(user("other.example", "x"), None);
        assert_eq!(user("r.example:5000", "x"), None);
    }

    #[test]
    fn challenges_parse() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
        let c = parse_www_authenticate(
            r#"Basic realm="Registry Realm", Bearer realm=x,service="s\"q""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].scheme.as_str(), c[0].param("realm")),
            ("basic", Some("Registry Realm"))
        );
        assert_eq!(
            (c[1].param("realm"), c[1].param("service")),
            (Some("x"), Some("s\"q"))
        );
        assert_eq!(parse_www_authenticate("Basic").len(), 1);
        assert!(parse_www_authenticate("").is_empty());
    }

    #[test]
    fn tokens_and_basic() {
        assert_eq!(
            token_from_response(br#"{"token":"t"}"#),
            Some(Secret::new("t"))
        );
        assert_eq!(
            token_from_response(br#"{"access_token":"a"}"#),
            Some(Secret::new("a"))
        );
        assert_eq!(
            token_from_response(br#"{"token":"","access_token":"a"}"#),
            Some(Secret::new("a"))
        );
        assert_eq!(token_from_response(b"{}"), None);
        assert_eq!(token_from_response(b"<html>"), None);
        assert_eq!(basic_header("u", &Secret::new("p")), "Basic dTpw");
    }

    #[test]
    fn missing_optional_files_are_skipped_and_required_ones_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.json");
        assert!(
            DockerConfig::load(&[(missing.clone(), true)])
                .expect("skipped")
                .entries
                .is_empty()
        );
        let err = DockerConfig::load(&[(missing, false)]).expect_err("required");
        assert!(err.to_string().contains("none.json"));
        let f = dir.path().join("c.json");
        std::fs::write(&f, r#"{"auths":{"a":{"auth":"YTpi"}}}"#).expect("write");
        assert_eq!(
            DockerConfig::load(&[(f, false)])
                .expect("loads")
                .entries
                .len(),
            1
        );
    }
}
