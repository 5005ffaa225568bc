#!/usr/bin/env bash
# CRI benchmark: what kubelet waits for when it starts a pod, through
# berth-imaged's CRI service (its shim, berth) and through Debian's
# containerd 1.6 CRI plugin (runc shim, runc), side by side in one run:
#   - a pod with one container, from RunPodSandbox to the container's
#     process running (StartContainer answered), and its teardown (Stop and
#     Remove of the container, then of the pod): medians of ROUNDS cycles;
#   - each daemon's RSS, and its shims', with PODS such pods running.
# Both run in one network namespace the script makes (each with its own
# bridge from Debian's CNI plugins), both pull the same busybox image from
# a docker-registry on that namespace's 127.0.0.1; containerd's sandboxes
# run a busybox `sleep` as their pause image. The client is the same for
# both: integration/examples/cri_bench.rs.
#
# Run as root:  bench/cri.sh
# Environment:  BIN (berth's binaries; release builds by default), CLIENT
#               (the cri_bench example), ROUNDS (20), PODS (50).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu
BIN=$(realpath -m "${BIN:-$target/release}")
CLIENT=$(realpath -m "${CLIENT:-$target/release/examples/cri_bench}")
ROUNDS=${ROUNDS:-20}
PODS=${PODS:-50}

die() { echo "cri.sh: $*" >&2; exit 1; }
say() { echo "cri.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in containerd containerd-shim-runc-v2 runc docker-registry skopeo ip nsenter unshare jq \
    /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /bin/busybox; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x $CLIENT ]] || die "no $CLIENT (cargo build --release -p berth-integration --example cri_bench)"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-cri-bench.XXXXXX")
netns=berth-cri-bench-$$
registry=
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_check_berth

cleanup() {
    set +e
    bench_stop_imaged
    bench_stop_containerd
    [[ -n $registry ]] && kill "$registry" 2>/dev/null && wait "$registry" 2>/dev/null
    ip netns delete "$netns" 2>/dev/null
    [[ -n ${KEEP:-} ]] && cp "$work"/*.log /work/logs/ 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# (nsenter, not `ip netns exec`: that one hides the cgroup mounts behind a new /sys.)
in_netns() { nsenter --net="/run/netns/$netns" "$@"; }
ip netns add "$netns"
ip -n "$netns" link set lo up

# The registry, and the two images in it: the workload and containerd's pause.
cat >"$work/registry.yml" <<EOT
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:5000}
log: {level: error}
EOT
in_netns docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry=$!
image=127.0.0.1:5000/bench/busybox:1
pause=127.0.0.1:5000/bench/pause:1
bench_busybox_image "$image"
BUSYBOX_OCI_CMD='["/bin/sleep","2147483647"]' busybox_oci_archive "$work/pause" "$pause" "$work/pause.tar" sleep
for _ in $(seq 100); do in_netns busybox wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null && break; sleep 0.05; done
for pair in "$work/image.tar:$image" "$work/pause.tar:$pause"; do
    in_netns skopeo copy -q --dest-tls-verify=false "oci-archive:${pair%%:*}:${pair#*:}" "docker://${pair#*:}" ||
        die "cannot push ${pair#*:}"
done

# containerd's CRI plugin, on the same CNI plugins.
mkdir -p "$work/cni" "$work/logs"
cat >"$work/cni/10-bench.conflist" <<EOT
{"cniVersion": "0.4.0", "name": "bench", "plugins": [
  {"type": "bridge", "bridge": "cri-bench0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOT
CONTAINERD_NETNS=$netns CONTAINERD_CRI=$(
    cat <<EOT
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  # Pods ask for a lower oom_score_adj than this machine's root may set
  # (no CAP_SYS_RESOURCE here): clamped to the daemon's own, as rootless does.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:5000"]
    endpoint = ["http://127.0.0.1:5000"]
EOT
) bench_start_containerd

berth_cri=$work/cri.sock
berth_client() { CRI_BENCH_LOGS=$work/logs in_netns "$CLIENT" "$berth_cri" "$image" "$@"; }
containerd_client() {
    CRI_BENCH_LOGS=$work/logs nsenter -t "$holder" -m -n "$CLIENT" /run/containerd/containerd.sock "$image" "$@"
}

# Each sanity-checked (and its image pulled) outside the figures.
containerd_client cycle 1 >/dev/null || die "the containerd pod failed: $(tail -5 "$work/containerd.log")"
bench_start_imaged bridge nsenter --net="/run/netns/$netns"
for _ in $(seq 100); do [[ -S $berth_cri ]] && break; sleep 0.05; done
[[ -S $berth_cri ]] || die "berth-imaged serves no CRI socket at $berth_cri: $(tail -3 "$work/imaged.log")"

berth_client cycle 1 >/dev/null || die "the berth pod failed: $(tail -5 "$work/imaged.log")"

say "$ROUNDS pod cycles each, alternating"
for round in $(seq "$ROUNDS"); do
    berth_client cycle 1 >>"$work/berth.times"
    containerd_client cycle 1 >>"$work/containerd.times"
done
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
column_median() { awk -v c="$2" '{print $c}' "$1" | median; }

rss_kib() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status"; }
sum_rss() { local total=0 pid; for pid in "$@"; do total=$((total + $(rss_kib "$pid"))); done; echo "$total"; }
held() { # SIDE → starts PODS pods through it, measures, removes them
    local side=$1 client pid daemon shims=()
    if [[ $side == berth ]]; then client=berth_client daemon=$imaged; else client=containerd_client daemon=$containerd; fi
    coproc HOLD { "$client" hold "$PODS"; }
    read -r line <&"${HOLD[0]}" || die "$side: the $PODS pods did not start"
    [[ $line == ready ]] || die "$side: $line"
    if [[ $side == berth ]]; then
        mapfile -t shims < <(pgrep -f "^[^ ]*containerd-shim-berth-v2 .*$work" || true)
    else
        mapfile -t shims < <(bench_in_holder containerd-shim)
    fi
    echo "$side $(rss_kib "$daemon") ${#shims[@]} $(sum_rss "${shims[@]}")" >>"$work/held"
    pid=$HOLD_PID
    exec {HOLD[1]}>&-
    wait "$pid"
}
say "$PODS pods held by each"
held berth
held containerd

b_start=$(column_median "$work/berth.times" 1)
c_start=$(column_median "$work/containerd.times" 1)
b_down=$(column_median "$work/berth.times" 2)
c_down=$(column_median "$work/containerd.times" 2)
read -r _ b_rss b_shims b_shim_rss < <(grep '^berth ' "$work/held")
read -r _ c_rss c_shims c_shim_rss < <(grep '^containerd ' "$work/held")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
cat <<EOT

one pod, one container (median of $ROUNDS, ms)   berth   containerd   berth ÷ containerd
  RunPodSandbox → container running          $(printf %8.1f "$b_start") $(printf %12.1f "$c_start")   $(ratio "$b_start" "$c_start")   (goal ≤ 0.5)
  teardown (container, then pod)             $(printf %8.1f "$b_down") $(printf %12.1f "$c_down")   $(ratio "$b_down" "$c_down")
$PODS pods running
  daemon RSS (MiB)                           $(printf %8s "$(mib "$b_rss")") $(printf %12s "$(mib "$c_rss")")   $(ratio "$b_rss" "$c_rss")   (goal ≤ 0.33)
  shims' RSS (MiB; $b_shims / $c_shims shims)           $(printf %8s "$(mib "$b_shim_rss")") $(printf %12s "$(mib "$c_shim_rss")")   $(ratio "$b_shim_rss" "$c_shim_rss")
EOT
