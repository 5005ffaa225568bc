# Shared by bench/ctl.sh and bench/shim.sh (sourced, not run): the busybox
# image both import, a private containerd, and the median of hyperfine rounds.
# The caller sets `work` (its scratch directory) and `die` before sourcing.

holder=
containerd=

# ctr against the private containerd, in its mount namespace.
ctr() { nsenter -t "$holder" -m ctr --address /run/containerd/containerd.sock -n bench "$@"; }

# shellcheck source=scripts/busybox-oci.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/busybox-oci.sh"

# IMAGE → $work/image.tar, the busybox image both daemons import.
bench_busybox_image() {
    busybox_oci_archive "$work/image" "$1" "$work/image.tar" sh true sleep
}

# [PATH-PREFIX] → a private containerd with its own root, state and sockets
# in a private mount namespace with a tmpfs /run (its shims put sockets in
# /run/containerd/s), $work/image.tar imported. Sets holder and containerd.
bench_start_containerd() {
    local path_prefix=${1:-}
    cat >"$work/config.toml" <<EOT
version = 2
root = "$work/root"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
EOT
    unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run && exec sleep 100000' &
    holder=$!
    for _ in $(seq 100); do grep -q '^tmpfs /run ' "/proc/$holder/mounts" 2>/dev/null && break; sleep 0.05; done
    PATH=$path_prefix${path_prefix:+:}$PATH nsenter -t "$holder" -m containerd --config "$work/config.toml" \
        >"$work/containerd.log" 2>&1 &
    containerd=$!
    for _ in $(seq 200); do ctr version >/dev/null 2>&1 && break; sleep 0.05; done
    ctr images import "$work/image.tar" >/dev/null || die "ctr images import failed: $(tail -5 "$work/containerd.log")"
}

# Kills what the private containerd still runs, then it and its namespace.
bench_stop_containerd() {
    if [[ -n $containerd ]]; then
        for id in $(ctr task ls -q 2>/dev/null); do ctr task kill -s KILL "$id" >/dev/null 2>&1; done
        sleep 0.5
        for id in $(ctr task ls -q 2>/dev/null); do ctr task delete --force "$id" >/dev/null 2>&1; done
        for id in $(ctr containers ls -q 2>/dev/null); do ctr containers rm "$id" >/dev/null 2>&1; done
        kill "$containerd" 2>/dev/null
        wait "$containerd" 2>/dev/null
    fi
    [[ -n $holder ]] && kill "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
}

# NAME → the median over every round's runs ($work/run-*.json), in ms.
median_ms() {
    jq -s --arg n "$1" '[.[].results[] | select(.command == $n) | .times[]] | sort |
        (if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end) * 1000' \
        "$work"/run-*.json
}
