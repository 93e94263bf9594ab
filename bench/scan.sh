#!/usr/bin/env bash
# snapmend scan benchmark (issue 16): 50 images sharing base layers in a private containerd,
# `snapmend-node-helper scan` (release build) without then with TOCs, side by side with
# `tar --compare` of the same unique layers; records the section in docs/BENCHMARKS.md.
#
# Usage: bench/scan.sh [--images N] [--runs N] [--work-dir DIR]   (as root; needs containerd, runc, tar)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/scan.sh must run as root (private containerd)" >&2; exit 1; }
command -v tar >/dev/null && tar --version | head -1 | grep -q GNU || { echo "GNU tar is required" >&2; exit 1; }

echo "building snapmend-node-helper (release) and the benchmark driver ..." >&2
cargo build --release -p snapmend-node-helper --bin snapmend-node-helper
cargo build -p snapmend-tests --bin snapmend-bench
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"

section="$(mktemp)"
trap 'rm -f "$section"' EXIT
"$target_dir/debug/snapmend-bench" scan \
  --node-helper "$target_dir/release/snapmend-node-helper" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --command "bench/scan.sh${*:+ $*}" \
  "$@" >"$section"
cat "$section"

doc=docs/BENCHMARKS.md
start="<!-- bench/scan.sh start -->"
end="<!-- bench/scan.sh end -->"
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
