//! `plexus bpf ...`: the node's BPF maps, read straight from their pins (no agent needed).

use std::{net::Ipv4Addr, path::Path};

use clap::Subcommand;
use plexus_abi::DropReason;
use plexus_loader::PinnedMaps;
use plexus_netdev::format_mac;
use serde_json::json;

use crate::table::Table;

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

/// Runs a bpf command against the pins in `dir`.
pub fn run(dir: &Path, cmd: &BpfCmd, as_json: bool) -> anyhow::Result<()> {
    let maps = PinnedMaps::open(dir)?;
    match cmd {
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
            let proto = |p: u8| match p {
                6 => "TCP".to_string(),
                17 => "UDP".to_string(),
                1 => "ICMP".to_string(),
                132 => "SCTP".to_string(),
                o => o.to_string(),
            };
            if as_json {
                let v: Vec<_> = ct
                    .iter()
                    .map(|c| {
                        json!({
                            "proto": proto(c.key.proto), "src": ip(&c.key.saddr), "sport": u16::from_be(c.key.sport),
                            "dst": ip(&c.key.daddr), "dport": u16::from_be(c.key.dport),
                            "tx_packets": c.entry.tx_packets, "rx_packets": c.entry.rx_packets,
                            "tcp_flags": c.entry.tcp_flags, "flags": c.entry.flags,
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
            ]);
            for c in ct {
                t.row(vec![
                    proto(c.key.proto),
                    format!("{}:{}", ip(&c.key.saddr), u16::from_be(c.key.sport)),
                    format!("{}:{}", ip(&c.key.daddr), u16::from_be(c.key.dport)),
                    c.entry.tx_packets.to_string(),
                    c.entry.rx_packets.to_string(),
                    (c.entry.flags & plexus_abi::conntrack::CT_F_SEEN_REPLY != 0).to_string(),
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
