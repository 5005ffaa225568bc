#!/usr/bin/env bash
# berthctl benchmark: `berthctl run --rm IMAGE true` (berth-imaged →
# containerd-shim-berth-v2 → berth) side by side with `ctr run --rm IMAGE true`
# (Debian's containerd → containerd-shim-runc-v2 → runc), timed with hyperfine
# in alternating rounds; prints both medians and the ratio (goal: ≤ 0.2, issue 17).
#
# Both daemons are private: berth-imaged with its own --root/--socket, and
# containerd with its own root, state and sockets in a private mount namespace
# with a tmpfs /run (its shims put sockets in /run/containerd/s). Both get the
# same busybox-static image, imported from one OCI archive made here.
#
# Run as root:  bench/ctl.sh
# Environment:  BIN (directory of berthctl, berth-imaged, the shim and berth;
#               release builds by default), RUNS (30, in all), ROUNDS (3), WARMUP (3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release}")
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}

die() { echo "ctl.sh: $*" >&2; exit 1; }
say() { echo "ctl.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in containerd ctr containerd-shim-runc-v2 runc hyperfine jq unshare nsenter sha256sum /bin/busybox; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-ctl-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_check_berth

cleanup() {
    set +e
    bench_stop_imaged
    bench_stop_containerd
    rm -rf "$work"
}
trap cleanup EXIT

image=docker.io/library/berth-bench-busybox:1
bench_busybox_image "$image"

# The private berth-imaged. Loopback-only containers, as `ctr run`'s are:
# like is compared with like, and the machine's network is left alone.
bench_start_imaged none
berthctl load -q -i "$work/image.tar" >/dev/null

bench_start_containerd

cat >"$work/ctr-run.sh" <<EOT
#!/bin/sh
exec nsenter -t $holder -m ctr --address /run/containerd/containerd.sock -n bench run --rm --runtime io.containerd.runc.v2 $image bench-\$\$-\$(date +%s%N) true
EOT
chmod +x "$work/ctr-run.sh"
# Both sanity-checked once, outside the timing.
berthctl run --rm "$image" true || die "berthctl run failed: $(tail -5 "$work/imaged.log")"
"$work/ctr-run.sh" || die "ctr run failed"

say "timing run --rm $image true ($RUNS runs each)"
for round in $(seq "$ROUNDS"); do
    a=(-n berthctl "$BIN/berthctl --address $sock run --rm $image true")
    b=(-n ctr "$work/ctr-run.sh")
    if ((round % 2)); then order=("${a[@]}" "${b[@]}"); else order=("${b[@]}" "${a[@]}"); fi
    hyperfine -N --warmup "$WARMUP" --runs "$((RUNS / ROUNDS))" --export-json "$work/run-$round.json" \
        "${order[@]}" >&2
done
berth_ms=$(median_ms berthctl)
ctr_ms=$(median_ms ctr)
ratio=$(awk -v a="$berth_ms" -v b="$ctr_ms" 'BEGIN {printf "%.2f", a / b}')
cat <<EOT

run --rm IMAGE true (median of $((RUNS / ROUNDS * ROUNDS)) runs in $ROUNDS alternating rounds, ms)
  berthctl → berth-imaged → berth shim → berth   $(printf %.1f "$berth_ms")
  ctr → containerd → runc shim → runc           $(printf %.1f "$ctr_ms")
  berthctl ÷ ctr                                $ratio   (goal ≤ 0.2)
EOT
