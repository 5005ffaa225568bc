#!/usr/bin/env bash
# Where the time of one `berthctl run --rm IMAGE true` goes: a timeline of
# the daemon, its shim and the runtime, from strace (-f, timestamps) on a
# private berth-imaged. Each line is a step the path takes: processes
# started (the shim, each `berth` call, the container's program), mounts and
# unmounts, cgroup joins, fsyncs, the client's connections, with its offset
# from the client's first request and the time the call itself took.
#
# strace slows every system call down, so the offsets are longer than the
# real path (bench/ctl.sh measures that); what this shows is the order of
# the steps and which of them wait (an unmount's RCU grace period, an
# fdatasync, a cgroup join).
#
# The daemon runs with BERTH_TRACE=1 and its own per-step times (create,
# start, exit, delete, remove) are printed first.
#
# Run as root:  bench/trace.sh
# Environment:  BIN (release builds by default), IMAGE_ARGS (default: true).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release}")
IMAGE_ARGS=${IMAGE_ARGS:-true}

die() { echo "trace.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in strace awk /bin/busybox; do command -v "$tool" >/dev/null || die "missing $tool"; done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-trace.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_check_berth
tracer=
cleanup() {
    set +e
    bench_stop_imaged
    [[ -n $tracer ]] && wait "$tracer" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

image=docker.io/library/berth-bench-busybox:1
bench_busybox_image "$image"
# The daemon runs under strace from its start, so that `--seccomp-bpf` can
# let every system call the timeline does not name run at full speed
# (attaching with -p would stop the daemon on each of them).
bench_start_imaged none env BERTH_TRACE=1 strace -f --seccomp-bpf -ttt -T -qq -o "$work/trace" \
    -e trace=execve,mount,umount2,pivot_root,unshare,accept4,rmdir,fsync,fdatasync,exit_group,openat,connect \
    -e signal=none
# $imaged is strace: stop the daemon itself, strace then ends with it.
tracer=$imaged
imaged=$(pgrep -P "$tracer" -x berth-imaged) || die "berth-imaged did not start"
berthctl load -q -i "$work/image.tar" >/dev/null
# Warm: the image's first container pays for page-cache misses.
for _ in 1 2 3; do berthctl run --rm "$image" true; done
sleep 0.5
from=$(date +%s.%N)
# shellcheck disable=SC2086
berthctl run --rm "$image" $IMAGE_ARGS
to=$(date +%s.%N)
sleep 0.5
# strace writes its last lines when the daemon ends.
bench_stop_imaged || true  # not our child: its wait says 127
imaged=
wait "$tracer" 2>/dev/null || true
tracer=
echo "the client's whole run: $(awk -v a="$from" -v b="$to" 'BEGIN { printf "%.2f", (b - a) * 1000 }') ms (date to date, strace included)"

# The daemon's own account of the same run (BERTH_TRACE, imaged/src/steps.rs):
# each step's time as the daemon measured it, strace's slowdown included.
echo "the daemon's steps:"
grep -a "berth-imaged: trace" "$work/imaged.log" | tail -5 | sed 's/^berth-imaged: trace /  /'
echo

# Only what marks a step: openat only for cgroup joins (cgroup.procs).
awk -v from="$from" '
function label(line,    call) {
    call = line
    sub(/\(.*/, "", call)
    if (call == "openat" && line !~ /cgroup\.procs/) return ""
    if (call == "accept4" && line ~ /EAGAIN/) return ""
    if (call == "connect" && line !~ /AF_UNIX/) return ""
    if (call == "rmdir" && line !~ /sys\/fs\/cgroup\/memory/) return ""
    if (line ~ /ENOENT/) return ""
    return line
}
{
    pid = $1; t = $2; $1 = ""; $2 = ""
    if (t < from) next
    rest = substr($0, 3)
    took = ""
    if (match(rest, /<[0-9.]+>$/)) { took = substr(rest, RSTART + 1, RLENGTH - 2) * 1000; rest = substr(rest, 1, RSTART - 1) }
    text = label(rest)
    if (text == "") next
    if (start == "") start = t
    gsub(/\/[^ ",]*\/(bundles|berth-bench-state\.[A-Za-z0-9]+\/(runtime|bundles)(\/berth)?)\/[0-9a-f]{64}/, "…", text)
    gsub(/\/sys\/fs\/cgroup\/[a-z_,]+\/berth-imaged\/[0-9a-f]{64}/, "<cgroup>", text)
    if (length(text) > 110) text = substr(text, 1, 110) "…"
    printf "%8.2f ms  %7s  pid %-7s %s\n", (t - start) * 1000, took == "" ? "" : sprintf("%.2f", took), pid, text
}' "$work/trace"
