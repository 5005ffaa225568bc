# Shared by the benchmarks (sourced, not run): the busybox image they
# import, a private containerd, a private berth-imaged, and the median of
# hyperfine rounds. The caller sets `work` (its scratch directory) and `die`
# before sourcing, and `BIN` (berth's binaries) where it runs berth-imaged.

holder=
containerd=
imaged=
imaged_runtime_root=
sock=$work/berth.sock

# berthctl against the private berth-imaged.
berthctl() { "$BIN/berthctl" --address "$sock" "$@"; }

# berth's four binaries in $BIN, or die saying how to build them.
bench_check_berth() {
    local b
    for b in berthctl berth-imaged containerd-shim-berth-v2 berth; do
        [[ -x $BIN/$b ]] || die "no $BIN/$b (cargo build --release -p berth-ctl -p berth-imaged -p berth-shim -p berth-runtime)"
    done
}

# DEFAULT-NETWORK [PREFIX…] → a private berth-imaged (root and socket in
# $work; its state directory, with the runtime's state and the bundles of
# `run --rm` containers, on a tmpfs of its own under /run, as on a systemd
# host, where /run is tmpfs, and as the private containerd keeps runc's
# state and its bundles), its containers on DEFAULT-NETWORK unless they say
# otherwise, started through PREFIX (e.g. nsenter into a namespace). Sets
# imaged and imaged_state (imaged_runtime_root is its runtime/).
bench_start_imaged() {
    local network=$1
    shift
    imaged_state=$(mktemp -d /run/berth-bench-state.XXXXXX)
    # A host's /run is not always tmpfs (this VM's is the root disk, mounted
    # with discard: every freed block waits for a TRIM).
    mount -t tmpfs -o mode=0700 tmpfs "$imaged_state"
    imaged_runtime_root=$imaged_state/runtime
    "$@" "$BIN/berth-imaged" --root "$work/berth-root" --socket "$sock" --default-network "$network" \
        --shim "$BIN/containerd-shim-berth-v2" --runtime "$BIN/berth" \
        --state "$imaged_state" --runtime-root "$imaged_runtime_root" \
        2>"$work/imaged.log" &
    imaged=$!
    for _ in $(seq 200); do berthctl version >/dev/null 2>&1 && break; sleep 0.05; done
}

# Removes the private berth-imaged's containers (8 clients at once), then stops it.
bench_stop_imaged() {
    [[ -n $imaged ]] || return 0
    berthctl ps -a -q 2>/dev/null | xargs -r -P 8 -n 20 "$BIN/berthctl" --address "$sock" rm -f >/dev/null 2>&1
    kill "$imaged" 2>/dev/null
    wait "$imaged" 2>/dev/null
    # Whatever is still mounted inside goes with it; nothing is walked
    # into while mounted.
    if [[ -n ${imaged_state:-} ]] && umount -R "$imaged_state" 2>/dev/null; then
        rm -rf "$imaged_state"
    fi
    return 0
}

# NAME → the pids of processes named NAME in the private containerd's mount
# namespace (its shims, podman's conmon there).
bench_in_holder() {
    local ns pid
    ns=$(readlink "/proc/$holder/ns/mnt")
    for pid in $(pgrep -x "$1" || true); do
        if [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$ns" ]]; then echo "$pid"; fi
    done
}

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
# With CONTAINERD_CRI set (its CRI plugin's TOML), the CRI plugin runs; with
# CONTAINERD_NETNS (a name under /run/netns), containerd runs in that
# network namespace.
bench_start_containerd() {
    local path_prefix=${1:-} netns=()
    [[ -n ${CONTAINERD_NETNS:-} ]] && netns=(nsenter --net="/run/netns/$CONTAINERD_NETNS")
    cat >"$work/config.toml" <<EOT
version = 2
root = "$work/root"
state = "/run/containerd"
${CONTAINERD_CRI:-disabled_plugins = [\"io.containerd.grpc.v1.cri\"]}
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
EOT
    "${netns[@]}" unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /run && exec sleep 100000' &
    holder=$!
    for _ in $(seq 100); do grep -q '^tmpfs /run ' "/proc/$holder/mounts" 2>/dev/null && break; sleep 0.05; done
    PATH=$path_prefix${path_prefix:+:}$PATH nsenter -t "$holder" -m -n containerd --config "$work/config.toml" \
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

# CMD ARGS... → runs it in bench/startup.sh's wrapper: a private mount namespace without cgroup2
# (crun 1.8 refuses this hybrid host otherwise); whatever runs there sees the same hierarchies.
bench_in_wrapper() { unshare -m /bin/sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"' sh "$@"; }

# DIR → a runtime's state root: a tmpfs of its own, as /run/runc, /run/crun and /run/berth are on
# a systemd host; with ROOTS=disk a plain directory on the scratch directory's disk (this VM's
# unjournalled ext4, where every state file is slow to make and remove).
bench_state_root() {
    mkdir -p "$1"
    [[ ${ROOTS:-tmpfs} == disk ]] || mount -t tmpfs -o mode=0700 bench-root "$1"
}

# Unmounts the state roots under $work (bench_state_root, named root-*), then removes $work.
bench_remove_work() {
    local root
    for root in "$work"/root-*; do
        if mountpoint -q "$root"; then umount "$root"; fi
    done
    rm -rf "$work"
}

# DIR RUNC → the start-up bundle (bench/startup.sh, bench/runtime-steps.sh): a busybox-static
# rootfs and the config `runc spec` writes, with the process /bin/true, no terminal, a 256 MiB
# memory and a 1024 pids limit (as engines set them), and a cgroup namespace.
bench_startup_bundle() {
    local dir=$1 runc=$2 app
    mkdir -p "$dir/rootfs/bin" "$dir/rootfs/proc" "$dir/rootfs/dev" "$dir/rootfs/sys"
    cp /bin/busybox "$dir/rootfs/bin/busybox"
    for app in sh true sleep; do ln -s busybox "$dir/rootfs/bin/$app"; done
    (cd "$dir" && "$runc" spec)
    jq '.process.terminal = false
        | .process.args = ["/bin/true"]
        | .linux.resources.memory = {"limit": 268435456}
        | .linux.resources.pids = {"limit": 1024}
        | if any(.linux.namespaces[]; .type == "cgroup") then .
          else .linux.namespaces += [{"type": "cgroup"}] end' \
        "$dir/config.json" >"$dir/config.json.new"
    mv "$dir/config.json.new" "$dir/config.json"
}

# Per step (the Nth time a step name appears in an iteration's sorted timeline, so the two
# images of a re-executed berth stay apart): the median delta since the previous line and the
# median offset since the iteration's first line, in ms.
bench_steps_report() { # TITLE FILES... (RUNS: the number of iterations, for the title)
    echo
    echo "$1 ($RUNS runs; median ms)"
    perl -e '
        my (%delta, %offset, @order, %seen);
        for my $file (@ARGV) {
            open my $fh, "<", $file or die "$file: $!";
            my @lines = sort { $a->[0] <=> $b->[0] }
                map { /^berth-trace (\S+) \d+ (.*)$/ ? [$1, $2] : () } <$fh>;
            next unless @lines;
            my ($first, $prev, %n) = ($lines[0][0], $lines[0][0]);
            for my $l (@lines) {
                my $key = $l->[1] . (++$n{$l->[1]} > 1 ? " (#$n{$l->[1]})" : "");
                push @order, $key unless $seen{$key}++;
                push @{$delta{$key}}, ($l->[0] - $prev) * 1000;
                push @{$offset{$key}}, ($l->[0] - $first) * 1000;
                $prev = $l->[0];
            }
        }
        sub median { my @s = sort { $a <=> $b } @_; @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
        printf "  %-52s %8s %8s\n", "step (the time up to it)", "delta", "offset";
        printf "  %-52s %8.3f %8.3f\n", $_, median(@{$delta{$_}}), median(@{$offset{$_}}) for @order;
    ' "${@:2}"
}
