#!/usr/bin/env bash
# Runs berth's cgroup suite on a pure cgroup v2 kernel: Debian's cloud
# kernel under qemu (TCG), with an initramfs holding busybox, berth, its
# conformance checker and the statically linked test binaries (the cgroup
# module's unit tests and the end-to-end cgroup suite). Prints the
# guest's test output and exits with the suite's status.
#
#   ./scripts/cgroup2-vm.sh [TEST-FILTER]
#
# With VM_SCRIPT=FILE the guest runs FILE (as /t/script, in /tmp) instead of the suites, with
# the static binaries and directories VM_FILES lists copied to /t (bench/runtime-steps-vm.sh);
# its exit status is the guest's.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/vm-setup.sh

target_dir=${CARGO_TARGET_DIR:-target}
bin_dir=$target_dir/x86_64-unknown-linux-gnu/debug
if [ -n "${VM_SCRIPT:-}" ]; then
    read -ra files <<<"${VM_FILES:-}"
    bins=()
    for f in "${files[@]}"; do [ -d "$f" ] || bins+=("$f"); done
else
    cargo build -q -p berth-runtime -p berth-checker
    test_bin=$(cargo test -q -p berth-integration --test cgroups --no-run --message-format=json \
        | jq -r 'select(.profile.test == true and .target.name == "cgroups") | .executable')
    # The runtime's unit tests of the cgroup module, the eBPF device filter's among them.
    unit_bin=$(cargo test -q -p berth-runtime --lib --no-run --message-format=json \
        | jq -r 'select(.profile.test == true and .target.kind == ["lib"]) | .executable')
    bins=("$bin_dir/berth" "$bin_dir/berth-checker" "$test_bin" "$unit_bin")
fi
for bin in "${bins[@]}" /bin/busybox; do
    linkage=$(ldd "$bin" 2>&1 || true)
    if ! grep -Eq "statically linked|not a dynamic executable" <<<"$linkage"; then
        echo "cgroup2-vm: $bin is not static; the guest has no shared libraries" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/berth-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,t,newroot,modules}
cp /bin/busybox "$root/bin/busybox"
if [ -n "${VM_SCRIPT:-}" ]; then
    cp "$VM_SCRIPT" "$root/t/script"
    for f in "${files[@]}"; do cp -a "$f" "$root/t/"; done
else
    cp "$bin_dir/berth" "$bin_dir/berth-checker" "$root/t/"
    cp "$test_bin" "$root/t/cgroups-test"
    cp "$unit_bin" "$root/t/unit-test"
fi
# A RAM disk gives the block IO tests a real block device.
cp "$(find target/vm/kernel/modules -name brd.ko | head -1)" "$root/modules/"

# Stage 1 moves everything onto a tmpfs and switches root: pivot_root (as
# every container start does) cannot leave the initramfs' rootfs.
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t tmpfs -o size=700m root /newroot
for d in bin t modules init2; do /bin/busybox cp -a /$d /newroot/; done
/bin/busybox mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/tmp /newroot/run /newroot/etc
exec /bin/busybox switch_root /newroot /init2
INIT
cat > "$root/init2" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts devpts /dev/pts
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
insmod /modules/brd.ko rd_nr=1 rd_size=8192
echo "guest: \$(uname -r), cgroup2 controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)"
cd /tmp
if [ -x /t/script ]; then
    /t/script
    echo "berth-vm-exit=\$?"
    poweroff -f
fi
/t/unit-test --test-threads=1 cgroups::
unit=\$?
BERTH_TARGET_DIR=/t PATH=/bin RUST_BACKTRACE=1 /t/cgroups-test --test-threads=1 ${1:-}
suite=\$?
echo "berth-vm-exit=\$((unit | suite))"
poweroff -f
INIT
chmod +x "$root/init" "$root/init2"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# TCG: KVM exists on these machines but hangs.
timeout 1200 qemu-system-x86_64 -accel tcg -m 1536 -smp 2 -nographic -no-reboot \
    -kernel target/vm/kernel/vmlinuz -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" | tee "$work/console.log" | tr -d '\r'
status=$(tr -d '\r' < "$work/console.log" | sed -n 's/^berth-vm-exit=//p' | tail -1)
if [ -z "$status" ]; then
    echo "cgroup2-vm: the guest did not finish the suite" >&2
    exit 1
fi
exit "$status"
