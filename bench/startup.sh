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
# Environment:  BERTH, FLOOR (binaries), RUNC, CRUN, RUNS (100), WARMUP (5), ROUNDS (5),
#               BENCH_SKIP_BERTH=1 (leave berth out), OUT (results file),
#               SECCOMP_PROFILE (an engine profile, containers-common's by default),
#               ROOTS=disk (the runtimes' state roots in the scratch directory on disk, not each
#               on a tmpfs of its own, as /run/runc, /run/crun and /run/berth are on a systemd host).
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
ROUNDS=${ROUNDS:-5}
((ROUNDS >= 1 && RUNS % ROUNDS == 0)) || { echo "startup.sh: RUNS must be a multiple of ROUNDS" >&2; exit 2; }
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
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
# Every container id and cgroup of this run carries the token, so clean-up finds exactly ours.
token=berth-bench-${work##*.}

# Runtime names (also result keys) and their binaries; berth may drop out below.
declare -A bin=([floor]=$FLOOR [berth]=$BERTH [runc]=$RUNC [crun]=$CRUN)
runtimes=(berth runc crun)
# The timed series, in report order (also result keys; labels put + for _). A *_seccomp series
# is its lifecycle on the bundle with the seccomp profile.
series=(run create_start_delete run_seccomp create_start_delete_seccomp exec)

# --- wrapper -----------------------------------------------------------------------------------
# crun 1.8 refuses a hybrid cgroup host unless cgroup2 is out of sight, so every command (floor
# and all runtimes alike) runs in a private mount namespace with /sys/fs/cgroup/unified
# unmounted: `unshare -m` (private propagation) and this script, which does one iteration.
cat >"$work/lc" <<'EOF'
#!/bin/sh
# lc MODE RUNTIME ROOT BUNDLE TOKEN: one timed iteration (or, for detach, the start of the
# container that exec goes into), inside `unshare -m`.
umount /sys/fs/cgroup/unified 2>/dev/null
mode=$1 rt=$2 root=$3 bundle=$4 id=$5-$$
case $mode in
# detach and exec use one long-lived container, whose whole id is TOKEN. `run -d` leaves it
# holding the caller's stdio, so the caller redirects that to files.
detach) exec "$rt" --root "$root" run -d --bundle "$bundle" "$5" ;;
exec) exec "$rt" --root "$root" exec "$5" /bin/true ;;
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

# The hyperfine command line of one iteration (SERIES NAME), wrapper included. SERIES is one of
# $series, floor, or detach (start the container that exec goes into).
cmd() {
    local mode b=$bundle id=$token reap= rt=${bin[$2]:-/bin/true}
    case $1 in # (;;& goes on to the next patterns)
        *_seccomp) b=$work/bundle-seccomp ;;&
        run*) mode=run ;;
        create_start_delete*) mode=csd reap="$work/reap " ;;
        floor) mode=floor ;;
        exec | detach) mode=$1 b=$work/bundle-sleep id=$token-sleeper-$2 ;;
        *) die "cmd: unknown series $1" ;;
    esac
    echo "${reap}unshare -m /bin/sh $work/lc $mode $rt $work/root-$2 $b $id"
}

# Force-deletes every container in the runtimes' roots (each deletion limited to 20 s).
delete_containers() {
    local name root d
    for name in berth runc crun; do
        root=$work/root-$name
        [[ -d $root ]] || continue
        for d in "$root"/*/; do
            # Not a container: berth's kept seccomp filters (~seccomp/); `~` starts no id.
            [[ -d $d && $(basename "$d") != "~"* ]] || continue
            bench_in_wrapper \
                timeout 20 "${bin[$name]}" --root "$root" delete --force "$(basename "$d")" >/dev/null 2>&1
        done
    done
}

cleanup() {
    set +e
    local d pids i
    # Stop the clock first, then let an iteration already under way finish (milliseconds) so no
    # container appears after the deletes below; anything still running after 5 s is killed.
    # Only processes whose command line holds our private temporary directory are touched.
    [[ -z ${job:-} ]] || kill -TERM "$job" 2>/dev/null
    for i in {1..50}; do
        pids=$(pgrep -f -- "$work/") || break
        ((i < 50)) || kill -KILL $pids 2>/dev/null
        sleep 0.1
    done
    delete_containers
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
    bench_remove_work
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

# --- bundles -----------------------------------------------------------------------------------
bench_startup_bundle "$bundle" "$RUNC"
# Each runtime keeps its state where its default root is, on a tmpfs (/run): see bench_state_root.
for name in floor "${runtimes[@]}"; do bench_state_root "$work/root-$name"; done

# A bundle in DIR on the base rootfs, whose config is the base one through the jq FILTER.
variant() { # DIR FILTER [JQ OPTIONS...]
    local dir=$1 filter=$2
    shift 2
    mkdir -p "$dir"
    jq "$@" --arg rootfs "$bundle/rootfs" "$filter | .root.path = \$rootfs" \
        "$bundle/config.json" >"$dir/config.json"
}
# The container that exec goes into: the same config, sleeping.
variant "$work/bundle-sleep" '.process.args = ["/bin/sleep", "100000"]'
# The same config with the engines' default seccomp profile. That format is not OCI's: a rule
# may include or exclude capabilities, architectures and kernels, and the architectures come
# from an archMap. It is resolved here as an engine does for this config (berth's library has
# the same resolver, runtime/src/seccomp/engine.rs): a rule is kept if the container has every
# capability it includes and none it excludes, this architecture is among the ones it includes
# (if any) and not among the ones it excludes, and the kernel is at least its minKernel.
# shellcheck disable=SC2016 # jq variables
variant "$work/bundle-seccomp" '
    def version: split("-")[0] | split(".")[0:2] | map(tonumber);
    (.process.capabilities.bounding // []) as $caps
    | $profile[0] as $p
    | .linux.seccomp = {
        defaultAction: $p.defaultAction,
        architectures: ([$scmp] + [$p.archMap[]? | select(.architecture == $scmp) | .subArchitectures[]]),
        syscalls: [$p.syscalls[]
            | select(all(.includes.caps[]?; IN($caps[])) and (any(.excludes.caps[]?; IN($caps[])) | not))
            | select((.includes.arches // []) | length == 0 or any(.[]; . == $arch))
            | select(any(.excludes.arches[]?; . == $arch) | not)
            | select((.includes.minKernel // "0") | version <= ($kernel | version))
            | {names, action}
              + if .errnoRet != null then {errnoRet} else {} end
              + if (.args // []) != [] then {args: [.args[] | {index, value, valueTwo: (.valueTwo // 0), op}]}
                else {} end]
      }
      + if $p.defaultErrnoRet != null then {defaultErrnoRet: $p.defaultErrnoRet} else {} end
      + if $p.flags != null then {flags: $p.flags} else {} end' \
    --slurpfile profile "$SECCOMP_PROFILE" --arg arch "$go_arch" --arg scmp "$scmp_arch" \
    --arg kernel "$(uname -r)"

# --- smoke runs --------------------------------------------------------------------------------
# One iteration of each series, under a time limit, before committing to hundreds. runc, crun
# and the floor must work; berth is under construction, so a failing berth is left out loudly.
declare -A skip=()
smoke_limit=20
smoke() { # SERIES NAME -> 0 if one iteration exits 0
    local log=$work/smoke-$1-$2.log rc=0
    # shellcheck disable=SC2046 # cmd prints a command line meant to be split
    waitfor timeout "$smoke_limit" $(cmd "$1" "$2") </dev/null >"$log" 2>&1 || rc=$?
    [[ $rc != 0 ]] || return 0
    [[ $rc != 124 ]] || echo "(timed out after $smoke_limit s)" >>"$log"
    say "$2: one '${1//_/+}' iteration failed (exit $rc):"
    sed 's/^/    /' "$log" | tail -n 15 >&2
    return 1
}
smoke_all() { # NAME -> one iteration of every series; a failure goes to skip[NAME-SERIES]
    local s
    # First the container that exec goes into; it sleeps until delete_containers.
    smoke detach "$1" || skip[$1-exec]="could not start a container to exec into"
    for s in "${series[@]}"; do
        [[ -n ${skip[$1-$s]:-} ]] || smoke "$s" "$1" || skip[$1-$s]="smoke ${s//_/+} failed"
    done
}
if [[ ${BENCH_SKIP_BERTH:-0} == 1 ]]; then
    skip[berth]="BENCH_SKIP_BERTH=1"
elif [[ ! -x $BERTH ]]; then
    skip[berth]="no binary at $BERTH"
else
    smoke_all berth
fi
if [[ -n ${skip[berth]:-} ]]; then
    for s in "${series[@]}"; do skip[berth-$s]=${skip[berth]}; done
    say "NOT BENCHMARKING BERTH: ${skip[berth]}; measuring the others"
else
    for s in "${series[@]}"; do
        [[ -z ${skip[berth-$s]:-} ]] || say "NOT BENCHMARKING BERTH in ${s//_/+}: ${skip[berth-$s]}; measuring the others"
    done
fi
smoke floor floor || die "the floor does not work on this host"
for name in runc crun; do
    smoke_all "$name"
    for s in "${series[@]}"; do
        [[ -z ${skip[$name-$s]:-} ]] || die "$name: ${s//_/+} does not work on this host"
    done
done

# --- timings -----------------------------------------------------------------------------------
# Each series is timed in ROUNDS rounds of RUNS/ROUNDS runs per command, the rounds of all series
# in turn and the commands' order rotated each round; a command's figures are those of all its
# runs. Hyperfine runs one command's iterations back to back, and this VM drifts by tenths of a
# millisecond within minutes: timed in one block each, the wrapper (subtracted from every other
# median) and the runtimes would meet different machines.
bench() { # SERIES OUTFILE WARMUP NAME...
    local series=$1 out=$2 warmup=$3 name args=()
    shift 3
    for name in "$@"; do
        args+=(-n "$name")
        if [[ $name == floor ]]; then args+=("$(cmd floor floor)"); else args+=("$(cmd "$series" "$name")"); fi
    done
    waitfor hyperfine -N --runs "$((RUNS / ROUNDS))" --warmup "$warmup" --time-unit millisecond \
        --export-json "$out" "${args[@]}" >&2
}
list() { # SERIES -> the names to time in this series (the floor only has a plain run)
    local name
    echo wrapper
    [[ $1 != run ]] || echo floor
    for name in "${runtimes[@]}"; do [[ -n ${skip[$name-$1]:-} ]] || echo "$name"; done
}
for ((round = 0; round < ROUNDS; round++)); do
    for s in "${series[@]}"; do
        say "timing '${s//_/+}', round $((round + 1)) of $ROUNDS ($((RUNS / ROUNDS)) runs each)"
        mapfile -t names < <(list "$s")
        # The order rotated by one each round; the first round warms up.
        shift_by=$((round % ${#names[@]}))
        names=("${names[@]:shift_by}" "${names[@]:0:shift_by}")
        bench "$s" "$work/$s-$round.json" "$((round == 0 ? WARMUP : 0))" "${names[@]}"
    done
done
for s in "${series[@]}"; do
    # Every run of a command, from all rounds (hyperfine's times, in seconds).
    jq -s '{results: (map(.results[]) | group_by(.command)
                      | map({command: .[0].command, times: [.[].times[]]}))}' \
        "$work/$s-"*.json >"$work/$s.json"
done
delete_containers # the ones exec went into

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
timings=()
for s in "${series[@]}"; do timings+=(--slurpfile "$s" "$work/$s.json"); done
jq -n "${timings[@]}" \
    --slurpfile rss "$work/rss.json" --argjson skipped "$skips" \
    --slurpfile seccomp_config "$work/bundle-seccomp/config.json" --arg seccomp_profile "$SECCOMP_PROFILE" \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg kernel "$(uname -r)" \
    --arg cpus "$(nproc)" --arg runs "$RUNS" --arg warmup "$WARMUP" --arg roots "${ROOTS:-tmpfs}" \
    --arg rounds "$ROUNDS" \
    --arg berth "$(version "$BERTH")" --arg runc "$(version "$RUNC")" --arg crun "$(version "$CRUN")" '
    def ms: . * 1000000 | round / 1000;
    def median: sort | length as $n
        | if $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end;
    def mean: add / length;
    # The sample standard deviation, as hyperfine gives it.
    def stddev: if length < 2 then 0
        else mean as $m | (map(. - $m | . * .) | add) / (length - 1) | sqrt end;
    def series($r):
        ($r.results | map(.times as $t | {(.command): {median: ($t | median | ms),
            mean: ($t | mean | ms), stddev: ($t | stddev | ms), min: ($t | min | ms),
            max: ($t | max | ms)}}) | add) as $m
        | $m | with_entries(if .key == "wrapper" then .
                           else .value.net_median = ((.value.median - $m.wrapper.median) * 1000 | round / 1000) end);
    def ratio($a; $b): if $a == null or $b == null or $b <= 0 then null
                       else ($a / $b * 100 | round / 100) end;
    # The floor has no create/start/delete of its own: its run figure stands there too.
    ($ARGS.positional | map({(.): series($ARGS.named[.][0])}) | add
     | .create_start_delete = {wrapper: .create_start_delete.wrapper, floor: .run.floor} + .create_start_delete
    ) as $t
    | $seccomp_config[0].linux.seccomp as $sc
    | {
        date: $date, runs: ($runs | tonumber), warmup: ($warmup | tonumber),
        rounds: ($rounds | tonumber),
        host: {kernel: $kernel, cpus: ($cpus | tonumber)},
        versions: {berth: $berth, runc: $runc, crun: $crun},
        workload: ("busybox rootfs, runc spec config (+cgroup namespace), process /bin/true;"
            + " *_seccomp: the same with linux.seccomp; exec: /bin/true into that config running /bin/sleep"),
        state_roots: $roots,
        seccomp: {profile: $seccomp_profile, capabilities: $seccomp_config[0].process.capabilities.bounding,
            defaultAction: $sc.defaultAction, architectures: $sc.architectures,
            rules: ($sc.syscalls | length), syscalls: ([$sc.syscalls[].names[]] | unique | length)},
        unit: "ms; net_median = median - wrapper median of the same series"
      }
      + $t
      + {
        ratios: ($t | map_values({
            "berth/crun": ratio(.berth.net_median; .crun.net_median),
            "berth/runc": ratio(.berth.net_median; .runc.net_median),
            "berth/floor": ratio(.berth.net_median; .floor.net_median)})),
        peak_rss_kib: $rss[0],
        skipped: $skipped
      }' --args "${series[@]}" >"$OUT"

# --- report ------------------------------------------------------------------------------------
# Tables: wrapper raw median, everything else net of the wrapper. A row with nothing in it is
# left out, except berth's.
table() { # TITLE COLUMN... (a series, or peak_rss)
    jq -r --arg title "$1" '
        def f: if . == null then "-" else tostring end;
        . as $d
        | def cell($row; $c):
            if $c == "peak_rss" then $d.peak_rss_kib[$row]
            elif $row | contains("/") then $d.ratios[$c][$row]
            elif $row == "wrapper" then $d[$c].wrapper.median
            else $d[$c][$row].net_median end;
        "\n" + $title,
        ([""] + ($ARGS.positional | map(if . == "peak_rss" then "peak RSS KiB" else gsub("_"; "+") end)) | @tsv),
        (("wrapper", "floor", "berth", "runc", "crun", "berth/crun", "berth/runc", "berth/floor") as $row
            | [cell($row; $ARGS.positional[])]
            | select($row == "berth" or any(.[]; . != null))
            | [if $row == "wrapper" then "wrapper alone" else $row end] + map(f) | @tsv)
    ' "$OUT" --args "${@:2}" | awk -F'\t' '
        function num(x, fmt) { return x ~ /^[0-9.]+$/ ? sprintf(fmt, x) : x }
        NR <= 2 { print; next }
        NR == 3 { for (i = 2; i <= NF; i++) { w[i] = length($i) < 6 ? 8 : length($i) + 2; kib[i] = $i ~ /KiB/ } }
        {
            line = sprintf("%-14s", $1)
            for (i = 2; i <= NF; i++) line = line sprintf(" %" w[i] "s", num($i, kib[i] ? "%d" : "%.2f"))
            print line
        }'
}
runs=$(jq .runs "$OUT") date=$(jq -r .date "$OUT")
table "berth start-up, $runs runs, median ms net of the wrapper ($date)" \
    run create_start_delete peak_rss
echo "(wrapper: its raw median; the rest: median minus wrapper. The floor has no"
echo " create/start/delete of its own: its run figure is repeated.)"
table "with the default seccomp profile, and exec into a running container" \
    run_seccomp create_start_delete_seccomp exec
jq -r '"(+seccomp: the profile resolved for the capabilities of the config, \(.seccomp.rules) rules naming"
    + " \(.seccomp.syscalls) syscalls,\n \(.seccomp.defaultAction) for the rest; \(.seccomp.profile).\n"
    + " exec: /bin/true into a running container of the plain config.)"' "$OUT"

# Bar chart of the net medians, one scale for all series, eighth-block resolution.
jq -r '$ARGS.positional[] as $k | .[$k] as $m
       | ($m | to_entries[] | select(.key != "wrapper") | .key) as $n
       | [($k | gsub("_"; "+")), $n, $m[$n].net_median] | @tsv' \
    "$OUT" --args "${series[@]}" | awk -F'\t' -v width=48 '
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
    for s in "${series[@]}"; do
        [[ -z ${skip[berth-$s]:-} ]] || echo "berth: not measured in ${s//_/+} (${skip[berth-$s]})"
    done
fi
echo "results: $OUT"
