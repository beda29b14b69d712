#!/usr/bin/env bash
# Pods through containerd's CRI, hull beside runc (figures, not pass/fail). Needs root and what the
# CRI tests need (scripts/setup.sh: containerd 1.6, runc, QEMU, CNI plugins, docker-registry,
# skopeo, iptables), plus wrk (installed from Debian here if missing).
#   bench/cri.sh [RUNS]         default RUNS=7
# Builds the release shim and the example crates/hull-shim/examples/cri-bench/, which starts a
# private containerd with CRI (the CRI test harness: own CNI subnet, local registry, busybox) and
# prints a markdown table for docs/performance.md: pod start (RunPodSandbox + CreateContainer +
# StartContainer) and its split, HTTP requests/s (wrk -> busybox httpd on the pod IP), bulk TCP
# host -> pod MiB/s, idle pod PSS; runc and hull alternating after one warm-up each. Everything
# it starts is removed at the end and checked by the harness's leak check.
# Env: CARGO_TARGET_DIR  where cargo builds (default: the workspace's target/)
#      HULL_SHIM_DIR     a directory holding a containerd-shim-hull-v2 to use instead of building
#      WRK_SECS          seconds per wrk run (default 10); BULK_MIB: MiB per bulk run (default 256)
set -euo pipefail
set -E

prog=cri-bench
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/errors.sh
. "$repo/scripts/lib/errors.sh"
# shellcheck source=scripts/lib/bench.sh
. "$repo/scripts/lib/bench.sh"

bench_runs 7 "$@"

if ! command -v wrk >/dev/null; then
    echo "$prog: installing wrk (Debian package)" >&2
    apt-get install -y wrk >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } ||
        die "cannot install wrk"
fi

target=${CARGO_TARGET_DIR:-$repo/target}
cd "$repo"
bench_shim
# The example itself in the dev profile: it is only the client (wrk and the kernel do the work),
# and it unwinds on a panic, so the harness still removes the pods (release aborts).
cargo build -q -p hull-shim --example cri-bench
bin=$target/debug/examples/cri-bench

# In a session of its own: a terminal's ^C reaches only this script, which asks the example
# to stop (it finishes the current step, then removes everything), not containerd and the shims.
setsid "$bin" --runs "$RUNS" --wrk-secs "${WRK_SECS:-10}" --bulk-mib "${BULK_MIB:-256}" \
    --cmdline "bench/cri.sh $RUNS" </dev/null &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
rc=0
while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break # wait was cut short by a signal: wait again
done
exit "$rc"
