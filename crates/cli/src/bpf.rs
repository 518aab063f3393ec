//! `plexus bpf ...`: the node's BPF maps, read straight from their pins (no agent needed).

use std::{net::Ipv4Addr, path::Path};

use clap::Subcommand;
use plexus_abi::DropReason;
use plexus_loader::PinnedMaps;
use plexus_netdev::format_mac;
use serde_json::json;

use plexus_abi::policy::{
    DIR_INGRESS, POLICY_DENY, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO,
};
use plexus_loader::policy_map::{BpfPolicyStore, PolicyStore};

use crate::{table::Table, Cli};

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 => "ICMP".into(),
        o => o.to_string(),
    }
}

/// BPF map commands.
#[derive(Debug, Subcommand)]
pub enum BpfCmd {
    /// The endpoints map.
    Endpoint {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// The conntrack map.
    Ct {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// Drop counters by reason.
    Drops {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// The policy map.
    Policy {
        #[command(subcommand)]
        cmd: PolicyMapCmd,
    },
    /// The ipcache.
    Ipcache {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// The load-balancing maps: frontends with their backend slots.
    Lb {
        #[command(subcommand)]
        cmd: ListCmd,
    },
}

/// `policy get ENDPOINT`.
#[derive(Debug, Subcommand)]
pub enum PolicyMapCmd {
    /// Entries of one endpoint (its id, or `ns/pod`).
    Get {
        /// Endpoint id or `ns/pod`.
        endpoint: String,
    },
}

/// `list`.
#[derive(Debug, Subcommand)]
pub enum ListCmd {
    /// List entries.
    List,
}

fn ip(a: &plexus_abi::IpAddr6) -> String {
    match a.to_v4_octets() {
        Some(o) => Ipv4Addr::from(o).to_string(),
        None => std::net::Ipv6Addr::from(a.octets()).to_string(),
    }
}

/// Resolves `ns/pod` (through the agent) or a number to an endpoint id.
fn endpoint_id(cli: &Cli, s: &str) -> anyhow::Result<u32> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    let plexus_api::Response::Endpoints { endpoints } =
        crate::agent(cli, plexus_api::Request::EndpointList)?
    else {
        anyhow::bail!("unexpected answer from agent")
    };
    endpoints
        .iter()
        .find(|e| format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name) == s)
        .map(|e| e.id)
        .ok_or_else(|| anyhow::anyhow!("no endpoint {s:?}"))
}

/// Runs a bpf command against the pins in `dir`.
pub fn run(cli: &Cli, dir: &Path, cmd: &BpfCmd) -> anyhow::Result<()> {
    let as_json = cli.json;
    let maps = PinnedMaps::open(dir)?;
    match cmd {
        BpfCmd::Policy {
            cmd: PolicyMapCmd::Get { endpoint },
        } => {
            let ep = endpoint_id(cli, endpoint)?;
            let store = BpfPolicyStore::open(dir)?;
            let mut rows = Vec::new();
            for ((prefix, k), v) in store.entries()? {
                if u32::from_be_bytes(k.endpoint_id) != ep {
                    continue;
                }
                let dir = if k.direction == DIR_INGRESS {
                    "ingress"
                } else {
                    "egress"
                };
                let identity = u32::from_be_bytes(k.identity);
                let proto = if prefix <= POLICY_PREFIX_ANY_PROTO {
                    "ANY".to_string()
                } else {
                    proto_name(k.proto)
                };
                let bits = prefix.saturating_sub(POLICY_PREFIX_ANY_PORT);
                let port = u16::from_be_bytes(k.dport);
                let ports = if prefix <= POLICY_PREFIX_ANY_PORT {
                    "ANY".to_string()
                } else if bits >= 16 {
                    port.to_string()
                } else {
                    format!("{port}-{}", port as u32 + (1u32 << (16 - bits)) - 1)
                };
                let action = if v.action == POLICY_DENY {
                    "deny"
                } else {
                    "allow"
                };
                rows.push((dir, identity, proto, ports, action, v.rule_id));
            }
            if as_json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(d, i, p, ports, a, r)| json!({"direction": d, "identity": i, "protocol": p, "ports": ports, "action": a, "rule_id": r}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = Table::new(&[
                "DIRECTION",
                "IDENTITY",
                "PROTOCOL",
                "PORTS",
                "ACTION",
                "RULE ID",
            ]);
            for (d, i, p, ports, a, r) in rows {
                let id = if i == 0 {
                    "ANY".to_string()
                } else {
                    i.to_string()
                };
                t.row(vec![
                    d.to_string(),
                    id,
                    p,
                    ports,
                    a.to_string(),
                    r.to_string(),
                ]);
            }
            print!("{t}");
        }
        BpfCmd::Lb { .. } => lb_list(dir, as_json)?,
        BpfCmd::Ipcache { .. } => {
            let entries = maps.ipcache_entries()?;
            let mut t = Table::new(&["PREFIX", "IDENTITY"]);
            let mut v = Vec::new();
            for ((len, ip), val) in entries {
                let a = plexus_abi::IpAddr6::from_octets(ip);
                let text = match a.to_v4_octets() {
                    Some(o) => format!("{}/{}", Ipv4Addr::from(o), len.saturating_sub(96)),
                    None => format!("{}/{len}", std::net::Ipv6Addr::from(ip)),
                };
                v.push(json!({"prefix": text, "identity": val.identity}));
                t.row(vec![text, val.identity.to_string()]);
            }
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{t}");
            }
        }
        BpfCmd::Endpoint { .. } => {
            let eps = maps.endpoints_list()?;
            if as_json {
                let v: Vec<_> = eps
                    .iter()
                    .map(|e| {
                        json!({
                            "ip": ip(&e.key.ip), "endpoint_id": e.info.endpoint_id, "ifindex": e.info.ifindex,
                            "pod_mac": format_mac(&e.info.pod_mac), "host_mac": format_mac(&e.info.host_mac),
                            "identity": e.info.identity, "flags": e.info.flags,
                            "tx_packets": e.counters.tx_packets, "tx_bytes": e.counters.tx_bytes,
                            "rx_packets": e.counters.rx_packets, "rx_bytes": e.counters.rx_bytes,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = Table::new(&[
                "IP", "ENDPOINT", "IFINDEX", "POD MAC", "HOST MAC", "TX PKTS", "TX BYTES",
                "RX PKTS", "RX BYTES",
            ]);
            for e in eps {
                t.row(vec![
                    ip(&e.key.ip),
                    e.info.endpoint_id.to_string(),
                    e.info.ifindex.to_string(),
                    format_mac(&e.info.pod_mac),
                    format_mac(&e.info.host_mac),
                    e.counters.tx_packets.to_string(),
                    e.counters.tx_bytes.to_string(),
                    e.counters.rx_packets.to_string(),
                    e.counters.rx_bytes.to_string(),
                ]);
            }
            print!("{t}");
        }
        BpfCmd::Ct { .. } => {
            let ct = maps.conntrack()?;
            let proto = proto_name;
            if as_json {
                let v: Vec<_> = ct
                    .iter()
                    .map(|c| {
                        json!({
                            "proto": proto(c.key.proto), "src": ip(&c.key.saddr), "sport": u16::from_be(c.key.sport),
                            "dst": ip(&c.key.daddr), "dport": u16::from_be(c.key.dport),
                            "tx_packets": c.entry.tx_packets, "rx_packets": c.entry.rx_packets,
                            "tcp_flags": c.entry.tcp_flags, "flags": c.entry.flags,
                            "rev_nat": c.entry.rev_nat,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = Table::new(&[
                "PROTO",
                "SOURCE",
                "DESTINATION",
                "TX PKTS",
                "RX PKTS",
                "REPLIED",
                "SERVICE",
            ]);
            for c in ct {
                t.row(vec![
                    proto(c.key.proto),
                    format!("{}:{}", ip(&c.key.saddr), u16::from_be(c.key.sport)),
                    format!("{}:{}", ip(&c.key.daddr), u16::from_be(c.key.dport)),
                    c.entry.tx_packets.to_string(),
                    c.entry.rx_packets.to_string(),
                    (c.entry.flags & plexus_abi::conntrack::CT_F_SEEN_REPLY != 0).to_string(),
                    // The frontend a tc-translated connection was opened to.
                    if c.entry.rev_nat == 0 {
                        "-".to_string()
                    } else {
                        format!("#{}", c.entry.rev_nat)
                    },
                ]);
            }
            print!("{t}");
        }
        BpfCmd::Drops { .. } => {
            let drops = maps.drops()?;
            let name = |c: u8| DropReason::from_code(c).map_or("unknown", |r| r.description());
            if as_json {
                let v: Vec<_> = drops
                    .iter()
                    .map(|(c, n)| json!({"code": c, "reason": name(*c), "packets": n}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut t = Table::new(&["REASON", "CODE", "PACKETS"]);
            for (c, n) in drops {
                t.row(vec![name(c).to_string(), c.to_string(), n.to_string()]);
            }
            print!("{t}");
        }
    }
    Ok(())
}

/// `bpf lb list`: the services map read back, one row per frontend with its slots resolved
/// through the backends map.
fn lb_list(dir: &Path, as_json: bool) -> anyhow::Result<()> {
    use plexus_loader::lb_map::BpfLbStore;
    let store = BpfLbStore::open(dir)?;
    let backends: std::collections::BTreeMap<u32, plexus_abi::LbBackend> =
        store.backends()?.into_iter().collect();
    // (id, address, port, protocol) → (slot-0 value, [(slot, backend id)]).
    type Frontends = std::collections::BTreeMap<
        (u32, [u8; 16], u16, u8),
        (plexus_abi::LbServiceValue, Vec<(u16, u32)>),
    >;
    let mut frontends: Frontends = Default::default();
    let services = store.services()?;
    for (k, v) in &services {
        if k.slot == 0 {
            let e = frontends
                .entry((v.rev_nat, k.addr.octets(), k.port, k.proto))
                .or_default();
            e.0 = *v;
        }
    }
    for (k, v) in &services {
        if k.slot != 0 {
            if let Some(e) = frontends.get_mut(&(v.rev_nat, k.addr.octets(), k.port, k.proto)) {
                e.1.push((k.slot, v.backend_id));
            }
        }
    }
    let backend_text = |id: u32| match backends.get(&id) {
        Some(b) => {
            let state = if b.flags & plexus_abi::lb::LB_BACKEND_F_TERMINATING != 0 {
                " terminating"
            } else {
                ""
            };
            format!("{}:{}{state}", ip(&b.addr), u16::from_be(b.port))
        }
        None => format!("#{id} (missing)"),
    };
    let mut rows = Vec::new();
    for ((id, addr, port, proto), (v, mut slots)) in frontends {
        slots.sort();
        let frontend = format!(
            "{}:{}/{}",
            ip(&plexus_abi::IpAddr6::from_octets(addr)),
            u16::from_be(port),
            proto_name(proto)
        );
        let list: Vec<String> = slots
            .iter()
            .map(|(slot, b)| format!("{slot}={}", backend_text(*b)))
            .collect();
        rows.push((id, frontend, v, list));
    }
    if as_json {
        let v: Vec<_> = rows
            .iter()
            .map(|(id, f, v, l)| json!({"id": id, "frontend": f, "count": v.count, "flags": v.flags, "affinity_timeout": v.affinity_timeout, "slots": l}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "FRONTEND", "COUNT", "FLAGS", "SLOTS"]);
    for (id, f, v, l) in rows {
        t.row(vec![
            id.to_string(),
            f,
            v.count.to_string(),
            format!("{:#x}", v.flags),
            l.join(" "),
        ]);
    }
    print!("{t}");
    Ok(())
}
