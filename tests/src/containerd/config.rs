//! The private containerd's `config.toml` (version 2, containerd 1.6/1.7 keys).

use std::path::{Path, PathBuf};

/// Plugins a test containerd does not need: CRI (would start CNI and its own state), the
/// snapshotters other than overlayfs, and tracing.
pub const DISABLED_PLUGINS: [&str; 7] = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// containerd's CRI plugin, enabled for the tests where containerd itself must pull through
/// CRI (its resolver, hosts directory and `discard_unpacked_layers`) as kubelet makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriPlugin {
    /// `registry.config_path`: the hosts directory (hosts.toml per registry).
    pub registry_config_path: PathBuf,
    /// `containerd.discard_unpacked_layers`: delete layer blobs once unpacked (EKS's setting).
    pub discard_unpacked_layers: bool,
}

/// Paths and names one private containerd uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPaths<'a> {
    pub root: &'a Path,
    pub state: &'a Path,
    pub socket: &'a Path,
    /// The sandbox image the CRI section names (read by the node helper's `--sandbox-image`).
    pub sandbox_image: &'a str,
    /// `None`: CRI disabled.
    pub cri: Option<&'a CriPlugin>,
}

fn quoted(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}

/// A TOML basic string (escapes `"` and `\`).
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Renders `config.toml`. The CRI section is kept although CRI is disabled: it is where a
/// 1.6 node records its sandbox image, which is what the node helper reads.
pub fn render_config(paths: &ConfigPaths<'_>) -> String {
    let disabled: Vec<String> = DISABLED_PLUGINS
        .iter()
        .filter(|p| paths.cri.is_none() || **p != "io.containerd.grpc.v1.cri")
        .map(|p| toml_string(p))
        .collect();
    let ttrpc = paths.socket.with_extension("sock.ttrpc");
    format!(
        "version = 2\nroot = {root}\nstate = {state}\ndisabled_plugins = [{disabled}]\n\n\
         [grpc]\n  address = {socket}\n\n[ttrpc]\n  address = {ttrpc}\n\n[metrics]\n  address = \"\"\n\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = {sandbox}\n",
        root = quoted(paths.root),
        state = quoted(paths.state),
        disabled = disabled.join(", "),
        socket = quoted(paths.socket),
        ttrpc = quoted(&ttrpc),
        sandbox = toml_string(paths.sandbox_image),
    ) + &paths
        .cri
        .map(|cri| render_cri(paths, cri))
        .unwrap_or_default()
}

/// The rest of an enabled CRI section: streaming on loopback only, CNI directories of its
/// own (never the machine's /etc/cni), the hosts directory and the discard setting.
fn render_cri(paths: &ConfigPaths<'_>, cri: &CriPlugin) -> String {
    let cni = paths.state.join("cni");
    format!(
        "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n  discard_unpacked_layers = {discard}\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {bin}\n  conf_dir = {conf}\n\
         [plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {hosts}\n",
        discard = cri.discard_unpacked_layers,
        bin = quoted(&cni.join("bin")),
        conf = quoted(&cni.join("net.d")),
        hosts = quoted(&cri.registry_config_path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_private_path_and_the_sandbox_image() {
        let text = render_config(&ConfigPaths {
            root: Path::new("/tmp/x/root"),
            state: Path::new("/tmp/x/state"),
            socket: Path::new("/tmp/x/containerd.sock"),
            sandbox_image: "snapmend.test/pause:\"1\"",
            cri: None,
        });
        assert!(text.starts_with("version = 2\n"));
        assert!(text.contains("root = \"/tmp/x/root\"\n"));
        assert!(text.contains("state = \"/tmp/x/state\"\n"));
        assert!(text.contains("[grpc]\n  address = \"/tmp/x/containerd.sock\"\n"));
        assert!(text.contains("[ttrpc]\n  address = \"/tmp/x/containerd.sock.ttrpc\"\n"));
        assert!(text.contains("sandbox_image = \"snapmend.test/pause:\\\"1\\\"\"\n"));
        assert!(text.contains("\"io.containerd.grpc.v1.cri\""));
        assert!(!text.contains("/var/lib/containerd") && !text.contains("/run/containerd"));
        assert!(!text.contains("discard_unpacked_layers"));
    }

    #[test]
    fn an_enabled_cri_pulls_through_the_hosts_dir_and_may_discard_layers() {
        let cri = CriPlugin {
            registry_config_path: PathBuf::from("/tmp/x/certs.d"),
            discard_unpacked_layers: true,
        };
        let text = render_config(&ConfigPaths {
            root: Path::new("/tmp/x/root"),
            state: Path::new("/tmp/x/state"),
            socket: Path::new("/tmp/x/containerd.sock"),
            sandbox_image: "snapmend.test/pause:3.10",
            cri: Some(&cri),
        });
        assert!(!text.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\""));
        assert!(text.contains("\"io.containerd.snapshotter.v1.btrfs\""));
        assert!(text.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n  discard_unpacked_layers = true\n"
        ));
        assert!(text.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/tmp/x/certs.d\"\n"
        ));
        assert!(text.contains("conf_dir = \"/tmp/x/state/cni/net.d\"\n"));
        assert!(text.contains("stream_server_address = \"127.0.0.1\"\n"));
        // Every section header once (a repeated table is invalid TOML).
        for header in [
            "[plugins.\"io.containerd.grpc.v1.cri\"]",
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]",
        ] {
            assert_eq!(text.matches(header).count(), 1, "{header}");
        }
    }
}
