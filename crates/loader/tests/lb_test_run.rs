//! `BPF_PROG_TEST_RUN` tests of service translation in `plexus_from_container` with crafted
//! packets: DNAT to a backend and reverse NAT of the reply with L3/L4 checksums verified
//! from scratch, the per-flow backend, and the ICMP refusal of a service without backends.

mod common;

use common::{run, PinDir};
use plexus_abi::{maps::programs, EndpointInfo, EndpointKey, IpAddr6};
use plexus_lb::{
    Algorithm, Backend, BackendId, BackendState, Frontend, FrontendKind, Proto, ServiceEntry,
    ServiceId,
};
use plexus_loader::{
    lb_map::{frontend_state, BpfLbStore, LbWriter},
    Datapath,
};

const TC_ACT_REDIRECT: u32 = 7;

const CLIENT: [u8; 4] = [10, 200, 0, 10];
const BACKEND: [u8; 4] = [10, 200, 0, 11];
const VIP: [u8; 4] = [10, 96, 0, 10];

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The L4 checksum over the pseudo-header and `l4` (0 when `l4` carries a valid one).
fn l4_csum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let pseudo = sum16(src) + sum16(dst) + proto as u32 + l4.len() as u32;
    fold(pseudo + sum16(l4))
}

/// Ethernet + IPv4 + TCP SYN or UDP, every checksum valid.
fn packet(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    let csum_at = if proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        16
    } else {
        l4.extend_from_slice(&[0, 13, 0, 0]);
        l4.extend_from_slice(b"hello");
        6
    };
    let c = l4_csum(&src, &dst, proto, &l4);
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = vec![0xff; 6];
    p.extend_from_slice(&[2, 0, 0, 0, 0, 0x0a]);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&l4);
    p
}

/// Checks every checksum of an IPv4 packet from scratch.
fn assert_checksums(p: &[u8]) {
    let ip = &p[14..34];
    assert_eq!(fold(sum16(ip)), 0, "IPv4 header checksum");
    let proto = ip[9];
    let l4 = &p[34..14 + u16::from_be_bytes([ip[2], ip[3]]) as usize];
    let c = if proto == 1 {
        fold(sum16(l4))
    } else {
        l4_csum(&ip[12..16], &ip[16..20], proto, l4)
    };
    assert_eq!(c, 0, "L4 checksum of protocol {proto}");
}

/// BPF_PROG_TEST_RUN runs on loopback: the sender's endpoint must have ifindex 1.
fn endpoints(dp: &Datapath, sender: [u8; 4]) {
    let maps = dp.maps().unwrap();
    for (i, ip) in [CLIENT, BACKEND].into_iter().enumerate() {
        let info = EndpointInfo {
            ifindex: if ip == sender { 1 } else { 4242 + i as u32 },
            endpoint_id: 10 + i as u32,
            pod_mac: [2, 0, 0, 0, 0, i as u8],
            host_mac: [2, 0, 0, 0, 1, i as u8],
            identity: 0,
            flags: 0,
        };
        maps.upsert_endpoint(
            EndpointKey {
                ip: IpAddr6::from_v4_octets(ip),
            },
            info,
        )
        .unwrap();
    }
}

fn service(dp: &Datapath, proto: Proto, backends: &[[u8; 4]]) {
    let entry = ServiceEntry {
        id: ServiceId(7),
        namespace: "x".into(),
        name: "s".into(),
        port_name: String::new(),
        frontend: Frontend {
            address: VIP.into(),
            port: 80,
            protocol: proto,
            kind: FrontendKind::ClusterIp,
        },
        backends: backends
            .iter()
            .enumerate()
            .map(|(i, b)| Backend {
                id: BackendId(i as u32 + 1),
                address: (*b).into(),
                port: 8080,
                state: BackendState::Active,
                node_local: true,
                zone: None,
            })
            .collect(),
        algorithm: Algorithm::Random,
        affinity: None,
        external_traffic_local: false,
        internal_traffic_local: false,
    };
    let mut store = BpfLbStore::open(dp.pin_dir()).unwrap();
    LbWriter::new()
        .apply(&mut store, &[frontend_state(&entry)], &[], false)
        .unwrap();
}

#[test]
fn a_service_packet_is_translated_to_the_backend_and_its_reply_back() {
    for (proto, p) in [(6u8, Proto::Tcp), (17, Proto::Udp)] {
        let pins = PinDir::new();
        let mut dp = Datapath::load(&pins.0).expect("load");
        endpoints(&dp, CLIENT);
        service(&dp, p, &[BACKEND]);
        let (ret, out) = run(
            &mut dp,
            programs::FROM_CONTAINER,
            &packet(proto, CLIENT, 4000, VIP, 80),
        );
        assert_eq!(ret, TC_ACT_REDIRECT, "delivered to the backend pod");
        assert_eq!(&out[30..34], &BACKEND, "destination is the backend");
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), 8080, "target port");
        assert_eq!(&out[26..30], &CLIENT, "source unchanged");
        assert_checksums(&out);

        // The backend answers; the client must see the service.
        endpoints(&dp, BACKEND);
        let (ret, out) = run(
            &mut dp,
            programs::FROM_CONTAINER,
            &packet(proto, BACKEND, 8080, CLIENT, 4000),
        );
        assert_eq!(ret, TC_ACT_REDIRECT);
        assert_eq!(&out[26..30], &VIP, "reply comes from the service");
        assert_eq!(u16::from_be_bytes([out[34], out[35]]), 80);
        assert_eq!(&out[30..34], &CLIENT);
        assert_checksums(&out);
    }
}

#[test]
fn a_flow_keeps_its_backend() {
    let pins = PinDir::new();
    let mut dp = Datapath::load(&pins.0).expect("load");
    endpoints(&dp, CLIENT);
    let others = [
        [10, 200, 0, 20],
        [10, 200, 0, 21],
        [10, 200, 0, 22],
        BACKEND,
    ];
    service(&dp, Proto::Udp, &others);
    let (_, first) = run(
        &mut dp,
        programs::FROM_CONTAINER,
        &packet(17, CLIENT, 4000, VIP, 80),
    );
    for _ in 0..20 {
        let (_, again) = run(
            &mut dp,
            programs::FROM_CONTAINER,
            &packet(17, CLIENT, 4000, VIP, 80),
        );
        assert_eq!(&again[30..34], &first[30..34], "same flow, same backend");
    }
    let mut seen = std::collections::BTreeSet::new();
    for sport in 5000..5100 {
        let (_, out) = run(
            &mut dp,
            programs::FROM_CONTAINER,
            &packet(17, CLIENT, sport, VIP, 80),
        );
        seen.insert([out[30], out[31], out[32], out[33]]);
    }
    assert_eq!(seen.len(), 4, "new flows spread over every backend");
}

#[test]
fn a_service_without_backends_answers_icmp_port_unreachable_and_counts_158() {
    for (proto, p) in [(6u8, Proto::Tcp), (17, Proto::Udp)] {
        let pins = PinDir::new();
        let mut dp = Datapath::load(&pins.0).expect("load");
        endpoints(&dp, CLIENT);
        service(&dp, p, &[]);
        let pkt = packet(proto, CLIENT, 4000, VIP, 80);
        let (ret, out) = run(&mut dp, programs::FROM_CONTAINER, &pkt);
        assert_eq!(ret, TC_ACT_REDIRECT, "sent back to the client");
        assert_eq!(out.len(), 70);
        assert_eq!(out[14 + 9], 1, "ICMP");
        assert_eq!((out[34], out[35]), (3, 3), "port unreachable");
        assert_eq!(&out[26..30], &VIP, "from the address the client tried");
        assert_eq!(&out[30..34], &CLIENT);
        assert_eq!(&out[42..62], &pkt[14..34], "quotes the offending header");
        assert_eq!(&out[0..6], &pkt[6..12], "back to the sender's MAC");
        assert_checksums(&out);
        let drops = dp
            .maps()
            .unwrap()
            .drop_count(plexus_abi::DropReason::ServiceBackendNotFound);
        assert_eq!(drops.unwrap(), 1);
    }
}
