//! kubelet's credential provider exec plugins (`credentialprovider.kubelet.k8s.io/v1`): the
//! `CredentialProviderConfig` that kubelet's `--image-credential-provider-config` names, the
//! plugin binaries in `--image-credential-provider-bin-dir`, one exec per image with a
//! `CredentialProviderRequest` on stdin, and the response's `auth` cached for its
//! `cacheDuration` (or the provider's `defaultCacheDuration`) by `cacheKeyType`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::auth::{
    AuthEntry, Credentials, DockerConfig, Secret, host_matches, parse_auth_key, path_matches,
};
use crate::error::{Error, Result};
use crate::store::bounded::read_text_capped;
use snapmend_crds::runtime::go_duration::parse_go_duration;

const MAX_CONFIG: u64 = 1 << 20;
const MAX_RESPONSE: u64 = 1 << 20;
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    pub name: String,
    #[serde(default)]
    pub match_images: Vec<String>,
    #[serde(default)]
    pub default_cache_duration: Option<String>,
    pub api_version: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Service-account token plugins (1.33+): a node agent has no pod token to give.
    #[serde(default)]
    pub token_attributes: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    providers: Vec<Provider>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    cache_key_type: Option<String>,
    #[serde(default)]
    cache_duration: Option<String>,
    #[serde(default)]
    auth: std::collections::BTreeMap<String, ResponseAuth>,
}

#[derive(Deserialize)]
struct ResponseAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// (provider name, cache key) → (valid until, the answer's auth entries).
type AnswerCache = HashMap<(String, String), (Instant, Vec<AuthEntry>)>;

/// The configured plugins and their answers so far.
pub struct CredentialProviders {
    bin_dir: PathBuf,
    providers: Vec<Provider>,
    cache: Mutex<AnswerCache>,
}

/// Parses kubelet's CredentialProviderConfig (YAML or JSON).
pub fn parse_config(file: &Path, text: &str) -> Result<Vec<Provider>> {
    let bad = |reason: String| Error::Config {
        path: file.to_path_buf(),
        reason,
    };
    let config: ConfigFile = serde_yaml::from_str(text)
        .map_err(|e| bad(format!("not a CredentialProviderConfig: {e}")))?;
    for p in &config.providers {
        if p.api_version != "credentialprovider.kubelet.k8s.io/v1" {
            return Err(bad(format!(
                "provider {:?}: apiVersion {:?} is not supported (credentialprovider.kubelet.k8s.io/v1)",
                p.name, p.api_version
            )));
        }
        if p.name.contains('/') || p.name.is_empty() || p.name == "." || p.name == ".." {
            return Err(bad(format!(
                "provider name {:?} is not a file name",
                p.name
            )));
        }
    }
    Ok(config.providers)
}

/// kubelet's `URLsMatchStr`: the image matches a `matchImages` pattern when the hosts have the
/// same number of labels, each label matches its glob, the ports agree, and the pattern's path
/// is a prefix of the image's.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    let (p_host, p_path) = parse_auth_key(pattern);
    let (i_host, i_path) = parse_auth_key(image);
    host_matches(&p_host, &i_host) && path_matches(&p_path, &i_path)
}

impl CredentialProviders {
    pub fn load(config: &Path, bin_dir: &Path) -> Result<CredentialProviders> {
        let text = read_text_capped(config, "credential provider config", MAX_CONFIG)?;
        Ok(CredentialProviders {
            bin_dir: bin_dir.to_path_buf(),
            providers: parse_config(config, &text)?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The credentials every matching plugin gives for `image` (`host/repository`), as auth
    /// entries whose keys must also match the image (as kubelet filters them). Plugin failures
    /// are returned as notes; the other sources still apply.
    pub fn credentials_for(&self, image: &str) -> (DockerConfig, Vec<String>) {
        let mut config = DockerConfig::default();
        let mut notes = Vec::new();
        let (host, _) = parse_auth_key(image);
        for p in &self.providers {
            if !p.match_images.iter().any(|m| image_matches(m, image)) {
                continue;
            }
            if p.token_attributes.is_some() {
                notes.push(format!(
                    "credential provider {}: it asks for a pod's service-account token (tokenAttributes), which a node agent cannot provide; use spec.pullSecrets or --auth instead",
                    p.name
                ));
                continue;
            }
            let cached = self.cache.lock().ok().and_then(|c| {
                [image.to_string(), host.clone(), String::new()]
                    .iter()
                    .find_map(|k| c.get(&(p.name.clone(), k.clone())))
                    .filter(|(until, _)| Instant::now() < *until)
                    .map(|(_, e)| e.clone())
            });
            let entries = match cached {
                Some(e) => e,
                None => match self.exec(p, image) {
                    Ok((key, ttl, entries)) => {
                        if !ttl.is_zero()
                            && let Ok(mut c) = self.cache.lock()
                        {
                            c.insert(
                                (p.name.clone(), key),
                                (Instant::now() + ttl, entries.clone()),
                            );
                        }
                        entries
                    }
                    Err(e) => {
                        notes.push(format!("credential provider {}: {e}", p.name));
                        continue;
                    }
                },
            };
            config.entries.extend(entries.into_iter().filter(|e| {
                let pattern = if e.path.is_empty() {
                    e.host.clone()
                } else {
                    format!("{}/{}", e.host, e.path)
                };
                image_matches(&pattern, image)
            }));
        }
        (config, notes)
    }

    /// Runs one plugin: (cache key, cache duration, entries). Errors never quote its output.
    fn exec(
        &self,
        p: &Provider,
        image: &str,
    ) -> std::result::Result<(String, Duration, Vec<AuthEntry>), String> {
        let bin = self.bin_dir.join(&p.name);
        let request = serde_json::json!({
            "apiVersion": p.api_version,
            "kind": "CredentialProviderRequest",
            "image": image,
        })
        .to_string();
        let spawn = || {
            Command::new(&bin)
                .args(&p.args)
                .envs(p.env.iter().map(|e| (&e.name, &e.value)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        };
        // ETXTBSY: a binary just written (an update in progress) is briefly not executable.
        let mut spawned = spawn();
        for _ in 0..5 {
            match &spawned {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(50));
                    spawned = spawn();
                }
                _ => break,
            }
        }
        let mut child = spawned.map_err(|e| format!("{}: {e}", bin.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(request.as_bytes());
        }
        let mut out = Vec::new();
        let reader = child.stdout.take();
        let deadline = Instant::now() + PLUGIN_TIMEOUT;
        let read = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = reader {
                let _ = r.take(MAX_RESPONSE + 1).read_to_end(&mut buf);
            }
            buf
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{} did not answer within {PLUGIN_TIMEOUT:?}",
                        bin.display()
                    ));
                }
                Err(e) => return Err(format!("{}: {e}", bin.display())),
            }
        };
        if let Ok(buf) = read.join() {
            out = buf;
        }
        if !status.success() {
            return Err(format!("{} exited with {status}", bin.display()));
        }
        if out.len() as u64 > MAX_RESPONSE {
            return Err(format!(
                "{} answered more than {MAX_RESPONSE} bytes",
                bin.display()
            ));
        }
        let response: Response = serde_json::from_slice(&out).map_err(|e| {
            format!(
                "{} did not answer a CredentialProviderResponse (line {}, column {})",
                bin.display(),
                e.line(),
                e.column()
            )
        })?;
        let ttl = response
            .cache_duration
            .as_deref()
            .or(p.default_cache_duration.as_deref())
            .and_then(|d| parse_go_duration(d).ok())
            .unwrap_or(Duration::ZERO);
        let key = match response.cache_key_type.as_deref() {
            Some("Registry") => parse_auth_key(image).0,
            Some("Global") => String::new(),
            _ => image.to_string(),
        };
        let entries = response
            .auth
            .into_iter()
            .filter(|(_, a)| !a.username.is_empty() || !a.password.is_empty())
            .map(|(pattern, a)| {
                let (host, path) = parse_auth_key(&pattern);
                AuthEntry {
                    host,
                    path,
                    credentials: Credentials::Basic {
                        username: a.username,
                        password: Secret::new(a.password),
                    },
                }
            })
            .collect();
        Ok((key, ttl, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_yaml_and_refuses_what_kubelet_refuses() {
        let yaml = r#"
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages: ["*.dkr.ecr.*.amazonaws.com", "r.example:5000/team"]
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: ["get-credentials"]
    env: [{name: AWS_PROFILE, value: x}]
"#;
        let p = parse_config(Path::new("/c.yaml"), yaml).expect("parses");
        assert_eq!(p[0].name, "ecr-credential-provider");
        assert_eq!(p[0].match_images.len(), 2);
        assert_eq!(p[0].env[0].name, "AWS_PROFILE");
        let old = yaml.replace(
            "credentialprovider.kubelet.k8s.io/v1",
            "credentialprovider.kubelet.k8s.io/v1alpha1",
        );
        assert!(
            parse_config(Path::new("/c.yaml"), &old)
                .expect_err("old")
                .to_string()
                .contains("not supported")
        );
        let escape = yaml.replace("ecr-credential-provider", "../../bin/sh");
        assert!(parse_config(Path::new("/c.yaml"), &escape).is_err());
    }

    #[test]
    fn match_images_like_kubelet() {
        assert!(image_matches(
            "*.dkr.ecr.*.amazonaws.com",
            "1234.dkr.ecr.us-east-1.amazonaws.com/app"
        ));
        assert!(!image_matches("*.dkr.ecr.*.amazonaws.com", "r.example/app"));
        assert!(image_matches(
            "r.example:5000/team",
            "r.example:5000/team/app"
        ));
        assert!(!image_matches("r.example:5000/team", "r.example/team/app"));
        assert!(!image_matches(
            "r.example:5000/team",
            "r.example:5000/other"
        ));
    }

    #[test]
    fn a_plugin_is_run_cached_and_filtered_by_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("fake-provider");
        let count = dir.path().join("count");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\nread -r req\necho x >> {}\ncase \"$req\" in *CredentialProviderRequest*) ;; *) exit 3;; esac\ncase \"$req\" in *r.example/app*) ;; *) exit 4;; esac\n\
                 echo '{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"1h\",\"auth\":{{\"r.example\":{{\"username\":\"u\",\"password\":\"p\"}},\"other.example\":{{\"username\":\"o\",\"password\":\"q\"}}}}}}'\n",
                count.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            "providers:\n- name: fake-provider\n  matchImages: [\"r.example\"]\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n- name: token-plugin\n  matchImages: [\"r.example\"]\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  tokenAttributes: {serviceAccountTokenAudience: x}\n",
        )
        .expect("write");
        let providers = CredentialProviders::load(&config, dir.path()).expect("loads");
        let (auth, notes) = providers.credentials_for("r.example/app");
        assert_eq!(
            auth.entries.len(),
            1,
            "only keys matching the image are kept"
        );
        assert!(
            matches!(auth.find("r.example", "app"), Some(Credentials::Basic { username, .. }) if username == "u")
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("token-plugin") && n.contains("tokenAttributes")),
            "{notes:?}"
        );
        let _ = providers.credentials_for("r.example/app");
        let runs = std::fs::read_to_string(&count)
            .expect("count")
            .lines()
            .count();
        assert_eq!(
            runs, 1,
            "the second lookup came from the cache (cacheKeyType Registry, 1h)"
        );
        let (auth, _) = providers.credentials_for("unmatched.example/app");
        assert!(auth.entries.is_empty());
    }
}
