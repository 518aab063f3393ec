//! `policy-scale`: how Plexus's policy computation scales. Builds, in memory, a cluster of
//! 10,000 endpoints in 2,000 identities with 1,000 policies (NetworkPolicies and
//! CiliumNetworkPolicies), computes the full desired policy state (time and peak memory), then
//! writes one node's share into a real, pinned BPF policy map and times how long one policy
//! change takes to reach the map (recompute + diff + write). Needs root for the map part.

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use anyhow::Context;
use clap::Parser;
use plexus_identity::{endpoint_labels, Labels, NumericIdentity, Prefix};
use plexus_loader::{
    policy_map::{self, BpfPolicyStore},
    Datapath,
};
use plexus_policy::{compile, parse_policy, EndpointInput, Inputs, NamedPort, ParsedPolicy, Proto};
use serde_json::{json, Value};

/// Options.
#[derive(Debug, Parser)]
#[command(about = "Policy computation and map update at scale")]
struct Args {
    /// Endpoints in the cluster.
    #[arg(long, default_value_t = 10_000)]
    endpoints: usize,
    /// Distinct identities (label sets).
    #[arg(long, default_value_t = 2_000)]
    identities: usize,
    /// Policies.
    #[arg(long, default_value_t = 1_000)]
    policies: usize,
    /// Endpoints on the node whose map is written (Kubernetes' default pod limit per node).
    #[arg(long, default_value_t = 110)]
    node_endpoints: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const NAMESPACES: usize = 20;

/// Identity number `i` has labels app=app-i, tier=(i % 3), in namespace ns-(i % 20).
fn identity_labels(i: usize) -> (String, Labels) {
    let ns = format!("ns-{}", i % NAMESPACES);
    let pod: Labels = [
        ("app".to_string(), format!("app-{i}")),
        ("tier".to_string(), format!("t{}", i % 3)),
    ]
    .into();
    let nsl: Labels = [
        ("kubernetes.io/metadata.name".to_string(), ns.clone()),
        ("team".to_string(), format!("team-{}", i % 5)),
    ]
    .into();
    (ns.clone(), endpoint_labels(&ns, &pod, &nsl))
}

/// Policy `p`: selects app-(p*2 % ids) in its namespace; allows from a few apps, a tier of a
/// namespace, and a CIDR, on a few ports; every fourth is a CNP with a deny rule.
fn policy(p: usize, ids: usize, extra_port: bool) -> Value {
    let target = (p * 2) % ids;
    let ns = format!("ns-{}", target % NAMESPACES);
    let from_a = (p * 7 + 1) % ids;
    let from_b = (p * 13 + 5) % ids;
    let mut ports = vec![
        json!({"port": 80}),
        json!({"port": 8000, "endPort": 8080}),
        json!({"port": "http"}),
    ];
    if extra_port {
        ports.push(json!({"port": 9999}));
    }
    if p % 4 == 3 {
        json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": format!("cnp-{p}"), "namespace": ns},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": format!("app-{target}")}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": format!("app-{from_a}"), "k8s:io.kubernetes.pod.namespace": format!("ns-{}", from_a % NAMESPACES)}}],
                             "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}, {"port": "53", "protocol": "ANY"}]}]},
                            {"fromEntities": ["host", "remote-node"]}],
                "ingressDeny": [{"fromCIDRSet": [{"cidr": format!("198.18.{}.0/24", p % 250)}]}],
                "egress": [{"toEndpoints": [{"matchLabels": {"tier": "t1"}}]}, {"toCIDR": ["203.0.113.0/24"]}]
            }
        })
    } else {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": format!("np-{p}"), "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": {"app": format!("app-{target}")}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": format!("app-{from_a}")}}, "namespaceSelector": {}},
                              {"podSelector": {"matchLabels": {"app": format!("app-{from_b}")}}, "namespaceSelector": {}},
                              {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", p % 5)}}, "podSelector": {"matchLabels": {"tier": "t2"}}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": [format!("10.{}.0.0/16", p % 200)]}}],
                     "ports": ports}
                ]
            }
        })
    }
}

/// Peak resident memory (VmHWM) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak-RSS watermark, so the next reading is the peak of what follows.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct World {
    identities: BTreeMap<NumericIdentity, Labels>,
    endpoints: Vec<EndpointInput>,
}

fn world(a: &Args) -> World {
    let mut identities = BTreeMap::new();
    for i in 0..a.identities {
        identities.insert(256 + i as u32, identity_labels(i).1);
    }
    let endpoints = (0..a.endpoints)
        .map(|e| {
            let i = e % a.identities;
            EndpointInput {
                id: 1 + e as u32,
                identity: 256 + i as u32,
                labels: identities[&(256 + i as u32)].clone(),
                named_ports: vec![NamedPort {
                    name: "http".into(),
                    port: 8080 + (i % 10) as u16,
                    proto: Proto::TCP,
                }],
            }
        })
        .collect();
    World {
        identities,
        endpoints,
    }
}

fn cidr_ids(pols: &[ParsedPolicy]) -> BTreeMap<Prefix, NumericIdentity> {
    plexus_policy::cidrs(pols)
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, (1 << 24) + i as u32))
        .collect()
}

fn desired(
    compiled: &BTreeMap<u32, plexus_policy::EndpointPolicy>,
) -> BTreeMap<(u32, plexus_abi::PolicyKey), plexus_abi::PolicyValue> {
    let mut out = BTreeMap::new();
    for (ep, pol) in compiled {
        for (k, e) in &pol.entries {
            out.insert(
                policy_map::to_kernel(*ep, k),
                policy_map::to_value(e.action, 1),
            );
        }
    }
    out
}

/// Removes a pin directory on drop.
struct Pins(PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let w = world(&a);
    let raw: Vec<Value> = (0..a.policies)
        .map(|p| policy(p, a.identities, false))
        .collect();
    let t = Instant::now();
    let pols: Vec<ParsedPolicy> = raw
        .iter()
        .map(parse_policy)
        .collect::<Result<_, _>>()
        .context("parsing")?;
    let parse_ms = t.elapsed().as_secs_f64() * 1e3;
    let cidrs = cidr_ids(&pols);

    // 1. The full desired state for every endpoint of the cluster.
    let base_rss = rss_kib();
    reset_peak();
    let t = Instant::now();
    let compiled = compile(&Inputs {
        policies: &pols,
        endpoints: &w.endpoints,
        identities: &w.identities,
        cidr_identities: &cidrs,
    });
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let peak_kib = peak_rss_kib().saturating_sub(base_rss);
    let entries: usize = compiled.values().map(|p| p.entries.len()).sum();
    let selected = compiled
        .values()
        .filter(|p| !p.entries.is_empty() || !p.ingress_enforced.is_empty())
        .count();
    drop(compiled);

    // 2. One node's share in a real BPF map; then one policy change.
    let local: Vec<EndpointInput> = w
        .endpoints
        .iter()
        .step_by((a.endpoints / a.node_endpoints).max(1))
        .take(a.node_endpoints)
        .cloned()
        .collect();
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/plexus-bench-{}",
        std::process::id()
    )));
    let mut dp = Datapath::load(&pins.0).context("loading the datapath (needs root)")?;
    let _ = dp.program(plexus_abi::maps::programs::FROM_CONTAINER);
    let mut store = BpfPolicyStore::open(&pins.0)?;
    let node_inputs = |pols: &[ParsedPolicy]| {
        compile(&Inputs {
            policies: pols,
            endpoints: &local,
            identities: &w.identities,
            cidr_identities: &cidrs,
        })
    };
    let t = Instant::now();
    let node = desired(&node_inputs(&pols));
    let mut actual = BTreeMap::new();
    let fill = policy_map::sync(&mut store, &mut actual, &node, || Ok(()), || Ok(()))?;
    let fill_ms = t.elapsed().as_secs_f64() * 1e3;

    // Change the policy that selects the first local endpoint's app: add a port.
    let target_identity = (local[0].identity - 256) as usize;
    let changed = (0..a.policies)
        .find(|p| (p * 2) % a.identities == target_identity && p % 4 != 3)
        .unwrap_or(0);
    let mut pols2 = pols.clone();
    pols2[changed] = parse_policy(&policy(changed, a.identities, true))?;
    let t = Instant::now();
    let compiled2 = node_inputs(&pols2);
    let recompute_ms = t.elapsed().as_secs_f64() * 1e3;
    let node2 = desired(&compiled2);
    let t2 = Instant::now();
    let change = policy_map::sync(&mut store, &mut actual, &node2, || Ok(()), || Ok(()))?;
    let write_ms = t2.elapsed().as_secs_f64() * 1e3;
    let change_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(dp);

    let r = json!({
        "endpoints": a.endpoints, "identities": a.identities, "policies": a.policies,
        "parse_ms": parse_ms,
        "full_compute_ms": compile_ms, "full_compute_peak_mib": peak_kib as f64 / 1024.0,
        "full_entries": entries, "endpoints_with_policy": selected,
        "node_endpoints": local.len(), "node_entries": node.len(), "node_fill_ms": fill_ms, "node_fill_written": fill.written,
        "one_change_total_ms": change_ms, "one_change_recompute_ms": recompute_ms, "one_change_map_write_ms": write_ms,
        "one_change_entries_written": change.written, "one_change_entries_removed": change.removed,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "policy-scale: {} endpoints, {} identities, {} policies",
        a.endpoints, a.identities, a.policies
    );
    println!("  parse all policies           {parse_ms:>10.1} ms");
    println!("  full desired state           {compile_ms:>10.1} ms   peak +{:.1} MiB   {entries} entries ({selected} endpoints with policy)", peak_kib as f64 / 1024.0);
    println!(
        "  node map fill ({} eps)      {fill_ms:>10.1} ms   {} entries written",
        local.len(),
        fill.written
    );
    println!("  one policy change -> map     {change_ms:>10.1} ms   (recompute {recompute_ms:.1} ms, write {write_ms:.2} ms: +{} -{})", change.written, change.removed);
    Ok(())
}
