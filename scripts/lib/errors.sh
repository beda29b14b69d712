# Sourced by Hull's scripts (set `prog` first): `die MSG` for expected failures, and one error
# line naming the failed command for unexpected ones (printed by the outermost shell only).
die() {
    echo "$prog: error: $*" >&2
    exit 1
}
on_err() {
    local rc=$1 line=$2 cmd=$3
    ((BASH_SUBSHELL > 0)) || echo "$prog: error: '$cmd' failed (exit $rc) at line $line" >&2
    exit "$rc"
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
