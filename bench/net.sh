#!/usr/bin/env bash
# Network benchmark: what joining a bridge network costs one container,
# berth side by side with podman (Debian's podman 4.3, CNI backend, the same
# containernetworking-plugins). The cost is `run --rm IMAGE true` on the
# default bridge network minus the same run with `--network none`, each the
# median of RUNS runs timed by hyperfine, for berthctl (berth-imaged → shim
# → berth) and for podman; prints both costs and their ratio (goal ≤ 0.5).
#
# Everything runs in a network namespace made here, so the bridges, veths
# and NAT rules both make live there and the machine's network is not
# touched; both get the same busybox-static root filesystem.
#
# Run as root:  bench/net.sh
# Environment:  BIN (directory of berthctl, berth-imaged, the shim and berth;
#               release builds by default), RUNS (20), WARMUP (3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release}")
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}

die() { echo "net.sh: $*" >&2; exit 1; }
say() { echo "net.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in podman hyperfine jq ip nsenter /usr/lib/cni/bridge /bin/busybox; do
    command -v "$tool" >/dev/null || [[ -x $tool ]] || die "missing $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-net-bench.XXXXXX")
netns=berth-bench-net-$$
podman_image=localhost/berth-bench-net:1
# busybox_oci_archive, median_ms, and `holder` (here: the pid holding
# podman's mount namespace).
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_check_berth
# podman with storage, state and temporary files of its own, run in a mount
# namespace with a private /tmp (holder, below: podman must not touch the
# machine's /tmp), with runc (crun refuses this host's hybrid cgroups), and
# the ulimits this sandbox allows.
pwork=/var/tmp/berth-net-bench-podman-$$
podman_flags="--root $pwork/root --runroot $pwork/run --tmpdir $pwork/tmp --runtime runc --cgroup-manager cgroupfs --events-backend file"
podman_in() { nsenter -t "$holder" -m --net="/run/netns/$netns" podman $podman_flags "$@"; }

cleanup() {
    set +e
    bench_stop_imaged
    if [[ -n $holder ]]; then
        podman_in rm -af >/dev/null 2>&1
        podman_in rmi -af >/dev/null 2>&1
        kill "$holder" 2>/dev/null
        wait "$holder" 2>/dev/null
    fi
    rm -rf "$pwork"
    ip netns delete "$netns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$pwork/tmp"
ip netns add "$netns"
ip -n "$netns" link set lo up

image=docker.io/library/berth-bench-net:1
busybox_oci_archive "$work/image" "$image" "$work/image.tar" sh true
tar -C "$work/image/rootfs" -cf "$work/rootfs.tar" .
cp "$work/rootfs.tar" "$pwork/rootfs.tar"
unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /tmp && exec sleep 100000' &
holder=$!
for _ in $(seq 100); do grep -q '^tmpfs /tmp ' "/proc/$holder/mounts" 2>/dev/null && break; sleep 0.05; done
podman_in import -q "$pwork/rootfs.tar" "$podman_image" >/dev/null

bench_start_imaged bridge nsenter --net="/run/netns/$netns"
berthctl load -q -i "$work/image.tar" >/dev/null

# Each sanity-checked once, outside the timing.
berthctl run --rm "$image" true || die "berthctl run failed: $(tail -5 "$work/imaged.log")"
run_opts="--ulimit nofile=1024:1024 --ulimit nproc=4096:4096"
podman_in run --rm $run_opts "$podman_image" true || die "podman run failed"

say "timing run --rm IMAGE true, bridge and none ($RUNS runs each)"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/run-1.json" \
    -n berth-bridge "$BIN/berthctl --address $sock run --rm $image true" \
    -n berth-none "$BIN/berthctl --address $sock run --rm --network none $image true" \
    -n podman-bridge "nsenter -t $holder -m --net=/run/netns/$netns podman $podman_flags run --rm $run_opts $podman_image true" \
    -n podman-none "nsenter -t $holder -m --net=/run/netns/$netns podman $podman_flags run --rm $run_opts --network none $podman_image true" >&2

b_bridge=$(median_ms berth-bridge)
b_none=$(median_ms berth-none)
p_bridge=$(median_ms podman-bridge)
p_none=$(median_ms podman-none)
cost() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a - b}'; }
b_cost=$(cost "$b_bridge" "$b_none")
p_cost=$(cost "$p_bridge" "$p_none")
cat <<EOT

run --rm IMAGE true (median of $RUNS runs, ms)    bridge     none    network cost
  berthctl (CNI through berth-imaged)       $(printf %8.1f "$b_bridge") $(printf %8.1f "$b_none") $(printf %10s "$b_cost")
  podman 4.3 (CNI)                          $(printf %8.1f "$p_bridge") $(printf %8.1f "$p_none") $(printf %10s "$p_cost")
  network cost berth ÷ podman               $(awk -v a="$b_cost" -v b="$p_cost" 'BEGIN {printf "%.2f", a / b}')   (goal ≤ 0.5)
EOT
