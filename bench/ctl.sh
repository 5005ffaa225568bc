#!/usr/bin/env bash
# berthctl benchmark: `berthctl run --rm IMAGE true` (berth-imaged →
# containerd-shim-berth-v2 → berth) side by side with `ctr run --rm IMAGE true`
# (Debian's containerd → containerd-shim-runc-v2 → runc) and with `berth run`
# on that container's own bundle, timed with hyperfine in alternating rounds;
# prints the medians and both ratios (goals, issue 17: ≤ 0.2 of ctr, ≤ 2 × berth run).
#
# The `berth run` is the runtime's share of the same container: the config.json
# the daemon writes for `create IMAGE true` (its namespaces, mounts, seccomp
# profile, resolv.conf and hosts binds) on that container's rootfs, with only
# the cgroup path changed. What berthctl adds to it is the client, the daemon
# and the shim.
#
# Both daemons are private: berth-imaged with its own --root/--socket, and
# containerd with its own root, state and sockets in a private mount namespace
# with a tmpfs /run (its shims put sockets in /run/containerd/s). Both get the
# same busybox-static image, imported from one OCI archive made here.
#
# Run as root:  bench/ctl.sh
# Environment:  BIN (directory of berthctl, berth-imaged, the shim and berth;
#               release builds by default), RUNS (60, in all), ROUNDS (4), WARMUP (3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release}")
RUNS=${RUNS:-60}
ROUNDS=${ROUNDS:-4}
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
    umount "$work/ref-root" 2>/dev/null
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

# The runtime's share: the daemon's bundle for this image and command.
ref=$(berthctl create --name berth-run-ref "$image" true) || die "berthctl create failed"
ref_bundle=$work/berth-root/bundles/$ref
mkdir -p "$work/ref" "$work/ref-root"
# On tmpfs, as the daemon's runtime root is (see bench_start_imaged).
mount -t tmpfs -o mode=0700 tmpfs "$work/ref-root"
jq --arg rootfs "$ref_bundle/rootfs" --arg cgroup "/berth-imaged/bench-ref-$$" \
    '.root.path = $rootfs | .linux.cgroupsPath = $cgroup' "$ref_bundle/config.json" >"$work/ref/config.json"
berth_run="$BIN/berth --root $work/ref-root run --bundle $work/ref ref"

cat >"$work/ctr-run.sh" <<EOT
#!/bin/sh
exec nsenter -t $holder -m ctr --address /run/containerd/containerd.sock -n bench run --rm --runtime io.containerd.runc.v2 $image bench-\$\$-\$(date +%s%N) true
EOT
chmod +x "$work/ctr-run.sh"
# Both sanity-checked once, outside the timing.
berthctl run --rm "$image" true || die "berthctl run failed: $(tail -5 "$work/imaged.log")"
"$work/ctr-run.sh" || die "ctr run failed"
$berth_run || die "berth run on the daemon's bundle failed"

say "timing run --rm $image true ($RUNS runs each)"
for round in $(seq "$ROUNDS"); do
    a=(-n berthctl "$BIN/berthctl --address $sock run --rm $image true")
    b=(-n ctr "$work/ctr-run.sh")
    c=(-n "berth run" "$berth_run")
    # ctr last in every round, and a pause before each: containerd goes on
    # working for a while after ctr returns (the shim's exit, the task's and
    # snapshot's removal), which would fall on whatever ran next. The two
    # berth series swap places each round.
    if ((round % 2)); then order=("${a[@]}" "${c[@]}" "${b[@]}"); else order=("${c[@]}" "${a[@]}" "${b[@]}"); fi
    sleep 1
    hyperfine -N --warmup "$WARMUP" --runs "$((RUNS / ROUNDS))" --export-json "$work/run-$round.json" \
        "${order[@]}" >&2
done
berth_ms=$(median_ms berthctl)
ctr_ms=$(median_ms ctr)
run_ms=$(median_ms "berth run")
ratio=$(awk -v a="$berth_ms" -v b="$ctr_ms" 'BEGIN {printf "%.2f", a / b}')
over_run=$(awk -v a="$berth_ms" -v b="$run_ms" 'BEGIN {printf "%.2f", a / b}')
cat <<EOT

run --rm IMAGE true (median of $((RUNS / ROUNDS * ROUNDS)) runs in $ROUNDS alternating rounds, ms)
  berthctl → berth-imaged → berth shim → berth   $(printf %.1f "$berth_ms")
  ctr → containerd → runc shim → runc           $(printf %.1f "$ctr_ms")
  berth run (the same container's bundle)       $(printf %.1f "$run_ms")
  berthctl ÷ ctr                                $ratio   (goal ≤ 0.2)
  berthctl ÷ berth run                          $over_run   (goal ≤ 2)
EOT
