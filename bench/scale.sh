#!/usr/bin/env bash
# Scale benchmark: for each N in COUNTS, N long-running containers started
# by PARALLEL clients at once, then all removed, through
#   berth:      berthctl → berth-imaged → containerd-shim-berth-v2 → berth
#   containerd: ctr run -d → Debian's containerd → containerd-shim-runc-v2 → runc
#   podman:     podman run -d → conmon → runc (daemonless; up to PODMAN_MAX)
# side by side in one run. For each side and N: containers per second for
# the start and for the removal, the daemon's RSS and the shims' (conmon's)
# total RSS and PSS with all of them running, memory per container, the
# latency of a listing, and what is left behind after the removal (shims,
# mounts, cgroup directories, the daemon's descriptors): every figure of
# that last group must be 0 for berth, and the script fails otherwise.
#
# Memory per container is (daemon + shims) ÷ N, by RSS and by PSS. RSS counts
# a shim's binary pages once per shim although the kernel keeps them once;
# PSS shares them out, so it is what N more containers really cost.
#
# All three are private (see bench/lib.sh); all get the same busybox image,
# made here. Loopback-only containers everywhere (`--network none` for
# podman and berth; ctr's default).
#
# Run as root:  bench/scale.sh
# Environment:  BIN (directory of berthctl, berth-imaged, the shim and berth;
#               release builds by default), COUNTS ("100 500 1000"),
#               PARALLEL (8), PODMAN_MAX (100: podman's start is ~10× slower).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release}")
COUNTS=${COUNTS:-100 500 1000}
PARALLEL=${PARALLEL:-8}
PODMAN_MAX=${PODMAN_MAX:-100}

die() { echo "scale.sh: $*" >&2; exit 1; }
say() { echo "scale.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root"
for tool in containerd ctr containerd-shim-runc-v2 runc podman conmon hyperfine jq unshare nsenter xargs /bin/busybox; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-scale-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_check_berth

# podman with storage, state and temporary files of its own, in the private
# containerd's mount namespace (a tmpfs /run there; podman's /tmp is
# --tmpdir), with runc (crun refuses this host's hybrid cgroups).
pwork=/var/tmp/berth-scale-bench-podman-$$
podman_flags=(--root "$pwork/root" --runroot "$pwork/run" --tmpdir "$pwork/tmp" --runtime runc
    --cgroup-manager cgroupfs --events-backend file)
# The limits this sandbox allows (podman's defaults ask for more).
podman_run=(run --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
podman_in() { nsenter -t "$holder" -m podman "${podman_flags[@]}" "$@"; }

cleanup() {
    set +e
    bench_stop_imaged
    if [[ -n $holder ]]; then
        podman_in rm -af -t 0 >/dev/null 2>&1
        podman_in rmi -af >/dev/null 2>&1
    fi
    bench_stop_containerd
    rm -rf "$pwork" "$work"
}
trap cleanup EXIT

image=docker.io/library/berth-bench-busybox:1
podman_image=localhost/berth-bench-busybox:1
bench_busybox_image "$image"

bench_start_imaged none
berthctl load -q -i "$work/image.tar" >/dev/null
bench_start_containerd
mkdir -p "$pwork/tmp"
tar -C "$work/image/rootfs" -cf "$pwork/rootfs.tar" .
podman_in import -q "$pwork/rootfs.tar" "$podman_image" >/dev/null

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
per_second() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", n / s}'; }
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
pss_kib() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup"; }
fds() { find "/proc/$1/fd" -mindepth 1 | wc -l; }
sum_of() {
    local what=$1 total=0 pid
    shift
    for pid in "$@"; do
        if [[ $what == pss ]]; then total=$((total + $(pss_kib "$pid"))); else total=$((total + $(status_kib "$pid" VmRSS))); fi
    done
    echo "$total"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a / b}'; }
# berth's shims carry its socket's path on their command line; containerd's
# shims and conmon live in the private mount namespace.
berth_shims() { pgrep -f "^[^ ]*containerd-shim-berth-v2 .*$work" || true; }
# After the removal, every berth shim but the daemon's spare (the newest `-id spare-PID-N`, which
# waits for the next container) is a leftover.
berth_left_shims() {
    local pid n spare="" newest=-1 shims=()
    mapfile -t shims < <(berth_shims)
    for pid in "${shims[@]}"; do
        n=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^spare-[0-9]*-\([0-9]*\)$/\1/p')
        if [[ -n $n ]] && ((n > newest)); then newest=$n spare=$pid; fi
    done
    for pid in "${shims[@]}"; do [[ $pid == "$spare" ]] || echo "$pid"; done
}
containerd_shims() { bench_in_holder containerd-shim; }
conmons() { bench_in_holder conmon; }
cgroups() { find /sys/fs/cgroup/memory /sys/fs/cgroup/unified -type d 2>/dev/null | wc -l; }
berth_mounts() { grep -c "$work" /proc/self/mountinfo || true; }
holder_mounts() { grep -c overlay "/proc/$holder/mountinfo" || true; }
mem_available_mib() { awk '$1 == "MemAvailable:" {print int($2 / 1024)}' /proc/meminfo; }

ctr_bin=$(command -v ctr)
podman_bin=$(command -v podman)
cat >"$work/ctr-rm.sh" <<EOT
#!/bin/sh
# ctr's rm -f: kill, delete the task, remove the container.
for id; do
    nsenter -t $holder -m $ctr_bin --address /run/containerd/containerd.sock -n bench task delete --force "\$id" >/dev/null 2>&1
    nsenter -t $holder -m $ctr_bin --address /run/containerd/containerd.sock -n bench containers rm "\$id" >/dev/null
done
EOT
cat >"$work/ctr-ps.sh" <<EOT
#!/bin/sh
exec nsenter -t $holder -m $ctr_bin --address /run/containerd/containerd.sock -n bench task ls
EOT
chmod +x "$work/ctr-rm.sh" "$work/ctr-ps.sh"

# Sanity, outside the figures.
berthctl run --rm "$image" true || die "berthctl run failed: $(tail -5 "$work/imaged.log")"
ctr run --rm --runtime io.containerd.runc.v2 "$image" sanity true || die "ctr run failed"
podman_in "${podman_run[@]}" --rm "$podman_image" true || die "podman run failed"

berth_fds0=$(fds "$imaged")
containerd_fds0=$(fds "$containerd")
cgroups0=$(cgroups)
berth_mounts0=$(berth_mounts)
holder_mounts0=$(holder_mounts)

# One side's figures for one N: SIDE N START_S REMOVE_S DAEMON_KIB SHIMS SHIM_RSS SHIM_PSS DAEMON_PSS PS_MS
# LEFT_SHIMS LEFT_MOUNTS LEFT_CGROUPS LEFT_FDS, a line in $work/figures.
record() { echo "$*" >>"$work/figures"; }

run_berth() {
    local n=$1 t start remove shims=() shim_rss shim_pss daemon_rss daemon_pss ps_ms
    say "berth: $n containers from $PARALLEL clients"
    t=$(now)
    seq "$n" | xargs -P "$PARALLEL" -I{} "$BIN/berthctl" --address "$sock" run -d --name scale-{} "$image" sleep 100000 >/dev/null
    start=$(elapsed "$t")
    [[ $(berthctl ps -q | wc -l) == "$n" ]] || die "berth: $(berthctl ps -q | wc -l) of $n running"
    mapfile -t shims < <(berth_shims)
    shim_rss=$(sum_of rss "${shims[@]}")
    shim_pss=$(sum_of pss "${shims[@]}")
    daemon_rss=$(status_kib "$imaged" VmRSS)
    daemon_pss=$(pss_kib "$imaged")
    hyperfine -N --warmup 2 --runs 10 --export-json "$work/run-berth-ps-$n.json" -n "berth-ps-$n" \
        "$BIN/berthctl --address $sock ps" >/dev/null 2>&1
    ps_ms=$(median_ms "berth-ps-$n")
    say "berth: removing them"
    t=$(now)
    berthctl ps -a -q | xargs -P "$PARALLEL" -n 10 "$BIN/berthctl" --address "$sock" rm -f >/dev/null
    remove=$(elapsed "$t")
    sleep 1
    record berth "$n" "$start" "$remove" "$daemon_rss" "${#shims[@]}" "$shim_rss" "$shim_pss" "$daemon_pss" "$ps_ms" "$(berth_left_shims | wc -l)" \
        $(($(berth_mounts) - berth_mounts0)) $(($(cgroups) - cgroups0)) $(($(fds "$imaged") - berth_fds0))
}

run_containerd() {
    local n=$1 t start remove shims=() shim_rss shim_pss daemon_rss daemon_pss ps_ms running
    say "containerd: $n containers from $PARALLEL clients"
    t=$(now)
    seq "$n" | xargs -P "$PARALLEL" -I{} nsenter -t "$holder" -m "$ctr_bin" \
        --address /run/containerd/containerd.sock -n bench run -d --runtime io.containerd.runc.v2 \
        "$image" scale-{} sleep 100000 >/dev/null
    start=$(elapsed "$t")
    running=$(ctr task ls | grep -c RUNNING || true)
    [[ $running == "$n" ]] || die "containerd: $running of $n running"
    mapfile -t shims < <(containerd_shims)
    shim_rss=$(sum_of rss "${shims[@]}")
    shim_pss=$(sum_of pss "${shims[@]}")
    daemon_rss=$(status_kib "$containerd" VmRSS)
    daemon_pss=$(pss_kib "$containerd")
    hyperfine -N --warmup 2 --runs 10 --export-json "$work/run-ctr-ps-$n.json" -n "ctr-ps-$n" \
        "$work/ctr-ps.sh" >/dev/null 2>&1
    ps_ms=$(median_ms "ctr-ps-$n")
    say "containerd: removing them"
    t=$(now)
    seq "$n" | sed 's/^/scale-/' | xargs -P "$PARALLEL" -n 10 "$work/ctr-rm.sh"
    remove=$(elapsed "$t")
    sleep 1
    record containerd "$n" "$start" "$remove" "$daemon_rss" "${#shims[@]}" "$shim_rss" "$shim_pss" "$daemon_pss" "$ps_ms" "$(containerd_shims | wc -l)" \
        $(($(holder_mounts) - holder_mounts0)) $(($(cgroups) - cgroups0)) $(($(fds "$containerd") - containerd_fds0))
}

run_podman() {
    local n=$1 t start remove monitors=() shim_rss shim_pss running
    say "podman: $n containers from $PARALLEL clients"
    t=$(now)
    seq "$n" | xargs -P "$PARALLEL" -I{} nsenter -t "$holder" -m "$podman_bin" "${podman_flags[@]}" \
        "${podman_run[@]}" -d --name scale-{} "$podman_image" sleep 100000 >/dev/null
    start=$(elapsed "$t")
    running=$(podman_in ps -q | wc -l)
    [[ $running == "$n" ]] || die "podman: $running of $n running"
    mapfile -t monitors < <(conmons)
    shim_rss=$(sum_of rss "${monitors[@]}")
    shim_pss=$(sum_of pss "${monitors[@]}")
    say "podman: removing them"
    t=$(now)
    seq "$n" | sed 's/^/scale-/' | xargs -P "$PARALLEL" -n 10 nsenter -t "$holder" -m "$podman_bin" \
        "${podman_flags[@]}" rm -f -t 0 >/dev/null
    remove=$(elapsed "$t")
    sleep 1
    record podman "$n" "$start" "$remove" 0 "${#monitors[@]}" "$shim_rss" "$shim_pss" 0 - "$(conmons | wc -l)" \
        $(($(holder_mounts) - holder_mounts0)) $(($(cgroups) - cgroups0)) 0
}

for n in $COUNTS; do
    run_berth "$n"
    # A runc shim holds ~10 MiB: refuse to drive the machine into its OOM killer.
    need=$((n * 16 + 1024))
    if (($(mem_available_mib) < need)); then
        say "containerd at $n: skipped, it needs ~$need MiB and $(mem_available_mib) MiB are available"
    else
        run_containerd "$n"
    fi
    if ((n <= PODMAN_MAX)); then run_podman "$n"; fi
done

# The table: one block per N, a column per side, ratios to containerd.
awk -v parallel="$PARALLEL" -v counts="$COUNTS" '
function mib(k) { return sprintf("%.1f", k / 1024) }
function ratio(a, b) { return b == 0 ? "-" : sprintf("%.2f", a / b) }
{
    side = $1; n = $2; sides[n, side] = 1
    start[n, side] = $3; remove[n, side] = $4; drss[n, side] = $5; shims[n, side] = $6
    srss[n, side] = $7; spss[n, side] = $8; dpss[n, side] = $9; ps[n, side] = $10
    left[n, side] = $11 " shims, " $12 " mounts, " $13 " cgroups, " $14 " fds"
    if ($11 + $12 + $13 + $14 > 0 && side == "berth") leaked = 1
}
END {
    split("berth containerd podman", order, " ")
    count = split(counts, ns, " ")
    for (i = 1; i <= count; i++) {
        n = ns[i]
        printf "\n%d containers (sleep), %d parallel clients   %12s %12s %12s   berth ÷ containerd\n", n, parallel, "berth", "containerd", "podman"
        row("start, containers/s", n, "start")
        row("remove, containers/s", n, "remove")
        row("daemon RSS (MiB)", n, "drss")
        row("shims RSS (MiB; podman: conmon)", n, "srss")
        row("per container, RSS (MiB)", n, "crss")
        row("per container, PSS (MiB)", n, "cpss")
        row("list them (median ms)", n, "ps")
        for (j = 1; j <= 3; j++) if ((n, order[j]) in sides) printf "  left behind, %-10s %s\n", order[j], left[n, order[j]]
    }
    exit leaked
}
function value(what, n, side) {
    if (!((n, side) in sides)) return ""
    if (what == "start") return n / start[n, side]
    if (what == "remove") return n / remove[n, side]
    if (what == "drss") return drss[n, side] / 1024
    if (what == "srss") return srss[n, side] / 1024
    if (what == "crss") return (drss[n, side] + srss[n, side]) / 1024 / n
    if (what == "cpss") return (dpss[n, side] + spss[n, side]) / 1024 / n
    if (what == "ps") return ps[n, side] == "-" ? "" : ps[n, side]
}
function row(label, n, what,    j, v, out, b, c) {
    out = sprintf("  %-40s", label)
    for (j = 1; j <= 3; j++) {
        v = value(what, n, order[j])
        out = out sprintf(" %12s", v == "" ? "-" : sprintf(v >= 100 ? "%.0f" : "%.2f", v))
    }
    b = value(what, n, "berth"); c = value(what, n, "containerd")
    printf "%s   %s\n", out, (b == "" || c == "" || c == 0) ? "-" : sprintf("%.2f", b / c)
}
' "$work/figures" || die "berth left something behind (see above)"
