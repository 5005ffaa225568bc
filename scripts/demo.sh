#!/usr/bin/env bash
# The main job: set up, build a busybox-static bundle, and `berth run` it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

berth=target/x86_64-unknown-linux-gnu/debug/berth
bundle=.work/demo-bundle
rm -rf "$bundle"
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/dev" "$bundle/rootfs/sys"
cp /bin/busybox "$bundle/rootfs/bin/"
for applet in sh echo cat hostname id ls; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
"$berth" spec --bundle "$bundle"
jq '.process.terminal = false
    | .process.args = ["/bin/sh", "-c", "echo \"hello from $(hostname), $(id)\"; grep -E \"^(CapEff|NoNewPrivs)\" /proc/self/status"]' \
    "$bundle/config.json" > "$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

echo "+ berth run --bundle $bundle demo-$$"
"$berth" --root .work/state run --bundle "$bundle" "demo-$$"
