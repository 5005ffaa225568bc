#!/usr/bin/env bash
# Shim benchmark: containerd-shim-berth-v2 side by side with containerd's own
# runc shim (containerd-shim-runc-v2), under one private Debian containerd.
#
#   1. `ctr run --rm IMAGE true` through each shim, timed with hyperfine
#      (prints both and the ratio);
#   2. N sleeping containers per shim kind: the idle shims' RSS, PSS and
#      private memory (Pss_Anon; from /proc/PID/smaps_rollup: PSS counts
#      shared pages once across all processes; RSS also counts every page of
#      the binary the kernel mapped around a fault, which depends on the
#      page cache more than on the shim) and threads, per shim and per container; once with one shim per
#      container, once with the containers in pods of POD (the annotation
#      io.kubernetes.cri.sandbox-id, by which containerd's CRI groups a pod:
#      both shims then serve a whole pod from one process).
#
# Both shims drive the runtime they are made for by default: ours berth, the
# runc shim runc. With SAME_RUNTIME=1 ours drives runc too, so only the shims differ.
#
# containerd runs with its own root, state and sockets in a private mount
# namespace with its own tmpfs /run (shims put their sockets in
# /run/containerd/s); everything it made goes when the script exits.
#
# Run as root:  bench/shim.sh
# Environment:  SHIM, BERTH (binaries; release builds by default), RUNS (30, in all; 0 skips
#               the timing), ROUNDS (3, alternating the order), WARMUP (3), CONTAINERS (50),
#               POD (10 containers per pod), SAME_RUNTIME (0).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
release=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release
SHIM=${SHIM:-$release/containerd-shim-berth-v2}
BERTH=${BERTH:-$release/berth}
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
CONTAINERS=${CONTAINERS:-50}
POD=${POD:-10}
SAME_RUNTIME=${SAME_RUNTIME:-0}

die() { echo "shim.sh: $*" >&2; exit 1; }
say() { echo "shim.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in containerd ctr containerd-shim-runc-v2 runc hyperfine jq unshare nsenter sha256sum /bin/busybox; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x $SHIM && -x $BERTH ]] ||
    die "no $SHIM or $BERTH (cargo build --release -p berth-shim -p berth-runtime)"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-shim-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

cleanup() {
    set +e
    bench_stop_containerd
    rm -rf "$work"
}
trap cleanup EXIT

image=docker.io/library/berth-bench-busybox:1
bench_busybox_image "$image"

# The private containerd, our shim and berth first on its PATH.
mkdir -p "$work/bin"
ln -s "$SHIM" "$work/bin/containerd-shim-berth-v2"
ln -s "$BERTH" "$work/bin/berth"
bench_start_containerd "$work/bin"

berth_flags="--runtime io.containerd.berth.v2"
if [[ $SAME_RUNTIME == 1 ]]; then
    echo 'BinaryName = "runc"' >"$work/runc.toml"
    berth_flags+=" --runtime-config-path $work/runc.toml"
fi
runc_flags="--runtime io.containerd.runc.v2"

# 1. ctr run --rm IMAGE true.
berth_ms=0 runc_ms=0
if ((RUNS > 0)); then
say "timing ctr run --rm $image true ($RUNS runs each)"
n=0
cat >"$work/run.sh" <<EOF
#!/bin/sh
# \$1: runtime flags (one word each)
id=bench-\$\$-\$(date +%s%N)
exec nsenter -t $holder -m ctr --address /run/containerd/containerd.sock -n bench run --rm \$1 $image \$id true
EOF
chmod +x "$work/run.sh"
# hyperfine runs one command's series, then the other's: on a shared machine the load moves in
# between, so ROUNDS rounds alternate the order and the medians of all runs are compared.
for round in $(seq "$ROUNDS"); do
    a=(-n berth-shim "$work/run.sh '$berth_flags'")
    b=(-n runc-shim "$work/run.sh '$runc_flags'")
    if ((round % 2)); then order=("${a[@]}" "${b[@]}"); else order=("${b[@]}" "${a[@]}"); fi
    hyperfine --warmup "$WARMUP" --runs "$((RUNS / ROUNDS))" --export-json "$work/run-$round.json" \
        "${order[@]}" >&2
done
berth_ms=$(median_ms berth-shim)
runc_ms=$(median_ms runc-shim)
fi

# 2. Idle shims with N sleeping containers each, in pods of POD (1: no pods).
idle() { # NAME POD FLAGS → prints "rss_kib pss_kib threads shims anon_kib" (totals over the shims)
    local name=$1 pod=$2 flags=$3 i
    local group=()
    for i in $(seq "$CONTAINERS"); do
        if ((pod > 1)); then
            group=(--annotation "io.kubernetes.cri.sandbox-id=pod-$name-$(((i - 1) / pod))")
        fi
        # shellcheck disable=SC2086
        ctr run -d $flags "${group[@]}" "$image" "idle-$name-$i" sleep 100000 >/dev/null
    done
    sleep 2
    local rss=0 pss=0 anon=0 threads=0 count=0 pid
    for pid in $(pgrep -f "containerd-shim-$name-v2 .*-id idle-$name-"); do
        rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
        anon=$((anon + $(awk '/^Pss_Anon:/ {print $2}' "/proc/$pid/smaps_rollup")))
        threads=$((threads + $(awk '/^Threads/ {print $2}' "/proc/$pid/status")))
        count=$((count + 1))
    done
    ((count > 0)) || die "no $name shims found"
    # Cleaned up before the line is printed: the reader goes on at once.
    for i in $(seq "$CONTAINERS"); do ctr task kill -s KILL "idle-$name-$i" >/dev/null 2>&1 || true; done
    sleep 1
    for i in $(seq "$CONTAINERS"); do
        ctr task delete "idle-$name-$i" >/dev/null 2>&1 || true
        ctr containers rm "idle-$name-$i" >/dev/null 2>&1 || true
    done
    echo "$rss $pss $threads $count $anon"
}
mib() { awk -v k="$1" -v n="$2" 'BEGIN {printf "%5.2f", k / n / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
per() { awk -v t="$1" -v c="$2" 'BEGIN {printf "%4.1f", t / c}'; }
memory() { # POD → the table for one pod size
    local pod=$1 b r
    say "starting $CONTAINERS sleeping containers per shim, pods of $pod"
    read -r -a b < <(idle berth "$pod" "$berth_flags")
    read -r -a r < <(idle runc "$pod" "$runc_flags")
    cat <<EOF

idle shims, $CONTAINERS sleeping containers in pods of $pod: ${b[3]} berth shims, ${r[3]} runc shims
                            per shim: RSS        threads   per container: RSS        PSS        private
  containerd-shim-berth-v2            $(mib "${b[0]}" "${b[3]}") MiB  $(per "${b[2]}" "${b[3]}")                     $(mib "${b[0]}" "$CONTAINERS") MiB  $(mib "${b[1]}" "$CONTAINERS") MiB  $(mib "${b[4]}" "$CONTAINERS") MiB
  containerd-shim-runc-v2             $(mib "${r[0]}" "${r[3]}") MiB  $(per "${r[2]}" "${r[3]}")                     $(mib "${r[0]}" "$CONTAINERS") MiB  $(mib "${r[1]}" "$CONTAINERS") MiB  $(mib "${r[4]}" "$CONTAINERS") MiB
  berth ÷ runc shim, per container                                     $(ratio "${b[0]}" "${r[0]}")       $(ratio "${b[1]}" "${r[1]}")       $(ratio "${b[4]}" "${r[4]}")
EOF
}

if ((RUNS > 0)); then
    cat <<EOF

ctr run --rm IMAGE true (median of $((RUNS / ROUNDS * ROUNDS)) runs in $ROUNDS alternating rounds, ms)
  containerd-shim-berth-v2 ($([[ $SAME_RUNTIME == 1 ]] && echo runc || echo berth))  $(printf %.1f "$berth_ms")
  containerd-shim-runc-v2 (runc)  $(printf %.1f "$runc_ms")
  berth ÷ runc shim               $(ratio "$berth_ms" "$runc_ms")
EOF
fi
memory 1
if ((POD > 1)); then memory "$POD"; fi
