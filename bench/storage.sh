#!/usr/bin/env bash
# Storage through containerd's CRI, hull beside runc (figures, not pass/fail). Needs root and what
# the CRI tests need (scripts/setup.sh).
#   bench/storage.sh [RUNS]        default RUNS=3 (after one warm-up each)
# Builds the shim and the example crates/hull-shim/examples/storage-bench.rs, which starts a
# private containerd with CRI (the CRI test harness) and, in one busybox container per runtime,
# measures a 64 MiB dd (conv=fsync) write and read and 2000 small-file creates and stats in the
# container rootfs, a hostPath volume, a disk emptyDir and a memory emptyDir (kubelet-style
# tmpfs; with hull a guest tmpfs). Prints a markdown table. Everything it starts is removed at
# the end and checked by the harness's leak check.
# Env: CARGO_TARGET_DIR  where cargo builds (default: the workspace's target/)
#      HULL_SHIM_DIR     a directory holding a containerd-shim-hull-v2 to use instead of building
#      HULL_CONFIG       the hull config the shim reads (guest kernel and initrd)
set -euo pipefail
set -E

prog=storage-bench
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/errors.sh
. "$repo/scripts/lib/errors.sh"
# shellcheck source=scripts/lib/bench.sh
. "$repo/scripts/lib/bench.sh"

bench_runs 3 "$@"

target=${CARGO_TARGET_DIR:-$repo/target}
cd "$repo"
bench_shim
# The example in the dev profile: it only drives CRI (the containers do the work), and it
# unwinds on a panic, so the harness still removes the pods.
cargo build -q -p hull-shim --example storage-bench
exec "$target/debug/examples/storage-bench" --runs "$RUNS"
