#!/usr/bin/env bash
# Hull through containerd (figures, not pass/fail). Needs root, containerd 1.6, ctr, runc, python3
# and the busybox image (scripts/make-image.sh builds it).
#   bench/ctr.sh [RUNS]         default RUNS=7
# Starts a private containerd (everything under a fresh /run/hull-bench.XXXXXX, removed on exit),
# then prints: wall times of `ctr run --rm busybox true` for hull and runc (alternating, after one
# warm-up each), their medians and ratio; where a hull run's time goes (from the shim's log lines
# in containerd's log); and the host PSS / CPU of one idle hull pod, with an idle runc container
# for comparison.
# Env: HULL_SHIM_DIR  directory put first on containerd's PATH (a freshly built shim), e.g.
#                     /var/cache/hull/cargo-target-bench/release
set -euo pipefail
set -E # the ERR trap (one error line) also inside functions

prog=ctr-bench
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/errors.sh
. "$repo/scripts/lib/errors.sh"

RUNS=${1:-7}
[[ $# -le 1 && $RUNS =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [RUNS]"
((EUID == 0)) || die "must run as root"
IMAGE=docker.io/library/busybox:latest
NS=bench
HULL_RT=io.containerd.hull.v2
RUNC_RT=io.containerd.runc.v2
CPATH="${HULL_SHIM_DIR:+$HULL_SHIM_DIR:}/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

for tool in containerd ctr python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
containerd --version | grep -q ' v\?1\.6\.' || die "containerd 1.6 needed, found: $(containerd --version)"
shim=$(PATH=$CPATH command -v containerd-shim-hull-v2) || die "containerd-shim-hull-v2 not found on $CPATH"
PATH=$CPATH command -v containerd-shim-runc-v2 >/dev/null || die "containerd-shim-runc-v2 not found on $CPATH"
PATH=$CPATH command -v runc >/dev/null || die "runc not found on $CPATH"

dir=$(mktemp -d /run/hull-bench.XXXXXX) || die "cannot create a temp dir in /run"
sock=$dir/containerd.sock
log=$dir/containerd.log
cpid=""
C() { ctr -a "$sock" -n "$NS" "$@"; }
rt_opts() { # rt_opts RUNTIME: `ctr run` options for it (runc keeps its state in the temp dir too)
    [[ $1 != "$RUNC_RT" ]] || echo "--runc-root $dir/runc"
}

# Remove leftover tasks and containers, stop our containerd, unmount and remove the temp dir.
cleanup() {
    local rc=$? t c i
    trap - ERR
    set +e
    if [[ -n $cpid ]] && kill -0 "$cpid" 2>/dev/null; then
        for t in $(C task ls -q 2>/dev/null); do
            C task kill -s SIGKILL "$t" >/dev/null 2>&1
            for ((i = 0; i < 100; i++)); do
                C task ls 2>/dev/null | awk -v t="$t" '$1 == t && $3 != "STOPPED" {f=1} END {exit !f}' || break
                sleep 0.1
            done
            C task delete -f "$t" >/dev/null 2>&1 || echo "$prog: warning: could not delete task $t" >&2
        done
        for c in $(C containers ls -q 2>/dev/null); do
            C containers rm "$c" >/dev/null 2>&1 || echo "$prog: warning: could not remove container $c" >&2
        done
    fi
    if ((rc != 0)) && [[ -s $log ]]; then
        echo "$prog: last lines of containerd.log:" >&2
        tail -n 15 "$log" | sed 's/^/  | /' >&2
    fi
    if [[ -n $cpid ]]; then
        kill -TERM "$cpid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            kill -0 "$cpid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$cpid" 2>/dev/null && kill -KILL "$cpid" 2>/dev/null
        wait "$cpid" 2>/dev/null
    fi
    # Mounts left under the temp dir (rootfs of a task that could not be deleted), deepest first.
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" || echo "$prog: warning: cannot unmount $m" >&2; done
    rm -rf -- "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. A private containerd.
cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  level = "debug"
EOF
PATH=$CPATH containerd --config "$dir/config.toml" >"$log" 2>&1 </dev/null &
cpid=$!
deadline=$((SECONDS + 30))
until ctr -a "$sock" version >/dev/null 2>&1; do
    kill -0 "$cpid" 2>/dev/null || die "containerd exited during start-up"
    ((SECONDS < deadline)) || die "containerd not answering on $sock after 30 s"
    sleep 0.1
done

# 2. The image.
"$repo/scripts/make-image.sh" >/dev/null
C images import --all-platforms /var/lib/hull/images/busybox.oci.tar >/dev/null
C images ls -q | grep -qx "$IMAGE" || die "$IMAGE missing after import"

# 3. Wall times, alternating hull and runc after one warm-up of each.
run_once() { # run_once RUNTIME ID: sets T0, T1 (ns) around `ctr run --rm IMAGE ID true`
    T0=$(date +%s%N)
    # shellcheck disable=SC2046
    C run --rm --runtime "$1" $(rt_opts "$1") "$IMAGE" "$2" true </dev/null >/dev/null ||
        die "ctr run --runtime $1 ... $2 true failed (exit $?)"
    T1=$(date +%s%N)
}
ms() { echo $((($2 - $1) / 1000000)); }

echo "# hull ctr bench, $(date -u +%FT%TZ), $(nproc) cores, runs=$RUNS"
echo "# $(containerd --version | cut -d' ' -f1,3), shim $shim ($(date -u -r "$shim" +%FT%TZ))"
run_once "$HULL_RT" bench-h-warm
warm=$(ms "$T0" "$T1")
run_once "$RUNC_RT" bench-r-warm
echo "warm-up ms:                 hull $warm  runc $(ms "$T0" "$T1")"

hull_ms=() runc_ms=()
: >"$dir/hull-runs"
for i in $(seq "$RUNS"); do
    run_once "$HULL_RT" "bench-h-$i"
    echo "bench-h-$i $T0 $T1" >>"$dir/hull-runs"
    hull_ms+=("$(ms "$T0" "$T1")")
    run_once "$RUNC_RT" "bench-r-$i"
    runc_ms+=("$(ms "$T0" "$T1")")
done
python3 - "${hull_ms[*]}" "${runc_ms[*]}" <<'EOF'
import sys, statistics as st
h = [int(x) for x in sys.argv[1].split()]
r = [int(x) for x in sys.argv[2].split()]
mh, mr = st.median(h), st.median(r)
print(f"hull ctr run --rm true ms:  {' '.join(map(str, h))}  median {mh:g}")
print(f"runc ctr run --rm true ms:  {' '.join(map(str, r))}  median {mr:g}")
print(f"ratio hull/runc (medians):  {mh / mr:.1f}x")
EOF

# 4. Where a hull run's time goes, from the shim's tracing lines in containerd.log
#    ("2026-11-23T11:49:42.186213Z  INFO sandbox ready sandbox=ID ... boot_ms=N").
python3 - "$log" "$dir/hull-runs" <<'EOF'
import re, sys, statistics as st
from datetime import datetime, timezone

LINE = re.compile(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z\s+[A-Z]+\s+(.*)$')
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
# event -> (message, field naming the id)
EVENTS = {
    'create': ('Create', 'task'),
    'qemu': ('qemu started', 'sandbox'),
    'ready': ('sandbox ready', 'sandbox'),
    'started': ('process started', 'task'),
    'exited': ('process exited', 'task'),
    'deleted': ('task deleted', 'task'),
    'removed': ('sandbox removed', 'sandbox'),
}
seen = {}  # (event, id) -> (epoch seconds, fields); first occurrence wins
accel = {}  # sandbox id -> "accel (reason)" from "accelerator chosen"
for raw in open(sys.argv[1], errors='replace'):
    m = LINE.match(raw.rstrip('\n'))
    if not m:
        continue  # containerd's own logfmt lines (time="...") and anything else
    t = datetime.fromisoformat(m[1] + '+00:00').timestamp() + float(m[2] or 0)
    rest = m[3]
    first = FIELD.search(rest)
    msg = (rest[:first.start()] if first else rest).strip()
    msg = msg.rsplit(': ', 1)[-1]  # drop a span prefix, if any
    fields = {k: v.strip('"') for k, v in FIELD.findall(rest[first.start():] if first else '')}
    if msg == 'accelerator chosen' and 'sandbox' in fields:
        reason = rest.split(' reason=', 1)[1] if ' reason=' in rest else ''
        reason = reason if len(reason) <= 100 else reason[:100] + '...'
        accel[fields['sandbox']] = fields.get('accel', '?') + (f" ({reason})" if reason else '')
    for ev, (want, key) in EVENTS.items():
        if msg == want and key in fields:
            seen.setdefault((ev, fields[key]), (t, fields))

parts = ['shim->qemu', 'vm->agent', 'create+start', 'run', 'teardown', 'containerd+ctr']
cols, missing = {p: [] for p in parts}, []
runs = [l.split()[0] for l in open(sys.argv[2])]
for a in sorted(set(accel.get(r, 'not logged') for r in runs)):
    print(f"hull accelerator:           {a}")
print(f"hull split ms per run:      {'id':<11}" + ''.join(f"{p:>15}" for p in parts))
for line in open(sys.argv[2]):
    rid, t0, t1 = line.split()
    t0, t1 = int(t0) / 1e9, int(t1) / 1e9
    ev = {e: seen.get((e, rid)) for e in EVENTS}
    lost = [EVENTS[e][0] for e, v in ev.items() if v is None]
    if lost or 'boot_ms' not in ev['ready'][1]:
        missing.append(f"{rid} ({', '.join(lost) or 'boot_ms'})")
        continue
    T = {e: v[0] for e, v in ev.items()}
    row = {
        'shim->qemu': (T['qemu'] - T['create']) * 1e3,
        'vm->agent': float(ev['ready'][1]['boot_ms']),
        'create+start': (T['started'] - T['ready']) * 1e3,
        'run': (T['exited'] - T['started']) * 1e3,
        'teardown': (T['removed'] - T['exited']) * 1e3,
    }
    row['containerd+ctr'] = (t1 - t0) * 1e3 - sum(row.values())
    for p in parts:
        cols[p].append(row[p])
    print(f"                            {rid:<11}" + ''.join(f"{row[p]:>15.0f}" for p in parts))
if cols['run']:
    print(f"hull split ms median:       {'':<11}" + ''.join(f"{st.median(cols[p]):>15.0f}" for p in parts))
    print("  (shim->qemu: Create to QEMU spawned; vm->agent: boot_ms of 'sandbox ready'; create+start:"
          " ready to process started;\n   run: started to exited; teardown: exited to sandbox removed;"
          " containerd+ctr: wall time minus the rest)")
for m in missing:
    print(f"hull split: no log lines for {m}")
EOF

# 5. Idle footprint: PSS and CPU of a pod running `sleep 600`.
wait_status() { # wait_status ID STATUS SECONDS
    local end=$((SECONDS + $3))
    until C task ls | awk -v t="$1" -v s="$2" '$1 == t && $3 == s {f=1} END {exit !f}'; do
        ((SECONDS < end)) || die "task $1 not $2 after $3 s: $(C task ls | awk -v t="$1" '$1 == t')"
        sleep 0.2
    done
}
stop_idle() { # stop_idle ID
    C task kill -s SIGKILL "$1"
    wait_status "$1" STOPPED 30
    C task delete "$1" >/dev/null 2>&1 # ctr warns about the exit status 137
    C container rm "$1"
}
footprint() { # footprint LABEL CPU_SECONDS PID...
    python3 - "$@" <<'EOF'
import os, sys, time
label, cpu_secs, pids = sys.argv[1], float(sys.argv[2]), [int(p) for p in sys.argv[3:]]
def comm(p): return open(f'/proc/{p}/comm').read().strip()
def pss(p):
    for l in open(f'/proc/{p}/smaps_rollup'):
        if l.startswith('Pss:'):
            return int(l.split()[1])
def ticks(p):
    f = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()
    return int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
total = 0
for p in pids:
    k = pss(p)
    total += k
    print(f"{label} PSS:  {comm(p):<24} pid {p:<8} {k / 1024:7.1f} MiB")
print(f"{label} PSS total:  {total / 1024:.1f} MiB ({len(pids)} processes)")
if cpu_secs > 0:
    hz = os.sysconf('SC_CLK_TCK')
    a, t = sum(ticks(p) for p in pids), time.monotonic()
    time.sleep(cpu_secs)
    b, t = sum(ticks(p) for p in pids), time.monotonic() - t
    print(f"{label} CPU over {t:.0f} s:  {(b - a) * 100 / hz / t:.1f}% of one core")
EOF
}
shim_pid() { # shim_pid BINARY ID: the shim of our containerd serving ID
    python3 - "$1" "$2" "$sock" <<'EOF'
import os, sys
binary, cid, sock = sys.argv[1:]
for p in filter(str.isdigit, os.listdir('/proc')):
    try:
        comm = open(f'/proc/{p}/comm').read().strip()
        argv = open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace').split('\0')
    except OSError:
        continue
    pairs = set(zip(argv, argv[1:]))
    # comm is cut to 15 characters ("containerd-shim"); argv[0] names the binary.
    if (comm.startswith('containerd-shim') and os.path.basename(argv[0]) == binary
            and ('-id', cid) in pairs and ('-address', sock) in pairs):
        print(p)
EOF
}

id=bench-idle
C run -d --runtime "$HULL_RT" "$IMAGE" "$id" sleep 600 </dev/null >/dev/null
wait_status "$id" RUNNING 60
sleep 3 # let the guest settle before measuring memory and CPU
pids=$(shim_pid containerd-shim-hull-v2 "$id")
[[ -n $pids ]] || die "no shim process found for $id"
helpers=$(pgrep -f "/run/hull/$id/" | tr '\n' ' ') || true
[[ -n $helpers ]] || die "no processes with /run/hull/$id/ in their command line"
pids+=" $helpers"
# shellcheck disable=SC2086
footprint "idle hull pod" 10 $pids
stop_idle "$id"

id=bench-idle-runc
# shellcheck disable=SC2046
C run -d --runtime "$RUNC_RT" $(rt_opts "$RUNC_RT") "$IMAGE" "$id" sleep 600 </dev/null >/dev/null
wait_status "$id" RUNNING 60
pids=$(shim_pid containerd-shim-runc-v2 "$id")
[[ -n $pids ]] || die "no shim process found for $id"
pids+=" $(C task ls | awk -v t="$id" '$1 == t {print $2}')"
# shellcheck disable=SC2086
footprint "idle runc ctr" 0 $pids
stop_idle "$id"
