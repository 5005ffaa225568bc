#!/usr/bin/env bash
# Where berth's own start-up time goes, step by step.
#
# 1. The timeline `BERTH_TRACE=1` makes berth print (runtime/src/trace.rs): for `run` and for
#    create+start+delete on bench/startup.sh's bundle and in its wrapper, RUNS iterations each;
#    per step, the median time since the step before it and since berth's first line.
# 2. One `run` of berth beside one of crun under `strace -f -c`: system calls in all, and the
#    ones that shape start-up (clones, execs, mounts and unmounts, cgroup writes).
#
# strace slows every call down, so part 2 counts calls, it does not time them. The timeline of
# part 1 is taken without strace; its steps add up to berth's own time from `main` to its exit
# (the kernel's exec of berth itself and the process exit are outside it).
#
# Run as root:  bench/runtime-steps.sh
# Environment:  BERTH (release build), CRUN, RUNC (only for `runc spec`), RUNS (30);
#               UNIFIED=keep: berth's runs keep the hybrid host's unified hierarchy (cgroup2 at
#               /sys/fs/cgroup/unified), where its init is born in its cgroup through clone3
#               (crun's runs stay in the wrapper); BERTH_PREFIX: a command berth runs under, e.g.
#               integration's `without_clone3` example (clone3 refused: berth's fallback);
#               ROOTS=disk: the state roots in the scratch directory, not each on a tmpfs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BERTH=${BERTH:-${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release/berth}
CRUN=${CRUN:-/usr/bin/crun}
RUNC=${RUNC:-/usr/sbin/runc}
RUNS=${RUNS:-30}

die() { echo "runtime-steps.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (namespaces, cgroups, mounts)"
for tool in jq perl strace unshare /bin/busybox "$BERTH" "$CRUN" "$RUNC"; do
    command -v "$tool" >/dev/null || die "missing $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-steps.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
token=berth-steps-${work##*.}
cleanup() {
    set +e
    local d
    for d in "$work"/root-*/*/; do
        [[ -d $d ]] || continue
        case $d in *root-crun*) wrap=bench_in_wrapper rt=$CRUN ;; *) wrap=berth_wrapper rt=$BERTH ;; esac
        $wrap timeout 20 "$rt" --root "$(dirname "$d")" delete --force "$(basename "$d")" >/dev/null 2>&1
    done
    bench_remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# berth's own runs: bench/startup.sh's wrapper (bench_in_wrapper), or with UNIFIED=keep a
# private mount namespace that keeps it.
berth_wrapper() {
    if [[ ${UNIFIED:-} == keep ]]; then unshare -m /bin/sh -c 'exec "$@"' sh "$@"; else bench_in_wrapper "$@"; fi
}

bench_startup_bundle "$work/bundle" "$RUNC"
# As bench/startup.sh: each state root on a tmpfs (ROOTS=disk: in the scratch directory).
bench_state_root "$work/root-berth"
bench_state_root "$work/root-crun"
berth() { berth_wrapper env BERTH_TRACE=1 ${BERTH_PREFIX:+"$BERTH_PREFIX"} "$BERTH" --root "$work/root-berth" "$@"; }

# --- 1. timelines --------------------------------------------------------------------------------
for ((i = 0; i < RUNS; i++)); do
    id=$token-run-$i
    berth run --bundle "$work/bundle" "$id" 2>"$work/run-$i.trace" || die "berth run failed: $(cat "$work/run-$i.trace")"
    id=$token-csd-$i
    {
        berth create --bundle "$work/bundle" "$id"
        berth start "$id"
        # /bin/true ends at once; delete waits for the init to be gone.
        berth delete --force "$id"
    } 2>"$work/csd-$i.trace" || die "berth create/start/delete failed: $(cat "$work/csd-$i.trace")"
done

bench_steps_report "berth run: steps" "$work"/run-*.trace
bench_steps_report "berth create, start, delete: steps (gaps between commands included)" "$work"/csd-*.trace

# --- 2. system calls -----------------------------------------------------------------------------
count() { # NAME RUNTIME -> one `run` under strace -f -c
    case $1 in berth) wrap=berth_wrapper ;; *) wrap=bench_in_wrapper ;; esac
    $wrap strace -f -c -o "$work/strace-$1" "$2" --root "$work/root-$1" run --bundle "$work/bundle" "$token-strace-$1" \
        >/dev/null 2>&1 || die "$1 run under strace failed"
}
count berth "$BERTH"
count crun "$CRUN"
echo
echo "one run under strace -f -c: system calls"
perl -e '
    my @names = qw(total clone clone3 fork vfork execve execveat mount umount2 open_tree move_mount
                   mount_setattr fsopen fsmount pivot_root mkdir mkdirat rmdir unlinkat openat write);
    my %c;
    for my $rt (@ARGV) {
        open my $fh, "<", "'"$work"'/strace-$rt" or die $!;
        while (<$fh>) {
            my @f = split;
            next unless @f >= 5 && $f[3] =~ /^\d+$/;
            $c{$rt}{$f[-1]} = $f[3];
        }
    }
    printf "  %-14s %8s %8s\n", "", @ARGV;
    for my $n (@names) {
        next unless grep { $c{$_}{$n} } @ARGV;
        printf "  %-14s %8s %8s\n", $n, map { $c{$_}{$n} // 0 } @ARGV;
    }
' berth crun
