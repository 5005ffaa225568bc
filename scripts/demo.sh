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
mkdir -p "$work/rootfs/bin" "$work/rootfs/"{proc,sys,dev,tmp,etc} "$work/layout/blobs/sha256"
cp /bin/busybox "$work/rootfs/bin/"
for applet in sh echo cat hostname id ls grep; do ln -s busybox "$work/rootfs/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$work/rootfs/etc/passwd"
printf 'root:x:0:\n' >"$work/rootfs/etc/group"
blob() { # FILE → stores it under its digest, prints "digest size"
    local d
    d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$work/layout/blobs/sha256/$d"
    echo "$d $(stat -c%s "$1")"
}
tar -C "$work/rootfs" --owner=0 --group=0 -cf "$work/layer.tar" .
read -r layer layer_size < <(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$layer" >"$work/config.json"
read -r config config_size < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
read -r manifest manifest_size < <(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"busybox:demo"}}]}' \
    "$manifest" "$manifest_size" >"$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
tar -C "$work/layout" -cf "$work/busybox.tar" .

# The daemon, private to this run.
"$bin/berth-imaged" --root "$work/root" --socket "$work/berth.sock" \
    --shim "$bin/containerd-shim-berth-v2" --runtime "$bin/berth" --runtime-root "$work/runtime" \
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
