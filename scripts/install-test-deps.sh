#!/usr/bin/env bash
# Installs the packages snapmend's tests need on a fresh Debian machine (run as root).
# containerd and runc are Debian's; kubectl must already be present or installable.
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v ctr >/dev/null || need+=(containerd)
command -v getfattr >/dev/null || need+=(attr)
command -v zstd >/dev/null || need+=(zstd)
command -v cc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
if ! command -v kubectl >/dev/null; then need+=(kubectl); fi
# Blob fetching tests (tests/tests/node_helper_registry.rs): the CNCF distribution registry,
# skopeo to push with a real client, htpasswd for the registry's bcrypt basic auth.
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The test suite fails, not skips, without these.
for tool in containerd ctr runc kubectl cc getfattr docker-registry skopeo htpasswd openssl; do
  command -v "$tool" >/dev/null || { echo "missing required test tool: $tool" >&2; exit 1; }
done
# The private containerd fixture (tests/src/containerd) and bench/run.sh use these util-linux,
# coreutils and tar tools (all in Debian's essential set; checked so a missing one is named).
for tool in unshare nsenter findmnt mount mknod tar; do
  command -v "$tool" >/dev/null || { echo "missing required test tool: $tool" >&2; exit 1; }
done
# scripts/validate-manifests.sh (deploy_manifests test) installs kubernetes-validate from PyPI into a venv.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
