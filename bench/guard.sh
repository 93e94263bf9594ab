#!/usr/bin/env bash
# Culprit-guard overhead (issue 17): `tar -xzf` of a generated gzip layer into a directory on
# the filesystem the guard marks, alternately without and with `snapmend-node-helper guard`
# running, and the guard's peak memory. Prints a Markdown section on stdout.
#
# Usage: bench/guard.sh [--files N] [--runs N] [--binary PATH]   (as root; fanotify needs CAP_SYS_ADMIN)
# The work directory is under /tmp, on the same filesystem as the guard's containerd root.
set -euo pipefail
cd "$(dirname "$0")/.."
files=20000 runs=5 binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench/guard.sh must run as root" >&2; exit 1; }
if [ -z "$binary" ]; then
  cargo build --release -p snapmend-node-helper --bin snapmend-node-helper >&2
  binary="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/snapmend-node-helper"
fi

work="$(mktemp -d /tmp/snapmend-guard-bench.XXXXXX)"
guard_pid=""
cleanup() { [ -n "$guard_pid" ] && kill "$guard_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The layer: $files files of 1-64 KiB (half random, half text), 100 per directory.
python3 - "$work/tree" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(17)
for i in range(n):
    d = os.path.join(root, f"d{i // 100:04d}")
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(1024, 65536)
    data = os.urandom(size) if i % 2 else (b"snapmend guard bench line\n" * (size // 26 + 1))[:size]
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(data)
PY
tar -C "$work/tree" -czf "$work/layer.tar.gz" .
rm -rf "$work/tree"
layer_bytes=$(stat -c %s "$work/layer.tar.gz")
mkdir -p "$work/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"

extract() {
  rm -rf "$work/out"; mkdir "$work/out"; sync
  local t0 t1
  t0=$(date +%s.%N)
  tar -C "$work/out" -xzf "$work/layer.tar.gz"
  sync
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

guarded() {
  "$binary" guard --root "$work/containerd" --config /nonexistent --json >"$work/guard.out" 2>"$work/guard.err" &
  guard_pid=$!
  for _ in $(seq 50); do grep -q watching "$work/guard.err" 2>/dev/null && break; sleep 0.1; done
  with+=("$(extract)")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$guard_pid/status")
  [ "$hwm" -gt "$peak" ] && peak=$hwm
  kill -TERM "$guard_pid"; wait "$guard_pid" || true; guard_pid=""
  events=$(sed -n 's/.*"events":\([0-9]*\).*/\1/p' "$work/guard.err")
}

# Alternate which goes first, so page-cache writeback of the previous run hits both equally.
without=() with=() peak=0 hwm=0 events=0
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then without+=("$(extract)"); guarded; else guarded; without+=("$(extract)"); fi
  echo "run $r: without ${without[-1]} s, with ${with[-1]} s, guard saw $events events, VmHWM $hwm KiB" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
m_without=$(median "${without[@]}")
m_with=$(median "${with[@]}")
ratio=$(echo "$m_with / $m_without" | bc -l)
cat <<MD
### Culprit guard overhead ($(date -u '+%Y-%m-%d %H:%M UTC'), \`bench/guard.sh --files $files --runs $runs\`)

\`tar -xzf\` (GNU tar) of a $((layer_bytes / 1048576)) MiB gzip layer with $files files in $((files / 100)) directories into
a directory on the guard's filesystem, followed by \`sync\`; runs alternate (and alternate which goes first) without and with
\`snapmend-node-helper guard\` marking the filesystem. Medians of $runs runs each.

| | median (s) | runs (s) |
| --- | --- | --- |
| without guard | $(printf '%.2f' "$m_without") | $(printf '%.2f ' "${without[@]}") |
| with guard | $(printf '%.2f' "$m_with") | $(printf '%.2f ' "${with[@]}") |
| **ratio** | **$(printf '%.3f' "$ratio")** | |

Guard peak resident memory (VmHWM) during the runs: $((peak / 1024)) MiB.
MD
