#!/usr/bin/env bash
# Make this machine's containerd serve Kubernetes pods with Hull through its CRI plugin (called by
# scripts/setup.sh, idempotent, as root):
#   1. build the pause image (scripts/make-image.sh --pause) and the busybox image;
#   2. configure the CRI plugin in containerd's config: runtime `hull` (runtime_type
#      io.containerd.hull.v2, pod_annotations io.hull.*), sandbox_image = the local pause image,
#      restrict_oom_score_adj, CNI dirs. An existing version-2 config is edited in a copy, the copy
#      is checked with `containerd config dump`, and only then installed (the original is kept once
#      as config.toml.before-hull); a config of another version is left alone;
#   3. install a CNI conflist (bridge + host-local + portmap + loopback, 10.88.0.0/16, bridge hull0)
#      when the CNI conf dir holds none;
#   4. start containerd in the background when nothing answers on its socket (no init system on
#      these machines; log in /var/log/hull-containerd.log, pid in /run/hull-containerd.pid), or
#      restart it when setup started it earlier and the config changed;
#   5. import the pause and busybox images into its k8s.io namespace (busybox also into default).
#
# usage: setup-cri.sh [--no-start]     (--no-start: configure only; import if containerd runs)
# Env, to try it on a machine whose containerd must not be touched (defaults in brackets):
#   HULL_CONTAINERD_CONFIG [/etc/containerd/config.toml]  HULL_CNI_CONF_DIR [/etc/cni/net.d]
#   HULL_CONTAINERD_SOCKET [/run/containerd/containerd.sock]  HULL_CONTAINERD_LOG
#   [/var/log/hull-containerd.log]  HULL_CONTAINERD_PIDFILE [/run/hull-containerd.pid]
#   HULL_IMAGES_DIR [/var/lib/hull/images]
set -Eeuo pipefail

prog=setup-cri
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/errors.sh
. "$repo/scripts/lib/errors.sh"

start=1
for arg in "$@"; do
    case $arg in
        --no-start) start=0 ;;
        *) die "usage: $0 [--no-start]" ;;
    esac
done

config=${HULL_CONTAINERD_CONFIG:-/etc/containerd/config.toml}
cni_dir=${HULL_CNI_CONF_DIR:-/etc/cni/net.d}
sock=${HULL_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}
log=${HULL_CONTAINERD_LOG:-/var/log/hull-containerd.log}
pidfile=${HULL_CONTAINERD_PIDFILE:-/run/hull-containerd.pid}
images=${HULL_IMAGES_DIR:-/var/lib/hull/images}
pause_tar=$images/pause.oci.tar
busybox_tar=$images/busybox.oci.tar
pause_name=docker.io/hull/pause:latest
cri='plugins."io.containerd.grpc.v1.cri"'
ready_timeout=30

for tool in containerd ctr awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# --- 1. images --------------------------------------------------------------------------------
"$repo/scripts/make-image.sh" --pause "$pause_tar"
"$repo/scripts/make-image.sh" "$busybox_tar"

# --- 2. containerd config -----------------------------------------------------------------------
# toml_ensure FILE TABLE KEY VALUE: give [TABLE] the line `KEY = VALUE` unless the table sets KEY
# already (then the user's value stays); a missing table is appended at the end.
toml_ensure() {
    local file=$1 table=$2 key=$3 value=$4
    awk -v table="[$table]" -v key="$key" -v line="$key = $value" '
        function header(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]*(#.*)?$/, "", s); return s }
        NR == FNR {
            h = header($0)
            if (h ~ /^\[/) { cur = h; if (h == table) has_table = 1; next }
            if (cur == table && $0 ~ "^[ \t]*\"?" key "\"?[ \t]*=") has_key = 1
            next
        }
        {
            print
            if (!done && header($0) == table) { if (!has_key) print "  " line; done = 1 }
        }
        END { if (!has_table) { print ""; print table; print "  " line } }
    ' "$file" "$file" >"$file.next" || die "cannot edit $file"
    mv -f "$file.next" "$file"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/$prog.XXXXXX") || die "cannot create a temp dir"
trap 'rm -rf -- "$work"' EXIT
candidate=$work/config.toml
config_changed=0
if [[ -e $config ]]; then
    cp -- "$config" "$candidate"
    if ! grep -Eq '^[[:space:]]*version[[:space:]]*=[[:space:]]*2' "$candidate"; then
        echo "$prog: $config is not a version-2 config and was left alone; add the settings from scripts/containerd-config.toml by hand"
        candidate=""
    fi
else
    cp -- "$repo/scripts/containerd-config.toml" "$candidate"
fi
if [[ -n $candidate ]]; then
    # containerd 1.6 fills in the runc runtime only when the config names no runtime at all:
    # with just `hull` the CRI plugin fails to load ("no corresponding runtime configured in
    # `containerd.runtimes` for `containerd` `default_runtime_name = "runc"`").
    toml_ensure "$candidate" "$cri.containerd.runtimes.runc" runtime_type '"io.containerd.runc.v2"'
    toml_ensure "$candidate" "$cri.containerd.runtimes.hull" runtime_type '"io.containerd.hull.v2"'
    toml_ensure "$candidate" "$cri.containerd.runtimes.hull" pod_annotations '["io.hull.*"]'
    toml_ensure "$candidate" "$cri" sandbox_image "\"$pause_name\""
    toml_ensure "$candidate" "$cri" restrict_oom_score_adj true
    toml_ensure "$candidate" "$cri.cni" bin_dir '"/usr/lib/cni"'
    toml_ensure "$candidate" "$cri.cni" conf_dir "\"$cni_dir\""
    containerd --config "$candidate" config dump >"$work/dump" 2>"$work/dump.err" ||
        die "the edited config does not load, $config left unchanged: $(cat "$work/dump.err")"
    grep -q 'runtime_type = "io.containerd.hull.v2"' "$work/dump" ||
        die "the edited config has no hull runtime, $config left unchanged"
    # The CNI conf dir containerd will read (an existing config may name another one).
    if [[ -z ${HULL_CNI_CONF_DIR:-} ]]; then
        configured=$(awk -v t="[$cri.cni]" '
            { h = $0; sub(/^[ \t]+/, "", h) }
            h ~ /^\[/ { f = (h == t); next }
            f && h ~ /^conf_dir = / { sub(/^conf_dir = "/, "", h); sub(/"$/, "", h); print h; exit }
        ' "$work/dump")
        cni_dir=${configured:-$cni_dir}
    fi
    grep -q "sandbox_image = \"$pause_name\"" "$work/dump" ||
        echo "$prog: note: $config sets another sandbox_image; make sure that image is present"
    if [[ -e $config ]] && cmp -s "$candidate" "$config"; then
        echo "$prog: $config already configures the CRI plugin for hull"
    else
        mkdir -p "$(dirname "$config")"
        [[ ! -e $config || -e $config.before-hull ]] || cp -p -- "$config" "$config.before-hull"
        install -m 0644 "$candidate" "$config.new"
        mv -f "$config.new" "$config"
        config_changed=1
        echo "$prog: wrote $config (CRI runtime hull, sandbox_image $pause_name)"
    fi
fi

# --- 3. CNI ----------------------------------------------------------------------------------------
shopt -s nullglob
confs=("$cni_dir"/*.conf "$cni_dir"/*.conflist "$cni_dir"/*.json)
shopt -u nullglob
if ((${#confs[@]})); then
    echo "$prog: $cni_dir already has a CNI config (${confs[0]##*/}); left alone"
else
    install -D -m 0644 "$repo/scripts/cni/10-hull-pods.conflist" "$cni_dir/10-hull-pods.conflist"
    echo "$prog: installed $cni_dir/10-hull-pods.conflist (bridge hull0, 10.88.0.0/16)"
fi

# --- 4. containerd running ------------------------------------------------------------------------
answers() { [[ -S $sock ]] && timeout 5 ctr -a "$sock" version >/dev/null 2>&1; }
ours() { # the pid of the containerd this script started earlier, if it still runs
    local pid=""
    [[ ! -f $pidfile ]] || pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null || true) == containerd ]]; then
        echo "$pid"
    fi
}
start_containerd() {
    mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
    echo "$prog: starting containerd --config $config (log $log)"
    setsid containerd --config "$config" </dev/null >>"$log" 2>&1 &
    echo $! >"$pidfile"
    local waited=0
    until answers; do
        if ! kill -0 "$(<"$pidfile")" 2>/dev/null; then
            die "containerd exited at start; tail of $log:
$(tail -n 20 "$log")"
        fi
        ((waited < ready_timeout * 10)) || die "containerd not answering on $sock after ${ready_timeout}s; tail of $log:
$(tail -n 20 "$log")"
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "$prog: containerd $(<"$pidfile") answers on $sock"
}
if answers; then
    if ((config_changed)); then
        pid=$(ours)
        if [[ -n $pid ]]; then
            echo "$prog: restarting containerd $pid (started by setup) to load the new config"
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && die "containerd $pid did not stop on SIGTERM"
            start_containerd
        else
            echo "$prog: containerd runs (not started by setup): restart it to load $config"
        fi
    fi
elif ((start)); then
    [[ ! -e $sock ]] || echo "$prog: $sock exists but nothing answers; starting a new containerd"
    start_containerd
else
    echo "$prog: containerd is not running (--no-start)"
fi

# The CRI plugin loads or fails on its own (`config dump` does not check it): say why it failed.
if answers; then
    state=$(ctr -a "$sock" plugins ls 2>/dev/null |
        awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { print $4 }')
    if [[ $state != ok ]]; then
        why=$(grep -h 'failed to load plugin io.containerd.grpc.v1.cri' "$log" 2>/dev/null | tail -n 1 || true)
        if [[ -n $(ours) ]]; then
            die "containerd's CRI plugin did not load (state ${state:-missing}): ${why:-see $log}"
        fi
        echo "$prog: warning: containerd's CRI plugin is not loaded (state ${state:-missing}); restart containerd with $config"
    fi
fi

# --- 5. images into containerd -------------------------------------------------------------------
if answers; then
    ctr -a "$sock" -n k8s.io images import --all-platforms "$pause_tar" >/dev/null
    ctr -a "$sock" -n k8s.io images import --all-platforms "$busybox_tar" >/dev/null
    ctr -a "$sock" images import --all-platforms "$busybox_tar" >/dev/null
    echo "$prog: imported $pause_name and docker.io/library/busybox:latest (namespaces k8s.io, default)"
fi
