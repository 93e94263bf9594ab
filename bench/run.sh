#!/usr/bin/env bash
# snapmend verify/repair benchmark (issues 2 and 3), side by side with GNU tar on the same
# machine: generates a >=1 GiB, >=50k-file gzip layer, imports it into a private containerd,
# times `snapmend-node-helper verify/repair` (release build) against `tar --compare -z` and
# `tar -xzf`, prints the results and records them in docs/BENCHMARKS.md.
#
# With --toc-only, only verify with the layer's TOC cached (issue 16) against `tar --compare`,
# recorded in its own section.
#
# Usage: bench/run.sh [--files N] [--runs N] [--work-dir DIR] [--toc-only]   (as root; needs containerd, runc, tar)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/run.sh must run as root (private containerd, mounts)" >&2; exit 1; }
command -v tar >/dev/null && tar --version | head -1 | grep -q GNU || { echo "GNU tar is required" >&2; exit 1; }

echo "building snapmend-node-helper (release) and the benchmark driver ..." >&2
cargo build --release -p snapmend-node-helper --bin snapmend-node-helper
cargo build -p snapmend-tests --bin snapmend-bench
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"

section="$(mktemp)"
trap 'rm -f "$section"' EXIT
"$target_dir/debug/snapmend-bench" \
  --node-helper "$target_dir/release/snapmend-node-helper" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --command "bench/run.sh${*:+ $*}" \
  "$@" >"$section"
cat "$section"

# Replace (or append) the verify/repair section between its markers.
doc=docs/BENCHMARKS.md
marker=verify-repair
for arg in "$@"; do if [ "$arg" = --toc-only ]; then marker=verify-toc; fi; done
start="<!-- bench/run.sh: $marker start -->"
end="<!-- bench/run.sh: $marker end -->"
[ -f "$doc" ] || printf '# Benchmarks\n\nEach section is written by the script named in it; rerun the script to refresh it.\n' >"$doc"
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
