# Shared by the CRI benchmarks (bench/cri.sh, bench/storage.sh); sourced after errors.sh with
# $prog and $repo set.

# bench_runs DEFAULT ARGS...: sets RUNS to the run count ($1 of the script, DEFAULT if absent),
# checked, after checking that we are root and have cargo.
bench_runs() {
    local default=$1
    shift
    RUNS=${1:-$default}
    [[ $# -le 1 && $RUNS =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [RUNS]"
    ((EUID == 0)) || die "must run as root"
    command -v cargo >/dev/null || die "cargo not found"
}

# bench_shim: build the release shim unless HULL_SHIM_DIR names one; exports HULL_SHIM_DIR.
bench_shim() {
    local target=${CARGO_TARGET_DIR:-$repo/target}
    if [[ -z ${HULL_SHIM_DIR:-} ]]; then
        cargo build --release -q -p hull-shim --bin containerd-shim-hull-v2
        export HULL_SHIM_DIR=$target/release
    fi
    [[ -x $HULL_SHIM_DIR/containerd-shim-hull-v2 ]] || die "no containerd-shim-hull-v2 in $HULL_SHIM_DIR"
}
