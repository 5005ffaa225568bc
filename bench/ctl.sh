#!/usr/bin/env bash
# berthctl benchmark: `berthctl run --rm IMAGE true` (berth-imaged →
# containerd-shim-berth-v2 → berth) side by side with `ctr run --rm IMAGE true`
# (Debian's containerd → containerd-shim-runc-v2 → runc), timed with hyperfine
# in alternating rounds; prints both medians and the ratio (goal: ≤ 0.33).
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
for b in berthctl berth-imaged containerd-shim-berth-v2 berth; do
    [[ -x $BIN/$b ]] || die "no $BIN/$b (cargo build --release -p berth-ctl -p berth-imaged -p berth-shim -p berth-runtime)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-ctl-bench.XXXXXX")
holder=
containerd=
imaged=
sock=$work/berth.sock
ctr() { nsenter -t "$holder" -m ctr --address /run/containerd/containerd.sock -n bench "$@"; }
berthctl() { "$BIN/berthctl" --address "$sock" "$@"; }

cleanup() {
    set +e
    if [[ -n $imaged ]]; then
        for id in $(berthctl ps -a -q 2>/dev/null); do berthctl rm -f "$id" >/dev/null 2>&1; done
        kill "$imaged" 2>/dev/null
        wait "$imaged" 2>/dev/null
    fi
    if [[ -n $containerd ]]; then
        for id in $(ctr task ls -q 2>/dev/null); do ctr task delete --force "$id" >/dev/null 2>&1; done
        for id in $(ctr containers ls -q 2>/dev/null); do ctr containers rm "$id" >/dev/null 2>&1; done
        kill "$containerd" 2>/dev/null
        wait "$containerd" 2>/dev/null
    fi
    [[ -n $holder ]] && kill "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The image: a busybox-static rootfs as a hand-written OCI layout.
mkdir -p "$work/rootfs/bin" "$work/rootfs/"{proc,sys,dev,tmp,etc} "$work/layout/blobs/sha256"
cp /bin/busybox "$work/rootfs/bin/"
for applet in sh true sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
blob() { # FILE → prints "digest size" and stores it
    local d; d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$work/layout/blobs/sha256/$d"
    echo "$d $(stat -c%s "$1")"
}
tar -C "$work/rootfs" --owner=0 --group=0 -cf "$work/layer.tar" .
read -r ld ls < <(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$ld" >"$work/config.json"
read -r cd cs < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$ls" >"$work/manifest.json"
read -r md ms < <(blob "$work/manifest.json")
image=docker.io/library/berth-bench-busybox:1
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$md" "$ms" "$image" "$image" >"$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
tar -C "$work/layout" -cf "$work/image.tar" .

# The private berth-imaged.
"$BIN/berth-imaged" --root "$work/berth-root" --socket "$sock" \
    --shim "$BIN/containerd-shim-berth-v2" --runtime "$BIN/berth" --runtime-root "$work/berth-runtime" \
    2>"$work/imaged.log" &
imaged=$!
for _ in $(seq 200); do berthctl version >/dev/null 2>&1 && break; sleep 0.05; done
berthctl load -q -i "$work/image.tar" >/dev/null

# The private containerd.
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
nsenter -t "$holder" -m containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
containerd=$!
for _ in $(seq 200); do ctr version >/dev/null 2>&1 && break; sleep 0.05; done
ctr images import "$work/image.tar" >/dev/null

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
median_ms() { # NAME → median over every round's runs, in ms
    jq -s --arg n "$1" '[.[].results[] | select(.command == $n) | .times[]] | sort |
        (if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end) * 1000' \
        "$work"/run-*.json
}
berth_ms=$(median_ms berthctl)
ctr_ms=$(median_ms ctr)
ratio=$(awk -v a="$berth_ms" -v b="$ctr_ms" 'BEGIN {printf "%.2f", a / b}')
cat <<EOT

run --rm IMAGE true (median of $((RUNS / ROUNDS * ROUNDS)) runs in $ROUNDS alternating rounds, ms)
  berthctl → berth-imaged → berth shim → berth   $(printf %.1f "$berth_ms")
  ctr → containerd → runc shim → runc           $(printf %.1f "$ctr_ms")
  berthctl ÷ ctr                                $ratio   (goal ≤ 0.33)
EOT
