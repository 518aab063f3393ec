#!/usr/bin/env bash
# The main job: a one-node Plexus lab on this machine. Installs what it needs, builds everything
# (eBPF included), starts the lab from examples/demo, shows its pods and endpoints and the TCP and
# UDP reachability of every pod pair, then a Service over the frontend pods (which pod answers,
# through socket LB and through tc, NodePort from the node), then applies a policy and shows what it blocks, why (policy
# trace) and the drops as flows; then takes the lab down (KEEP=1 leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== building (release)"
cargo build --release --bins --quiet 2>&1 | grep -v '^warning: plexus-loader' || true
PLEXUS="$PWD/target/release/plexus"
test -x "$PLEXUS"
LAB=${LAB:-demo}

if [ "${KEEP:-0}" != 1 ]; then
  trap '"$PLEXUS" --lab "$LAB" lab down' EXIT
fi
"$PLEXUS" --lab "$LAB" lab down >/dev/null 2>&1 || true

echo "== plexus lab up -f examples/demo"
"$PLEXUS" --lab "$LAB" lab up -f examples/demo
echo
echo "== plexus endpoint list"
"$PLEXUS" --lab "$LAB" endpoint list
echo
echo "== plexus lab matrix --port 80 --protocol TCP   ('.' connected, 'X' blocked; rows from, columns to)"
"$PLEXUS" --lab "$LAB" lab matrix --port 80 --protocol TCP
echo
echo "== plexus lab matrix --port 53 --protocol UDP"
"$PLEXUS" --lab "$LAB" lab matrix --port 53 --protocol UDP
echo
echo "== plexus lab probe shop/backend ops/monitor --port 80"
"$PLEXUS" --lab "$LAB" lab probe shop/backend ops/monitor --port 80
echo
echo "== plexus lab apply -f examples/services   (a Service over the frontend pods, kube-proxy replaced)"
"$PLEXUS" --lab "$LAB" lab apply -f examples/services
echo
echo "== plexus service list"
"$PLEXUS" --lab "$LAB" service list
echo
echo "== plexus lab probe ops/monitor svc/shop/frontend --port 80 --count 6   (socket LB: the backend is picked at connect())"
"$PLEXUS" --lab "$LAB" lab probe ops/monitor svc/shop/frontend --port 80 --count 6
echo
echo "== the same with --socket-lb off   (translated per packet in tc instead)"
"$PLEXUS" --lab "$LAB" lab probe ops/monitor svc/shop/frontend --port 53 --protocol UDP --count 6 --socket-lb off
echo
echo "== plexus lab probe node 10.244.0.1 --port 30080   (NodePort from the node)"
"$PLEXUS" --lab "$LAB" lab probe node 10.244.0.1 --port 30080
echo
echo "== plexus bpf lb list"
"$PLEXUS" --lab "$LAB" bpf lb list
echo
echo "== plexus lab apply -f examples/policy   (only the frontend may call the backend on TCP/80)"
"$PLEXUS" --lab "$LAB" lab apply -f examples/policy
echo
echo "== plexus lab matrix --port 80 --protocol TCP   (with the policy)"
"$PLEXUS" --lab "$LAB" lab matrix --port 80 --protocol TCP --timeout-ms 500
echo
echo "== plexus policy trace ops/monitor shop/backend --port 80   (why is it dropped?)"
"$PLEXUS" --lab "$LAB" policy trace ops/monitor shop/backend --port 80
echo
echo "== plexus observe --verdict DROPPED --last 3   (the drops, with Kubernetes names)"
sleep 0.1
"$PLEXUS" --lab "$LAB" observe --verdict DROPPED --last 3
echo
echo "== plexus status"
"$PLEXUS" --lab "$LAB" status
echo
echo "== plexus bpf endpoint list (per-endpoint counters from the datapath)"
"$PLEXUS" --lab "$LAB" bpf endpoint list
