#!/usr/bin/env bash
# Registry benchmark (issue 13): repair of the big bench layer with its blob from a loopback
# docker-registry (TLS, basic auth) against the same repair from the local content store, run
# alternately, and the helper's fetch throughput against `skopeo copy` of the same image from
# the same registry. Release build of the helper. Records the section in docs/BENCHMARKS.md.
#
# Usage: bench/registry.sh [--files N] [--runs N] [--work-dir DIR]   (as root; needs containerd,
# runc, docker-registry, skopeo, openssl, htpasswd: scripts/install-test-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/registry.sh must run as root (private containerd, mounts)" >&2; exit 1; }
for tool in docker-registry skopeo openssl htpasswd; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done

echo "building snapmend-node-helper (release) and the benchmark driver ..." >&2
cargo build --release -p snapmend-node-helper --bin snapmend-node-helper
cargo build -p snapmend-tests --bin snapmend-registry-bench
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"

section="$(mktemp)"
trap 'rm -f "$section"' EXIT
"$target_dir/debug/snapmend-registry-bench" \
  --node-helper "$target_dir/release/snapmend-node-helper" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --command "bench/registry.sh${*:+ $*}" \
  "$@" >"$section"
cat "$section"

doc=docs/BENCHMARKS.md
start='<!-- bench/registry.sh: start -->'
end='<!-- bench/registry.sh: end -->'
tmp="$(mktemp)"
if grep -qF "$start" "$doc"; then
  awk -v s="$start" -v e="$end" -v f="$section" '
    $0 == s { print; while ((getline line < f) > 0) print line; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$doc" >"$tmp"
else
  { cat "$doc"; printf '\n%s\n' "$start"; cat "$section"; printf '%s\n' "$end"; } >"$tmp"
fi
mv "$tmp" "$doc"
echo "recorded in $doc" >&2
