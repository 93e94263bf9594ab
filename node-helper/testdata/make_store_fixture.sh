#!/usr/bin/env bash
# Regenerates node-helper/testdata/store/ from a private containerd (see README.md).
# Needs root, containerd and ctr. Touches nothing outside a fresh temp dir and testdata/store.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d /tmp/snapmend-fixture.XXXXXX)"
cat >"$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/containerd.sock"
TOML
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do [ -S "$tmp/containerd.sock" ] && break; sleep 0.1; done
python3 "$here/make_oci_archive.py" "$tmp/images.tar"
ctr -a "$tmp/containerd.sock" -n k8s.io images import --platform linux/amd64 "$tmp/images.tar"
ctr -a "$tmp/containerd.sock" -n k8s.io images ls
kill $pid; wait $pid 2>/dev/null || true
rm -rf "$here/store"
mkdir -p "$here/store/io.containerd.metadata.v1.bolt" "$here/store/io.containerd.snapshotter.v1.overlayfs"
cp "$tmp/root/io.containerd.metadata.v1.bolt/meta.db" "$here/store/io.containerd.metadata.v1.bolt/"
cp "$tmp/root/io.containerd.snapshotter.v1.overlayfs/metadata.db" "$here/store/io.containerd.snapshotter.v1.overlayfs/"
cp -r "$tmp/root/io.containerd.content.v1.content" "$here/store/"
rm -rf "$here/store/io.containerd.content.v1.content/ingest"
chmod -R u+w "$here/store"
ls -R "$here/store"
