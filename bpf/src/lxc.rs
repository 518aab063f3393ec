//! Programs on a pod's host-side veth, the counterpart of Cilium's `bpf_lxc`:
//! `plexus_from_container` (tc ingress: packets the pod sends) and `plexus_to_container`
//! (tc egress: packets the node's stack delivers to the pod).
//!
//! Stages of a packet from a pod: parse → source check → conntrack lookup → egress policy of
//! the source → ingress policy of a local destination → conntrack record → deliver (peer
//! redirect) or hand to the stack. Replies of tracked connections skip policy.

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_redirect_peer, macros::classifier, programs::TcContext,
};
use plexus_abi::{
    conntrack::CT_F_HAIRPIN,
    endpoint::{
        ENDPOINT_F_EGRESS_ENFORCED, ENDPOINT_F_EGRESS_POLICY, ENDPOINT_F_INGRESS_ENFORCED,
        ENDPOINT_F_INGRESS_POLICY,
    },
    event::{point, EVENT_F_NEW, EVENT_F_REPLY, MONITOR_ALL},
    policy::{DIR_EGRESS, DIR_INGRESS},
    DropReason, EndpointInfo, EndpointKey, IpAddr6,
};

use crate::{
    conntrack::{self, CtDir},
    ipcache,
    lb::{self, Xlate},
    maps::PLEXUS_ENDPOINTS,
    notify::{self, Meta},
    parse::{self, parse_v4, EthHdr, Ipv4Hdr, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
    policy,
};

/// Packets leaving a pod: forward to a local pod with a peer redirect, or hand to the stack.
#[classifier]
pub fn plexus_from_container(ctx: TcContext) -> i32 {
    let mut m = Meta::new();
    m.cfg = notify::config();
    let res = try_from_container(&ctx, &mut m);
    notify::finish(&ctx, res, &m)
}

/// Packets the stack delivers to a pod (from the node itself or beyond it).
#[classifier]
pub fn plexus_to_container(ctx: TcContext) -> i32 {
    let mut m = Meta::new();
    m.cfg = notify::config();
    let res = try_to_container(&ctx, &mut m);
    notify::finish(&ctx, res, &m)
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
    let mut pkt = parse_v4(ctx)?;
    let len = ctx.len();
    m.tuple = pkt.ct_key;
    m.tcp_flags = pkt.tcp_flags;

    // The sender must be the endpoint that owns this veth: no spoofed source addresses.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let src = endpoint(pkt.saddr).ok_or(DropReason::InvalidSourceIp)?;
    if src.ifindex != ifindex {
        return Err(DropReason::InvalidSourceIp);
    }
    let (src_id, src_identity, src_flags) = (src.endpoint_id, src.identity, src.flags);
    m.src_identity = src_identity;
    m.endpoint_id = src_id;
    m.capture[0] = src_id;
    notify::count_tx(src_id, len);

    // Services the socket hooks did not translate (pods outside their cgroup, or a service
    // without backends): pick a backend here; policy below then applies to the backend.
    let (rev_nat, hairpin) = match lb::translate_v4(ctx, &mut pkt, true)? {
        Xlate::None => (0, false),
        Xlate::Translated { rev_nat, hairpin } => (rev_nat, hairpin),
        Xlate::NoBackend => {
            lb::refuse(ctx, m)?;
            // Straight back into the sender's namespace.
            return Ok(unsafe { bpf_redirect_peer(ifindex, 0) } as i32);
        }
    };
    m.tuple = pkt.ct_key;

    let mut dst = endpoint(pkt.daddr);
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
    if ct.dir == CtDir::Reply {
        // A reply of a connection translated in tc: it must come from the frontend.
        let (ct_rev_nat, ct_flags) = ct.translation();
        if ct_rev_nat != 0 {
            let hairpin = ct_flags & CT_F_HAIRPIN != 0;
            lb::reverse_v4(ctx, &mut pkt, ct_rev_nat, hairpin)?;
            if hairpin {
                dst = endpoint(pkt.daddr);
            }
        }
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
    let ct_flags = if hairpin { CT_F_HAIRPIN } else { 0 };
    ct.set_translation(rev_nat, ct_flags);
    let report = conntrack::record(&ct, pkt.tcp_flags, src_identity, rev_nat, ct_flags);

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
    // path). Map lookups and the NAT helpers invalidate earlier packet pointers: re-derive.
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
    let report = conntrack::record(&ct, pkt.tcp_flags, src_identity, 0, 0);
    m.trace = trace_point(m, report, point::TO_LXC);
    notify::count_rx(dst_id, ctx.len());
    Ok(TC_ACT_OK as i32)
}
