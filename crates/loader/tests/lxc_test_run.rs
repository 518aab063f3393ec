//! `BPF_PROG_TEST_RUN` tests of the pod-veth programs with crafted packets: every branch of
//! `plexus_from_container` and `plexus_to_container`, against the real verifier and kernel.

mod common;

use common::{run, PinDir};
use plexus_abi::{maps::programs, DropReason, EndpointInfo, EndpointKey, IpAddr6};
use plexus_loader::Datapath;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const POD_A: [u8; 4] = [10, 200, 0, 10];
const POD_B: [u8; 4] = [10, 200, 0, 11];
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const HOST_B: [u8; 6] = [0x02, 0, 0, 0, 1, 0x0b];

fn endpoint(ifindex: u32, id: u32, pod_mac: [u8; 6], host_mac: [u8; 6]) -> EndpointInfo {
    EndpointInfo {
        ifindex,
        endpoint_id: id,
        pod_mac,
        host_mac,
        identity: 0,
        flags: 0,
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP packet with a valid IP checksum.
fn udp_packet(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0xff; 6]); // dst MAC: whatever the pod used (the gateway's)
    p.extend_from_slice(&MAC_A);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let payload = b"hello";
    let tot_len = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, 17, 0, 0];
    ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&80u16.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn key(ip: [u8; 4]) -> EndpointKey {
    EndpointKey {
        ip: IpAddr6::from_v4_octets(ip),
    }
}

#[test]
fn local_pod_to_pod_is_redirected_with_rewritten_macs_and_ttl() {
    let pins = PinDir::new();
    let mut dp = Datapath::load(&pins.0).expect("load");
    let maps = dp.maps().expect("maps");
    // BPF_PROG_TEST_RUN runs the skb on the loopback device: ifindex 1 is "the pod's veth".
    maps.upsert_endpoint(key(POD_A), endpoint(1, 10, MAC_A, [2, 0, 0, 0, 1, 0x0a]))
        .unwrap();
    maps.upsert_endpoint(key(POD_B), endpoint(4242, 11, MAC_B, HOST_B))
        .unwrap();

    let pkt = udp_packet(POD_A, POD_B, 64);
    let (ret, out) = run(&mut dp, programs::FROM_CONTAINER, &pkt);
    assert_eq!(
        ret, TC_ACT_REDIRECT,
        "a local destination is redirected to its veth peer"
    );
    assert_eq!(&out[0..6], &MAC_B, "destination MAC is the pod's");
    assert_eq!(&out[6..12], &HOST_B, "source MAC is the host-side veth's");
    assert_eq!(out[14 + 8], 63, "TTL decremented");
    assert_eq!(csum(&out[14..34]), 0, "IPv4 header checksum still valid");
    assert_eq!(&out[34..], &pkt[34..], "L4 untouched");

    let eps = maps.endpoints_list().unwrap();
    let a = eps.iter().find(|e| e.info.endpoint_id == 10).unwrap();
    let b = eps.iter().find(|e| e.info.endpoint_id == 11).unwrap();
    assert_eq!(a.counters.tx_packets, 1);
    assert_eq!(a.counters.tx_bytes, pkt.len() as u64);
    assert_eq!(b.counters.rx_packets, 1);

    let ct = maps.conntrack().unwrap();
    assert_eq!(ct.len(), 1, "one flow tracked");
    assert_eq!(ct[0].key.saddr.to_v4_octets(), Some(POD_A));
    assert_eq!(u16::from_be(ct[0].key.dport), 80);
    assert_eq!(ct[0].key.proto, 17);
}

#[test]
fn reply_direction_updates_the_same_conntrack_entry() {
    let pins = PinDir::new();
    let mut dp = Datapath::load(&pins.0).expect("load");
    let maps = dp.maps().unwrap();
    maps.upsert_endpoint(key(POD_A), endpoint(1, 10, MAC_A, HOST_B))
        .unwrap();
    let out = udp_packet(POD_A, [192, 0, 2, 1], 64);
    assert_eq!(run(&mut dp, programs::FROM_CONTAINER, &out).0, TC_ACT_OK);
    // The reply, delivered by the stack to the pod through the veth's egress.
    let mut reply = udp_packet([192, 0, 2, 1], POD_A, 64);
    reply[34..36].copy_from_slice(&80u16.to_be_bytes());
    reply[36..38].copy_from_slice(&4000u16.to_be_bytes());
    assert_eq!(run(&mut dp, programs::TO_CONTAINER, &reply).0, TC_ACT_OK);
    let ct = maps.conntrack().unwrap();
    assert_eq!(ct.len(), 1);
    assert_eq!(ct[0].entry.tx_packets, 1);
    assert_eq!(ct[0].entry.rx_packets, 1);
    assert_eq!(
        ct[0].entry.flags & plexus_abi::conntrack::CT_F_SEEN_REPLY,
        1
    );
    let a = &maps.endpoints_list().unwrap()[0];
    assert_eq!((a.counters.tx_packets, a.counters.rx_packets), (1, 1));
}

#[test]
fn non_local_destination_goes_to_the_stack_unchanged() {
    let pins = PinDir::new();
    let mut dp = Datapath::load(&pins.0).expect("load");
    dp.maps()
        .unwrap()
        .upsert_endpoint(key(POD_A), endpoint(1, 10, MAC_A, HOST_B))
        .unwrap();
    let pkt = udp_packet(POD_A, [10, 200, 0, 1], 64);
    let (ret, out) = run(&mut dp, programs::FROM_CONTAINER, &pkt);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(out, pkt);
}

#[test]
fn spoofed_source_is_dropped_and_counted() {
    let pins = PinDir::new();
    let mut dp = Datapath::load(&pins.0).expect("load");
    let maps = dp.maps().unwrap();
    // POD_A lives behind another interface than the one the packet arrives on.
    maps.upsert_endpoint(key(POD_A), endpoint(999, 10, MAC_A, HOST_B))
        .unwrap();
    maps.upsert_endpoint(key(POD_B), endpoint(4242, 11, MAC_B, HOST_B))
        .unwrap();
    let (ret, _) = run(
        &mut dp,
        programs::FROM_CONTAINER,
        &udp_packet(POD_A, POD_B, 64),
    );
    assert_eq!(ret, TC_ACT_SHOT);
    // An address no endpoint owns.
    let (ret, _) = run(
        &mut dp,
        programs::FROM_CONTAINER,
        &udp_packet([10, 9, 9, 9], POD_B, 64),
    );
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(maps.drop_count(DropReason::InvalidSourceIp).unwrap(), 2);
}

#[test]
fn expiring_ttl_and_truncated_packets() {
    let pins = PinDir::new();
    let mut dp = Datapath::load(&pins.0).expect("load");
    let maps = dp.maps().unwrap();
    maps.upsert_endpoint(key(POD_A), endpoint(1, 10, MAC_A, HOST_B))
        .unwrap();
    maps.upsert_endpoint(key(POD_B), endpoint(4242, 11, MAC_B, HOST_B))
        .unwrap();
    // TTL 1: the stack must answer with ICMP time exceeded, so no redirect.
    let pkt = udp_packet(POD_A, POD_B, 1);
    assert_eq!(run(&mut dp, programs::FROM_CONTAINER, &pkt).0, TC_ACT_OK);
    // A UDP header cut short.
    let short = &udp_packet(POD_A, POD_B, 64)[..36];
    assert_eq!(run(&mut dp, programs::FROM_CONTAINER, short).0, TC_ACT_SHOT);
    // An IPv4 header length below the minimum.
    let mut bad_ihl = udp_packet(POD_A, POD_B, 64);
    bad_ihl[14] = 0x44;
    assert_eq!(
        run(&mut dp, programs::FROM_CONTAINER, &bad_ihl).0,
        TC_ACT_SHOT
    );
    // An unknown EtherType.
    let mut odd = udp_packet(POD_A, POD_B, 64);
    odd[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    assert_eq!(run(&mut dp, programs::FROM_CONTAINER, &odd).0, TC_ACT_SHOT);
    assert_eq!(
        maps.drop_count(DropReason::CtTruncatedOrInvalidHeader)
            .unwrap(),
        1
    );
    assert_eq!(maps.drop_count(DropReason::InvalidPacket).unwrap(), 1);
    assert_eq!(
        maps.drop_count(DropReason::UnsupportedL3Protocol).unwrap(),
        1
    );
}
