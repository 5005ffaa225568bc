#!/usr/bin/env bash
# Installs everything berth's build, tests and benchmarks need on Debian
# bookworm (run as root), then builds the workspace once.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(runc crun busybox-static hyperfine jq time linux-perf podman golang-github-containers-common-dev
    # berth-imaged: protoc for berth-proto's build; a real registry, image
    # tools and a Debian root filesystem for its tests; containerd for its
    # benchmark.
    protobuf-compiler docker-registry skopeo umoci debootstrap apache2-utils containerd zstd
    # docker, to test berth as its runtime (never started as a service here).
    docker.io
    # Container networks: the CNI plugins berth-imaged runs, the iptables
    # they drive, and what the network tests reach containers with.
    containernetworking-plugins iptables iproute2 curl
    # CRI streaming: independent clients for exec/attach/port-forward, the
    # Python Kubernetes client (WebSocket) and moby's spdystream (SPDY/3.1,
    # built offline by the tests with Debian's Go).
    python3-kubernetes golang-go golang-github-docker-spdystream-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# One shared target dir, debug for tests; the binaries are static (see .cargo/config.toml).
cargo build --workspace --locked
