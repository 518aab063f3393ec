#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds everything (the eBPF programs through
# the loader's build script), checks formatting and lints, and runs every test as root:
# unit tests, BPF_PROG_TEST_RUN tests, and end-to-end tests in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Tests must never leave anything behind; report (and fail on) leftovers at the end.
cleanup_check() {
  local left=""
  left+=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(plx|plxt)-' || true)
  left+=$(ls -d /sys/fs/bpf/plexus/* /sys/fs/bpf/plexus-test-* 2>/dev/null || true)
  left+=$(pgrep -a -f 'plexus-(agent|workload)' || true)
  if [ -n "$left" ]; then
    echo "LEFTOVERS after tests:"; echo "$left"; return 1
  fi
}

cargo fmt --all -- --check
cargo build --bins
cargo clippy --all-targets -- -D warnings
set +e
cargo test
status=$?
set -e
cleanup_check
exit "$status"
