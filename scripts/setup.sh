#!/usr/bin/env bash
# Install everything Hull needs on a Debian 12 machine (as root), build and install Hull,
# build the guest kernel + initrd, make a busybox rootfs and the busybox and pause images,
# configure containerd's CRI plugin for the `hull` handler (scripts/setup-cri.sh), start
# containerd when nothing runs it, and run the demos (unless --no-demo): a VM, a `ctr run`
# container and a Kubernetes pod through CRI (crates/hull-shim/examples/cri-demo.rs).
# Idempotent: a second run skips what is already there. Honours CARGO_TARGET_DIR.
set -euo pipefail

usage() {
    cat <<USAGE
usage: $0 [--no-demo] [--start-containerd]
  --no-demo            stop after installing (no demo VM); containerd is configured but not
                       started (CI: the tests start private containerds of their own)
  --start-containerd   start containerd when nothing runs it, even with --no-demo
USAGE
}

demo=1
start_containerd=
for arg in "$@"; do
    case $arg in
        --no-demo) demo=0 ;;
        --start-containerd) start_containerd=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ -d $HOME/.cargo/bin ]] && export PATH="$HOME/.cargo/bin:$PATH"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
export CARGO_TARGET_DIR=$target_dir
musl=x86_64-unknown-linux-musl
prefix=/usr/local
rootfs=/var/lib/hull/rootfs/busybox
image=/var/lib/hull/images/busybox.oci.tar

step_started=0
step() {
    finish_step
    step_name=$*
    step_started=$(date +%s)
    echo "==> setup: $step_name"
}
finish_step() {
    if ((step_started)); then
        echo "    setup: $step_name: done in $(($(date +%s) - step_started))s"
    fi
    step_started=0
}

if ((EUID != 0)); then
    echo "setup: run as root (it installs packages and writes $prefix, /var/lib/hull, /var/cache/hull)" >&2
    exit 1
fi

packages=(
    qemu-system-x86 busybox-static linux-source-6.1
    build-essential bc flex bison libelf-dev libssl-dev cpio xz-utils musl-tools
    iproute2 iptables containerd runc containernetworking-plugins
    libseccomp-dev libcap-ng-dev hyperfine kmod file pkg-config
    protobuf-compiler docker-registry skopeo
)
step "apt packages"
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "    installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
else
    echo "    all ${#packages[@]} packages already installed"
fi

step "rust target $musl"
if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found (install a Rust toolchain with rustup first)" >&2
    exit 1
fi
if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    echo "    already installed"
else
    rustup target add "$musl"
fi

step "vhost-device-vsock (hybrid vsock backend)"
if vsock=$(command -v vhost-device-vsock); then
    echo "    found $vsock"
else
    cargo install --locked vhost-device-vsock </dev/null
    vsock=$(command -v vhost-device-vsock)
fi
# containerd starts the shim with a minimal PATH: make the backend reachable from $prefix/bin.
if [[ $vsock != "$prefix/bin/vhost-device-vsock" ]]; then
    ln -sfn "$vsock" "$prefix/bin/vhost-device-vsock"
fi

step "build hull (release) and hull-agent (static, $musl) in $target_dir"
cargo build --release -p hull </dev/null
cargo build --profile release-agent --target "$musl" -p hull-agent </dev/null
cargo build --release -p hull-shim </dev/null

step "install to $prefix"
install -D -m 0755 "$target_dir/release/hull" "$prefix/bin/hull"
install -D -m 0755 "$target_dir/$musl/release-agent/hull-agent" "$prefix/lib/hull/hull-agent"
echo "    $prefix/bin/hull, $prefix/lib/hull/hull-agent"
install -D -m 0755 "$target_dir/release/containerd-shim-hull-v2" "$prefix/bin/containerd-shim-hull-v2"
echo "    $prefix/bin/containerd-shim-hull-v2 (containerd finds it on PATH as runtime io.containerd.hull.v2)"

step "guest kernel and initrd (hull assets build; the first kernel build takes ~8 minutes)"
"$prefix/bin/hull" assets build --agent "$prefix/lib/hull/hull-agent"

step "busybox rootfs in $rootfs"
"$repo/scripts/make-rootfs.sh" "$rootfs"

step "busybox OCI image (from busybox-static) in $image"
"$repo/scripts/make-image.sh" "$image"

step "containerd: CRI plugin for hull, CNI, pause image; start containerd if needed"
cri_args=()
[[ -n $start_containerd ]] || ((demo)) || cri_args+=(--no-start)
"$repo/scripts/setup-cri.sh" "${cri_args[@]}"
containerd_up=0
if [[ -S /run/containerd/containerd.sock ]] && timeout 5 ctr version >/dev/null 2>&1; then
    containerd_up=1
fi

if ((demo)); then
    step "demo: hull run --rootfs $rootfs -- uname -r"
    "$prefix/bin/hull" run --rootfs "$rootfs" -- uname -r
    if ((containerd_up)); then
        step "demo: ctr run --runtime io.containerd.hull.v2 --rm busybox uname -r"
        ctr run --runtime io.containerd.hull.v2 --rm docker.io/library/busybox:latest "hull-demo-$$" uname -r
        step "demo: a Kubernetes pod through CRI (RunPodSandbox with handler hull, busybox uname -r)"
        # As kubelet drives containerd: the pod's VM, one container, its log, then both removed.
        cargo build --release -p hull-shim --example cri-demo </dev/null
        "$target_dir/release/examples/cri-demo" --address /run/containerd/containerd.sock
    fi
fi
finish_step
echo "==> setup: done"
