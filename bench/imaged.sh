#!/usr/bin/env bash
# Image pull benchmark: berth-imaged side by side with containerd 1.6, over the floor.
#
# One registry (docker-registry on 127.0.0.1) holds a 3-layer Debian image: bookworm minbase
# from debootstrap (gzip), a small layer of changes (gzip) and a zstd layer. Each run, from an
# empty store (daemon restarted on a fresh root, not timed):
#   berth       the `pull` example client → berth-imaged Images.Pull (fetch + verify + unpack)
#   containerd  ctr image pull --plain-http (fetch + verify + unpack into overlayfs)
#   floor       tar -x of the same three layer blobs in sequence into one directory
# Runs interleave (berth, containerd, floor, berth, …); medians are reported. Then the idle
# RSS of each daemon, freshly started and after one pull.
# Prints a table, writes bench/results/imaged.json. See bench/README.md.
#
# Run as root:  bench/imaged.sh
# Environment:  IMAGED, PULL (binaries), RUNS (5), OUT (results file),
#               DEBIAN_TAR (a cached debootstrap tar; made with debootstrap if missing)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
release=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release
IMAGED=${IMAGED:-$release/berth-imaged}
PULL=${PULL:-$release/examples/pull}
RUNS=${RUNS:-5}
OUT=${OUT:-$here/results/imaged.json}
DEBIAN_TAR=${DEBIAN_TAR:-/var/cache/berth-tests/debian-bookworm-minbase.tar}

die() { echo "imaged.sh: $*" >&2; exit 1; }
say() { echo "imaged.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root (overlay snapshots, device nodes)"
for tool in docker-registry skopeo containerd ctr jq zstd gzip sha256sum tar; do
    command -v "$tool" >/dev/null || die "missing $tool (./scripts/setup.sh installs it)"
done
[[ -x $IMAGED && -x $PULL ]] ||
    die "build first: cargo build --release -p berth-imaged --bin berth-imaged --example pull"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-imaged.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The Debian base, built once per machine (the integration tests share the cache).
if [[ ! -r $DEBIAN_TAR ]]; then
    say "debootstrap --variant=minbase bookworm (once; about 40 s)"
    mkdir -p "$(dirname "$DEBIAN_TAR")"
    debootstrap --variant=minbase bookworm "$work/debootstrap" http://deb.debian.org/debian >/dev/null
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$work/debootstrap" -cf "$DEBIAN_TAR.tmp" .
    mv "$DEBIAN_TAR.tmp" "$DEBIAN_TAR"
    rm -rf "$work/debootstrap"
fi

# --- the image: an OCI layout, pushed with skopeo -------------------------------------------
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
blob() { # FILE → prints its digest, stores it under blobs/
    local d; d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$layout/blobs/sha256/$d"; echo "sha256:$d"
}
layers=() diffs=() types=() sizes=()
add_layer() { # TAR COMPRESSION(gzip|zstd)
    local tar=$1 c=$2 out
    out=$work/layer-${#layers[@]}.$c
    if [[ $c == gzip ]]; then gzip -c "$tar" >"$out"; else zstd -q -c "$tar" >"$out"; fi
    diffs+=("sha256:$(sha256sum "$tar" | cut -d' ' -f1)")
    layers+=("$(blob "$out")") sizes+=("$(stat -c %s "$out")")
    types+=("application/vnd.oci.image.layer.v1.tar+$c")
}
add_layer "$DEBIAN_TAR" gzip
mkdir -p "$work/l2/usr/local/bin" "$work/l2/etc" "$work/l2/var/log"
echo tool >"$work/l2/usr/local/bin/tool"; ln "$work/l2/usr/local/bin/tool" "$work/l2/usr/local/bin/tool-link"
: >"$work/l2/etc/.wh.motd"; : >"$work/l2/var/log/.wh..wh..opq"; echo log >"$work/l2/var/log/berth.log"
tar --numeric-owner -C "$work/l2" -cf "$work/l2.tar" .
add_layer "$work/l2.tar" gzip
mkdir -p "$work/l3/usr/local/share/berth"
head -c 4M /dev/urandom | base64 >"$work/l3/usr/local/share/berth/data.txt"
tar --numeric-owner -C "$work/l3" -cf "$work/l3.tar" .
add_layer "$work/l3.tar" zstd

jq -n --argjson d "$(printf '%s\n' "${diffs[@]}" | jq -R . | jq -s .)" \
    '{architecture:"amd64",os:"linux",config:{Cmd:["/bin/bash"]},rootfs:{type:"layers",diff_ids:$d}}' \
    >"$work/config.json"
config=$(blob "$work/config.json")
layers_json=$(for i in "${!layers[@]}"; do
    jq -n --arg t "${types[$i]}" --arg d "${layers[$i]}" --argjson s "${sizes[$i]}" \
        '{mediaType:$t,digest:$d,size:$s}'
done | jq -s .)
jq -n --arg c "$config" --argjson cs "$(stat -c %s "$work/config.json")" --argjson l "$layers_json" \
    '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
      config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$c,size:$cs},layers:$l}' \
    >"$work/manifest.json"
manifest=$(blob "$work/manifest.json")
jq -n --arg m "$manifest" --argjson s "$(stat -c %s "$work/manifest.json")" \
    '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",
      digest:$m,size:$s,annotations:{"org.opencontainers.image.ref.name":"12"}}]}' \
    >"$layout/index.json"

# A free port: one nothing answers on.
while port=$((20000 + RANDOM % 40000)); (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do :; done
cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:12" "docker://127.0.0.1:$port/debian:12"
image=127.0.0.1:$port/debian:12
say "image $image: $(du -ch "$work"/layer-* | tail -1 | cut -f1) of layers, $(du -h "$DEBIAN_TAR" | cut -f1) unpacked base"

# --- daemons ------------------------------------------------------------------------------------
imaged_pid='' containerd_pid=''
wait_socket() { for _ in $(seq 400); do [[ -S $1 ]] && return 0; sleep 0.025; done; die "no socket $1"; }
stop_pid() {
    if [[ -n $1 ]]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
start_imaged() {
    stop_pid "$imaged_pid"
    rm -rf "$work/berth"
    "$IMAGED" --root "$work/berth/lib" --socket "$work/berth/berth.sock" 2>>"$work/imaged.log" &
    imaged_pid=$!; pids+=("$imaged_pid")
    wait_socket "$work/berth/berth.sock"
}
start_containerd() {
    stop_pid "$containerd_pid"
    # Snapshots are not mounted after a pull, so the root can simply go.
    rm -rf "$work/containerd"
    mkdir -p "$work/containerd"
    cat >"$work/containerd/config.toml" <<EOF
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
[grpc]
  address = "$work/containerd/containerd.sock"
[ttrpc]
  address = "$work/containerd/containerd.sock.ttrpc"
EOF
    containerd --config "$work/containerd/config.toml" >>"$work/containerd.log" 2>&1 &
    containerd_pid=$!; pids+=("$containerd_pid")
    wait_socket "$work/containerd/containerd.sock"
    # The socket appears before every plugin is loaded.
    for _ in $(seq 200); do ctr --address "$work/containerd/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.05; done
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
now_ns() { date +%s%N; }

declare -A times=([berth]='' [containerd]='' [floor]='')
for run in $(seq "$RUNS"); do
    start_imaged
    t0=$(now_ns); "$PULL" "$work/berth/berth.sock" "$image" >/dev/null; t1=$(now_ns)
    times[berth]+="$(( (t1 - t0) / 1000000 )) "
    start_containerd
    t0=$(now_ns)
    ctr --address "$work/containerd/containerd.sock" image pull --plain-http "$image" >/dev/null
    t1=$(now_ns)
    times[containerd]+="$(( (t1 - t0) / 1000000 )) "
    rm -rf "$work/floor"; mkdir "$work/floor"
    t0=$(now_ns)
    for i in "${!layers[@]}"; do
        f=$work/layer-$i.${types[$i]##*+}
        if [[ $f == *.zstd ]]; then zstd -q -dc "$f"; else gzip -dc "$f"; fi |
            tar --numeric-owner --xattrs --xattrs-include='*' -xpf - -C "$work/floor"
    done
    t1=$(now_ns)
    times[floor]+="$(( (t1 - t0) / 1000000 )) "
    last() { local a=($1); echo "${a[-1]}"; }
    say "run $run: berth $(last "${times[berth]}") containerd $(last "${times[containerd]}") floor $(last "${times[floor]}") ms"
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Idle RSS: fresh, and after one pull (settled for a second).
start_imaged; sleep 1; imaged_fresh=$(rss_kb "$imaged_pid")
"$PULL" "$work/berth/berth.sock" "$image" >/dev/null; sleep 1; imaged_pulled=$(rss_kb "$imaged_pid")
start_containerd; sleep 1; containerd_fresh=$(rss_kb "$containerd_pid")
ctr --address "$work/containerd/containerd.sock" image pull --plain-http "$image" >/dev/null
sleep 1; containerd_pulled=$(rss_kb "$containerd_pid")

b=$(median "${times[berth]}") c=$(median "${times[containerd]}") f=$(median "${times[floor]}")
printf '\npull + unpack of %s (3 layers), median of %s runs, ms\n' "$image" "$RUNS"
printf '  %-11s %6s\n' floor "$f" berth "$b" containerd "$c"
printf '  berth / containerd = %s\n' "$(awk -v b="$b" -v c="$c" 'BEGIN {printf "%.2f", b / c}')"
printf '\nidle RSS, MB (fresh / after one pull)\n'
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
printf '  %-11s %6s / %s\n' berth "$(mb "$imaged_fresh")" "$(mb "$imaged_pulled")" \
    containerd "$(mb "$containerd_fresh")" "$(mb "$containerd_pulled")"

mkdir -p "$(dirname "$OUT")"
jq -n --arg image "$image" --argjson runs "$RUNS" \
    --arg berth "${times[berth]}" --arg containerd "${times[containerd]}" --arg floor "${times[floor]}" \
    --argjson bf "$imaged_fresh" --argjson bp "$imaged_pulled" \
    --argjson cf "$containerd_fresh" --argjson cp "$containerd_pulled" \
    --arg cv "$(containerd --version)" \
    '{image:$image, runs:$runs, containerd:$cv,
      pull_ms:{berth:($berth|split(" ")|map(select(.!=""))|map(tonumber)),
               containerd:($containerd|split(" ")|map(select(.!=""))|map(tonumber)),
               floor:($floor|split(" ")|map(select(.!=""))|map(tonumber))},
      rss_kb:{berth:{fresh:$bf,after_pull:$bp},containerd:{fresh:$cf,after_pull:$cp}}}' >"$OUT"
say "wrote $OUT"
