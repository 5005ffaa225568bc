#!/usr/bin/env bash
# The main job, through berthctl: set up and build, start a private
# berth-imaged (its own root, socket and runtime state; this workspace's shim
# and runtime), `berthctl load` a busybox-static image built here as an OCI
# archive (no registry needed), and `berthctl run --rm` it. The daemon is
# stopped and its directories removed when the script exits, however it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

# Absolute: the daemon starts the shim from each container's bundle directory.
bin=$(realpath "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/debug")
berthctl=$bin/berthctl
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-demo.XXXXXX")
daemon=
cleanup() {
    set +e
    if [[ -n $daemon ]]; then
        for id in $("$berthctl" --address "$work/berth.sock" ps -a -q 2>/dev/null); do
            "$berthctl" --address "$work/berth.sock" rm -f "$id" >/dev/null 2>&1
        done
        kill "$daemon" 2>/dev/null
        wait "$daemon" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The image: busybox-static as one layer of a hand-written OCI image layout.
source scripts/busybox-oci.sh
busybox_oci_archive "$work/image" busybox:demo "$work/busybox.tar" sh echo cat hostname id ls grep

# The daemon, private to this run.
# Containers get loopback only: the demo leaves the machine's network as it
# is (no bridge, no NAT rules; `--default-network bridge` is docker's way).
"$bin/berth-imaged" --root "$work/root" --socket "$work/berth.sock" --default-network none \
    --shim "$bin/containerd-shim-berth-v2" --runtime "$bin/berth" --runtime-root "$work/runtime" --state "$work/state" \
    2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 200); do
    "$berthctl" --address "$work/berth.sock" version >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.05
done
ctl() { echo "+ berthctl $*" >&2; "$berthctl" --address "$work/berth.sock" "$@"; }

ctl load -i "$work/busybox.tar"
ctl images
ctl run --rm --memory 64m --hostname demo busybox:demo \
    sh -c 'echo "hello from $(hostname), $(id)"; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status'
