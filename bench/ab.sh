#!/usr/bin/env bash
# Interleaved A/B of `berth run` for a runtime change: two (or more) berth binaries run the same
# busybox bundle (bench/startup.sh's) in turn, N times each, their order swapped every round,
# each with its own state root on a tmpfs, in one private mount namespace without cgroup2 (as
# startup.sh's wrapper). Prints each binary's median, quartiles and mean wall time in ms.
#
# Hyperfine runs all iterations of one command before the next, so load that drifts during a
# run (this VM drifts by 0.2–0.3 ms within an hour) moves one side only; alternating does not.
# With N = 300 the medians resolve about 0.05 ms here.
#
# Run as root:  bench/ab.sh OLD_BERTH NEW_BERTH [MORE...]
# Environment:  N (300), RUNC (only for `runc spec`), JQ (a jq filter applied to the config),
#               ROOTS=disk (state roots on the scratch directory's disk).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNC=${RUNC:-/usr/sbin/runc}
N=${N:-300}

die() { echo "ab.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (namespaces, cgroups, mounts)"
(($# >= 2)) || die "usage: bench/ab.sh OLD_BERTH NEW_BERTH [MORE...]"
for tool in jq unshare /bin/busybox "$RUNC" "$@"; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-ab.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
binaries=("$@")
cleanup() {
    set +e
    local i
    # A run cut short (a failure, ^C) may leave its container and cgroups: delete it while its
    # state is still there, as the runs see the host (without cgroup2).
    for i in "${!binaries[@]}"; do
        [[ -d $work/root-$i/ab-$i ]] || continue
        bench_in_wrapper \
            timeout 20 "${binaries[i]}" --root "$work/root-$i" delete --force "ab-$i" >/dev/null 2>&1
    done
    bench_remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

bench_startup_bundle "$work/bundle" "$RUNC"
if [[ -n ${JQ:-} ]]; then
    jq "$JQ" "$work/bundle/config.json" >"$work/config.json"
    mv "$work/config.json" "$work/bundle/config.json"
fi
for i in "${!binaries[@]}"; do bench_state_root "$work/root-$i"; done

# The rounds, inside the wrapper: one line "INDEX MICROSECONDS" per run (the first three rounds
# warm up and are dropped).
rounds() {
    local r i k count=${#binaries[@]} start end
    for ((r = -3; r < N; r++)); do
        for ((k = 0; k < count; k++)); do
            # Every other round runs the binaries in the reverse order.
            if ((r % 2)); then i=$((count - 1 - k)); else i=$k; fi
            start=${EPOCHREALTIME//[.,]/}
            "${binaries[i]}" --root "$work/root-$i" run --bundle "$work/bundle" "ab-$i" \
                || die "${binaries[i]} failed"
            end=${EPOCHREALTIME//[.,]/}
            ((r < 0)) || echo "$i $((end - start))"
        done
    done
}
export -f rounds die
export work N
# `berth run` passes ^C on to its container and lives on: the loop must stop by itself.
unshare -m /bin/bash -c 'trap "exit 130" INT; umount /sys/fs/cgroup/unified 2>/dev/null
    binaries=("$@"); rounds' \
    bash "${binaries[@]}" >"$work/times"

for i in "${!binaries[@]}"; do
    awk -v i="$i" '$1 == i { print $2 / 1000 }' "$work/times" | sort -n | awk -v name="${binaries[i]}" '
        { t[NR] = $1; sum += $1 }
        END { printf "%-50s median %.3f  p25 %.3f  p75 %.3f  mean %.3f ms  (%d runs)\n",
              name, t[int((NR + 1) / 2)], t[int(NR / 4) + 1], t[int(3 * NR / 4)], sum / NR, NR }'
done
