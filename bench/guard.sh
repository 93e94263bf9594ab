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

# One extraction: prints "wall user+sys" (seconds) of tar and its gzip child, sync included in wall.
extract() {
  rm -rf "$work/out"; mkdir "$work/out"; sync
  local t0 t1 cpu
  t0=$(date +%s.%N)
  cpu=$( { /usr/bin/time -f '%U %S' tar -C "$work/out" -xzf "$work/layer.tar.gz"; } 2>&1 | tail -1)
  sync
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$cpu" | awk '{print $1 + $2}')"
}

# CPU seconds (user+sys) a live process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

guarded() {
  "$binary" guard --root "$work/containerd" --config /nonexistent --json >"$work/guard.out" 2>"$work/guard.err" &
  guard_pid=$!
  for _ in $(seq 50); do grep -q watching "$work/guard.err" 2>/dev/null && break; sleep 0.1; done
  local before after
  before=$(cpu_of "$guard_pid")
  read -r w c < <(extract)
  sleep 0.5 # the guard reports after 300 ms of quiet: let it finish its work
  after=$(cpu_of "$guard_pid")
  with+=("$w"); with_cpu+=("$c"); guard_cpu+=("$(echo "$after - $before" | bc -l)")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$guard_pid/status")
  [ "$hwm" -gt "$peak" ] && peak=$hwm
  kill -TERM "$guard_pid"; wait "$guard_pid" || true; guard_pid=""
  events=$(sed -n 's/.*"events":\([0-9]*\).*/\1/p' "$work/guard.err")
}

unguarded() { read -r w c < <(extract); without+=("$w"); without_cpu+=("$c"); }

# Alternate which goes first, so page-cache writeback of the previous run hits both equally.
without=() with=() without_cpu=() with_cpu=() guard_cpu=() ratios=() cpu_ratios=() peak=0 hwm=0 events=0
for r in $(seq "$runs"); do
  if [ $((r % 2)) = 1 ]; then unguarded; guarded; else guarded; unguarded; fi
  ratios+=("$(echo "${with[-1]} / ${without[-1]}" | bc -l)")
  cpu_ratios+=("$(echo "(${with_cpu[-1]} + ${guard_cpu[-1]}) / ${without_cpu[-1]}" | bc -l)")
  echo "run $r: without ${without[-1]} s (cpu ${without_cpu[-1]}), with ${with[-1]} s (cpu ${with_cpu[-1]} + guard ${guard_cpu[-1]}), guard saw $events events, VmHWM $hwm KiB" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
fmt() { printf '%.2f ' "$@"; }
cat <<MD
### Culprit guard overhead ($(date -u '+%Y-%m-%d %H:%M UTC'), \`bench/guard.sh --files $files --runs $runs\`)

\`tar -xzf\` (GNU tar) of a $((layer_bytes / 1048576)) MiB gzip layer with $files files in $((files / 100)) directories into
a directory on the guard's filesystem, followed by \`sync\`; runs alternate (and alternate which goes first) without and with
a release \`snapmend-node-helper guard\` marking the filesystem. Wall time includes \`sync\`; CPU is user+sys of tar and gzip,
plus, with the guard, the guard's own CPU during the run. Ratios are medians of per-round ratios.

| | wall median (s) | wall runs (s) | CPU median (s) | CPU runs (s) |
| --- | --- | --- | --- | --- |
| without guard | $(printf '%.2f' "$(median "${without[@]}")") | $(fmt "${without[@]}") | $(printf '%.2f' "$(median "${without_cpu[@]}")") | $(fmt "${without_cpu[@]}") |
| with guard (tar + gzip) | $(printf '%.2f' "$(median "${with[@]}")") | $(fmt "${with[@]}") | $(printf '%.2f' "$(median "${with_cpu[@]}")") | $(fmt "${with_cpu[@]}") |
| the guard itself | | | $(printf '%.2f' "$(median "${guard_cpu[@]}")") | $(fmt "${guard_cpu[@]}") |
| **ratio with/without** | **$(printf '%.3f' "$(median "${ratios[@]}")")** | $(fmt "${ratios[@]}") | **$(printf '%.3f' "$(median "${cpu_ratios[@]}")")** | $(fmt "${cpu_ratios[@]}") |

Guard peak resident memory (VmHWM) during the runs: $((peak / 1024)) MiB; it saw $events events in the last run.
MD
