#!/usr/bin/env bash
# Every test: formatting, lints, unit tests and the end-to-end suites (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# The cgroup suite again, on a pure cgroup v2 kernel under qemu.
./scripts/cgroup2-vm.sh
