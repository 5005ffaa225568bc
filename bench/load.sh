#!/usr/bin/env bash
# Load benchmark: N long-running containers started by P parallel clients,
# through berthctl (berth-imaged → containerd-shim-berth-v2 → berth) and
# through `ctr run -d` (Debian's containerd → containerd-shim-runc-v2 → runc),
# side by side in one run. For each: the wall time to start them all, the
# daemon's RSS and the shims' total RSS with all of them running, the
# latency of a listing (`berthctl ps` / `ctr task ls`), the wall time to
# remove them all, and what is left behind afterwards (mounts, cgroups, the
# daemon's descriptors, shim processes): every figure of that last group
# must be 0 or the daemon's baseline.
#
# Both daemons are private (see bench/ctl.sh); both get the same busybox
# image, imported from one OCI archive made here.
#
# Run as root:  bench/load.sh
# Environment:  BIN (directory of berthctl, berth-imaged, the shim and berth;
#               release builds by default), CONTAINERS (300), PARALLEL (8).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release}")
CONTAINERS=${CONTAINERS:-300}
PARALLEL=${PARALLEL:-8}

die() { echo "load.sh: $*" >&2; exit 1; }
say() { echo "load.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in containerd ctr containerd-shim-runc-v2 runc hyperfine jq unshare nsenter xargs /bin/busybox; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-load-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_check_berth

cleanup() {
    set +e
    bench_stop_imaged
    bench_stop_containerd
    rm -rf "$work"
}
trap cleanup EXIT

image=docker.io/library/berth-bench-busybox:1
bench_busybox_image "$image"

# Loopback-only containers, as `ctr run`'s are: like is compared with like,
# and the machine's network is left alone.
bench_start_imaged none
berthctl load -q -i "$work/image.tar" >/dev/null
bench_start_containerd

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 | wc -l; }
# Shims of one side: berth's carry its socket's path on their command line;
# containerd's live in its private mount namespace.
berth_shims() { pgrep -f "^[^ ]*containerd-shim-berth-v2 .*$work" || true; }
containerd_shims() {
    local ns pid
    ns=$(readlink "/proc/$holder/ns/mnt")
    for pid in $(pgrep -f containerd-shim-runc-v2 || true); do
        if [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$ns" ]]; then echo "$pid"; fi
    done
}
sum_rss() { local total=0 pid; for pid in "$@"; do total=$((total + $(rss_kib "$pid"))); done; echo "$total"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a / b}'; }
# Cgroup directories in the memory hierarchy (v1) or the unified one.
cgroups() { find /sys/fs/cgroup/memory /sys/fs/cgroup/unified -type d 2>/dev/null | wc -l; }
berth_mounts() { grep -c "$work" /proc/self/mountinfo || true; }
containerd_mounts() { grep -c overlay "/proc/$holder/mountinfo" || true; }

# Sanity, outside the figures.
berthctl run --rm "$image" true || die "berthctl run failed: $(tail -5 "$work/imaged.log")"
ctr run --rm --runtime io.containerd.runc.v2 "$image" sanity true || die "ctr run failed"

berth_fds0=$(fds "$imaged")
cgroups0=$(cgroups)
berth_mounts0=$(berth_mounts)
containerd_mounts0=$(containerd_mounts)

say "berth: $CONTAINERS containers from $PARALLEL clients"
t=$(now)
seq "$CONTAINERS" | xargs -P "$PARALLEL" -I{} "$BIN/berthctl" --address "$sock" run -d --name load-{} "$image" sleep 100000 >/dev/null
berth_start=$(elapsed "$t")
[[ $(berthctl ps -q | wc -l) == "$CONTAINERS" ]] || die "berth: $(berthctl ps -q | wc -l) of $CONTAINERS running"
mapfile -t shims < <(berth_shims)
berth_daemon_rss=$(rss_kib "$imaged")
berth_shim_rss=$(sum_rss "${shims[@]}")
berth_shim_count=${#shims[@]}
hyperfine -N --warmup 2 --runs 10 --export-json "$work/run-berth-ps.json" -n berth-ps \
    "$BIN/berthctl --address $sock ps" >&2
say "berth: removing them"
t=$(now)
berthctl ps -a -q | xargs -P "$PARALLEL" -n 10 "$BIN/berthctl" --address "$sock" rm -f >/dev/null
berth_remove=$(elapsed "$t")
sleep 1
berth_left_shims=$(berth_shims | wc -l)
if ((berth_left_shims)); then for p in $(berth_shims); do ps -o pid,ppid,etime,args -p "$p" >&2; done; fi
berth_left_mounts=$(($(berth_mounts) - berth_mounts0))
berth_left_fds=$(($(fds "$imaged") - berth_fds0))
berth_left_cgroups=$(($(cgroups) - cgroups0))

say "containerd: $CONTAINERS containers from $PARALLEL clients"
ctr_bin=$(command -v ctr)
t=$(now)
seq "$CONTAINERS" | xargs -P "$PARALLEL" -I{} nsenter -t "$holder" -m "$ctr_bin" \
    --address /run/containerd/containerd.sock -n bench run -d --runtime io.containerd.runc.v2 \
    "$image" load-{} sleep 100000 >/dev/null
ctr_start=$(elapsed "$t")
running=$(ctr task ls | grep -c RUNNING || true)
[[ $running == "$CONTAINERS" ]] || die "containerd: $running of $CONTAINERS running"
mapfile -t shims < <(containerd_shims)
ctr_daemon_rss=$(rss_kib "$containerd")
ctr_shim_rss=$(sum_rss "${shims[@]}")
ctr_shim_count=${#shims[@]}
cat >"$work/ctr-ps.sh" <<EOT
#!/bin/sh
exec nsenter -t $holder -m ctr --address /run/containerd/containerd.sock -n bench task ls
EOT
chmod +x "$work/ctr-ps.sh"
hyperfine -N --warmup 2 --runs 10 --export-json "$work/run-ctr-ps.json" -n ctr-ps "$work/ctr-ps.sh" >&2
say "containerd: removing them"
cat >"$work/ctr-rm.sh" <<EOT
#!/bin/sh
# ctr's rm -f: kill, delete the task, remove the container.
for id; do
    nsenter -t $holder -m ctr --address /run/containerd/containerd.sock -n bench task delete --force "\$id" >/dev/null 2>&1
    nsenter -t $holder -m ctr --address /run/containerd/containerd.sock -n bench containers rm "\$id" >/dev/null
done
EOT
chmod +x "$work/ctr-rm.sh"
t=$(now)
seq "$CONTAINERS" | sed 's/^/load-/' | xargs -P "$PARALLEL" -n 10 "$work/ctr-rm.sh"
ctr_remove=$(elapsed "$t")
sleep 1
ctr_left_shims=$(containerd_shims | wc -l)
ctr_left_mounts=$(($(containerd_mounts) - containerd_mounts0))
ctr_left_cgroups=$(($(cgroups) - cgroups0))

berth_ps=$(median_ms berth-ps)
ctr_ps=$(median_ms ctr-ps)
cat <<EOT

$CONTAINERS containers (sleep), $PARALLEL parallel clients        berth      containerd   berth ÷ containerd
  start all (s)                                  $(printf %9s "$berth_start")  $(printf %11s "$ctr_start")   $(ratio "$berth_start" "$ctr_start")
  daemon RSS, all running (MiB)                  $(printf %9s "$(mib "$berth_daemon_rss")")  $(printf %11s "$(mib "$ctr_daemon_rss")")   $(ratio "$berth_daemon_rss" "$ctr_daemon_rss")
  shims' RSS, all running (MiB, $berth_shim_count / $ctr_shim_count shims)  $(printf %9s "$(mib "$berth_shim_rss")")  $(printf %11s "$(mib "$ctr_shim_rss")")   $(ratio "$berth_shim_rss" "$ctr_shim_rss")
  per container, daemon + shim (MiB)             $(printf %9s "$(mib $(((berth_daemon_rss + berth_shim_rss) / CONTAINERS)))")  $(printf %11s "$(mib $(((ctr_daemon_rss + ctr_shim_rss) / CONTAINERS)))")   $(ratio "$((berth_daemon_rss + berth_shim_rss))" "$((ctr_daemon_rss + ctr_shim_rss))")
  list them: ps / task ls (median ms)            $(printf %9.1f "$berth_ps")  $(printf %11.1f "$ctr_ps")   $(ratio "$berth_ps" "$ctr_ps")
  remove all (s)                                 $(printf %9s "$berth_remove")  $(printf %11s "$ctr_remove")   $(ratio "$berth_remove" "$ctr_remove")
left behind after removal
  shim processes                                 $(printf %9s "$berth_left_shims")  $(printf %11s "$ctr_left_shims")
  mounts                                         $(printf %9s "$berth_left_mounts")  $(printf %11s "$ctr_left_mounts")
  cgroup directories                             $(printf %9s "$berth_left_cgroups")  $(printf %11s "$ctr_left_cgroups")
  daemon descriptors above its baseline          $(printf %9s "$berth_left_fds")
EOT
if ((berth_left_shims || berth_left_mounts || berth_left_fds > 0 || berth_left_cgroups > 0)); then
    die "berth left something behind (see above)"
fi
