#!/usr/bin/env bash
# Build a minimal busybox root filesystem in DIR (for `hull run --rootfs DIR` and the tests).
# Needs busybox-static (a static /bin/busybox). Idempotent: re-running refreshes DIR in place.
set -euo pipefail

usage() { echo "usage: $0 DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
dir=$1
busybox=${BUSYBOX:-/bin/busybox}

if [[ ! -x $busybox ]]; then
    echo "make-rootfs: $busybox not found; install busybox-static" >&2
    exit 1
fi
if command -v file >/dev/null && ! file -bL "$busybox" | grep -q 'statically linked'; then
    echo "make-rootfs: $busybox is not statically linked; install busybox-static" >&2
    exit 1
fi

mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc root
for d in proc sys dev tmp run; do mkdir -p "$d"; done
chmod 1777 tmp
chmod 0700 root
install -m 0755 "$busybox" bin/busybox

# One symlink per applet, at the path busybox itself reports (bin/sh, sbin/ip, usr/bin/env...).
count=0
while IFS= read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    rel=${applet#/}
    mkdir -p "$(dirname "$rel")"
    # Link relative to the applet's directory so the tree is valid wherever it is mounted.
    parent=$(dirname "$rel")
    if [[ $parent == . ]]; then up=.; else up=$(sed -e 's#[^/][^/]*#..#g' <<<"$parent"); fi
    ln -sfn "$up/bin/busybox" "$rel"
    count=$((count + 1))
done < <("$busybox" --list-full)

cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
echo "hull" > etc/hostname
echo "make-rootfs: $dir: busybox with $count applets"
