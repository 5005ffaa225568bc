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
    [[ -n $tracer ]] && kill "$tracer" 2>/dev/null && wait "$tracer" 2>/dev/null
    bench_stop_imaged
    rm -rf "$work"
}
trap cleanup EXIT

image=docker.io/library/berth-bench-busybox:1
bench_busybox_image "$image"
bench_start_imaged none
berthctl load -q -i "$work/image.tar" >/dev/null
# Warm: the image's first container pays for page-cache misses.
for _ in 1 2 3; do berthctl run --rm "$image" true; done

strace -f -ttt -T -qq -o "$work/trace" -p "$imaged" \
    -e trace=execve,mount,umount2,pivot_root,unshare,accept4,rmdir,fsync,fdatasync,exit_group,openat \
    -e signal=none &
tracer=$!
sleep 1
# shellcheck disable=SC2086
berthctl run --rm "$image" $IMAGE_ARGS
sleep 0.5
kill "$tracer"
wait "$tracer" 2>/dev/null || true
tracer=

# Only what marks a step: openat only for cgroup joins (cgroup.procs).
awk '
function label(line,    call) {
    call = line
    sub(/\(.*/, "", call)
    if (call == "openat" && line !~ /cgroup\.procs/) return ""
    if (call == "accept4" && line ~ /EAGAIN/) return ""
    if (call == "rmdir" && line !~ /sys\/fs\/cgroup\/memory/) return ""
    if (line ~ /ENOENT/) return ""
    return line
}
{
    pid = $1; t = $2; $1 = ""; $2 = ""
    rest = substr($0, 3)
    took = ""
    if (match(rest, /<[0-9.]+>$/)) { took = substr(rest, RSTART + 1, RLENGTH - 2) * 1000; rest = substr(rest, 1, RSTART - 1) }
    text = label(rest)
    if (text == "") next
    if (start == "") start = t
    gsub(/\/[^ ",]*\/(bundles|berth-runtime)\/[0-9a-f]{64}/, "…", text)
    gsub(/\/sys\/fs\/cgroup\/[a-z_,]+\/berth-imaged\/[0-9a-f]{64}/, "<cgroup>", text)
    if (length(text) > 110) text = substr(text, 1, 110) "…"
    printf "%8.2f ms  %7s  pid %-7s %s\n", (t - start) * 1000, took == "" ? "" : sprintf("%.2f", took), pid, text
}' "$work/trace"
