#!/usr/bin/env bash
# Hull benchmarks (figures, not pass/fail). Needs root and `scripts/setup.sh` done.
#   bench/run.sh [RUNS]        default RUNS=7
# Prints: median wall time of `hull run --rootfs busybox -- true`, median QEMU-start-to-agent-ready,
# and the host PSS of one idle sandbox (QEMU + virtiofsd + vhost-device-vsock).
set -euo pipefail
RUNS=${1:-7}
HULL=${HULL:-hull}
ROOTFS=${ROOTFS:-/var/lib/hull/rootfs/busybox}
[ -d "$ROOTFS" ] || { echo "bench: no rootfs at $ROOTFS (run scripts/setup.sh)" >&2; exit 1; }
command -v "$HULL" >/dev/null || { echo "bench: $HULL not found" >&2; exit 1; }

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.3f}")'; }

echo "# hull bench, $(date -u +%FT%TZ), $(nproc) cores, runs=$RUNS"
"$HULL" check | sed 's/^/# /'

# Warm-up (page cache, accelerator probe cache).
"$HULL" run --rootfs "$ROOTFS" -- true

walls=(); boots=()
for i in $(seq "$RUNS"); do
  start=$(date +%s%N)
  log=$(HULL_LOG=hull_runtime=info "$HULL" run --rootfs "$ROOTFS" -- true 2>&1 >/dev/null)
  end=$(date +%s%N)
  walls+=("$(( (end - start) / 1000000 ))")
  boots+=("$(sed -n 's/.*sandbox ready.*boot_ms=\([0-9]*\).*/\1/p' <<<"$log" | head -1)")
done
echo "hull run -- true wall ms:        ${walls[*]}  median $(printf '%s\n' "${walls[@]}" | median)"
echo "qemu start -> agent ready ms:    ${boots[*]}  median $(printf '%s\n' "${boots[@]}" | median)"

# Idle sandbox PSS: a container that only sleeps.
id="bench-idle-$$"
fifo=$(mktemp -u); mkfifo "$fifo"
# PID 1 of a container ignores SIGTERM unless it handles it: the shell traps it so that the
# SIGTERM hull run forwards at the end stops the container.
"$HULL" run --id "$id" --rootfs "$ROOTFS" -- sh -c 'trap "exit 0" TERM; echo ready; sleep 600 & wait' >"$fifo" &
hull_pid=$!
read -r line <"$fifo"; rm -f "$fifo"
[ "$line" = ready ] || { echo "bench: idle sandbox did not start" >&2; kill "$hull_pid"; exit 1; }
sleep 3   # let the guest settle to idle before measuring memory and CPU
total=0
for pid in $(pgrep -f "/run/hull/$id/"); do
  comm=$(cat /proc/$pid/comm)
  pss=$(awk '/^Pss:/{print $2}' /proc/$pid/smaps_rollup)
  echo "idle pss: $comm pid $pid ${pss} kB"
  total=$((total + pss))
done
cpu0=$(for pid in $(pgrep -f "/run/hull/$id/"); do awk '{print $14+$15}' /proc/$pid/stat; done | paste -sd+ | bc)
sleep 10
cpu1=$(for pid in $(pgrep -f "/run/hull/$id/"); do awk '{print $14+$15}' /proc/$pid/stat; done | paste -sd+ | bc)
echo "idle sandbox PSS total:          $((total / 1024)) MiB"
echo "idle sandbox CPU over 10 s:      $(awk -v a="$cpu0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", (b-a)*100/t/10}')% of one core"
kill -TERM "$hull_pid"
wait "$hull_pid" || true
