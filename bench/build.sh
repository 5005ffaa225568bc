#!/bin/sh
# Cold and fully cached builds of one 5-step Dockerfile, berthctl build
# beside podman build (Debian's podman), each on private storage, RUN steps
# without a network. Usage: bench/build.sh [RUNS] (as root; binaries from
# $BERTH_BIN, default target/debug). Prints the median wall time of each.
set -eu
RUNS=${1:-5}
BIN=${BERTH_BIN:-$(dirname "$0")/../target/x86_64-unknown-linux-gnu/debug}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-build-bench.XXXXXX")
# podman wants a short runroot.
RUNROOT=/run/berth-bb.$$
DAEMON_PID=
cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
    podman --root "$WORK/podman" --runroot "$RUNROOT" --storage-driver overlay rmi -af >/dev/null 2>&1 || true
    umount -R "$WORK/podman" 2>/dev/null || true
    rm -rf "$WORK" "$RUNROOT"
}
trap cleanup EXIT INT TERM

# A busybox base image, made by podman from a root filesystem tarball.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp" "$WORK/ctx"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for a in sh echo cat httpd mkdir ls; do ln -s busybox "$WORK/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/rootfs/etc/passwd"
echo 'root:x:0:' > "$WORK/rootfs/etc/group"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
# crun 1.8 refuses this hybrid-cgroup host; runc does not.
P="podman --root $WORK/podman --runroot $RUNROOT --storage-driver overlay --runtime runc"
$P import --change 'ENV PATH=/bin' "$WORK/rootfs.tar" localhost/busybox:bench >/dev/null
$P save --format oci-archive -o "$WORK/busybox.tar" localhost/busybox:bench >/dev/null

"$BIN/berth-imaged" --root "$WORK/berth" --socket "$WORK/berth.sock" --default-network none \
    --shim "$BIN/containerd-shim-berth-v2" --runtime "$BIN/berth" --runtime-root "$WORK/runtime" --state "$WORK/state" \
    >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
B="$BIN/berthctl --address $WORK/berth.sock"
for _ in $(seq 50); do [ -S "$WORK/berth.sock" ] && break; sleep 0.1; done
$B load -i "$WORK/busybox.tar" --name localhost/busybox:bench >/dev/null

echo '<h1>bench</h1>' > "$WORK/ctx/page.html"
cat > "$WORK/ctx/Dockerfile" <<'DF'
FROM localhost/busybox:bench
COPY page.html /www/index.html
RUN echo built > /www/built.txt
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
DF

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # NAME COMMAND...
    name=$1; shift
    for _ in $(seq "$RUNS"); do
        t0=$(now); "$@" >"$WORK/out" 2>&1 || { echo "$name failed:" >&2; cat "$WORK/out" >&2; exit 1; }; t1=$(now)
        echo "$t1 - $t0" | bc
    done | median | xargs printf "%-28s %6.3f s\n" "$name"
}
# What each builds, once, for the record.
$B build --no-cache -t bench:1 "$WORK/ctx" | sed 's/^/  berth| /'
measure "berthctl build (cold)" $B build --no-cache -t bench:1 "$WORK/ctx"
$B build -t bench:1 "$WORK/ctx" >/dev/null
measure "berthctl build (cached)" $B build -t bench:1 "$WORK/ctx"
measure "podman build (cold)" $P build --no-cache --network none -t bench:1 "$WORK/ctx"
$P build --network none -t bench:1 "$WORK/ctx" >/dev/null 2>&1
measure "podman build (cached)" $P build --network none -t bench:1 "$WORK/ctx"
