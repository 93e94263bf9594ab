//! A node as EKS builds them, for the demo's second act: containerd's CRI with
//! `discard_unpacked_layers = true` pulls the sandbox image itself, through its hosts
//! directory, from a loopback registry (Debian's docker-registry, TLS with a generated CA,
//! htpasswd basic auth; the image pushed with skopeo), with the credentials in the CRI
//! AuthConfig as kubelet passes them. Once unpacked, containerd deletes the layer blob: only
//! the registry still has it. The agent gets the node's docker config and a blob cache.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::TestError;
use crate::containerd::{ContainerdFixture, CriPlugin, FixtureOptions};
use crate::cri::{CriAuth, pull_image};
use crate::image_builder::{pause_image, write_oci_archive};
use crate::registry::{Registry, TestCa, write_docker_config, write_hosts_toml};

const USER: &str = "node";
/// Never printed: the agent reads it from the docker config, the CRI call carries it.
const PASSWORD: &str = "demo-registry-secret";

/// The started node and the registry it pulled from (kept running for the repair).
pub struct RegistryNode {
    pub fixture: ContainerdFixture,
    pub registry: Registry,
    /// Agent flags: `--auth <the node's docker config>`, `--cache-dir <dir>`.
    pub agent_args: Vec<String>,
    /// What happened, in order, for the timeline.
    pub story: Vec<(Instant, String)>,
}

/// Starts the registry and the node in `dir`; `sandbox_image` is `<host>/<repo>:<tag>`.
pub fn start_registry_node(dir: &Path, sandbox_image: &str) -> Result<RegistryNode, TestError> {
    let (image_host, repo_tag) = sandbox_image
        .split_once('/')
        .ok_or_else(|| TestError::Scenario(format!("{sandbox_image} names no registry host")))?;
    let mut story = Vec::new();
    let ca = TestCa::generate(&dir.join("ca"))?;
    let registry = Registry::start(&dir.join("registry"), &ca, Some((USER, PASSWORD)))?;
    let archive = dir.join("pause.tar");
    let built = write_oci_archive(&[pause_image(sandbox_image)?], &archive)?;
    registry.push(&archive, repo_tag, &ca)?;
    let layer = built
        .first()
        .and_then(|image| image.layers.first())
        .map(|l| l.digest().to_string())
        .ok_or_else(|| TestError::Scenario("the pause image has no layer".into()))?;
    story.push((
        Instant::now(),
        format!(
            "registry https://{} up (docker-registry, TLS, basic auth); skopeo pushed {repo_tag}",
            registry.host()
        ),
    ));
    // containerd 1.6 needs a `[host."…"]` section (a server-only hosts.toml fails to parse
    // there and it would resolve the image's own host instead).
    let hosts = write_hosts_toml(
        &dir.join("certs.d"),
        image_host,
        &format!(
            "server = \"https://{r}\"\nca = \"{ca}\"\n\n[host.\"https://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
            r = registry.host(),
            ca = ca.ca_cert().display()
        ),
    )?;
    let fixture = ContainerdFixture::start_with(FixtureOptions {
        sandbox_image: sandbox_image.to_string(),
        cri: Some(CriPlugin {
            registry_config_path: hosts.clone(),
            discard_unpacked_layers: true,
        }),
    })?;
    pull_image(
        &fixture.socket(),
        sandbox_image,
        Some(CriAuth {
            username: USER,
            password: PASSWORD,
        }),
        Duration::from_secs(60),
    )?;
    fixture.settle()?;
    let content = fixture.ctr(&["content", "ls", "-q"])?;
    if content.contains(&layer) || fixture.blob_path(&layer).exists() {
        return Err(TestError::Scenario(format!(
            "containerd kept the layer blob {layer} despite discard_unpacked_layers"
        )));
    }
    story.push((
        Instant::now(),
        format!(
            "containerd's CRI (discard_unpacked_layers = true) pulled {sandbox_image} through {}/{image_host}/hosts.toml and deleted its layer blob {} after unpacking ({} blobs left: manifest, config)",
            hosts.display(),
            short(&layer),
            content.lines().filter(|l| !l.trim().is_empty()).count()
        ),
    ));
    let docker_config = dir.join("node-docker-config.json");
    write_docker_config(&docker_config, &registry.host(), USER, PASSWORD)?;
    let agent_args = vec![
        "--auth".to_string(),
        docker_config.display().to_string(),
        "--cache-dir".to_string(),
        dir.join("blobs").display().to_string(),
    ];
    Ok(RegistryNode {
        fixture,
        registry,
        agent_args,
        story,
    })
}

/// `sha256:0123456789ab…` for the timeline.
fn short(digest: &str) -> String {
    match digest.get(..19) {
        Some(head) if digest.len() > 19 => format!("{head}…"),
        _ => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_shortened_for_the_timeline() {
        assert_eq!(short("sha256:0123456789abcdef0123"), "sha256:0123456789ab…");
        assert_eq!(short("sha256:01"), "sha256:01");
    }
}
