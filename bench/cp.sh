#!/usr/bin/env bash
# berthctl cp beside podman cp (Debian's podman 4.3, private storage): one
# tree of many small files and one large file, copied from the host into a
# created (stopped) container and back out, timed with hyperfine; prints
# each median and the ratio berth/podman.
#
# Run as root:  bench/cp.sh [RUNS]   (binaries from $BERTH_BIN, default the
# debug build; FILES small files of 4 KiB and one file of BIG_MB MiB).
set -euo pipefail
RUNS=${1:-5}
FILES=${FILES:-2000}
BIG_MB=${BIG_MB:-64}
BIN=${BERTH_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/x86_64-unknown-linux-gnu/debug}
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-cp-bench.XXXXXX")
RUNROOT=/run/berth-cp.$$
die() { echo "bench/cp.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
P="podman --root $work/podman --runroot $RUNROOT --storage-driver overlay --runtime runc"
cleanup() {
    bench_stop_imaged
    $P rm -af >/dev/null 2>&1 || true
    $P rmi -af >/dev/null 2>&1 || true
    umount -R "$work/podman" 2>/dev/null || true
    rm -rf "$work" "$RUNROOT"
}
trap cleanup EXIT INT TERM
bench_check_berth
command -v podman >/dev/null || die "no podman (apt-get install podman)"
command -v hyperfine >/dev/null || die "no hyperfine"

# The tree: FILES files of 4 KiB in 20 directories, and one large file.
for d in $(seq 20); do mkdir -p "$work/tree/d$d"; done
for f in $(seq "$FILES"); do head -c 4096 /dev/urandom > "$work/tree/d$((f % 20 + 1))/f$f"; done
head -c $((BIG_MB << 20)) /dev/urandom > "$work/tree/big"

# One busybox image for both, a created container in each.
bench_busybox_image localhost/busybox:bench
$P load -i "$work/image.tar" >/dev/null
bench_start_imaged none
berthctl load -i "$work/image.tar" >/dev/null
pc=$($P create "$($P images -q | head -1)" true)
berthctl create --name bc localhost/busybox:bench true >/dev/null

hyperfine --runs "$RUNS" --export-json "$work/run-in.json" -N \
    -n berth-in "$BIN/berthctl --address $sock cp $work/tree bc:/" \
    -n podman-in "$P cp $work/tree $pc:/" >&2
hyperfine --runs "$RUNS" --export-json "$work/run-out.json" \
    --prepare "rm -rf $work/out && mkdir $work/out" \
    -n berth-out "$BIN/berthctl --address $sock cp bc:/tree $work/out/" \
    -n podman-out "$P cp $pc:/tree $work/out/" >&2
cmp "$work/tree/big" "$work/out/tree/big" || die "the copy out differs"

printf '%-34s %10s %10s %7s\n' "cp of $FILES x 4 KiB + $BIG_MB MiB" berthctl podman ratio
for way in in out; do
    b=$(median_ms "berth-$way")
    p=$(median_ms "podman-$way")
    label='host → container'
    [ "$way" = out ] && label='container → host'
    printf '%-34s %8.0f ms %7.0f ms %7.2f\n' "$label" "$b" "$p" "$(echo "$b / $p" | bc -l)"
done
