#!/usr/bin/env bash
# Installs what the cgroup v2 guest needs (qemu from bookworm-backports, cpio)
# and unpacks Debian's cloud kernel under target/vm/kernel. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
vm=target/vm
mkdir -p "$vm"

if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/berth-backports.list
    apt-get -o DPkg::Lock::Timeout=600 update -qq
fi
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends -t bookworm-backports qemu-system-x86 cpio
fi

if [ ! -s "$vm/kernel/vmlinuz" ]; then
    # The versioned package the cloud metapackage points at today.
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    rm -rf "$vm/deb" "$vm/kernel.tmp"
    mkdir -p "$vm/deb" "$vm/kernel.tmp"
    (cd "$vm/deb" && apt-get download "$pkg" >/dev/null)
    dpkg -x "$vm"/deb/*.deb "$vm/kernel.tmp/root"
    cp "$vm"/kernel.tmp/root/boot/vmlinuz-* "$vm/kernel.tmp/vmlinuz"
    mv "$vm/kernel.tmp/root/lib/modules" "$vm/kernel.tmp/modules"
    rm -rf "$vm/kernel.tmp/root" "$vm/deb" "$vm/kernel"
    mv "$vm/kernel.tmp" "$vm/kernel"
fi
