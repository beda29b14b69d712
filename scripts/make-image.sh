#!/usr/bin/env bash
# Build an OCI image archive of busybox from the busybox-static Debian package, with no network:
# one layer (the tree scripts/make-rootfs.sh makes: busybox, its applet symlinks, /etc/passwd,
# /etc/group, /tmp, /root), Cmd ["sh"].
#
# usage: make-image.sh [OUT_TAR]            (default /var/lib/hull/images/busybox.oci.tar)
#        make-image.sh --pause [OUT_TAR]    (default /var/lib/hull/images/pause.oci.tar)
#
# --pause builds the pod sandbox ("pause") image CRI needs, docker.io/hull/pause:latest: the same
# layer, with an Entrypoint that sleeps until SIGTERM or SIGINT and then exits 0 (busybox sh as
# PID 1 with a trap; PID 1 ignores signals it has no handler for).
#
# The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) whose manifest is
# annotated io.containerd.image.name=docker.io/library/busybox:latest (the name containerd 1.6
# uses) and org.opencontainers.image.ref.name=latest (the plain OCI tag). Import it with:
#
#   ctr -a SOCKET -n NAMESPACE images import --all-platforms OUT_TAR
#
# which creates and unpacks (default snapshotter, overlayfs) docker.io/library/busybox:latest.
# (Checked with ctr 1.6.20: the name is taken verbatim from io.containerd.image.name; with only
# ref.name=latest it would be "import-<date>:latest" unless `--base-name docker.io/library/busybox`
# is given. The index entry carries platform linux/amd64, so --all-platforms is optional here.)
# The build is reproducible: fixed mtimes and owners, sorted entries, `gzip -n`, so the same
# busybox gives the same digests. It is skipped when OUT_TAR exists and OUT_TAR.stamp matches
# the inputs (busybox binary and this script); builds into one directory are serialised (flock).
# Needs only bash, coreutils, tar, gzip and flock. Env: BUSYBOX (default /bin/busybox).
set -Eeuo pipefail

prog=make-image
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/errors.sh
. "$repo/scripts/lib/errors.sh"

kind=busybox
if [[ ${1:-} == --pause ]]; then
    kind=pause
    shift
fi
[[ $# -le 1 ]] || die "usage: $0 [--pause] [OUT_TAR]"
busybox=${BUSYBOX:-/bin/busybox}
tag=latest
if [[ $kind == pause ]]; then
    out=${1:-/var/lib/hull/images/pause.oci.tar}
    name=docker.io/hull/pause:latest
    # JSON of the image config's Entrypoint (no quotes or backslashes inside the shell text).
    entrypoint='"Entrypoint":["/bin/sh","-c","trap '"'"'exit 0'"'"' TERM INT; sleep 2147483647 & wait"],'
    cmd='"Cmd":[]'
else
    out=${1:-/var/lib/hull/images/busybox.oci.tar}
    name=docker.io/library/busybox:latest
    entrypoint=''
    cmd='"Cmd":["sh"]'
fi
epoch=0 # every mtime in the image, and its "created" time
created=1970-01-01T00:00:00Z

for tool in tar gzip sha256sum flock; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x $busybox ]] || die "$busybox not found; install busybox-static"
"$busybox" --list-full >/dev/null 2>&1 || die "$busybox cannot run (--list-full failed)"
out=$(realpath -m -- "$out")
outdir=$(dirname "$out")
mkdir -p "$outdir" 2>/dev/null || die "cannot create $outdir"

# Inputs that decide the result; the stamp records them.
self=$(cat "${BASH_SOURCE[0]}" "$repo/scripts/make-rootfs.sh" | sha256sum | cut -d' ' -f1)
bb=$(sha256sum <"$busybox" | cut -d' ' -f1)
inputs="kind=$kind busybox=$bb scripts=$self"

# Concurrent builds (parallel test processes) take turns on a lock of the output directory.
exec 9<"$outdir" || die "cannot open $outdir"
flock 9 || die "cannot lock $outdir"
if [[ -f $out && -f $out.stamp && $(<"$out.stamp") == "$inputs" ]]; then
    echo "$prog: $out is up to date"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX" 2>/dev/null) || die "cannot create a temp dir in ${TMPDIR:-/tmp}"
tmp_out=""
cleanup() {
    rm -rf -- "$work"
    [[ -z $tmp_out ]] || rm -f -- "$tmp_out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Deterministic tar: sorted names, fixed mtime/owner, no atime/ctime, no pax headers of our own.
det_tar() { # det_tar DIR OUT ENTRIES...
    local dir=$1 dest=$2
    shift 2
    tar -C "$dir" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
        --format=gnu --no-acls --no-xattrs --no-selinux -cf "$dest" -- "$@"
}
sha() { sha256sum <"$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# blob FILE: move FILE into the layout's blobs under its digest; sets blob_digest, blob_size.
blob() {
    blob_digest=$(sha "$1")
    blob_size=$(size "$1")
    mv "$1" "$blobs/$blob_digest"
}

# 1. The root filesystem: the same tree `hull run --rootfs` uses.
umask 022
root=$work/rootfs
BUSYBOX=$busybox "$repo/scripts/make-rootfs.sh" "$root" >/dev/null
applets=$(find "$root" -type l | wc -l)

# 2. The layer: diff_id of the tar, digest of the gzip.
layout=$work/layout
blobs=$layout/blobs/sha256
mkdir -p "$blobs"
(cd "$root" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/top"
mapfile -t top <"$work/top"
det_tar "$root" "$work/layer.tar" "${top[@]}"
diff_id=$(sha "$work/layer.tar")
gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"
blob "$work/layer.tar.gz"
layer=$blob_digest layer_size=$blob_size

# 3. Config, manifest, index (compact JSON written by hand: fixed key order, no tools needed).
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
printf '%s' "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"$created\"," \
    "\"config\":{\"Env\":[\"PATH=$path\"],$entrypoint$cmd,\"WorkingDir\":\"/\"}," \
    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]}," \
    "\"history\":[{\"created\":\"$created\",\"created_by\":\"hull scripts/make-image.sh (busybox-static)\"}]}" \
    >"$work/config.json"
blob "$work/config.json"
config=$blob_digest config_size=$blob_size

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"," \
    "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config\",\"size\":$config_size}," \
    "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer\",\"size\":$layer_size}]}" \
    >"$work/manifest.json"
blob "$work/manifest.json"
manifest=$blob_digest manifest_size=$blob_size

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\"," \
    "\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size," \
    "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}," \
    "\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"$tag\"}}]}" \
    >"$layout/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
chmod 0755 "$layout" "$layout/blobs" "$blobs"
chmod 0644 "$layout/index.json" "$layout/oci-layout" "$blobs"/*

# 4. The archive, written next to OUT_TAR and renamed into place; the stamp last.
tmp_out=$(mktemp "$outdir/.$(basename "$out").XXXXXX")
det_tar "$layout" "$tmp_out" blobs index.json oci-layout
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
tmp_out=""
printf '%s\n' "$inputs" >"$out.stamp.tmp"
mv -f "$out.stamp.tmp" "$out.stamp"
echo "$prog: $out: $name, manifest sha256:$manifest, $applets applets"
