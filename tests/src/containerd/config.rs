//! The private containerd's `config.toml` (version 2, containerd 1.6/1.7 keys).

use std::path::Path;

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

/// Paths and names one private containerd uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPaths<'a> {
    pub root: &'a Path,
    pub state: &'a Path,
    pub socket: &'a Path,
    /// The sandbox image the CRI section names (read by the node helper's `--sandbox-image`).
    pub sandbox_image: &'a str,
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
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_string(p)).collect();
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
        });
        assert!(text.starts_with("version = 2\n"));
        assert!(text.contains("root = \"/tmp/x/root\"\n"));
        assert!(text.contains("state = \"/tmp/x/state\"\n"));
        assert!(text.contains("[grpc]\n  address = \"/tmp/x/containerd.sock\"\n"));
        assert!(text.contains("[ttrpc]\n  address = \"/tmp/x/containerd.sock.ttrpc\"\n"));
        assert!(text.contains("sandbox_image = \"snapmend.test/pause:\\\"1\\\"\"\n"));
        assert!(text.contains("\"io.containerd.grpc.v1.cri\""));
        assert!(!text.contains("/var/lib/containerd") && !text.contains("/run/containerd"));
    }
}
