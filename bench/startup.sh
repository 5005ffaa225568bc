#!/usr/bin/env bash
# Start-up benchmark: berth side by side with runc and crun, over the floor.
#
# Times, with hyperfine, five series on one busybox container:
#   run                  RUNTIME run --bundle B ID of /bin/true      (foreground; deletes itself)
#   create+start+delete  RUNTIME create, start, state until stopped, delete
#   run+seccomp, create+start+delete+seccomp
#                        the same with the engines' default seccomp profile in the config
#   exec                 RUNTIME exec ID /bin/true into a running container (/bin/sleep)
# and the floor (berth-bench-floor: namespaces + cgroups + pivot_root + exec, nothing else).
# All commands share one wrapper; the wrapper is timed alone and subtracted.
# Prints tables and a bar chart, writes bench/results/startup.json. See bench/README.md.
#
# Run as root:  bench/startup.sh
# Environment:  BERTH, FLOOR (binaries), RUNC, CRUN, RUNS (100), WARMUP (5),
#               BENCH_SKIP_BERTH=1 (leave berth out), OUT (results file),
#               SECCOMP_PROFILE (an engine profile, containers-common's by default).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
release=$repo/target/x86_64-unknown-linux-gnu/release
BERTH=${BERTH:-$release/berth}
FLOOR=${FLOOR:-$release/berth-bench-floor}
RUNC=${RUNC:-/usr/sbin/runc}
CRUN=${CRUN:-/usr/bin/crun}
RUNS=${RUNS:-100}
WARMUP=${WARMUP:-5}
OUT=${OUT:-$here/results/startup.json}
SECCOMP_PROFILE=${SECCOMP_PROFILE:-/usr/share/gocode/src/github.com/containers/common/pkg/seccomp/seccomp.json}

die() { echo "startup.sh: $*" >&2; exit 1; }
say() { echo "startup.sh: $*" >&2; }

[[ $(id -u) == 0 ]] || die "must run as root (namespaces, cgroups, mounts)"
for tool in hyperfine jq unshare umount perl timeout pgrep /usr/bin/time /bin/busybox "$RUNC" "$CRUN"; do
    command -v "$tool" >/dev/null || die "missing $tool (/usr/bin/time is Debian's 'time' package, /bin/busybox is 'busybox-static')"
done
[[ -x $FLOOR ]] || die "no floor binary at $FLOOR (cargo build -p berth-bench-floor --release)"
[[ -r $SECCOMP_PROFILE ]] ||
    die "no seccomp profile at $SECCOMP_PROFILE (Debian: golang-github-containers-common-dev)"
# Per architecture: the prctl syscall number (PR_SET_CHILD_SUBREAPER through perl's raw
# syscall()), and the Go and libseccomp names the seccomp profile uses.
case $(uname -m) in
    x86_64) sys_prctl=157 go_arch=amd64 scmp_arch=SCMP_ARCH_X86_64 ;;
    aarch64) sys_prctl=167 go_arch=arm64 scmp_arch=SCMP_ARCH_AARCH64 ;;
    *) die "unknown prctl syscall number for $(uname -m)" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
# hyperfine --shell=none splits commands on whitespace.
[[ $work != *[[:space:]]* ]] || die "temporary directory $work contains whitespace; set TMPDIR"
bundle=$work/bundle
# Every container id and cgroup of this run carries the token, so clean-up finds exactly ours.
token=berth-bench-${work##*.}

# Runtime names (also result keys) and their binaries; berth may drop out below.
declare -A bin=([floor]=$FLOOR [berth]=$BERTH [runc]=$RUNC [crun]=$CRUN)
runtimes=(berth runc crun)

# --- wrapper -----------------------------------------------------------------------------------
# crun 1.8 refuses a hybrid cgroup host unless cgroup2 is out of sight, so every command (floor
# and all runtimes alike) runs in a private mount namespace with /sys/fs/cgroup/unified
# unmounted: `unshare -m` (private propagation) and this script, which does one iteration.
cat >"$work/lc" <<'EOF'
#!/bin/sh
# lc MODE RUNTIME ROOT BUNDLE TOKEN: one timed iteration, inside `unshare -m`.
umount /sys/fs/cgroup/unified 2>/dev/null
mode=$1 rt=$2 root=$3 bundle=$4 id=$5-$$
case $mode in
run)
    [ -z "${RSS_OUT-}" ] || exec /usr/bin/time -f %M -o "$RSS_OUT" "$rt" --root "$root" run --bundle "$bundle" "$id"
    exec "$rt" --root "$root" run --bundle "$bundle" "$id" ;;
floor)
    [ -z "${RSS_OUT-}" ] || exec /usr/bin/time -f %M -o "$RSS_OUT" "$rt" "$bundle/rootfs" "$id" -- /bin/true
    exec "$rt" "$bundle/rootfs" "$id" -- /bin/true ;;
csd)
    "$rt" --root "$root" create --bundle "$bundle" "$id" || exit
    "$rt" --root "$root" start "$id" || exit
    # /bin/true is gone almost at once; an empty answer is the wrapper's own baseline (true).
    n=0
    while :; do
        s=$("$rt" --root "$root" state "$id") || exit
        case $s in *'"stopped"'* | '') break ;; esac
        n=$((n + 1))
        [ $n -lt 10000 ] || { echo "$id never stopped" >&2; exit 1; }
    done
    exec "$rt" --root "$root" delete "$id" ;;
*) echo "lc: unknown mode $mode" >&2; exit 2 ;;
esac
EOF
# After `create` the runtime exits and the container's init is orphaned. A real caller (a
# containerd shim, conmon) is a child subreaper and reaps it; without one it would fall to pid 1,
# which on these machines reaps only about once a second, so zombies would pile up during a run.
# So the create+start+delete iteration runs under a subreaper (the setting survives exec): the lc
# shell reaps the exited init while it waits for `state` or `delete`. The wrapper baseline of
# that mode includes this perl start, so it is subtracted like the rest of the wrapper.
cat >"$work/reap" <<EOF
#!/usr/bin/perl
syscall($sys_prctl, 36, 1) == 0 or die "prctl(PR_SET_CHILD_SUBREAPER): \$!\n";
exec { \$ARGV[0] } @ARGV or die "exec \$ARGV[0]: \$!\n";
EOF
chmod +x "$work/lc" "$work/reap"

# The hyperfine command line of one iteration (MODE NAME), wrapper included.
cmd() {
    local mode=$1 name=$2 rt root=$work/root-$2
    rt=${bin[$name]:-/bin/true}
    case $mode in
        run | floor) echo "unshare -m /bin/sh $work/lc $mode $rt $root $bundle $token" ;;
        csd) echo "$work/reap unshare -m /bin/sh $work/lc csd $rt $root $bundle $token" ;;
    esac
}

cleanup() {
    set +e
    local name root d pids i
    # Stop the clock first, then let an iteration already under way finish (milliseconds) so no
    # container appears after the deletes below; anything still running after 5 s is killed.
    # Only processes whose command line holds our private temporary directory are touched.
    [[ -z ${job:-} ]] || kill -TERM "$job" 2>/dev/null
    for i in {1..50}; do
        pids=$(pgrep -f -- "$work/") || break
        ((i < 50)) || kill -KILL $pids 2>/dev/null
        sleep 0.1
    done
    for name in berth runc crun; do
        root=$work/root-$name
        [[ -d $root ]] || continue
        for d in "$root"/*/; do
            [[ -d $d ]] || continue
            unshare -m /bin/sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"' sh \
                timeout 20 "${bin[$name]}" --root "$root" delete --force "$(basename "$d")" >/dev/null 2>&1
        done
    done
    # A runtime that failed or hung may have left a container in its cgroups without the state
    # `delete` needs: end those processes (ours by the token) and remove the groups, deepest first.
    local groups pid
    mapfile -t groups < <(find /sys/fs/cgroup -mindepth 2 -type d -name "$token-*" 2>/dev/null | sort -r)
    if ((${#groups[@]})); then
        for pid in $(cat "${groups[@]/%//cgroup.procs}" 2>/dev/null | sort -u); do
            kill -KILL "$pid" 2>/dev/null
        done
        sleep 0.2
        for d in "${groups[@]}"; do rmdir "$d" 2>/dev/null || say "could not remove cgroup $d"; done
    fi
    rmdir /sys/fs/cgroup/*/berth-floor 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Runs a long command as a background job and waits for it: bash runs a trap only between
# commands, and `wait` is the one it can interrupt, so Ctrl-C stops the benchmark at once.
# (hyperfine itself lets a Ctrl-C pass to the timed command, which runc and crun swallow.)
job=
waitfor() {
    "$@" &
    job=$!
    local rc=0
    wait "$job" || rc=$?
    job=
    return "$rc"
}

# --- bundle ------------------------------------------------------------------------------------
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/dev" "$bundle/rootfs/sys"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/sh"
ln -s busybox "$bundle/rootfs/bin/true"
(cd "$bundle" && "$RUNC" spec)
jq '.process.terminal = false
    | .process.args = ["/bin/true"]
    | if any(.linux.namespaces[]; .type == "cgroup") then .
      else .linux.namespaces += [{"type": "cgroup"}] end' \
    "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"
for name in floor "${runtimes[@]}"; do mkdir -p "$work/root-$name"; done

# --- smoke runs --------------------------------------------------------------------------------
# One iteration of each lifecycle, under a time limit, before committing to hundreds. runc, crun
# and the floor must work; berth is under construction, so a failing berth is left out loudly.
declare -A skip=()
smoke_limit=20
smoke() { # MODE NAME -> 0 if one iteration exits 0
    local log=$work/smoke-$1-$2.log rc=0
    # shellcheck disable=SC2046 # cmd prints a command line meant to be split
    waitfor timeout "$smoke_limit" $(cmd "$1" "$2") >"$log" 2>&1 || rc=$?
    [[ $rc != 0 ]] || return 0
    [[ $rc != 124 ]] || echo "(timed out after $smoke_limit s)" >>"$log"
    say "$2: one '$1' iteration failed (exit $rc):"
    sed 's/^/    /' "$log" | tail -n 15 >&2
    return 1
}
if [[ ${BENCH_SKIP_BERTH:-0} == 1 ]]; then
    skip[berth]="BENCH_SKIP_BERTH=1"
elif [[ ! -x $BERTH ]]; then
    skip[berth]="no binary at $BERTH"
else
    smoke run berth || skip[berth-run]="smoke run failed"
    smoke csd berth || skip[berth-csd]="smoke create+start+delete failed"
fi
if [[ -n ${skip[berth]:-} ]]; then skip[berth-run]=${skip[berth]} skip[berth-csd]=${skip[berth]}; fi
if [[ -n ${skip[berth]:-} ]]; then
    say "NOT BENCHMARKING BERTH: ${skip[berth]}; measuring the others"
else
    for key in berth-run berth-csd; do
        [[ -z ${skip[$key]:-} ]] || say "NOT BENCHMARKING BERTH in ${key#berth-}: ${skip[$key]}; measuring the others"
    done
fi
smoke floor floor || die "the floor does not work on this host"
for name in runc crun; do
    smoke run "$name" || die "$name run does not work on this host"
    smoke csd "$name" || die "$name create+start+delete does not work on this host"
done

# --- timings -----------------------------------------------------------------------------------
# One hyperfine per mode; the wrapper alone (runtime = /bin/true) is the first command.
bench() { # MODE OUTFILE NAME...
    local mode=$1 out=$2 name args=()
    shift 2
    for name in "$@"; do
        args+=(-n "$name")
        if [[ $name == floor ]]; then args+=("$(cmd floor floor)"); else args+=("$(cmd "$mode" "$name")"); fi
    done
    waitfor hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --time-unit millisecond \
        --export-json "$out" "${args[@]}" >&2
}
list() { # MODE -> the names to time in this mode
    local name
    echo wrapper
    [[ $1 == csd ]] || echo floor
    for name in "${runtimes[@]}"; do [[ -n ${skip[$name-$1]:-} ]] || echo "$name"; done
}
say "timing 'run' ($RUNS runs each)"
mapfile -t names < <(list run)
bench run "$work/run.json" "${names[@]}"
say "timing 'create+start+delete' ($RUNS runs each)"
mapfile -t names < <(list csd)
bench csd "$work/csd.json" "${names[@]}"

# --- peak RSS ----------------------------------------------------------------------------------
# GNU time's %M: the largest resident set of the process and the children it waited for (for
# runc that includes its `runc init` child), in KiB, for one `run`.
echo '{}' >"$work/rss.json"
for name in floor "${runtimes[@]}"; do
    [[ $name == floor || -z ${skip[$name-run]:-} ]] || continue
    mode=run
    [[ $name != floor ]] || mode=floor
    # shellcheck disable=SC2046
    RSS_OUT=$work/rss-$name $(cmd $mode "$name") >/dev/null
    jq --arg n "$name" --argjson kib "$(tail -n 1 "$work/rss-$name")" '.[$n] = $kib' \
        "$work/rss.json" >"$work/rss.json.new"
    mv "$work/rss.json.new" "$work/rss.json"
done

# --- results -----------------------------------------------------------------------------------
version() { timeout 5 "$1" --version 2>/dev/null | head -n 1 || true; }
skips=$(for key in "${!skip[@]}"; do [[ $key == berth ]] || printf '%s\t%s\n' "$key" "${skip[$key]}"; done |
    jq -R -s 'split("\n") | map(select(. != "") | split("\t") | {(.[0]): .[1]}) | add // {}')
mkdir -p "$(dirname "$OUT")"
jq -n \
    --slurpfile run "$work/run.json" --slurpfile csd "$work/csd.json" \
    --slurpfile rss "$work/rss.json" --argjson skipped "$skips" \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg kernel "$(uname -r)" \
    --arg cpus "$(nproc)" --arg runs "$RUNS" --arg warmup "$WARMUP" \
    --arg berth "$(version "$BERTH")" --arg runc "$(version "$RUNC")" --arg crun "$(version "$CRUN")" '
    def ms: . * 1000000 | round / 1000;
    def mode($r):
        ($r.results | map({(.command): {median: (.median | ms), mean: (.mean | ms),
            stddev: (.stddev | ms), min: (.min | ms), max: (.max | ms)}}) | add) as $m
        | $m | with_entries(if .key == "wrapper" then .
                           else .value.net_median = ((.value.median - $m.wrapper.median) * 1000 | round / 1000) end);
    def ratio($a; $b): if $a == null or $b == null or $b <= 0 then null
                       else ($a / $b * 100 | round / 100) end;
    (mode($run[0])) as $r | (mode($csd[0])) as $c
    | {
        date: $date, runs: ($runs | tonumber), warmup: ($warmup | tonumber),
        host: {kernel: $kernel, cpus: ($cpus | tonumber)},
        versions: {berth: $berth, runc: $runc, crun: $crun},
        workload: "busybox rootfs, runc spec config (+cgroup namespace), process /bin/true",
        unit: "ms; net_median = median - wrapper median of the same mode",
        run: $r,
        create_start_delete: ({wrapper: $c.wrapper, floor: $r.floor} + $c),
        ratios: ([["run", $r], ["create_start_delete", ({floor: $r.floor} + $c)]]
            | map({(.[0]): (.[1] as $x | {
                "berth/crun": ratio($x.berth.net_median; $x.crun.net_median),
                "berth/runc": ratio($x.berth.net_median; $x.runc.net_median),
                "berth/floor": ratio($x.berth.net_median; $x.floor.net_median)})}) | add),
        peak_rss_kib: $rss[0],
        skipped: $skipped
    }' >"$OUT"

# --- report ------------------------------------------------------------------------------------
# Table: wrapper raw median, everything else net of the wrapper; the floor has no
# create/start/delete of its own, so its `run` figure is repeated there.
jq -r '
    def f: if . == null then "-" else tostring end;
    def row($l; $a; $b; $c): [$l, ($a | f), ($b | f), ($c | f)] | @tsv;
    "\nberth start-up, \(.runs) runs, median ms net of the wrapper (" + .date + ")",
    row(""; "run"; "create+start+delete"; "peak RSS KiB"),
    row("wrapper alone"; .run.wrapper.median; .create_start_delete.wrapper.median; null),
    (. as $d | ("floor", "berth", "runc", "crun") as $n
        | row($n; $d.run[$n].net_median; $d.create_start_delete[$n].net_median; $d.peak_rss_kib[$n])),
    (. as $d | ("berth/crun", "berth/runc", "berth/floor") as $q
        | row($q; $d.ratios.run[$q]; $d.ratios.create_start_delete[$q]; null))
' "$OUT" | awk -F'\t' '
    function num(x, fmt) { return x ~ /^[0-9.]+$/ ? sprintf(fmt, x) : x }
    NR <= 2 { print; next }
    { printf "%-14s %8s %21s %14s\n", $1, num($2, "%.2f"), num($3, "%.2f"), num($4, "%d") }
    END { print "(wrapper: its raw median; the rest: median minus wrapper. The floor has no" \
          "\n create/start/delete of its own: its run figure is repeated.)" }'

# Bar chart of the net medians, one scale for both modes, eighth-block resolution.
jq -r '("run", "create_start_delete") as $k | .[$k] as $m
       | ($m | to_entries[] | select(.key != "wrapper") | .key) as $n
       | [($k | sub("_"; "+"; "g")), $n, $m[$n].net_median] | @tsv' \
    "$OUT" | awk -F'\t' -v width=48 '
    { mode[NR] = $1; name[NR] = $2; v[NR] = $3; if ($3 > max) max = $3 }
    END {
        split("▏ ▎ ▍ ▌ ▋ ▊ ▉", part, " ")
        for (i = 1; i <= NR; i++) {
            if (mode[i] != last) { printf "\n%s (net median, ms)\n", mode[i]; last = mode[i] }
            eighths = (max > 0 && v[i] > 0) ? int(v[i] / max * width * 8 + 0.5) : 0
            bar = ""
            for (j = 0; j < int(eighths / 8); j++) bar = bar "█"
            if (eighths % 8) bar = bar part[eighths % 8]
            printf "  %-6s %s %.2f\n", name[i], bar, v[i]
        }
    }'
if [[ -n ${skip[berth]:-} ]]; then
    echo "berth: not measured (${skip[berth]})"
else
    for key in berth-run berth-csd; do
        [[ -z ${skip[$key]:-} ]] || echo "berth: not measured in ${key#berth-} (${skip[$key]})"
    done
fi
echo "results: $OUT"
