//! A request's pull secrets: the operator merged `spec.pullSecrets` into one Secret in the
//! agent's own namespace and named it in `status.request.pullSecret`. The agent reads it (its
//! RBAC allows `get` on Secrets of that namespace only), writes the docker config to a `0600`
//! file in a private `0700` directory, adds it to the job's `--auth` files and removes both
//! when the job is done. The content is never logged; errors name the Secret only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// The key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// The docker config.json of a pull-secret Secret, or why it cannot be used.
pub fn docker_config(namespace: &str, name: &str, secret: &Secret) -> Result<Vec<u8>, String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            format!("pull secret {namespace}/{name} has no {DOCKER_CONFIG_JSON_KEY} key")
        })
}

/// Reads the Secret `name` of the agent's namespace.
pub async fn read(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Vec<u8>, String> {
    match api.get_opt(name).await {
        Ok(Some(secret)) => docker_config(namespace, name, &secret),
        Ok(None) => Err(format!("pull secret {namespace}/{name} not found")),
        // The API server's status message names the object and the reason, not its data.
        Err(e) => Err(format!("reading pull secret {namespace}/{name}: {e}")),
    }
}

/// The docker config on disk for one job; the directory and file go when this is dropped.
#[derive(Debug)]
pub struct PullSecretFile {
    dir: tempfile::TempDir,
}

impl PullSecretFile {
    pub fn write(config: &[u8]) -> std::io::Result<PullSecretFile> {
        use std::os::unix::fs::PermissionsExt;
        // An unpredictable name; made 0700 before the file exists (tempfile creates
        // directories with the umask's mode).
        let dir = tempfile::Builder::new()
            .prefix("snapmend-pull-")
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("config.json"))?;
        file.write_all(config)?;
        file.sync_all()?;
        Ok(PullSecretFile { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn the_file_is_private_and_removed_with_its_directory() {
        let written = PullSecretFile::write(br#"{"auths":{}}"#).expect("write");
        let path = written.path();
        assert_eq!(std::fs::read(&path).expect("read"), br#"{"auths":{}}"#);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let dir = path.parent().expect("dir").to_path_buf();
        assert_eq!(mode(&dir), 0o700);
        drop(written);
        assert!(!path.exists() && !dir.exists(), "removed after the job");
    }

    #[test]
    fn a_secret_without_a_docker_config_is_named() {
        let mut secret = Secret::default();
        assert_eq!(
            docker_config("snapmend-system", "snapmend-pull-x", &secret).unwrap_err(),
            "pull secret snapmend-system/snapmend-pull-x has no .dockerconfigjson key"
        );
        secret.data = Some(BTreeMap::from([(
            DOCKER_CONFIG_JSON_KEY.to_string(),
            k8s_openapi::ByteString(b"{}".to_vec()),
        )]));
        assert_eq!(
            docker_config("snapmend-system", "snapmend-pull-x", &secret).unwrap(),
            b"{}"
        );
    }
}
