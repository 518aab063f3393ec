#!/usr/bin/env bash
# Installs everything Plexus needs to build, run the lab and run its tests, on a fresh Debian 12
# machine of this kind (root). Idempotent: a second run only checks.
set -euo pipefail

APT_PACKAGES=(
  # building bpf-linker against the system LLVM
  llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
  # the lab and the tests
  iproute2 iputils-ping ethtool iptables nftables tshark
  # the real container runtime that drives the CNI plugin in tests
  podman runc containernetworking-plugins busybox-static
  # benchmarks and later issues
  iperf3 sockperf etcd-server etcd-client
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# grpcio for the Python client that checks the Hubble API's wire format
# (crates/hubble/tests/python_client.rs).
if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "setup: installing grpcio and grpcio-tools for python3"
  python3 -m pip install --quiet grpcio grpcio-tools 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages grpcio grpcio-tools
fi

if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "setup: adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
fi

if ! command -v bpf-linker >/dev/null 2>&1; then
  echo "setup: building bpf-linker against LLVM 22 (a few minutes, once)"
  PATH="/usr/lib/llvm-22/bin:$PATH" LLVM_PREFIX=/usr/lib/llvm-22 \
    cargo install bpf-linker --version 0.13.0 --locked --no-default-features --features llvm-22
fi

# Pins need the BPF filesystem; the agent mounts it too, this makes it visible to tests early.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
