//! Programs on a pod's host-side veth, the counterpart of Cilium's `bpf_lxc`:
//! `plexus_from_container` (tc ingress: packets the pod sends) and `plexus_to_container`
//! (tc egress: packets the node's stack delivers to the pod).
//!
//! Stages of a packet from a pod: parse → source check → conntrack lookup → egress policy of
//! the source → ingress policy of a local destination → conntrack record → deliver (peer
//! redirect) or hand to the stack. Replies of tracked connections skip policy.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use plexus_abi::{
    endpoint::{
        ENDPOINT_F_EGRESS_ENFORCED, ENDPOINT_F_EGRESS_POLICY, ENDPOINT_F_INGRESS_ENFORCED,
        ENDPOINT_F_INGRESS_POLICY,
    },
    event::{point, EVENT_F_NEW, EVENT_F_REPLY, MONITOR_ALL},
    policy::{DIR_EGRESS, DIR_INGRESS},
    CtKey, DropReason, EndpointInfo, EndpointKey, IpAddr6,
};

use crate::{
    conntrack::{self, CtDir},
    ipcache,
    maps::PLEXUS_ENDPOINTS,
    notify::{self, Meta},
    parse::{self, EthHdr, Ipv4Hdr, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP},
    policy,
};

/// Packets leaving a pod: forward to a local pod with a peer redirect, or hand to the stack.
#[classifier]
pub fn plexus_from_container(ctx: TcContext) -> i32 {
    let mut m = Meta::new();
    m.cfg = notify::config();
    let res = try_from_container(&ctx, &mut m);
    finish(&ctx, res, &m)
}

/// Packets the stack delivers to a pod (from the node itself or beyond it).
#[classifier]
pub fn plexus_to_container(ctx: TcContext) -> i32 {
    let mut m = Meta::new();
    m.cfg = notify::config();
    let res = try_to_container(&ctx, &mut m);
    finish(&ctx, res, &m)
}

/// The single exit of every program: a drop is counted by reason and reported with what the
/// stages learned, a forwarded packet gets the events the monitor asks for. No result is ever
/// thrown away.
#[inline(always)]
fn finish(ctx: &TcContext, res: Result<i32, DropReason>, m: &Meta) -> i32 {
    match res {
        Ok(action) => {
            notify::forwarded(ctx, m);
            action
        }
        Err(reason) => {
            notify::count_drop(reason);
            notify::dropped(ctx, reason, m);
            TC_ACT_SHOT as i32
        }
    }
}

/// Whether to report this packet: per the aggregation (`report` from conntrack) or always.
#[inline(always)]
fn trace_point(m: &Meta, report: bool, point: u8) -> Option<u8> {
    if report || m.cfg.level >= MONITOR_ALL {
        Some(point)
    } else {
        None
    }
}

/// The parts of an IPv4 packet the stages need.
struct Packet {
    saddr: u32,
    daddr: u32,
    ttl: u8,
    /// Destination port for policy (host order; 0 for ICMP and non-first fragments).
    dport: u16,
    tcp_flags: u8,
    ct_key: CtKey,
}

#[inline(always)]
fn parse_v4(ctx: &TcContext) -> Result<Packet, DropReason> {
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
    let l4 = parse::l4(ctx, proto, ETH_HLEN + ihl, frag_off & 0x1fff == 0)?;
    let dport = if proto == IPPROTO_ICMP {
        0
    } else {
        u16::from_be(l4.dport)
    };
    let ct_key = CtKey {
        saddr: IpAddr6::from_v4_raw(saddr),
        daddr: IpAddr6::from_v4_raw(daddr),
        sport: l4.sport,
        dport: l4.dport,
        proto,
        _pad: [0; 3],
    };
    Ok(Packet {
        saddr,
        daddr,
        ttl,
        dport,
        tcp_flags: l4.tcp_flags,
        ct_key,
    })
}

#[inline(always)]
fn endpoint(addr: u32) -> Option<&'static EndpointInfo> {
    unsafe {
        PLEXUS_ENDPOINTS.get(&EndpointKey {
            ip: IpAddr6::from_v4_raw(addr),
        })
    }
}

#[inline(always)]
fn try_from_container(ctx: &TcContext, m: &mut Meta) -> Result<i32, DropReason> {
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_IP => from_container_v4(ctx, m),
        // ARP and IPv6 neighbour traffic go to the node's stack; pods are IPv4-only for now.
        ETH_P_ARP | ETH_P_IPV6 => Ok(TC_ACT_OK as i32),
        _ => Err(DropReason::UnsupportedL3Protocol),
    }
}

#[inline(always)]
fn from_container_v4(ctx: &TcContext, m: &mut Meta) -> Result<i32, DropReason> {
    let pkt = parse_v4(ctx)?;
    let len = ctx.len();
    m.tuple = pkt.ct_key;
    m.tcp_flags = pkt.tcp_flags;

    // The sender must be the endpoint that owns this veth: no spoofed source addresses.
    let src = endpoint(pkt.saddr).ok_or(DropReason::InvalidSourceIp)?;
    if src.ifindex != unsafe { (*ctx.skb.skb).ifindex } {
        return Err(DropReason::InvalidSourceIp);
    }
    let (src_id, src_identity, src_flags) = (src.endpoint_id, src.identity, src.flags);
    m.src_identity = src_identity;
    m.endpoint_id = src_id;
    m.capture[0] = src_id;
    notify::count_tx(src_id, len);

    let dst = endpoint(pkt.daddr);
    m.dst_identity = match dst {
        Some(d) => {
            m.capture[1] = d.endpoint_id;
            d.identity
        }
        None if src_flags & ENDPOINT_F_EGRESS_POLICY != 0 => ipcache::identity_v4(pkt.daddr),
        None => 0,
    };
    let ct = conntrack::lookup(&pkt.ct_key);
    match ct.dir {
        CtDir::New => m.flags |= EVENT_F_NEW,
        CtDir::Reply => m.flags |= EVENT_F_REPLY,
        CtDir::Original => {}
    }
    if ct.dir != CtDir::Reply {
        if src_flags & ENDPOINT_F_EGRESS_POLICY != 0 {
            let enforced = src_flags & ENDPOINT_F_EGRESS_ENFORCED != 0;
            policy::check(m, src_id, m.dst_identity, DIR_EGRESS, pkt.dport, enforced)?;
        }
        if let Some(d) = dst {
            if d.flags & ENDPOINT_F_INGRESS_POLICY != 0 {
                let enforced = d.flags & ENDPOINT_F_INGRESS_ENFORCED != 0;
                policy::check(
                    m,
                    d.endpoint_id,
                    src_identity,
                    DIR_INGRESS,
                    pkt.dport,
                    enforced,
                )?;
            }
        }
    }
    if ct.dir != CtDir::New {
        // Verdicts are reported for the packet that opens a connection only.
        m.verdict = 0;
    }
    m.endpoint_id = src_id;
    let report = conntrack::record(&ct, pkt.tcp_flags, src_identity);

    let Some(dst) = dst else {
        // Not a local pod: the node itself or beyond it; the stack routes it.
        m.trace = trace_point(m, report, point::TO_STACK);
        return Ok(TC_ACT_OK as i32);
    };
    m.trace = trace_point(m, report, point::TO_LXC);
    if pkt.ttl <= 1 {
        // Let the stack answer with ICMP time exceeded.
        return Ok(TC_ACT_OK as i32);
    }
    let (dst_ifindex, dst_id) = (dst.ifindex, dst.endpoint_id);
    let (pod_mac, host_mac) = (dst.pod_mac, dst.host_mac);

    // Rewrite in place with direct packet access (no store/checksum helper calls on the hot
    // path). Map lookups do not invalidate packet pointers, but re-derive them anyway after
    // the stages above.
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
    unsafe {
        (*eth).dst = pod_mac;
        (*eth).src = host_mac;
        // Forwarding is a router hop: decrement the TTL and patch the checksum the way the
        // kernel's ip_decrease_ttl does (RFC 1624: the TTL is the high byte of its word).
        (*ip).ttl -= 1;
        let sum = u16::from_be((*ip).check) as u32 + 0x0100;
        (*ip).check = (((sum & 0xffff) + (sum >> 16)) as u16).to_be();
    }

    notify::count_rx(dst_id, len);
    // Straight into the destination pod's namespace, skipping the host veth's backlog.
    Ok(unsafe { bpf_redirect_peer(dst_ifindex, 0) } as i32)
}

#[inline(always)]
fn try_to_container(ctx: &TcContext, m: &mut Meta) -> Result<i32, DropReason> {
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IP {
        return Ok(TC_ACT_OK as i32);
    }
    let pkt = parse_v4(ctx)?;
    m.tuple = pkt.ct_key;
    m.tcp_flags = pkt.tcp_flags;
    let Some(dst) = endpoint(pkt.daddr) else {
        return Ok(TC_ACT_OK as i32);
    };
    let (dst_id, dst_flags) = (dst.endpoint_id, dst.flags);
    m.dst_identity = dst.identity;
    m.endpoint_id = dst_id;
    m.capture[1] = dst_id;
    let ct = conntrack::lookup(&pkt.ct_key);
    let src_identity = ipcache::identity_v4(pkt.saddr);
    m.src_identity = src_identity;
    match ct.dir {
        CtDir::New => m.flags |= EVENT_F_NEW,
        CtDir::Reply => m.flags |= EVENT_F_REPLY,
        CtDir::Original => {}
    }
    if ct.dir != CtDir::Reply && dst_flags & ENDPOINT_F_INGRESS_POLICY != 0 {
        let enforced = dst_flags & ENDPOINT_F_INGRESS_ENFORCED != 0;
        policy::check(m, dst_id, src_identity, DIR_INGRESS, pkt.dport, enforced)?;
    }
    if ct.dir != CtDir::New {
        m.verdict = 0;
    }
    let report = conntrack::record(&ct, pkt.tcp_flags, src_identity);
    m.trace = trace_point(m, report, point::TO_LXC);
    notify::count_rx(dst_id, ctx.len());
    Ok(TC_ACT_OK as i32)
}
