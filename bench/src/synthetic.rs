//! A synthetic node for the observer benchmark: local endpoints with Kubernetes names, labels,
//! workloads, identities and policy rules (the observer's [`Directory`]), and datapath events
//! that look like their traffic: TCP connections traced packet by packet, policy verdicts,
//! policy drops, and connections to the world.
//!
//! Deterministic for a given seed, so runs compare.

use std::{collections::HashMap, net::IpAddr, net::Ipv4Addr};

use plexus_abi::{
    event::{
        point, verdict, EVENT_DATA_LEN, EVENT_DROP, EVENT_F_EGRESS, EVENT_F_NEW, EVENT_F_REPLY,
        EVENT_POLICY_VERDICT, EVENT_TRACE,
    },
    DropReason, Event, IpAddr6,
};
use plexus_agent::observer::{Directory, EndpointMeta};
use plexus_identity::{endpoint_labels, reserved, Labels};
use serde::Serialize;

/// The node name in the directory.
pub const NODE: &str = "bench-node1";
/// Pods per workload (Deployment replicas).
const REPLICAS: usize = 5;
/// Namespaces the workloads are spread over.
const NAMESPACES: [&str; 8] = [
    "frontend",
    "checkout",
    "payments",
    "catalog",
    "search",
    "auth",
    "orders",
    "monitoring",
];
/// Kinds of workload, with the port they serve.
const APPS: [(&str, u16); 6] = [
    ("web", 8080),
    ("api", 8443),
    ("db", 5432),
    ("cache", 6379),
    ("queue", 5672),
    ("worker", 9090),
];
/// First identity of the workloads (the allocator's first cluster-wide number).
const FIRST_IDENTITY: u32 = reserved::FIRST_ALLOCATED;
/// Rule ids of the allow rules start here, one per workload; deny rules follow them.
const FIRST_RULE: u32 = 1;

/// A small, fast, deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; seed 0 is replaced by a fixed non-zero value.
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The workload an endpoint belongs to.
#[derive(Debug, Clone)]
struct Workload {
    namespace: &'static str,
    name: String,
    port: u16,
    identity: u32,
}

/// The synthetic node: its endpoints and the workloads they belong to.
#[derive(Debug, Clone)]
pub struct Node {
    workloads: Vec<Workload>,
    /// Endpoint `i`'s workload index.
    endpoint_workload: Vec<usize>,
}

/// How many events of each kind a generated trace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// `EVENT_TRACE`.
    pub traces: u64,
    /// `EVENT_DROP`.
    pub drops: u64,
    /// `EVENT_POLICY_VERDICT`.
    pub verdicts: u64,
    /// Connections the events belong to.
    pub connections: u64,
}

impl Node {
    /// `endpoints` pods (at least 1), [`REPLICAS`] per workload, workloads spread over the
    /// namespaces.
    pub fn new(endpoints: usize) -> Self {
        let endpoints = endpoints.max(1);
        let n_workloads = endpoints.div_ceil(REPLICAS);
        let workloads = (0..n_workloads)
            .map(|w| {
                let (kind, port) = APPS[w % APPS.len()];
                Workload {
                    namespace: NAMESPACES[w % NAMESPACES.len()],
                    name: format!("{kind}-{w}"),
                    port,
                    identity: FIRST_IDENTITY + w as u32,
                }
            })
            .collect();
        Self {
            workloads,
            endpoint_workload: (0..endpoints).map(|i| i / REPLICAS).collect(),
        }
    }

    /// Number of endpoints.
    pub fn endpoints(&self) -> usize {
        self.endpoint_workload.len()
    }

    /// Endpoint `i`'s address: 10.244.0.2 onwards.
    pub fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i as u32)
    }

    fn labels(w: &Workload) -> Labels {
        let pod: Labels = [
            ("app".to_string(), w.name.clone()),
            (
                "tier".to_string(),
                w.name.split('-').next().unwrap_or("").into(),
            ),
            (
                "pod-template-hash".to_string(),
                format!("{:x}", w.identity * 7919),
            ),
        ]
        .into();
        let ns: Labels = [
            (
                "kubernetes.io/metadata.name".to_string(),
                w.namespace.into(),
            ),
            (
                "team".to_string(),
                format!("team-{}", w.namespace.len() % 4),
            ),
        ]
        .into();
        endpoint_labels(w.namespace, &pod, &ns)
    }

    fn label_strings(l: &Labels) -> Vec<String> {
        l.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The observer's directory, filled as the agent fills it: endpoints by address, the labels
    /// of every identity (workloads and reserved), and the rules behind verdicts.
    pub fn directory(&self) -> Directory {
        let mut endpoints = HashMap::new();
        for (i, &w) in self.endpoint_workload.iter().enumerate() {
            let wl = &self.workloads[w];
            let hash = format!("{:x}", 0x5d9f_0000 + wl.identity * 131);
            endpoints.insert(
                IpAddr::V4(Self::ip(i)),
                EndpointMeta {
                    id: i as u32 + 1,
                    namespace: wl.namespace.to_string(),
                    pod: format!("{}-{hash}-{:05x}", wl.name, (i * 40_503) & 0xfffff),
                    labels: Self::label_strings(&Self::labels(wl)),
                    workload: Some(("Deployment".to_string(), wl.name.clone())),
                },
            );
        }
        let identity_labels = self
            .workloads
            .iter()
            .map(|w| (w.identity, Self::label_strings(&Self::labels(w))))
            .chain(
                reserved::ALL
                    .iter()
                    .map(|(id, n)| (*id, vec![format!("reserved:{n}")])),
            )
            .collect();
        let mut rules = HashMap::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let kind = if i % 3 == 0 {
                "CiliumNetworkPolicy"
            } else {
                "NetworkPolicy"
            };
            rules.insert(
                FIRST_RULE + i as u32,
                (
                    kind.to_string(),
                    w.namespace.to_string(),
                    format!("allow-{}", w.name),
                    "spec.ingress[0]".to_string(),
                ),
            );
            rules.insert(
                FIRST_RULE + (self.workloads.len() + i) as u32,
                (
                    "CiliumNetworkPolicy".to_string(),
                    w.namespace.to_string(),
                    format!("deny-{}", w.name),
                    "spec.ingressDeny[0]".to_string(),
                ),
            );
        }
        Directory {
            node: NODE.to_string(),
            endpoints,
            identity_labels,
            rules,
        }
    }

    /// `n` events of connections between the endpoints (and some to the world), in time
    /// order, and their mix.
    ///
    /// Per connection: about 15% go to the world through the node's stack, traced packet by
    /// packet; of the local ones, about 8% are denied (a drop per SYN try, `Policy denied`, or
    /// `Policy deny` with the deny rule), the others have an ingress policy verdict naming the
    /// allow rule and a trace for every packet (handshake, one to six request/response
    /// exchanges, the close), as monitoring `all` reports them.
    pub fn events(&self, n: usize, seed: u64) -> (Vec<Event>, Mix) {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(n);
        let mut mix = Mix::default();
        let mut ts: u64 = 1_000_000_000;
        while out.len() < n {
            mix.connections += 1;
            self.connection(&mut rng, &mut ts, &mut out);
        }
        out.truncate(n);
        for e in &out {
            match e.kind {
                EVENT_TRACE => mix.traces += 1,
                EVENT_DROP => mix.drops += 1,
                EVENT_POLICY_VERDICT => mix.verdicts += 1,
                _ => {}
            }
        }
        (out, mix)
    }

    fn connection(&self, rng: &mut Rng, ts: &mut u64, out: &mut Vec<Event>) {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        let eps = self.endpoints();
        let src = rng.below(eps as u64) as usize;
        let src_w = &self.workloads[self.endpoint_workload[src]];
        let src_ip = Self::ip(src);
        let sport = 32_768 + rng.below(28_000) as u16;
        let mut step = |rng: &mut Rng| {
            *ts += 1_000 + rng.below(50_000);
            *ts
        };

        if rng.chance(15) {
            // To the world via the node's stack, replies delivered to the pod.
            let dst_ip = Ipv4Addr::new(93, 184, rng.below(256) as u8, 1 + rng.below(254) as u8);
            let world = reserved::WORLD_IPV4;
            let out_pkt = |ts, flags, ev_flags| Proto {
                ts,
                kind: EVENT_TRACE,
                subtype: point::TO_STACK,
                flags: ev_flags,
                tcp_flags: flags,
                src: (src_ip, src_w.identity, sport),
                dst: (dst_ip, world, 443),
                endpoint_id: src as u32 + 1,
                rule_id: 0,
            };
            let in_pkt = |ts, flags| Proto {
                ts,
                kind: EVENT_TRACE,
                subtype: point::TO_LXC,
                flags: EVENT_F_REPLY,
                tcp_flags: flags,
                src: (dst_ip, world, 443),
                dst: (src_ip, src_w.identity, sport),
                endpoint_id: src as u32 + 1,
                rule_id: 0,
            };
            out.push(out_pkt(step(rng), SYN, EVENT_F_NEW | EVENT_F_EGRESS).event());
            out.push(in_pkt(step(rng), SYN | ACK).event());
            out.push(out_pkt(step(rng), ACK, EVENT_F_EGRESS).event());
            for _ in 0..1 + rng.below(6) {
                out.push(out_pkt(step(rng), PSH | ACK, EVENT_F_EGRESS).event());
                out.push(in_pkt(step(rng), PSH | ACK).event());
            }
            out.push(out_pkt(step(rng), FIN | ACK, EVENT_F_EGRESS).event());
            out.push(in_pkt(step(rng), FIN | ACK).event());
            out.push(out_pkt(step(rng), ACK, EVENT_F_EGRESS).event());
            return;
        }

        // To another local endpoint: one of a few workloads this one talks to.
        let n_w = self.workloads.len();
        let dst_w_idx = (self.endpoint_workload[src] * 7 + 1 + rng.below(3) as usize) % n_w;
        let first = dst_w_idx * REPLICAS;
        let replicas = REPLICAS.min(eps - first.min(eps)).max(1);
        let dst = (first + rng.below(replicas as u64) as usize).min(eps - 1);
        let dst_w = &self.workloads[self.endpoint_workload[dst]];
        let dst_ip = Self::ip(dst);
        let allow_rule = FIRST_RULE + self.endpoint_workload[dst] as u32;
        let deny_rule = allow_rule + n_w as u32;
        let fwd = |ts, kind, subtype, ev_flags, flags, rule_id| Proto {
            ts,
            kind,
            subtype,
            flags: ev_flags,
            tcp_flags: flags,
            src: (src_ip, src_w.identity, sport),
            dst: (dst_ip, dst_w.identity, dst_w.port),
            endpoint_id: dst as u32 + 1,
            rule_id,
        };
        let rev = |ts, flags| Proto {
            ts,
            kind: EVENT_TRACE,
            subtype: point::TO_LXC,
            flags: EVENT_F_REPLY,
            tcp_flags: flags,
            src: (dst_ip, dst_w.identity, dst_w.port),
            dst: (src_ip, src_w.identity, sport),
            endpoint_id: src as u32 + 1,
            rule_id: 0,
        };

        if rng.chance(8) {
            // Denied: a drop for the SYN and each retransmission (the datapath reports denied
            // connections as drops, with the deny rule when one matched).
            let explicit = rng.chance(30);
            let (reason, rule) = if explicit {
                (DropReason::PolicyDeny, deny_rule)
            } else {
                (DropReason::PolicyDenied, 0)
            };
            for _ in 0..1 + rng.below(3) {
                out.push(fwd(step(rng), EVENT_DROP, reason as u8, EVENT_F_NEW, SYN, rule).event());
            }
            return;
        }

        let trace = |ts, ev_flags, flags| fwd(ts, EVENT_TRACE, point::TO_LXC, ev_flags, flags, 0);
        out.push(
            fwd(
                step(rng),
                EVENT_POLICY_VERDICT,
                verdict::ALLOWED,
                EVENT_F_NEW,
                SYN,
                allow_rule,
            )
            .event(),
        );
        out.push(trace(step(rng), EVENT_F_NEW, SYN).event());
        out.push(rev(step(rng), SYN | ACK).event());
        out.push(trace(step(rng), 0, ACK).event());
        for _ in 0..1 + rng.below(6) {
            out.push(trace(step(rng), 0, PSH | ACK).event());
            out.push(rev(step(rng), PSH | ACK).event());
        }
        out.push(trace(step(rng), 0, FIN | ACK).event());
        out.push(rev(step(rng), FIN | ACK).event());
        out.push(trace(step(rng), 0, ACK).event());
    }
}

/// The fields of one event that differ between events.
struct Proto {
    ts: u64,
    kind: u8,
    subtype: u8,
    flags: u8,
    tcp_flags: u8,
    /// Address, identity, port.
    src: (Ipv4Addr, u32, u16),
    dst: (Ipv4Addr, u32, u16),
    endpoint_id: u32,
    rule_id: u32,
}

impl Proto {
    fn event(&self) -> Event {
        let pkt_len = if self.tcp_flags & 0x08 != 0 {
            66 + (self.ts % 1400) as u32
        } else {
            66
        };
        Event {
            ts_ns: self.ts,
            kind: self.kind,
            subtype: self.subtype,
            flags: self.flags,
            proto: 6,
            tcp_flags: self.tcp_flags,
            _pad: [0; 3],
            src_identity: self.src.1,
            dst_identity: self.dst.1,
            endpoint_id: self.endpoint_id,
            ifindex: 10 + self.endpoint_id,
            rule_id: self.rule_id,
            pkt_len,
            saddr: IpAddr6::from_v4_octets(self.src.0.octets()),
            daddr: IpAddr6::from_v4_octets(self.dst.0.octets()),
            sport: self.src.2.to_be(),
            dport: self.dst.2.to_be(),
            cap_len: pkt_len.min(EVENT_DATA_LEN as u32) as u16,
            _pad2: 0,
            data: [0; EVENT_DATA_LEN],
        }
    }
}

#[cfg(test)]
mod tests {
    use plexus_agent::observer::to_flow;
    use plexus_hubble::flow::Verdict;

    use super::*;

    #[test]
    fn directory_names_every_endpoint() {
        let node = Node::new(200);
        let dir = node.directory();
        assert_eq!(dir.endpoints.len(), 200);
        assert_eq!(node.workloads.len(), 40);
        assert_eq!(dir.rules.len(), 80);
        let e = &dir.endpoints[&IpAddr::V4(Node::ip(0))];
        assert_eq!(e.namespace, "frontend");
        assert!(e.pod.starts_with("web-0-"));
        assert!(e.labels.contains(&"k8s:app=web-0".to_string()));
        assert!(e
            .labels
            .contains(&"k8s:io.kubernetes.pod.namespace=frontend".to_string()));
        assert_eq!(Node::ip(199), Ipv4Addr::new(10, 244, 0, 201));
    }

    #[test]
    fn events_are_a_deterministic_mix() {
        let node = Node::new(200);
        let (a, mix) = node.events(20_000, 7);
        let (b, _) = node.events(20_000, 7);
        assert_eq!(a.len(), 20_000);
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.ts_ns == y.ts_ns && x.kind == y.kind));
        assert!(a.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
        assert_eq!(mix.traces + mix.drops + mix.verdicts, 20_000);
        let pct = |x: u64| x * 100 / 20_000;
        assert!(pct(mix.traces) > 80, "{mix:?}");
        assert!(mix.drops > 100 && pct(mix.drops) < 5, "{mix:?}");
        assert!(pct(mix.verdicts) >= 3 && pct(mix.verdicts) < 15, "{mix:?}");
    }

    #[test]
    fn events_enrich_into_flows() {
        let node = Node::new(200);
        let dir = node.directory();
        let (events, _) = node.events(5_000, 1);
        let flows: Vec<_> = events.iter().map(|e| to_flow(e, &dir, 0)).collect();
        // Every local end has its pod name; a drop always has a local destination.
        let named = |f: &plexus_hubble::flow::Flow| {
            let ip = f.ip.as_ref().unwrap();
            [
                (&ip.source, f.source.as_ref().unwrap()),
                (&ip.destination, f.destination.as_ref().unwrap()),
            ]
            .into_iter()
            .all(|(addr, ep)| !addr.starts_with("10.244.") || !ep.pod_name.is_empty())
        };
        assert!(flows.iter().all(named));
        let drops: Vec<_> = flows
            .iter()
            .filter(|f| f.verdict == Verdict::Dropped as i32)
            .collect();
        assert!(!drops.is_empty());
        assert!(drops
            .iter()
            .all(|f| !f.destination.as_ref().unwrap().pod_name.is_empty()));
        // Allowed verdicts name the policy behind them.
        assert!(flows.iter().any(|f| f
            .ingress_allowed_by
            .iter()
            .any(|p| p.name.starts_with("allow-"))));
        assert!(flows.iter().any(|f| f
            .ingress_denied_by
            .iter()
            .any(|p| p.name.starts_with("deny-"))));
    }
}
