//! `datapath`: the cost of the pod-veth program per packet, measured with `BPF_PROG_TEST_RUN`
//! (the kernel runs the program N times on a crafted packet and reports the mean), for the paths
//! that matter: forwarding to a local pod with monitoring off and aggregated, with policy
//! allowing, with policy dropping; and the floor (a frame parsed and passed). No namespaces, no noise from the
//! network stack: this is the program alone. Needs root.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions};
use clap::Parser;
use plexus_abi::{
    endpoint::{ENDPOINT_F_INGRESS_ENFORCED, ENDPOINT_F_INGRESS_POLICY},
    event::{MONITOR_AGGREGATED, MONITOR_OFF},
    maps::programs,
    EndpointInfo, EndpointKey, IpAddr6, MonitorConfig,
};
use plexus_loader::{policy_map, Datapath};
use plexus_policy::{Action, Direction, MapKey};

/// Options.
#[derive(Debug, Parser)]
#[command(about = "Per-packet cost of the datapath program (BPF_PROG_TEST_RUN)")]
struct Args {
    /// Runs per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per case (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// Removes the pin directory on drop.
struct Pins(PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An established-flow TCP ACK from `src` to `dst:80`.
fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0xff; 6];
    p.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 52, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 32];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x80;
    tcp[13] = 0x10; // ACK
    p.extend_from_slice(&tcp);
    p
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/plexus-bench-dp-{}",
        std::process::id()
    )));
    let mut dp = Datapath::load(&pins.0).context("loading the datapath (needs root)")?;
    let maps = dp.maps()?;
    let (pa, pb, pc) = ([10, 200, 0, 10], [10, 200, 0, 11], [10, 200, 0, 12]);
    let ep = |ifindex, id, identity, flags| EndpointInfo {
        ifindex,
        endpoint_id: id,
        pod_mac: [2, 0, 0, 0, 0, id as u8],
        host_mac: [2, 0, 0, 0, 1, id as u8],
        identity,
        flags,
    };
    let key = |ip: [u8; 4]| EndpointKey {
        ip: IpAddr6::from_v4_octets(ip),
    };
    // a sends (test runs use the loopback device: ifindex 1); b has no policy; c allows only identity 300 (a) and denies others.
    maps.upsert_endpoint(key(pa), ep(1, 1, 300, 0))?;
    maps.upsert_endpoint(key(pb), ep(4242, 2, 301, 0))?;
    maps.upsert_endpoint(
        key(pc),
        ep(
            4243,
            3,
            302,
            ENDPOINT_F_INGRESS_POLICY | ENDPOINT_F_INGRESS_ENFORCED,
        ),
    )?;
    let mut store = policy_map::BpfPolicyStore::open(&pins.0)?;
    let allow = MapKey {
        direction: Direction::Ingress,
        identity: 300,
        proto: 6,
        port: 80,
        port_prefix: 16,
    };
    let desired: BTreeMap<_, _> = [(
        policy_map::to_kernel(3, &allow),
        policy_map::to_value(Action::Allow, 1),
    )]
    .into();
    policy_map::sync(
        &mut store,
        &mut BTreeMap::new(),
        &desired,
        || Ok(()),
        || Ok(()),
    )?;

    let mut measure = |pkt: &[u8], level: u32| -> anyhow::Result<f64> {
        maps.set_monitor(MonitorConfig { level, capture: 0 })?;
        let prog = dp.program(programs::FROM_CONTAINER)?;
        let mut out = vec![0u8; pkt.len() + 64];
        let mut runs = Vec::new();
        for _ in 0..a.rounds {
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(pkt),
                    data_out: Some(&mut out),
                    repeat: a.repeat,
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN")?;
            runs.push(r.duration.as_nanos() as f64);
        }
        runs.sort_by(|x, y| x.total_cmp(y));
        Ok(runs[runs.len() / 2])
    };
    let to_b = packet(pa, pb);
    let mut arp = to_b.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let to_c = packet(pa, pc);
    let cases = [
        (
            "pod -> pod, no policy, monitor off",
            to_b.clone(),
            MONITOR_OFF,
        ),
        (
            "pod -> pod, no policy, monitor aggregated",
            to_b.clone(),
            MONITOR_AGGREGATED,
        ),
        ("(floor: an ARP frame, parsed and passed)", arp, MONITOR_OFF),
        (
            "pod -> pod, ingress policy allows, monitor aggregated",
            to_c,
            MONITOR_AGGREGATED,
        ),
    ];
    println!(
        "datapath: plexus_from_container, {} runs x {} rounds (median, ns per packet)",
        a.repeat, a.rounds
    );
    let mut base = None;
    for (name, pkt, level) in cases {
        let ns = measure(&pkt, level)?;
        let b = *base.get_or_insert(ns);
        println!("  {name:<58} {ns:>7.1} ns   x{:.2}", ns / b);
    }
    // A policy drop: c only allows identity 300, b (301) sends to c.
    maps.upsert_endpoint(key(pb), ep(1, 2, 301, 0))?;
    maps.upsert_endpoint(key(pa), ep(4244, 1, 300, 0))?;
    let ns = measure(&packet(pb, pc), MONITOR_AGGREGATED)?;
    println!(
        "  {:<58} {ns:>7.1} ns   x{:.2}",
        "pod -> pod, policy drop (POLICY_DENIED + event)",
        ns / base.unwrap_or(ns)
    );
    Ok(())
}
