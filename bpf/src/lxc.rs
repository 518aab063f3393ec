//! Programs on a pod's host-side veth, the counterpart of Cilium's `bpf_lxc`:
//! `plexus_from_container` (tc ingress: packets the pod sends) and `plexus_to_container`
//! (tc egress: packets the node's stack delivers to the pod).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use plexus_abi::{CtKey, DropReason, EndpointKey, IpAddr6};

use crate::{
    conntrack,
    maps::PLEXUS_ENDPOINTS,
    notify,
    parse::{self, EthHdr, Ipv4Hdr, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
};

/// Offset of the TTL/protocol word in an IPv4 header, for the checksum update.
const IP_TTL_OFF: usize = ETH_HLEN + 8;
/// Offset of the IPv4 header checksum.
const IP_CSUM_OFF: usize = ETH_HLEN + 10;

/// Packets leaving a pod: forward to a local pod with a peer redirect, or hand to the stack.
#[classifier]
pub fn plexus_from_container(ctx: TcContext) -> i32 {
    finish(try_from_container(&ctx))
}

/// Packets the stack delivers to a pod (from the node itself): count and pass.
#[classifier]
pub fn plexus_to_container(ctx: TcContext) -> i32 {
    finish(try_to_container(&ctx))
}

/// The single exit of every program: a drop is counted by reason, never silently lost.
#[inline(always)]
fn finish(res: Result<i32, DropReason>) -> i32 {
    match res {
        Ok(action) => action,
        Err(reason) => {
            notify::count_drop(reason);
            TC_ACT_SHOT as i32
        }
    }
}

#[inline(always)]
fn try_from_container(ctx: &TcContext) -> Result<i32, DropReason> {
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_IP => from_container_v4(ctx),
        // ARP and IPv6 neighbour traffic go to the node's stack; pods are IPv4-only for now.
        ETH_P_ARP | ETH_P_IPV6 => Ok(TC_ACT_OK as i32),
        _ => Err(DropReason::UnsupportedL3Protocol),
    }
}

#[inline(always)]
fn from_container_v4(ctx: &TcContext) -> Result<i32, DropReason> {
    let ip: *const Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
    let (vihl, saddr, daddr, proto, frag_off, ttl) = unsafe {
        (
            (*ip).vihl,
            (*ip).saddr,
            (*ip).daddr,
            (*ip).proto,
            u16::from_be((*ip).frag_off),
            (*ip).ttl,
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(DropReason::InvalidPacket);
    }
    let len = ctx.len();

    // The sender must be the endpoint that owns this veth: no spoofed source addresses.
    let src_key = EndpointKey {
        ip: IpAddr6::from_v4_raw(saddr),
    };
    let src = unsafe { PLEXUS_ENDPOINTS.get(&src_key) }.ok_or(DropReason::InvalidSourceIp)?;
    if src.ifindex != unsafe { (*ctx.skb.skb).ifindex } {
        return Err(DropReason::InvalidSourceIp);
    }
    let src_id = src.endpoint_id;
    let src_identity = src.identity;

    let first_fragment = frag_off & 0x1fff == 0;
    let l4 = parse::l4(ctx, proto, ETH_HLEN + ihl, first_fragment)?;
    let key = CtKey {
        saddr: IpAddr6::from_v4_raw(saddr),
        daddr: IpAddr6::from_v4_raw(daddr),
        sport: l4.sport,
        dport: l4.dport,
        proto,
        _pad: [0; 3],
    };
    conntrack::track(&key, l4.tcp_flags, src_identity);
    notify::count_tx(src_id, len);

    let dst_key = EndpointKey {
        ip: IpAddr6::from_v4_raw(daddr),
    };
    let Some(dst) = (unsafe { PLEXUS_ENDPOINTS.get(&dst_key) }) else {
        // Not a local pod: the node itself or beyond it; the stack routes it.
        return Ok(TC_ACT_OK as i32);
    };
    if ttl <= 1 {
        // Let the stack answer with ICMP time exceeded.
        return Ok(TC_ACT_OK as i32);
    }
    let (dst_ifindex, dst_id) = (dst.ifindex, dst.endpoint_id);
    let macs = concat_macs(&dst.pod_mac, &dst.host_mac);

    // Forwarding is a router hop: decrement the TTL and fix the header checksum.
    let old = u16::from_ne_bytes([ttl, proto]);
    let new = u16::from_ne_bytes([ttl - 1, proto]);
    ctx.store(IP_TTL_OFF, &(ttl - 1), 0)
        .map_err(|_| DropReason::ErrorWritingToPacket)?;
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 2)
        .map_err(|_| DropReason::L3ChecksumError)?;
    ctx.store(0, &macs, 0)
        .map_err(|_| DropReason::ErrorWritingToPacket)?;

    notify::count_rx(dst_id, len);
    // Straight into the destination pod's namespace, skipping the host veth's backlog.
    Ok(unsafe { bpf_redirect_peer(dst_ifindex, 0) } as i32)
}

/// Destination then source MAC, as they sit at the start of an Ethernet header.
#[inline(always)]
fn concat_macs(dst: &[u8; 6], src: &[u8; 6]) -> [u8; 12] {
    [
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0], src[1], src[2], src[3], src[4],
        src[5],
    ]
}

#[inline(always)]
fn try_to_container(ctx: &TcContext) -> Result<i32, DropReason> {
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IP {
        return Ok(TC_ACT_OK as i32);
    }
    let ip: *const Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
    let (vihl, saddr, daddr, proto, frag_off) = unsafe {
        (
            (*ip).vihl,
            (*ip).saddr,
            (*ip).daddr,
            (*ip).proto,
            u16::from_be((*ip).frag_off),
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(DropReason::InvalidPacket);
    }
    let dst_key = EndpointKey {
        ip: IpAddr6::from_v4_raw(daddr),
    };
    let Some(dst) = (unsafe { PLEXUS_ENDPOINTS.get(&dst_key) }) else {
        return Ok(TC_ACT_OK as i32);
    };
    let dst_id = dst.endpoint_id;
    let l4 = parse::l4(ctx, proto, ETH_HLEN + ihl, frag_off & 0x1fff == 0)?;
    let key = CtKey {
        saddr: IpAddr6::from_v4_raw(saddr),
        daddr: IpAddr6::from_v4_raw(daddr),
        sport: l4.sport,
        dport: l4.dport,
        proto,
        _pad: [0; 3],
    };
    conntrack::track(&key, l4.tcp_flags, 0);
    notify::count_rx(dst_id, ctx.len());
    Ok(TC_ACT_OK as i32)
}
