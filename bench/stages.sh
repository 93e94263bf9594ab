#!/usr/bin/env bash
# Issue 18: where verify and rebuild spend their time, and figures that a busy machine does
# not change. Runs `snapmend-bench stages` (release node helper) twice:
#   1. the bench layer (60k files, ~1 GiB) on the disk: stage breakdown, wall and CPU time;
#   2. a small layer (5k files) with containerd's root on a tmpfs, under valgrind's callgrind:
#      instruction counts, and a rebuild with the disk out of the picture.
# Records both in docs/BENCHMARKS.md between the "bench/stages.sh" markers.
#
# Usage: bench/stages.sh [--files N] [--small-files N]   (as root; needs containerd, runc, valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/stages.sh must run as root (private containerd, tmpfs)" >&2; exit 1; }
files=60000
small=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files="$2"; shift 2 ;;
    --small-files) small="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# valgrind is only needed here, so it is installed here (not by scripts/install-test-deps.sh).
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }

echo "building snapmend-node-helper (release) and the benchmark driver ..." >&2
cargo build --release -p snapmend-node-helper --bin snapmend-node-helper
cargo build -p snapmend-tests --bin snapmend-bench
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
helper="$target_dir/release/snapmend-node-helper"
date_now="$(date -u '+%Y-%m-%d %H:%M UTC')"

section="$(mktemp)"
trap 'rm -f "$section"' EXIT
{
  printf '## Where verify and rebuild spend their time (issue 18)\n\n'
  printf 'Written by `bench/stages.sh`. Stage times are exclusive (a stage timed inside another is\n'
  printf 'subtracted from it) and summed over the threads of one role; *waits* are time a thread\n'
  printf 'spent blocked on its neighbour in the pipeline. CPU is user+sys of the whole process.\n\n'
  "$target_dir/debug/snapmend-bench" stages --files "$files" --node-helper "$helper" \
    --date "$date_now" --command "bench/stages.sh (--files $files)"
  printf '\n'
  "$target_dir/debug/snapmend-bench" stages --files "$small" --tmpfs --callgrind --node-helper "$helper" \
    --date "$date_now" --command "bench/stages.sh (--files $small --tmpfs --callgrind)"
} >"$section"
cat "$section"

doc=docs/BENCHMARKS.md
start="<!-- bench/stages.sh: start -->"
end="<!-- bench/stages.sh: end -->"
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
