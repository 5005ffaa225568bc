#!/usr/bin/env bash
# Where `berth run`'s kernel time goes, beside the floor's (bench/floor): every system call of
# N runs of each, counted and timed in the kernel with perf's raw_syscalls tracepoints, and their
# page faults, per run. Both run bench/startup.sh's bundle in turn, in one private mount
# namespace without cgroup2 (as startup.sh's wrapper), berth's state root on a tmpfs.
#
# What it answers: which calls berth makes that the floor does not, and what they cost on this
# kernel, so that a change can aim at the largest. What it does not: wall time (bench/startup.sh
# and bench/ab.sh), or the order of the steps (bench/runtime-steps.sh). A tracepoint adds about
# half a microsecond to each call, so the cheapest calls read a little high; compare rows, not
# the sums with startup.sh's medians. Calls that may wait for another process (every read,
# which includes the channel and the cleaner's pipe, recvmsg, wait4, rt_sigtimedwait, futex,
# poll) are listed apart and left out of the sum. Only the runtime's processes among the
# rounds' descendants count (berth and its children until they execute the container's
# program; the launcher; the floor and its child); the container's /bin/true is the same
# program for both.
#
# Run as root:  bench/syscalls.sh
# Environment:  N (100), BERTH, FLOOR (release builds in CARGO_TARGET_DIR or target/ by
#               default), RUNC (only for `runc spec`), TMPDIR (the scratch directory's place).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
release=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release
BERTH=${BERTH:-$release/berth}
FLOOR=${FLOOR:-$release/berth-bench-floor}
RUNC=${RUNC:-/usr/sbin/runc}
N=${N:-100}

die() { echo "syscalls.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (namespaces, cgroups, mounts)"
for tool in perf perl jq unshare /bin/busybox "$RUNC" "$BERTH" "$FLOOR"; do
    command -v "$tool" >/dev/null || die "missing $tool (perf: Debian package linux-perf)"
done
names=/usr/include/x86_64-linux-gnu/asm/unistd_64.h
[[ -r $names ]] || die "missing $names (Debian package linux-libc-dev), for the calls' names"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-syscalls.XXXXXX")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
cleanup() {
    set +e
    # A run cut short may leave its container: delete it while its state is still there.
    [[ -d $work/root-berth/sc ]] &&
        bench_in_wrapper timeout 20 "$BERTH" --root "$work/root-berth" delete --force sc >/dev/null 2>&1
    bench_remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

bench_startup_bundle "$work/bundle" "$RUNC"
bench_state_root "$work/root-berth"

# One recording of N rounds (after three unrecorded ones), each a run of berth and one of the
# floor, their order swapped every round (the VM drifts: two recordings one after the other
# would compare different moments), inside the wrapper.
berth_cmd=("$BERTH" --root "$work/root-berth" run --bundle "$work/bundle" sc)
floor_cmd=("$FLOOR" "$work/bundle/rootfs" sc -- /bin/true)
{
    echo 'set -e'
    echo "berth() { $(printf '%q ' "${berth_cmd[@]}") >/dev/null; }"
    echo "floor() { $(printf '%q ' "${floor_cmd[@]}") >/dev/null; }"
    echo 'echo $$ >"$0.pid"'
    echo 'for ((i = 0; i < $1; i++)); do if ((i % 2)); then floor; berth; else berth; floor; fi; done'
} >"$work/rounds.sh"
# The whole machine is recorded (following the rounds' processes by inheritance would add perf's
# own set-up to every fork), with the forks: only the rounds' descendants count.
bench_in_wrapper /bin/bash -c '
    bash "$1/rounds.sh" 3 &&
        exec perf record -a -m 2048 -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit \
            -e sched:sched_process_fork -e page-faults -c 1 -o "$1/perf.data" -- \
            bash "$1/rounds.sh" "$2"' bash "$work" "$N" ||
    die "a run failed, or perf did (is the raw_syscalls tracepoint there? perf list)"
perf script --ns --show-lost-events -i "$work/perf.data" -F trace:comm,tid,time,event,trace \
    -F sw:comm,tid,time,event >"$work/perf.txt" ||
    die "perf script failed"
# A lost buffer of events would lower the counts without a word.
! grep -q 'LOST' "$work/perf.txt" || die "perf lost events: counts would be low (raise -m, lower N)"

echo "bench/syscalls.sh: $N rounds, $(date -u '+%Y-%m-%d %H:%M UTC'), berth: $BERTH, floor: $FLOOR"
# Processes are told apart by name, which the kernel cuts to 15 bytes.
berth_comm=$(basename "$BERTH" | cut -c1-15)
floor_comm=$(basename "$FLOOR" | cut -c1-15)
perl - "$names" "$N" "$work/perf.txt" "$berth_comm" "$floor_comm" "$(cat "$work/rounds.sh.pid")" <<'PERL'
use strict;
use warnings;
my ($names, $runs, $recording, $berth, $floor, $rounds) = @ARGV;
my %name;
open my $h, '<', $names or die "$names: $!";
while (<$h>) { $name{$2} = $1 if /^#define __NR_(\w+)\s+(\d+)/ }
my %waits = map { $_ => 1 } qw(read recvmsg recvfrom wait4 waitid rt_sigtimedwait futex poll ppoll);
# The runtime's processes by name: berth (and its children until they execute), the launcher,
# the floor and its child.
my %whose = ($berth => 'berth', 'memfd:berth-lau' => 'berth', $floor => 'floor');
my (%calls, %us, %faults, %entered);
# The rounds' shell and its descendants, as they are forked.
my %descends = ($rounds => 1);
open my $in, '<', $recording or die "$recording: $!";
while (<$in>) {
    my ($comm, $tid, $time, $event, $rest) = /^\s*(.+?)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$/ or next;
    if ($event eq 'sched:sched_process_fork') {
        my ($parent, $child) = $rest =~ /\bpid=(\d+) .*child_pid=(\d+)/ or next;
        $descends{$child} = 1 if $descends{$parent};
        next;
    }
    my $who = $descends{$tid} && $whose{$comm};
    if (!$who) { delete $entered{$tid}; next }
    if ($event eq 'page-faults') { $faults{$who}{$comm}++; next }
    my ($nr) = $rest =~ /NR (\d+)/ or next;
    if ($event eq 'raw_syscalls:sys_enter') { $entered{$tid} = [$time, $nr]; next }
    my $start = delete $entered{$tid} or next;
    my $call = $name{$start->[1]} // "NR $start->[1]";
    $calls{$call}{$who}++;
    $us{$call}{$who} += ($time - $start->[0]) * 1e6;
}
my $per = sub { ($_[0] // 0) / $runs };
printf "system calls of one `run`, per run (%d runs each), kernel time in microseconds\n", $runs;
printf "  %-18s %8s %9s %8s %9s %9s\n", 'call', 'berth', 'berth us', 'floor', 'floor us', 'berth-fl';
my (%sum, %wait_rows);
for my $call (sort { $per->($us{$b}{berth}) <=> $per->($us{$a}{berth}) } keys %us) {
    if ($waits{$call}) { $wait_rows{$call} = 1; next }
    my ($berth_us, $floor_us) = map { $per->($us{$call}{$_}) } qw(berth floor);
    $sum{$_} += $per->($us{$call}{$_}) for qw(berth floor);
    printf "  %-18s %8.1f %9.1f %8.1f %9.1f %9.1f\n", $call, $per->($calls{$call}{berth}),
        $berth_us, $per->($calls{$call}{floor}), $floor_us, $berth_us - $floor_us;
}
printf "  %-18s %8s %9.1f %8s %9.1f %9.1f\n", 'sum', '', $sum{berth}, '', $sum{floor}, $sum{berth} - $sum{floor};
print "\ncalls that may wait for another process (not in the sum)\n";
printf "  %-18s %8.1f %9.1f %8.1f %9.1f\n", $_, $per->($calls{$_}{berth}), $per->($us{$_}{berth}),
    $per->($calls{$_}{floor}), $per->($us{$_}{floor}) for sort keys %wait_rows;
print "\npage faults per run\n";
for my $who (qw(berth floor)) {
    my $total = 0;
    $total += $_ for values %{ $faults{$who} };
    printf "  %-6s %6.1f  (%s)\n", $who, $total / $runs,
        join(', ', map { sprintf "%s %.1f", $_, $faults{$who}{$_} / $runs } sort keys %{ $faults{$who} });
}
# Kernels before 6.13 name a process executed from a descriptor by its number, not its file.
warn "syscalls.sh: no process named memfd:berth-lau: the launcher's calls are not counted\n"
    unless $faults{berth}{'memfd:berth-lau'};
PERL
