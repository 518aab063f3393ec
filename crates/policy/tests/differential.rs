//! Differential test of the policy pipeline: random worlds (namespaces, pods with named ports,
//! external addresses, the node) and random `NetworkPolicy`, `CiliumNetworkPolicy` and
//! `CiliumClusterwideNetworkPolicy` objects; every new connection's verdict from Plexus (parse →
//! identities → compile → the datapath's lookup) is compared with a reference evaluator that
//! reads the raw policy JSON with the semantics the Kubernetes and Cilium documentation give.
//!
//! The reference shares no code with the crate: it has its own label-selector, CIDR, port and
//! entity matching, and works on pods, not identities.
//!
//! `PLEXUS_DIFF_SEEDS=n` sets how many worlds run (default 300); `PLEXUS_DIFF_SEED=s` runs only
//! seed `s` (to reproduce a failure); `PLEXUS_DIFF_KEEP_GOING=1` goes on after a mismatch and
//! reports every distinct one at the end. A mismatch is shrunk (policies, rules, peers, ports, pods,
//! labels removed while it persists) and reported with the seed, the world, the policies as YAML,
//! the reference's reasons and Plexus's decisions.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
    time::Instant,
};

use plexus_identity::{endpoint_labels, reserved, Labels, NumericIdentity, Prefix};
use plexus_policy::{
    cidrs, compile, parse_policy, Decision, Direction, EndpointInput, EndpointPolicy, Inputs,
    NamedPort, ParsedPolicy, Proto,
};
use serde_json::{json, Map, Value};

// ---- deterministic randomness ---------------------------------------------------------------

/// xorshift64*, seeded through splitmix64 so that neighbouring seeds give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with `percent`% probability.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// `n` distinct elements, in random order.
    fn distinct<T: Copy>(&mut self, xs: &[T], n: usize) -> Vec<T> {
        let mut pool = xs.to_vec();
        let mut out = Vec::new();
        while out.len() < n && !pool.is_empty() {
            out.push(pool.remove(self.below(pool.len())));
        }
        out
    }
}

// ---- the world --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Namespace {
    name: String,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerPort {
    name: String,
    port: u16,
    proto: &'static str,
}

#[derive(Debug, Clone)]
struct Pod {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone)]
struct World {
    namespaces: Vec<Namespace>,
    pods: Vec<Pod>,
    /// Addresses outside the cluster, some inside the CIDRs policies use.
    externals: Vec<IpAddr>,
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// `world.pods[i]`.
    Pod(usize),
    /// An address outside the cluster.
    External(IpAddr),
    /// The node itself.
    Host,
}

/// A new connection from `src` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    src: Peer,
    dst: Peer,
    proto: &'static str,
    port: u16,
}

impl World {
    fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    fn peer(&self, p: Peer) -> String {
        match p {
            Peer::Pod(i) => format!("pod {}/{}", self.pods[i].namespace, self.pods[i].name),
            Peer::External(ip) => format!("external {ip}"),
            Peer::Host => "host".to_string(),
        }
    }

    fn probe(&self, p: &Probe) -> String {
        format!(
            "{} -> {} {}/{}",
            self.peer(p.src),
            self.peer(p.dst),
            p.proto,
            p.port
        )
    }

    /// Pods that are replicas of one another (same namespace, same labels bar the hash) must
    /// declare the same ports: identities, not pods, carry named ports on egress.
    fn consistent(&self) -> bool {
        self.pods.iter().all(|a| {
            self.pods
                .iter()
                .filter(|b| replica_key(b) == replica_key(a))
                .all(|b| b.ports == a.ports)
        })
    }

    fn describe(&self) -> String {
        let kv = |m: &BTreeMap<String, String>| {
            let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}}", v.join(", "))
        };
        let mut s = String::from("namespaces:\n");
        for n in &self.namespaces {
            let _ = writeln!(s, "  {} {}", n.name, kv(&n.labels));
        }
        s.push_str("pods:\n");
        for p in &self.pods {
            let ports: Vec<String> = p
                .ports
                .iter()
                .map(|c| format!("{}={}/{}", c.name, c.port, c.proto))
                .collect();
            let _ = writeln!(
                s,
                "  {}/{} {} ports [{}]",
                p.namespace,
                p.name,
                kv(&p.labels),
                ports.join(", ")
            );
        }
        let ext: Vec<String> = self.externals.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "externals: {}", ext.join(", "));
        s
    }
}

/// What makes two pods replicas: namespace and labels other than `pod-template-hash`.
fn replica_key(p: &Pod) -> (String, BTreeMap<String, String>) {
    let mut labels = p.labels.clone();
    labels.remove("pod-template-hash");
    (p.namespace.clone(), labels)
}

// ---- generators -------------------------------------------------------------------------------

const NAMESPACES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const APPS: [&str; 3] = ["web", "db", "cache"];
const TIERS: [&str; 2] = ["fe", "be"];
const TEAMS: [&str; 2] = ["a", "b"];
const ENVS: [&str; 2] = ["prod", "dev"];
const HASHES: [&str; 3] = ["5d8f9c", "7c9b44", "66aa01"];
const PORT_NAMES: [&str; 4] = ["http", "metrics", "dns", "grpc"];
const PORT_NUMBERS: [u16; 6] = [80, 81, 443, 53, 8080, 9090];
const EXTERNALS: [&str; 11] = [
    "10.1.2.3",
    "10.1.9.9",
    "10.2.0.1",
    "192.168.1.5",
    "192.168.7.7",
    "8.8.8.8",
    "203.0.113.7",
    "203.0.113.77",
    "2001:db8::1",
    "2001:db8:1::1",
    "2001:dead::1",
];
/// CIDRs policies use, each with the exceptions it may carry (all strictly inside).
const CIDRS: [(&str, &[&str]); 8] = [
    ("10.0.0.0/8", &["10.1.0.0/16", "10.1.2.0/24"]),
    ("10.1.0.0/16", &["10.1.2.0/24"]),
    ("10.1.2.0/24", &[]),
    ("192.168.0.0/16", &["192.168.1.0/24"]),
    ("0.0.0.0/0", &["10.0.0.0/8", "192.168.0.0/16"]),
    ("203.0.113.0/24", &["203.0.113.0/28"]),
    ("2001:db8::/32", &["2001:db8:1::/48"]),
    ("::/0", &["2001:db8::/32"]),
];
/// Numeric ranges ports may use (`port`..=`endPort`).
const RANGES: [(u16, u16); 5] = [(80, 81), (8080, 9090), (53, 80), (440, 450), (1024, 65535)];

fn gen_world(rng: &mut Rng) -> World {
    let n_ns = rng.range(2, 4);
    let mut namespaces = Vec::new();
    for name in &NAMESPACES[..n_ns] {
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/metadata.name".to_string(), name.to_string());
        if rng.chance(70) {
            labels.insert("team".to_string(), rng.pick(&TEAMS).to_string());
        }
        if rng.chance(60) {
            labels.insert("env".to_string(), rng.pick(&ENVS).to_string());
        }
        namespaces.push(Namespace {
            name: name.to_string(),
            labels,
        });
    }
    let n_pods = rng.range(4, 10);
    let mut pods: Vec<Pod> = Vec::new();
    for i in 0..n_pods {
        let namespace = namespaces[rng.below(namespaces.len())].name.clone();
        let mut labels = BTreeMap::new();
        if rng.chance(85) {
            labels.insert("app".to_string(), rng.pick(&APPS).to_string());
        }
        if rng.chance(50) {
            labels.insert("tier".to_string(), rng.pick(&TIERS).to_string());
        }
        if rng.chance(35) {
            labels.insert(
                "pod-template-hash".to_string(),
                rng.pick(&HASHES).to_string(),
            );
        }
        let mut ports: Vec<ContainerPort> = Vec::new();
        let n_ports = rng.range(1, 3);
        for name in rng.distinct(&PORT_NAMES, n_ports) {
            let port = rng.pick(&PORT_NUMBERS);
            let proto = if rng.chance(25) { "UDP" } else { "TCP" };
            if !ports.iter().any(|c| c.port == port && c.proto == proto) {
                ports.push(ContainerPort {
                    name: name.to_string(),
                    port,
                    proto,
                });
            }
        }
        let mut pod = Pod {
            name: format!("pod-{i}"),
            namespace,
            labels,
            ports,
        };
        // Replicas come from one template: same ports.
        if let Some(first) = pods.iter().find(|p| replica_key(p) == replica_key(&pod)) {
            pod.ports = first.ports.clone();
        }
        pods.push(pod);
    }
    let n_ext = rng.range(2, 3);
    let externals = rng
        .distinct(&EXTERNALS, n_ext)
        .into_iter()
        .map(|a| a.parse().expect("address"))
        .collect();
    World {
        namespaces,
        pods,
        externals,
    }
}

fn gen_policies(rng: &mut Rng, world: &World) -> Vec<Value> {
    let n = rng.range(1, 5);
    (0..n)
        .map(|i| match rng.below(20) {
            0..=8 => gen_network_policy(rng, world, i),
            9..=15 => gen_cilium_policy(rng, world, i, false),
            _ => gen_cilium_policy(rng, world, i, true),
        })
        .collect()
}

fn ns_names(world: &World) -> Vec<&str> {
    world.namespaces.iter().map(|n| n.name.as_str()).collect()
}

/// A Kubernetes label selector over pod labels (bare keys).
fn gen_pod_selector(rng: &mut Rng) -> Value {
    let mut sel = Map::new();
    match rng.below(4) {
        0 => return json!({}),
        1 | 2 => {
            let mut labels = Map::new();
            if rng.chance(75) {
                labels.insert("app".into(), json!(rng.pick(&APPS)));
            }
            if labels.is_empty() || rng.chance(30) {
                labels.insert("tier".into(), json!(rng.pick(&TIERS)));
            }
            sel.insert("matchLabels".into(), Value::Object(labels));
        }
        _ => {}
    }
    if sel.is_empty() || rng.chance(30) {
        let n = rng.range(1, 2);
        let exprs: Vec<Value> = (0..n)
            .map(|_| {
                let (key, pool): (&str, &[&str]) = match rng.below(6) {
                    0..=2 => ("app", &APPS),
                    3 | 4 => ("tier", &TIERS),
                    _ => ("team", &TEAMS), // a namespace label: no pod has it
                };
                gen_expression(rng, key, pool)
            })
            .collect();
        sel.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(sel)
}

fn gen_expression(rng: &mut Rng, key: &str, pool: &[&str]) -> Value {
    match rng.below(4) {
        0 => {
            let n = rng.range(1, pool.len());
            json!({"key": key, "operator": "In", "values": rng.distinct(pool, n)})
        }
        1 => json!({"key": key, "operator": "NotIn", "values": rng.distinct(pool, 1)}),
        2 => json!({"key": key, "operator": "Exists"}),
        _ => json!({"key": key, "operator": "DoesNotExist"}),
    }
}

/// A Kubernetes label selector over namespace labels.
fn gen_namespace_selector(rng: &mut Rng, world: &World) -> Value {
    match rng.below(6) {
        0 => json!({}),
        1 => json!({"matchLabels": {"team": rng.pick(&TEAMS)}}),
        2 => json!({"matchLabels": {"kubernetes.io/metadata.name": rng.pick(&ns_names(world))}}),
        3 => json!({"matchLabels": {"env": rng.pick(&ENVS)}}),
        4 => {
            let names = ns_names(world);
            let e = gen_expression(rng, "kubernetes.io/metadata.name", &names);
            json!({ "matchExpressions": [e] })
        }
        _ => {
            let (key, pool) = if rng.chance(50) {
                ("team", TEAMS)
            } else {
                ("env", ENVS)
            };
            json!({ "matchExpressions": [gen_expression(rng, key, &pool)] })
        }
    }
}

/// `(cidr, except)` from the pool, with a random subset of its exceptions.
fn gen_cidr(rng: &mut Rng) -> (&'static str, Vec<&'static str>) {
    let (cidr, excepts) = rng.pick(&CIDRS);
    let n = rng.below(excepts.len() + 1);
    (cidr, rng.distinct(excepts, n))
}

fn gen_network_policy(rng: &mut Rng, world: &World, i: usize) -> Value {
    let namespace = rng.pick(&ns_names(world)).to_string();
    let mut spec = Map::new();
    spec.insert("podSelector".into(), gen_pod_selector(rng));
    match rng.below(8) {
        0 => spec.insert("policyTypes".into(), json!(["Ingress"])),
        1 => spec.insert("policyTypes".into(), json!(["Egress"])),
        2 => spec.insert("policyTypes".into(), json!(["Ingress", "Egress"])),
        3 => spec.insert("policyTypes".into(), json!([])),
        _ => None,
    };
    for (field, peers) in [("ingress", "from"), ("egress", "to")] {
        let rules = match rng.below(10) {
            0..=2 => continue,
            3 => json!([]),
            4 => json!([{}]),
            _ => {
                let n = rng.range(1, 2);
                Value::Array((0..n).map(|_| gen_np_rule(rng, world, peers)).collect())
            }
        };
        spec.insert(field.into(), rules);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": format!("np-{i}"), "namespace": namespace},
        "spec": spec,
    })
}

fn gen_np_rule(rng: &mut Rng, world: &World, peers_field: &str) -> Value {
    let mut rule = Map::new();
    match rng.below(10) {
        0..=2 => {}
        3 => {
            rule.insert(peers_field.into(), json!([]));
        }
        _ => {
            let n = rng.range(1, 2);
            let peers: Vec<Value> = (0..n).map(|_| gen_np_peer(rng, world)).collect();
            rule.insert(peers_field.into(), Value::Array(peers));
        }
    }
    match rng.below(10) {
        0..=3 => {}
        4 => {
            rule.insert("ports".into(), json!([]));
        }
        _ => {
            let n = rng.range(1, 2);
            let ports: Vec<Value> = (0..n).map(|_| gen_np_port(rng)).collect();
            rule.insert("ports".into(), Value::Array(ports));
        }
    }
    Value::Object(rule)
}

fn gen_np_peer(rng: &mut Rng, world: &World) -> Value {
    match rng.below(8) {
        0 | 1 => json!({"podSelector": gen_pod_selector(rng)}),
        2 | 3 => json!({"namespaceSelector": gen_namespace_selector(rng, world)}),
        4 | 5 => json!({
            "podSelector": gen_pod_selector(rng),
            "namespaceSelector": gen_namespace_selector(rng, world),
        }),
        _ => {
            let (cidr, except) = gen_cidr(rng);
            if except.is_empty() && rng.chance(50) {
                json!({"ipBlock": {"cidr": cidr}})
            } else {
                json!({"ipBlock": {"cidr": cidr, "except": except}})
            }
        }
    }
}

fn gen_np_port(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 | 1 => json!({"port": rng.pick(&PORT_NUMBERS)}),
        2 => json!({"port": rng.pick(&PORT_NUMBERS), "protocol": "UDP"}),
        3 => {
            let (lo, hi) = rng.pick(&RANGES);
            json!({"port": lo, "endPort": hi, "protocol": rng.pick(&["TCP", "UDP"])})
        }
        4 | 5 => json!({"port": rng.pick(&PORT_NAMES)}),
        6 => json!({"port": rng.pick(&PORT_NAMES), "protocol": "UDP"}),
        7 => json!({"protocol": "SCTP"}),
        8 => json!({"protocol": "UDP"}),
        _ => json!({"port": rng.pick(&PORT_NUMBERS), "protocol": "TCP"}),
    }
}

fn gen_cilium_policy(rng: &mut Rng, world: &World, i: usize, clusterwide: bool) -> Value {
    let mut policy = Map::new();
    policy.insert("apiVersion".into(), json!("cilium.io/v2"));
    if clusterwide {
        policy.insert("kind".into(), json!("CiliumClusterwideNetworkPolicy"));
        policy.insert("metadata".into(), json!({"name": format!("ccnp-{i}")}));
    } else {
        let namespace = rng.pick(&ns_names(world));
        policy.insert("kind".into(), json!("CiliumNetworkPolicy"));
        policy.insert(
            "metadata".into(),
            json!({"name": format!("cnp-{i}"), "namespace": namespace}),
        );
    }
    let (spec, specs) = match rng.below(10) {
        0..=5 => (true, 0),
        6..=8 => (false, rng.range(1, 2)),
        _ => (true, 1),
    };
    if spec {
        policy.insert("spec".into(), gen_cilium_rule(rng, world, clusterwide));
    }
    if specs > 0 {
        let rules: Vec<Value> = (0..specs)
            .map(|_| gen_cilium_rule(rng, world, clusterwide))
            .collect();
        policy.insert("specs".into(), Value::Array(rules));
    }
    Value::Object(policy)
}

/// A Cilium endpoint selector: bare, `k8s:` or `any:` keys; for peers sometimes the namespace
/// or a namespace label.
fn gen_endpoint_selector(rng: &mut Rng, world: &World, subject: bool, clusterwide: bool) -> Value {
    let mut labels = Map::new();
    let mut exprs = Vec::new();
    let prefix = |rng: &mut Rng| rng.pick(&["", "", "k8s:", "any:"]);
    match rng.below(8) {
        0 | 1 => {}
        2..=4 => {
            let p = prefix(rng);
            labels.insert(format!("{p}app"), json!(rng.pick(&APPS)));
        }
        5 => {
            let p = prefix(rng);
            labels.insert(format!("{p}tier"), json!(rng.pick(&TIERS)));
        }
        _ => {
            let p = prefix(rng);
            let (key, pool): (&str, &[&str]) = if rng.chance(60) {
                ("app", &APPS)
            } else {
                ("tier", &TIERS)
            };
            exprs.push(gen_expression(rng, &format!("{p}{key}"), pool));
        }
    }
    // The namespace: a subject in a namespaced policy gets it overridden; elsewhere it scopes.
    let ns_chance = if subject && clusterwide { 25 } else { 15 };
    if rng.chance(ns_chance) {
        let key = if subject && !clusterwide {
            "k8s:io.kubernetes.pod.namespace"
        } else {
            rng.pick(&[
                "k8s:io.kubernetes.pod.namespace",
                "io.kubernetes.pod.namespace",
            ])
        };
        labels.insert(key.into(), json!(rng.pick(&ns_names(world))));
    } else if !subject && rng.chance(12) {
        let p = rng.pick(&["", "k8s:"]);
        labels.insert(
            format!("{p}io.cilium.k8s.namespace.labels.team"),
            json!(rng.pick(&TEAMS)),
        );
    }
    let mut sel = Map::new();
    if !labels.is_empty() {
        sel.insert("matchLabels".into(), Value::Object(labels));
    }
    if !exprs.is_empty() {
        sel.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(sel)
}

fn gen_cilium_rule(rng: &mut Rng, world: &World, clusterwide: bool) -> Value {
    let mut rule = Map::new();
    rule.insert(
        "endpointSelector".into(),
        gen_endpoint_selector(rng, world, true, clusterwide),
    );
    for (field, ingress, percent) in [
        ("ingress", true, 55),
        ("ingressDeny", true, 20),
        ("egress", false, 45),
        ("egressDeny", false, 20),
    ] {
        if !rng.chance(percent) {
            continue;
        }
        let entries = if rng.chance(10) {
            json!([])
        } else {
            let n = rng.range(1, 2);
            Value::Array(
                (0..n)
                    .map(|_| gen_cilium_entry(rng, world, ingress, clusterwide))
                    .collect(),
            )
        };
        rule.insert(field.into(), entries);
    }
    if rng.chance(10) {
        let mut dd = Map::new();
        if rng.chance(60) {
            dd.insert("ingress".into(), json!(!rng.chance(70)));
        }
        if dd.is_empty() || rng.chance(50) {
            dd.insert("egress".into(), json!(!rng.chance(70)));
        }
        rule.insert("enableDefaultDeny".into(), Value::Object(dd));
    }
    Value::Object(rule)
}

fn gen_cilium_entry(rng: &mut Rng, world: &World, ingress: bool, clusterwide: bool) -> Value {
    let dir = if ingress { "from" } else { "to" };
    let mut entry = Map::new();
    let n_l3 = match rng.below(10) {
        0..=2 => 0,
        3..=8 => 1,
        _ => 2,
    };
    for field in rng.distinct(&["Endpoints", "Entities", "CIDR", "CIDRSet"], n_l3) {
        let value = match field {
            "Endpoints" => {
                let n = rng.range(1, 2);
                Value::Array(
                    (0..n)
                        .map(|_| {
                            if rng.chance(8) {
                                // The node, by its reserved label.
                                json!({"matchLabels": {"reserved:host": ""}})
                            } else {
                                gen_endpoint_selector(rng, world, false, clusterwide)
                            }
                        })
                        .collect(),
                )
            }
            "Entities" => {
                let n = rng.range(1, 2);
                let pool: &[&str] = if rng.chance(80) {
                    &["world", "cluster", "all", "host"]
                } else {
                    &["world-ipv4", "world-ipv6", "host", "world"]
                };
                json!(rng.distinct(pool, n))
            }
            "CIDR" => json!([gen_cidr(rng).0]),
            _ => {
                let (cidr, except) = gen_cidr(rng);
                if except.is_empty() && rng.chance(50) {
                    json!([{ "cidr": cidr }])
                } else {
                    json!([{"cidr": cidr, "except": except}])
                }
            }
        };
        entry.insert(format!("{dir}{field}"), value);
    }
    // An entry with neither peers nor ports is `{}`, which Cilium documents as selecting nothing
    // (the way to get default deny alone); keep some of those.
    if rng.chance(50) || (n_l3 == 0 && rng.chance(70)) {
        let n = rng.range(1, 2);
        let ports: Vec<Value> = (0..n).map(|_| gen_cilium_port(rng)).collect();
        entry.insert("toPorts".into(), json!([{ "ports": ports }]));
    }
    Value::Object(entry)
}

fn gen_cilium_port(rng: &mut Rng) -> Value {
    let number = |rng: &mut Rng| rng.pick(&PORT_NUMBERS).to_string();
    match rng.below(11) {
        0 | 1 => json!({"port": number(rng), "protocol": "TCP"}),
        2 => json!({"port": number(rng)}),
        3 => json!({"port": number(rng), "protocol": "UDP"}),
        4 => json!({"port": "0", "protocol": rng.pick(&["UDP", "TCP", "ANY"])}),
        5 => {
            let (lo, hi) = rng.pick(&RANGES);
            json!({"port": lo.to_string(), "endPort": hi, "protocol": rng.pick(&["TCP", "ANY"])})
        }
        6 => json!({"port": rng.pick(&PORT_NAMES)}),
        7 => json!({"port": rng.pick(&PORT_NAMES), "protocol": rng.pick(&["TCP", "UDP"])}),
        8 => json!({"port": number(rng), "protocol": "ANY"}),
        9 => json!({"protocol": "SCTP"}),
        _ => json!({"port": number(rng), "protocol": "SCTP"}),
    }
}

// ---- the reference evaluator ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// Reasons, collected only when asked for (the hot loop runs without).
struct Why {
    on: bool,
    lines: Vec<String>,
}

impl Why {
    fn off() -> Self {
        Why {
            on: false,
            lines: Vec::new(),
        }
    }

    fn on() -> Self {
        Why {
            on: true,
            lines: Vec::new(),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.on {
            self.lines.push(line());
        }
    }
}

/// What the policies say about one pod in one direction.
#[derive(Default)]
struct Tally {
    enforced: bool,
    allowed: bool,
    denied: bool,
}

/// Whether the reference allows a new connection `src` → `dst` on `proto`/`port`.
fn reference_allowed(
    world: &World,
    policies: &[Value],
    src: Peer,
    dst: Peer,
    proto: &'static str,
    port: u16,
) -> bool {
    reference_verdict(world, policies, src, dst, proto, port, &mut Why::off())
}

/// The reference's verdict, with its reasons in `why`: the source pod's egress and the
/// destination pod's ingress must both allow.
fn reference_verdict(
    world: &World,
    policies: &[Value],
    src: Peer,
    dst: Peer,
    proto: &'static str,
    port: u16,
    why: &mut Why,
) -> bool {
    let egress = match src {
        Peer::Pod(p) => direction_allowed(world, policies, p, Dir::Egress, dst, proto, port, why),
        _ => true,
    };
    let ingress = match dst {
        Peer::Pod(p) => direction_allowed(world, policies, p, Dir::Ingress, src, proto, port, why),
        _ => true,
    };
    egress && ingress
}

#[allow(clippy::too_many_arguments)]
fn direction_allowed(
    world: &World,
    policies: &[Value],
    me: usize,
    dir: Dir,
    other: Peer,
    proto: &'static str,
    port: u16,
    why: &mut Why,
) -> bool {
    let mut tally = Tally::default();
    for policy in policies {
        let m = Match {
            world,
            policy,
            me,
            dir,
            other,
            proto,
            port,
        };
        match policy["kind"].as_str() {
            Some("NetworkPolicy") => m.network_policy(&mut tally, why),
            Some("CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy") => {
                m.cilium_policy(&mut tally, why)
            }
            other => panic!("the generator made a policy of kind {other:?}"),
        }
    }
    let d = match dir {
        Dir::Ingress => "ingress",
        Dir::Egress => "egress",
    };
    let me_name = || format!("{}/{}", world.pods[me].namespace, world.pods[me].name);
    if tally.denied {
        why.note(|| format!("{d} of {}: DENIED (a deny rule matches)", me_name()));
        false
    } else if tally.allowed {
        why.note(|| format!("{d} of {}: allowed by a rule", me_name()));
        true
    } else if dir == Dir::Ingress && other == Peer::Host {
        why.note(|| format!("{d} of {}: allowed, the host may reach its pods", me_name()));
        true
    } else if tally.enforced {
        why.note(|| {
            format!(
                "{d} of {}: DENIED (default deny, no rule allows)",
                me_name()
            )
        });
        false
    } else {
        why.note(|| format!("{d} of {}: allowed (no policy isolates it)", me_name()));
        true
    }
}

/// An array field, empty when absent or null.
fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn policy_name(policy: &Value) -> String {
    let m = &policy["metadata"];
    match m["namespace"].as_str() {
        Some(ns) => format!(
            "{} {ns}/{}",
            policy["kind"].as_str().unwrap_or("?"),
            m["name"].as_str().unwrap_or("?")
        ),
        None => format!(
            "{} {}",
            policy["kind"].as_str().unwrap_or("?"),
            m["name"].as_str().unwrap_or("?")
        ),
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all must hold; `{}` and
/// an absent selector match everything) over labels looked up by `get`. `skip` names a
/// `matchLabels` key to ignore.
fn selector_matches<'a>(
    sel: &Value,
    get: &dyn Fn(&str) -> Option<&'a str>,
    skip: Option<&str>,
) -> bool {
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            if Some(k.as_str()) != skip && get(k) != v.as_str() {
                return false;
            }
        }
    }
    arr(sel, "matchExpressions").iter().all(|e| {
        let key = e["key"].as_str().expect("expression key");
        let have = get(key);
        let listed = |h: &str| arr(e, "values").iter().any(|v| v.as_str() == Some(h));
        match e["operator"].as_str() {
            Some("In") => have.is_some_and(listed),
            Some("NotIn") => !have.is_some_and(listed),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            op => panic!("the generator made operator {op:?}"),
        }
    })
}

/// Whether `ip` is inside the CIDR `text` (same family, leading bits equal).
fn in_cidr(text: &str, ip: IpAddr) -> bool {
    let (addr, len) = text.split_once('/').expect("a CIDR has a '/'");
    let addr: IpAddr = addr.parse().expect("CIDR address");
    let len: u32 = len.parse().expect("CIDR length");
    let (a, b, width) = match (addr, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    len == 0 || (a >> (width - len)) == (b >> (width - len))
}

/// A pod's label as Cilium's selectors see it: `k8s:`/`any:`/bare keys; the namespace and the
/// namespace's labels under their special keys; `pod-template-hash` is not a security label.
fn cilium_label<'a>(world: &'a World, pod: &'a Pod, key: &str) -> Option<&'a str> {
    let name = match key.split_once(':') {
        Some(("k8s" | "any", name)) => name,
        Some(_) => return None,
        None => key,
    };
    if name == "io.kubernetes.pod.namespace" {
        return Some(&pod.namespace);
    }
    if let Some(ns_key) = name.strip_prefix("io.cilium.k8s.namespace.labels.") {
        return world
            .namespace(&pod.namespace)?
            .labels
            .get(ns_key)
            .map(String::as_str);
    }
    if name == "pod-template-hash" {
        return None;
    }
    pod.labels.get(name).map(String::as_str)
}

/// The keys a selector names, as written.
fn selector_keys(sel: &Value) -> impl Iterator<Item = &str> {
    let labels = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys().map(String::as_str));
    let exprs = arr(sel, "matchExpressions")
        .iter()
        .filter_map(|e| e["key"].as_str());
    labels.chain(exprs)
}

/// One question: does `policy` isolate, allow or deny `world.pods[me]`'s traffic in `dir` with
/// `other` on `proto`/`port`?
struct Match<'a> {
    world: &'a World,
    policy: &'a Value,
    me: usize,
    dir: Dir,
    other: Peer,
    proto: &'static str,
    port: u16,
}

impl Match<'_> {
    fn pod(&self) -> &Pod {
        &self.world.pods[self.me]
    }

    /// Named ports resolve against the destination pod: on ingress the selected pod itself, on
    /// egress the peer (an address outside the cluster has no named ports).
    fn named_port(&self, name: &str) -> bool {
        let owner = match (self.dir, self.other) {
            (Dir::Ingress, _) => self.pod(),
            (Dir::Egress, Peer::Pod(q)) => &self.world.pods[q],
            (Dir::Egress, _) => return false,
        };
        owner
            .ports
            .iter()
            .any(|c| c.name == name && c.port == self.port && c.proto == self.proto)
    }

    // ---- Kubernetes NetworkPolicy ----

    fn network_policy(&self, tally: &mut Tally, why: &mut Why) {
        let policy_ns = self.policy["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let pod = self.pod();
        let spec = &self.policy["spec"];
        // A policy selects pods of its own namespace that match spec.podSelector.
        if pod.namespace != policy_ns
            || !selector_matches(
                &spec["podSelector"],
                &|k| pod.labels.get(k).map(String::as_str),
                None,
            )
        {
            return;
        }
        // policyTypes, by default Ingress, and Egress when the spec has an egress section.
        let types: Vec<&str> = arr(spec, "policyTypes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let (type_name, rules_key, peers_key) = match self.dir {
            Dir::Ingress => ("Ingress", "ingress", "from"),
            Dir::Egress => ("Egress", "egress", "to"),
        };
        let in_force = if types.is_empty() {
            self.dir == Dir::Ingress || spec.get("egress").is_some_and(|v| !v.is_null())
        } else {
            types.contains(&type_name)
        };
        if !in_force {
            return;
        }
        tally.enforced = true;
        why.note(|| format!("  isolated by {}", policy_name(self.policy)));
        for (i, rule) in arr(spec, rules_key).iter().enumerate() {
            let peers = arr(rule, peers_key);
            let peer_ok = peers.is_empty() || peers.iter().any(|p| self.np_peer(policy_ns, p));
            let ports = arr(rule, "ports");
            let port_ok = ports.is_empty() || ports.iter().any(|p| self.np_port(p));
            if peer_ok && port_ok {
                tally.allowed = true;
                why.note(|| {
                    format!(
                        "  allowed by {} spec.{rules_key}[{i}]",
                        policy_name(self.policy)
                    )
                });
            }
        }
    }

    fn np_peer(&self, policy_ns: &str, peer: &Value) -> bool {
        if let Some(block) = peer.get("ipBlock") {
            // Pods are never matched by ipBlock (Cilium's reading, which Plexus follows).
            let Peer::External(ip) = self.other else {
                return false;
            };
            let cidr = block["cidr"].as_str().expect("ipBlock.cidr");
            return in_cidr(cidr, ip)
                && !arr(block, "except")
                    .iter()
                    .any(|e| in_cidr(e.as_str().expect("except"), ip));
        }
        let Peer::Pod(q) = self.other else {
            return false;
        };
        let peer_pod = &self.world.pods[q];
        let ns_ok = match peer.get("namespaceSelector") {
            Some(sel) => match self.world.namespace(&peer_pod.namespace) {
                Some(ns) => selector_matches(sel, &|k| ns.labels.get(k).map(String::as_str), None),
                None => false,
            },
            None => peer_pod.namespace == policy_ns,
        };
        let pod_ok = match peer.get("podSelector") {
            Some(sel) => {
                selector_matches(sel, &|k| peer_pod.labels.get(k).map(String::as_str), None)
            }
            None => true,
        };
        ns_ok && pod_ok
    }

    fn np_port(&self, entry: &Value) -> bool {
        let proto = entry["protocol"].as_str().unwrap_or("TCP");
        if proto != self.proto {
            return false;
        }
        match &entry["port"] {
            Value::Null => true,
            Value::Number(n) => {
                let lo = n.as_u64().expect("port number");
                let hi = entry["endPort"].as_u64().unwrap_or(lo);
                (lo..=hi).contains(&u64::from(self.port))
            }
            Value::String(name) => self.named_port(name),
            other => panic!("the generator made port {other}"),
        }
    }

    // ---- Cilium ----

    fn cilium_policy(&self, tally: &mut Tally, why: &mut Why) {
        let namespace = match self.policy["kind"].as_str() {
            Some("CiliumNetworkPolicy") => Some(
                self.policy["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default"),
            ),
            _ => None,
        };
        let mut rules: Vec<(Option<usize>, &Value)> = Vec::new();
        if self.policy["spec"].is_object() {
            rules.push((None, &self.policy["spec"]));
        }
        rules.extend(
            arr(self.policy, "specs")
                .iter()
                .enumerate()
                .map(|(i, r)| (Some(i), r)),
        );
        let (allow_key, deny_key) = match self.dir {
            Dir::Ingress => ("ingress", "ingressDeny"),
            Dir::Egress => ("egress", "egressDeny"),
        };
        for (index, rule) in rules {
            if !self.cilium_subject(namespace, &rule["endpointSelector"]) {
                continue;
            }
            let path = || match index {
                None => "spec".to_string(),
                Some(i) => format!("specs[{i}]"),
            };
            let allows = arr(rule, allow_key);
            let denies = arr(rule, deny_key);
            // A rule with ingress (or ingressDeny) entries puts its endpoints in default deny
            // for ingress, unless enableDefaultDeny.ingress is false; likewise egress.
            let switch = rule["enableDefaultDeny"][allow_key].as_bool();
            if (!allows.is_empty() || !denies.is_empty()) && switch != Some(false) {
                tally.enforced = true;
                why.note(|| {
                    format!(
                        "  default deny from {} {}",
                        policy_name(self.policy),
                        path()
                    )
                });
            }
            for (i, entry) in allows.iter().enumerate() {
                if self.cilium_entry(namespace, entry) {
                    tally.allowed = true;
                    why.note(|| {
                        format!(
                            "  allowed by {} {}.{allow_key}[{i}]",
                            policy_name(self.policy),
                            path()
                        )
                    });
                }
            }
            for (i, entry) in denies.iter().enumerate() {
                if self.cilium_entry(namespace, entry) {
                    tally.denied = true;
                    why.note(|| {
                        format!(
                            "  denied by {} {}.{deny_key}[{i}]",
                            policy_name(self.policy),
                            path()
                        )
                    });
                }
            }
        }
    }

    /// A namespaced policy's endpointSelector applies in the policy's namespace only (a
    /// namespace it names in matchLabels is replaced); a cluster-wide one anywhere.
    fn cilium_subject(&self, namespace: Option<&str>, sel: &Value) -> bool {
        let pod = self.pod();
        let get = |k: &str| cilium_label(self.world, pod, k);
        match namespace {
            Some(ns) => {
                pod.namespace == ns
                    && selector_matches(sel, &get, Some("k8s:io.kubernetes.pod.namespace"))
            }
            None => selector_matches(sel, &get, None),
        }
    }

    /// One ingress/egress entry: peers (the union of its L3 fields; every peer when it has
    /// none) and ports (every port when it has no toPorts). An entry with neither matches
    /// nothing.
    fn cilium_entry(&self, namespace: Option<&str>, entry: &Value) -> bool {
        let p = match self.dir {
            Dir::Ingress => "from",
            Dir::Egress => "to",
        };
        let field = |name: &str| arr(entry, &format!("{p}{name}"));
        let (endpoints, entities, cidrs, cidr_sets) = (
            field("Endpoints"),
            field("Entities"),
            field("CIDR"),
            field("CIDRSet"),
        );
        let has_l3 = !(endpoints.is_empty()
            && entities.is_empty()
            && cidrs.is_empty()
            && cidr_sets.is_empty());
        let to_ports = arr(entry, "toPorts");
        if !has_l3 && to_ports.is_empty() {
            return false;
        }
        let peer_ok = !has_l3
            || endpoints
                .iter()
                .any(|s| self.cilium_peer_selector(namespace, s))
            || entities
                .iter()
                .any(|e| self.entity(e.as_str().expect("entity")))
            || cidrs
                .iter()
                .any(|c| self.external_in(c.as_str().expect("cidr"), &[]))
            || cidr_sets
                .iter()
                .any(|s| self.external_in(s["cidr"].as_str().expect("cidr"), arr(s, "except")));
        let port_ok = to_ports.is_empty()
            || to_ports
                .iter()
                .any(|r| arr(r, "ports").iter().any(|pp| self.cilium_port(pp)));
        peer_ok && port_ok
    }

    fn external_in(&self, cidr: &str, except: &[Value]) -> bool {
        let Peer::External(ip) = self.other else {
            return false;
        };
        in_cidr(cidr, ip)
            && !except
                .iter()
                .any(|e| in_cidr(e.as_str().expect("except"), ip))
    }

    /// Peer endpoint selectors select pods; in a namespaced policy only pods of its namespace,
    /// unless the selector names the namespace or a namespace label. A selector on a
    /// `reserved:` label selects what carries it (the node carries `reserved:host`), unscoped.
    fn cilium_peer_selector(&self, namespace: Option<&str>, sel: &Value) -> bool {
        let reserved = selector_keys(sel).any(|k| k.starts_with("reserved:"));
        let pod = match self.other {
            Peer::Pod(q) => &self.world.pods[q],
            Peer::Host if reserved => {
                let host = |k: &str| (k == "reserved:host").then_some("");
                return selector_matches(sel, &host, None);
            }
            _ => return false,
        };
        if let (Some(ns), false) = (namespace, reserved) {
            let scoped = selector_keys(sel)
                .map(|k| k.split_once(':').map_or(k, |(_, n)| n))
                .any(|k| {
                    k == "io.kubernetes.pod.namespace"
                        || k.starts_with("io.cilium.k8s.namespace.labels.")
                });
            if !scoped && pod.namespace != ns {
                return false;
            }
        }
        selector_matches(sel, &|k| cilium_label(self.world, pod, k), None)
    }

    /// world: outside the cluster (world-ipv4/-ipv6: its IPv4/IPv6 part); cluster: pods and the
    /// node; host: the node; all: anything.
    fn entity(&self, name: &str) -> bool {
        match (name, self.other) {
            ("all", _) => true,
            ("world", Peer::External(_)) => true,
            ("world-ipv4", Peer::External(ip)) => ip.is_ipv4(),
            ("world-ipv6", Peer::External(ip)) => ip.is_ipv6(),
            ("cluster", Peer::Pod(_) | Peer::Host) => true,
            ("host", Peer::Host) => true,
            _ => false,
        }
    }

    /// A toPorts port: protocol (default ANY: TCP, UDP and SCTP), a number or range, "0" or
    /// absent for every port, or a name.
    fn cilium_port(&self, pp: &Value) -> bool {
        let proto = pp["protocol"].as_str().unwrap_or("ANY");
        if proto != "ANY" && proto != self.proto {
            return false;
        }
        let text = match &pp["port"] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("the generator made port {other}"),
        };
        if text.is_empty() || text == "0" {
            return true;
        }
        match text.parse::<u64>() {
            Ok(lo) => {
                let hi = pp["endPort"].as_u64().filter(|&e| e != 0).unwrap_or(lo);
                (lo..=hi).contains(&u64::from(self.port))
            }
            Err(_) => self.named_port(&text),
        }
    }
}

// ---- the system under test ------------------------------------------------------------------

/// Plexus's view of a world: the parsed policies compiled for every pod, with the identities
/// the agent would assign.
struct Plexus {
    parsed: Vec<ParsedPolicy>,
    compiled: BTreeMap<u32, EndpointPolicy>,
    pod_identity: Vec<NumericIdentity>,
    cidr_identities: BTreeMap<Prefix, NumericIdentity>,
}

/// What Plexus decides for a probe: the source's egress and the destination's ingress lookups.
struct PlexusVerdict {
    egress: Option<Decision>,
    ingress: Option<Decision>,
}

impl PlexusVerdict {
    fn allowed(&self) -> bool {
        [&self.egress, &self.ingress]
            .into_iter()
            .flatten()
            .all(Decision::allowed)
    }
}

fn proto_of(name: &str) -> Proto {
    Proto::parse(name).expect("TCP, UDP or SCTP")
}

fn endpoint_id(pod: usize) -> u32 {
    pod as u32 + 1
}

impl Plexus {
    fn build(world: &World, policies: &[Value]) -> Result<Plexus, String> {
        let parsed = policies
            .iter()
            .enumerate()
            .map(|(i, p)| parse_policy(p).map_err(|e| format!("policy #{i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        // Equal identity labels share one identity, numbered from 256 in order of appearance.
        let mut by_labels: BTreeMap<Labels, NumericIdentity> = BTreeMap::new();
        let mut identities = BTreeMap::new();
        let mut endpoints = Vec::new();
        let mut pod_identity = Vec::new();
        for (i, pod) in world.pods.iter().enumerate() {
            let ns_labels = world
                .namespace(&pod.namespace)
                .map(|n| n.labels.clone())
                .unwrap_or_default();
            let labels = endpoint_labels(&pod.namespace, &pod.labels, &ns_labels);
            let next = reserved::FIRST_ALLOCATED + by_labels.len() as NumericIdentity;
            let identity = *by_labels.entry(labels.clone()).or_insert(next);
            identities.insert(identity, labels.clone());
            pod_identity.push(identity);
            endpoints.push(EndpointInput {
                id: endpoint_id(i),
                identity,
                labels,
                named_ports: pod
                    .ports
                    .iter()
                    .map(|c| NamedPort {
                        name: c.name.clone(),
                        port: c.port,
                        proto: proto_of(c.proto),
                    })
                    .collect(),
            });
        }
        let cidr_identities: BTreeMap<Prefix, NumericIdentity> = cidrs(&parsed)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, reserved::FIRST_LOCAL + i as NumericIdentity))
            .collect();
        let compiled = compile(&Inputs {
            policies: &parsed,
            endpoints: &endpoints,
            identities: &identities,
            cidr_identities: &cidr_identities,
        });
        Ok(Plexus {
            parsed,
            compiled,
            pod_identity,
            cidr_identities,
        })
    }

    /// The identity the datapath sees for a peer: a pod's, the host's, or the longest CIDR
    /// identity containing an address (its family's world when none does).
    fn identity(&self, p: Peer) -> NumericIdentity {
        match p {
            Peer::Pod(i) => self.pod_identity[i],
            Peer::Host => reserved::HOST,
            Peer::External(ip) => self
                .cidr_identities
                .iter()
                .filter(|(prefix, _)| prefix.contains_addr(ip))
                .max_by_key(|(prefix, _)| prefix.len)
                .map_or(reserved::world_of(ip.is_ipv4()), |(_, id)| *id),
        }
    }

    fn decide(&self, probe: &Probe) -> PlexusVerdict {
        let proto = proto_of(probe.proto).number();
        let lookup = |pod: usize, d: Direction, peer: Peer| {
            self.compiled
                .get(&endpoint_id(pod))
                .expect("every pod is compiled")
                .lookup(d, self.identity(peer), proto, probe.port)
        };
        PlexusVerdict {
            egress: match probe.src {
                Peer::Pod(p) => Some(lookup(p, Direction::Egress, probe.dst)),
                _ => None,
            },
            ingress: match probe.dst {
                Peer::Pod(p) => Some(lookup(p, Direction::Ingress, probe.src)),
                _ => None,
            },
        }
    }
}

// ---- probes -------------------------------------------------------------------------------

/// Every port a policy or pod mentions, the neighbours of policy ports (range edges), and two
/// that nothing mentions.
fn probe_ports(world: &World, policies: &[Value]) -> Vec<u16> {
    fn walk(v: &Value, out: &mut BTreeSet<u16>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let n = match child {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse::<u64>().ok(),
                        _ => None,
                    };
                    if let (true, Some(n)) = (k == "port" || k == "endPort", n) {
                        for p in [n.saturating_sub(1), n, n + 1] {
                            if (1..=65535).contains(&p) {
                                out.insert(p as u16);
                            }
                        }
                    }
                    walk(child, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out: BTreeSet<u16> = [22, 5000].into();
    policies.iter().for_each(|p| walk(p, &mut out));
    out.extend(
        world
            .pods
            .iter()
            .flat_map(|p| p.ports.iter().map(|c| c.port)),
    );
    out.into_iter().collect()
}

/// Every ordered pair with a pod at one end at least (a pod is not probed against itself).
fn peer_pairs(world: &World) -> Vec<(Peer, Peer)> {
    let pods = (0..world.pods.len()).map(Peer::Pod);
    let all: Vec<Peer> = pods
        .chain(world.externals.iter().map(|a| Peer::External(*a)))
        .chain([Peer::Host])
        .collect();
    let mut out = Vec::new();
    for &src in &all {
        for &dst in &all {
            let has_pod = matches!(src, Peer::Pod(_)) || matches!(dst, Peer::Pod(_));
            if src != dst && has_pod {
                out.push((src, dst));
            }
        }
    }
    out
}

const PROTOS: [&str; 3] = ["TCP", "UDP", "SCTP"];

#[derive(Default)]
struct Stats {
    probes: u64,
    allowed: u64,
    denied: u64,
    kinds: BTreeMap<String, u64>,
}

/// The first probe on which Plexus and the reference disagree.
fn first_mismatch(
    world: &World,
    policies: &[Value],
    plexus: &Plexus,
    stats: &mut Stats,
) -> Option<Probe> {
    let ports = probe_ports(world, policies);
    for (src, dst) in peer_pairs(world) {
        for proto in PROTOS {
            for &port in &ports {
                let probe = Probe {
                    src,
                    dst,
                    proto,
                    port,
                };
                let want = reference_allowed(world, policies, src, dst, proto, port);
                stats.probes += 1;
                if want {
                    stats.allowed += 1;
                } else {
                    stats.denied += 1;
                }
                if plexus.decide(&probe).allowed() != want {
                    return Some(probe);
                }
            }
        }
    }
    None
}

// ---- shrinking --------------------------------------------------------------------------------

/// Whether the probe still shows a disagreement (policies that no longer parse, or a world
/// whose replicas disagree on ports, do not count).
fn still_mismatches(world: &World, policies: &[Value], probe: &Probe) -> bool {
    if !world.consistent() {
        return false;
    }
    let Ok(plexus) = Plexus::build(world, policies) else {
        return false;
    };
    let want = reference_allowed(
        world,
        policies,
        probe.src,
        probe.dst,
        probe.proto,
        probe.port,
    );
    plexus.decide(probe).allowed() != want
}

/// Every copy of `v` with one object key or array element removed, at any depth (the policy's
/// apiVersion, kind and metadata stay).
fn json_removals(v: &Value, top: bool) -> Vec<Value> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if top && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let mut c = m.clone();
                c.remove(k);
                out.push(Value::Object(c));
                for edit in json_removals(child, false) {
                    let mut c = m.clone();
                    c.insert(k.clone(), edit);
                    out.push(Value::Object(c));
                }
            }
        }
        Value::Array(a) => {
            for i in 0..a.len() {
                let mut c = a.clone();
                c.remove(i);
                out.push(Value::Array(c));
                for edit in json_removals(&a[i], false) {
                    let mut c = a.clone();
                    c[i] = edit;
                    out.push(Value::Array(c));
                }
            }
        }
        _ => {}
    }
    out
}

fn remove_pod(world: &World, probe: &Probe, j: usize) -> (World, Probe) {
    let mut w = world.clone();
    w.pods.remove(j);
    let remap = |p: Peer| match p {
        Peer::Pod(i) if i > j => Peer::Pod(i - 1),
        other => other,
    };
    let p = Probe {
        src: remap(probe.src),
        dst: remap(probe.dst),
        ..*probe
    };
    (w, p)
}

/// Removes whatever it can while the mismatch persists.
fn shrink(
    mut world: World,
    mut policies: Vec<Value>,
    mut probe: Probe,
) -> (World, Vec<Value>, Probe) {
    loop {
        let mut progress = false;
        // Whole policies.
        let mut i = 0;
        while i < policies.len() {
            let mut c = policies.clone();
            c.remove(i);
            if still_mismatches(&world, &c, &probe) {
                policies = c;
                progress = true;
            } else {
                i += 1;
            }
        }
        // Pods not in the probe.
        let mut j = 0;
        while j < world.pods.len() {
            if probe.src == Peer::Pod(j) || probe.dst == Peer::Pod(j) {
                j += 1;
                continue;
            }
            let (w, p) = remove_pod(&world, &probe, j);
            if still_mismatches(&w, &policies, &p) {
                (world, probe) = (w, p);
                progress = true;
            } else {
                j += 1;
            }
        }
        // Externals not in the probe, namespaces without pods.
        let used = |a: &IpAddr| probe.src == Peer::External(*a) || probe.dst == Peer::External(*a);
        world.externals.retain(used);
        let mut k = 0;
        while k < world.namespaces.len() {
            let name = world.namespaces[k].name.clone();
            if world.pods.iter().any(|p| p.namespace == name) {
                k += 1;
                continue;
            }
            let mut w = world.clone();
            w.namespaces.remove(k);
            if still_mismatches(&w, &policies, &probe) {
                world = w;
                progress = true;
            } else {
                k += 1;
            }
        }
        // Parts of policies: rules, peers, ports, selector terms, fields.
        for pi in 0..policies.len() {
            'edits: loop {
                for edit in json_removals(&policies[pi], true) {
                    let mut c = policies.clone();
                    c[pi] = edit;
                    if still_mismatches(&world, &c, &probe) {
                        policies = c;
                        progress = true;
                        continue 'edits;
                    }
                }
                break;
            }
        }
        // Labels of pods and namespaces; ports of pods (of all replicas at once).
        for pi in 0..world.pods.len() {
            for key in world.pods[pi].labels.keys().cloned().collect::<Vec<_>>() {
                let mut w = world.clone();
                w.pods[pi].labels.remove(&key);
                if still_mismatches(&w, &policies, &probe) {
                    world = w;
                    progress = true;
                }
            }
            for port in world.pods[pi].ports.clone() {
                let mut w = world.clone();
                let key = replica_key(&world.pods[pi]);
                for p in w.pods.iter_mut().filter(|p| replica_key(p) == key) {
                    p.ports.retain(|c| *c != port);
                }
                if still_mismatches(&w, &policies, &probe) {
                    world = w;
                    progress = true;
                }
            }
        }
        for ni in 0..world.namespaces.len() {
            for key in world.namespaces[ni]
                .labels
                .keys()
                .cloned()
                .collect::<Vec<_>>()
            {
                let mut w = world.clone();
                w.namespaces[ni].labels.remove(&key);
                if still_mismatches(&w, &policies, &probe) {
                    world = w;
                    progress = true;
                }
            }
        }
        if !progress {
            return (world, policies, probe);
        }
    }
}

// ---- reporting --------------------------------------------------------------------------------

fn yaml(policies: &[Value]) -> String {
    policies
        .iter()
        .map(|p| format!("---\n{}", serde_yaml::to_string(p).expect("YAML")))
        .collect()
}

fn report(
    seed: u64,
    world: &World,
    policies: &[Value],
    probe: &Probe,
    shrunk_from: (usize, usize),
) -> String {
    let mut why = Why::on();
    let want = reference_verdict(
        world,
        policies,
        probe.src,
        probe.dst,
        probe.proto,
        probe.port,
        &mut why,
    );
    let plexus = Plexus::build(world, policies).expect("the shrunk policies parse");
    let got = plexus.decide(probe);
    let verdict = |b: bool| if b { "ALLOWED" } else { "DENIED" };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plexus disagrees with the reference evaluator (seed {seed}; shrunk from {} policies and {} pods)",
        shrunk_from.0, shrunk_from.1
    );
    let _ = writeln!(
        s,
        "reproduce: PLEXUS_DIFF_SEED={seed} cargo test -p plexus-policy --test differential\n"
    );
    let _ = writeln!(s, "probe: {}", world.probe(probe));
    let _ = writeln!(s, "reference: {}", verdict(want));
    for l in &why.lines {
        let _ = writeln!(s, "  {l}");
    }
    let _ = writeln!(s, "plexus: {}", verdict(got.allowed()));
    let ids = |p: Peer| format!("{} is identity {}", world.peer(p), plexus.identity(p));
    let _ = writeln!(s, "  {}; {}", ids(probe.src), ids(probe.dst));
    if let Some(d) = &got.egress {
        let _ = writeln!(s, "  egress lookup: {d:?}");
    }
    if let Some(d) = &got.ingress {
        let _ = writeln!(s, "  ingress lookup: {d:?}");
    }
    let _ = writeln!(s, "\nworld:\n{}", world.describe());
    let _ = writeln!(s, "policies:\n{}", yaml(policies));
    let _ = writeln!(s, "parsed rules:");
    for p in &plexus.parsed {
        for e in &p.enforcements {
            let _ = writeln!(
                s,
                "  {}: default deny {:?} for {}",
                e.origin, e.direction, e.subject
            );
        }
        for r in &p.rules {
            let _ = writeln!(
                s,
                "  {}: {:?} {:?} peers {:?} ports {:?}",
                r.origin, r.action, r.direction, r.peers, r.ports
            );
        }
    }
    s
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

// ---- the tests --------------------------------------------------------------------------------

#[test]
fn plexus_agrees_with_the_reference_evaluator() {
    let seeds: Vec<u64> = match env_u64("PLEXUS_DIFF_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("PLEXUS_DIFF_SEEDS").unwrap_or(300)).collect(),
    };
    let keep_going = std::env::var_os("PLEXUS_DIFF_KEEP_GOING").is_some();
    let started = Instant::now();
    let mut stats = Stats::default();
    // Shrunk cases already reported (by their policies), and the reports.
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for &seed in &seeds {
        let mut rng = Rng::new(seed);
        let world = gen_world(&mut rng);
        let policies = gen_policies(&mut rng, &world);
        for p in &policies {
            *stats
                .kinds
                .entry(p["kind"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let plexus = Plexus::build(&world, &policies).unwrap_or_else(|e| {
            panic!(
                "seed {seed}: a generated policy does not parse: {e}\npolicies:\n{}",
                yaml(&policies)
            )
        });
        if let Some(probe) = first_mismatch(&world, &policies, &plexus, &mut stats) {
            let from = (policies.len(), world.pods.len());
            let (w, p, probe) = shrink(world, policies, probe);
            if !keep_going {
                panic!("{}", report(seed, &w, &p, &probe, from));
            }
            if seen.insert(yaml(&p)) {
                failures.push(report(seed, &w, &p, &probe, from));
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} distinct mismatches:\n\n{}",
            failures.len(),
            failures.join("\n==========\n\n")
        );
    }
    eprintln!(
        "differential: {} worlds, {} probes ({} allowed, {} denied), policies {:?}, {:.1?}",
        seeds.len(),
        stats.probes,
        stats.allowed,
        stats.denied,
        stats.kinds,
        started.elapsed()
    );
    if seeds.len() >= 50 {
        // A run where (almost) everything is allowed or denied would test little.
        let share = |n: u64| n as f64 / stats.probes as f64;
        assert!(
            share(stats.allowed) > 0.1,
            "too few allowed probes to be useful"
        );
        assert!(
            share(stats.denied) > 0.1,
            "too few denied probes to be useful"
        );
    }
}

/// The reference evaluator on cases the documentation spells out, so that a bug there is not
/// mistaken for one in Plexus.
#[test]
fn reference_follows_the_documented_examples() {
    let world = World {
        namespaces: vec![
            Namespace {
                name: "x".into(),
                labels: [("kubernetes.io/metadata.name".into(), "x".into())].into(),
            },
            Namespace {
                name: "y".into(),
                labels: [
                    ("kubernetes.io/metadata.name".into(), "y".into()),
                    ("team".into(), "a".into()),
                ]
                .into(),
            },
        ],
        pods: vec![
            Pod {
                name: "web".into(),
                namespace: "x".into(),
                labels: [("app".into(), "web".into())].into(),
                ports: vec![ContainerPort {
                    name: "http".into(),
                    port: 8080,
                    proto: "TCP",
                }],
            },
            Pod {
                name: "db".into(),
                namespace: "x".into(),
                labels: [("app".into(), "db".into())].into(),
                ports: vec![],
            },
            Pod {
                name: "other".into(),
                namespace: "y".into(),
                labels: [("app".into(), "db".into())].into(),
                ports: vec![],
            },
        ],
        externals: vec!["10.1.2.3".parse().expect("address")],
    };
    let (web, db, other, ext) = (
        Peer::Pod(0),
        Peer::Pod(1),
        Peer::Pod(2),
        Peer::External("10.1.2.3".parse().expect("address")),
    );
    let allowed = |policy: &Value, src, dst, proto, port| {
        reference_allowed(&world, std::slice::from_ref(policy), src, dst, proto, port)
    };
    // Default deny ingress: nothing reaches web, but the host still does.
    let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "d", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}}});
    assert!(!allowed(&deny, db, web, "TCP", 80));
    assert!(allowed(&deny, Peer::Host, web, "TCP", 80));
    assert!(allowed(&deny, web, db, "TCP", 80), "egress not isolated");
    // Allow from pods with app=db in the policy's namespace, on the named port.
    let allow = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                              "ports": [{"port": "http"}]}]}});
    let both = [deny, allow.clone()];
    assert!(reference_allowed(&world, &both, db, web, "TCP", 8080));
    assert!(!allowed(&allow, db, web, "TCP", 80));
    assert!(!allowed(&allow, db, web, "UDP", 8080));
    assert!(!allowed(&allow, other, web, "TCP", 8080), "other namespace");
    // namespaceSelector alone: every pod of matching namespaces.
    let by_ns = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "n", "namespace": "x"},
        "spec": {"podSelector": {},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}});
    assert!(allowed(&by_ns, other, db, "UDP", 53));
    assert!(!allowed(&by_ns, web, db, "UDP", 53));
    // An egress section without policyTypes isolates egress too; ipBlock with except.
    let egress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "e", "namespace": "x"},
        "spec": {"podSelector": {},
                 "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}});
    assert!(!allowed(&egress, web, ext, "TCP", 443));
    let egress_ok = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "e", "namespace": "x"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}});
    assert!(allowed(&egress_ok, web, ext, "TCP", 443));
    assert!(
        !allowed(&egress_ok, web, db, "TCP", 443),
        "pods are not in ipBlocks"
    );
    // A CIDR holds addresses of its own family only: 0.0.0.0/0 is not the IPv6 world.
    let v4_world = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "e", "namespace": "x"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}});
    let v6 = Peer::External("2001:db8::1".parse().expect("address"));
    assert!(allowed(&v4_world, web, ext, "TCP", 443));
    assert!(!allowed(&v4_world, web, v6, "TCP", 443));
    // Cilium: deny wins over allow; entities.
    let cnp = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "c", "namespace": "x"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "db"}},
                 "ingress": [{"fromEntities": ["cluster"]}],
                 "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}],
                                  "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}});
    assert!(!allowed(&cnp, web, db, "TCP", 80));
    assert!(allowed(&cnp, web, db, "TCP", 81));
    assert!(
        allowed(&cnp, other, db, "UDP", 80),
        "cluster covers other namespaces"
    );
    assert!(
        !allowed(&cnp, ext, db, "UDP", 80),
        "the world is not the cluster"
    );
    let world_v6 = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "w", "namespace": "x"},
        "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["world-ipv6"]}]}});
    assert!(allowed(&world_v6, web, v6, "TCP", 443));
    assert!(!allowed(&world_v6, web, ext, "TCP", 443));
    // An empty rule only enables default deny.
    let empty = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "c", "namespace": "x"},
        "spec": {"endpointSelector": {}, "egress": [{}]}});
    assert!(!allowed(&empty, web, db, "TCP", 80));
    assert!(
        !allowed(&empty, web, other, "TCP", 80),
        "egress of x is default deny"
    );
    // A namespaced policy's fromEndpoints stay in its namespace; a cluster-wide one's do not.
    let scoped = |kind: &str| {
        json!({"apiVersion": "cilium.io/v2", "kind": kind,
            "metadata": {"name": "s", "namespace": "x"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}]}})
    };
    assert!(!allowed(
        &scoped("CiliumNetworkPolicy"),
        other,
        web,
        "TCP",
        80
    ));
    assert!(allowed(
        &scoped("CiliumClusterwideNetworkPolicy"),
        other,
        web,
        "TCP",
        80
    ));
    // toPorts without a protocol covers every protocol; ranges with endPort.
    let any = json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"endpointSelector": {},
                 "ingress": [{"toPorts": [{"ports": [{"port": "80", "endPort": 90}]}]}]}});
    for proto in PROTOS {
        assert!(allowed(&any, ext, web, proto, 85));
        assert!(!allowed(&any, ext, web, proto, 91));
    }
}
