#!/usr/bin/env bash
# bench/runtime-steps.sh's timeline on a pure cgroup v2 kernel: the guest of
# scripts/cgroup2-vm.sh runs `BERTH_TRACE=1 berth run` RUNS times on bench/startup.sh's bundle for
# each of three variants, in turn:
#   base      BASE (an older berth, e.g. main's release build), if given;
#   clone3    BERTH: the init is born in its cgroup (clone3's CLONE_INTO_CGROUP);
#   fallback  BERTH under a seccomp filter that answers clone3 with ENOSYS (docker's default
#             profile does): the init is cloned the old way and writes its cgroup.procs itself.
# and prints, per variant, bench/runtime-steps.sh's per-step medians.
#
# The guest is qemu without KVM (TCG): every step is several times slower than on the host, so
# compare the variants with each other, not with the host's figures. A second apart, the runs
# let the kernel's cgroup lock go quiet, as a container started now and then finds it.
#
# Run as root:  bench/runtime-steps-vm.sh
# Environment:  BERTH (release build), BASE (optional), WITHOUT_CLONE3 (integration's example),
#               RUNC (only for `runc spec`), RUNS (20).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu
BERTH=${BERTH:-$target/release/berth}
BASE=${BASE:-}
# Only a wrapper that installs the filter and executes berth: the debug build will do.
WITHOUT_CLONE3=${WITHOUT_CLONE3:-$target/debug/examples/without_clone3}
RUNC=${RUNC:-/usr/sbin/runc}
RUNS=${RUNS:-20}

die() { echo "runtime-steps-vm.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (qemu, and the guest's cgroups)"
for tool in jq perl "$BERTH" "$WITHOUT_CLONE3" "$RUNC" ${BASE:+"$BASE"}; do
    command -v "$tool" >/dev/null || die "missing $tool (cargo build --release -p berth-runtime; cargo build -p berth-integration --example without_clone3)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-steps-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

bench_startup_bundle "$work/bundle" "$RUNC"
cp "$BERTH" "$work/berth"
cp "$WITHOUT_CLONE3" "$work/without_clone3"
files=("$work/berth" "$work/without_clone3" "$work/bundle")
variants="clone3 fallback"
if [[ -n $BASE ]]; then
    cp "$BASE" "$work/berth-base"
    files+=("$work/berth-base")
    variants="base $variants"
fi

# Each trace line comes back on the console as `vm-trace VARIANT I LINE`.
cat >"$work/guest.sh" <<GUEST
#!/bin/busybox sh
for i in \$(seq $RUNS); do
    for variant in $variants; do
        case \$variant in
        base) set -- /t/berth-base ;;
        clone3) set -- /t/berth ;;
        fallback) set -- /t/without_clone3 /t/berth ;;
        esac
        sleep 1
        BERTH_TRACE=1 "\$@" --root /run/steps-\$variant run --bundle /t/bundle \$variant-\$i 2>/tmp/trace \\
            || { cat /tmp/trace; exit 1; }
        sed "s/^/vm-trace \$variant \$i /" /tmp/trace
    done
done
GUEST
chmod +x "$work/guest.sh"

VM_SCRIPT=$work/guest.sh VM_FILES="${files[*]}" "$repo/scripts/cgroup2-vm.sh" >"$work/console" 2>&1 \
    || { tail -40 "$work/console"; die "the guest failed"; }
tr -d '\r' <"$work/console" | perl -ne '
    next unless /^vm-trace (\S+) (\d+) (berth-trace .*)$/;
    open my $fh, ">>", "'"$work"'/$1-$2.trace" or die $!;
    print $fh "$3\n";
'
tr -d '\r' <"$work/console" | grep -m1 -o 'guest: .*' || true
for variant in $variants; do
    bench_steps_report "berth run on pure cgroup v2, $variant" "$work/$variant"-*.trace
done
