//! Service load balancing shared by the tc and socket programs: frontend lookup, backend
//! selection (ClientIP affinity, Maglev or random), and the per-flow backend of tc-translated
//! connections.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};
use plexus_abi::{
    lb::{LB_BACKEND_F_TERMINATING, LB_F_AFFINITY, LB_F_MAGLEV, MAGLEV_M},
    CtKey, DropReason, IpAddr6, LbAffinityKey, LbAffinityValue, LbBackend, LbFlow, LbServiceKey,
};

use crate::{
    maps::{
        PLEXUS_LB_AFFINITY, PLEXUS_LB_BACKENDS, PLEXUS_LB_FLOWS, PLEXUS_LB_MAGLEV,
        PLEXUS_LB_REVNAT, PLEXUS_LB_SERVICES,
    },
    nat::{self, End},
    notify::{self, Meta},
    parse::{V4Packet, IPPROTO_TCP, IPPROTO_UDP},
};

/// A frontend found in the services map (its slot-0 entry).
#[derive(Clone, Copy)]
pub struct Service {
    /// Its key (slot 0).
    pub key: LbServiceKey,
    /// Backends taking new connections.
    pub count: u16,
    /// `LB_F_*`.
    pub flags: u16,
    /// Frontend id.
    pub rev_nat: u32,
    /// Affinity timeout, seconds.
    pub affinity_timeout: u32,
}

/// The frontend at an IPv4 address (network-order word), port (network order) and protocol.
#[inline(always)]
pub fn lookup_v4(addr: u32, port: u16, proto: u8) -> Option<Service> {
    let key = LbServiceKey {
        addr: IpAddr6::from_v4_raw(addr),
        port,
        proto,
        _pad: 0,
        slot: 0,
        _pad2: 0,
    };
    let v = unsafe { PLEXUS_LB_SERVICES.get(&key) }?;
    Some(Service {
        key,
        count: v.count,
        flags: v.flags,
        rev_nat: v.rev_nat,
        affinity_timeout: v.affinity_timeout,
    })
}

/// A backend by id.
#[inline(always)]
pub fn backend(id: u32) -> Option<LbBackend> {
    unsafe { PLEXUS_LB_BACKENDS.get(&id) }.copied()
}

/// `hash` scaled into `0..n` by multiply-shift: unlike `%`, a range the verifier can follow.
#[inline(always)]
fn scale(hash: u32, n: u32) -> u32 {
    ((hash as u64 * n as u64) >> 32) as u32
}

/// Picks the backend of a new connection: the client's affine backend while it lasts, else
/// the Maglev table's entry for `hash`, else a random slot. `None` when the service has no
/// backend for new connections.
#[inline(always)]
pub fn select(svc: &Service, hash: u32, client: &LbAffinityKey) -> Option<(u32, LbBackend)> {
    if svc.count == 0 {
        return None;
    }
    let affinity = svc.flags & LB_F_AFFINITY != 0;
    let now = if affinity {
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    if affinity {
        if let Some(a) = PLEXUS_LB_AFFINITY.get_ptr_mut(client) {
            let (last, id) = unsafe { ((*a).last_used_ns, (*a).backend_id) };
            if now.wrapping_sub(last) < svc.affinity_timeout as u64 * 1_000_000_000 {
                if let Some(b) = backend(id) {
                    if b.flags & LB_BACKEND_F_TERMINATING == 0 {
                        unsafe { (*a).last_used_ns = now };
                        return Some((id, b));
                    }
                }
            }
        }
    }
    let id = if svc.flags & LB_F_MAGLEV != 0 {
        let table = PLEXUS_LB_MAGLEV.get_ptr(svc.rev_nat)?;
        let i = scale(hash, MAGLEV_M as u32) as usize;
        if i >= MAGLEV_M {
            return None;
        }
        unsafe { (*table).slots[i] }
    } else {
        let mut key = svc.key;
        key.slot = scale(unsafe { bpf_get_prandom_u32() }, svc.count as u32) as u16 + 1;
        unsafe { PLEXUS_LB_SERVICES.get(&key) }?.backend_id
    };
    let b = backend(id)?;
    if affinity {
        let v = LbAffinityValue {
            last_used_ns: now,
            backend_id: id,
            _pad: 0,
        };
        let _ = PLEXUS_LB_AFFINITY.insert(client, &v, 0);
    }
    Some((id, b))
}

/// A flow hash that is the same on every node (Maglev's promise: every node sends one flow to
/// the same backend): a murmur3-style mix of the tuple.
#[inline(always)]
pub fn tuple_hash(t: &CtKey) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    for w in [
        t.saddr.words[3],
        t.daddr.words[3],
        (t.sport as u32) << 16 | t.dport as u32,
        t.proto as u32,
    ] {
        let mut k = w.wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// TCP SYN without ACK: a new connection even if its tuple was seen before (port reuse).
const fn is_syn(tcp_flags: u8) -> bool {
    tcp_flags & 0x12 == 0x02
}

/// The backend of a tc-seen packet to `svc` whose original tuple is `orig`: the flow's
/// backend while it exists, else a new selection (recorded for the flow's next packets).
#[inline(always)]
pub fn flow_backend(svc: &Service, orig: &CtKey, tcp_flags: u8) -> Option<(u32, LbBackend)> {
    if !is_syn(tcp_flags) {
        if let Some(f) = unsafe { PLEXUS_LB_FLOWS.get(orig) } {
            if f.rev_nat == svc.rev_nat {
                if let Some(b) = backend(f.backend_id) {
                    return Some((f.backend_id, b));
                }
            }
        }
    }
    let client = LbAffinityKey {
        client: orig.saddr,
        rev_nat: svc.rev_nat,
        kind: plexus_abi::lb::AFFINITY_BY_ADDR,
    };
    let (id, b) = select(svc, tuple_hash(orig), &client)?;
    let flow = LbFlow {
        backend_id: id,
        rev_nat: svc.rev_nat,
    };
    let _ = PLEXUS_LB_FLOWS.insert(orig, &flow, 0);
    Some((id, b))
}

/// What service translation did to a tc packet.
pub enum Xlate {
    /// Not addressed to a service.
    None,
    /// Sent to a backend of frontend `rev_nat`; `hairpin` when the backend is the sender
    /// itself, whose source was then rewritten to the frontend address.
    Translated {
        /// The frontend id.
        rev_nat: u32,
        /// Client and backend are the same pod.
        hairpin: bool,
    },
    /// A service with no backend for a new connection.
    NoBackend,
}

/// Translates a TCP or UDP packet to a service frontend into one to a backend (DNAT), keeping
/// `pkt` in step with the rewritten packet. With `hairpin_ok`, a pod that reaches itself gets
/// its source rewritten to the frontend too, so the kernel does not see its own address
/// arrive from outside.
#[inline(always)]
pub fn translate_v4(
    ctx: &TcContext,
    pkt: &mut V4Packet,
    hairpin_ok: bool,
) -> Result<Xlate, DropReason> {
    if !pkt.first_fragment || (pkt.proto != IPPROTO_TCP && pkt.proto != IPPROTO_UDP) {
        return Ok(Xlate::None);
    }
    let Some(svc) = lookup_v4(pkt.daddr, pkt.ct_key.dport, pkt.proto) else {
        return Ok(Xlate::None);
    };
    let Some((_, b)) = flow_backend(&svc, &pkt.ct_key, pkt.tcp_flags) else {
        return Ok(Xlate::NoBackend);
    };
    let (baddr, bport) = (b.addr.words[3], b.port);
    let (vip, vport) = (pkt.daddr, pkt.ct_key.dport);
    nat::rewrite(
        ctx,
        pkt.l4_off,
        pkt.proto,
        End::Destination,
        (vip, vport),
        (baddr, bport),
    )?;
    pkt.daddr = baddr;
    pkt.dport = u16::from_be(bport);
    pkt.ct_key.daddr = IpAddr6::from_v4_raw(baddr);
    pkt.ct_key.dport = bport;
    let hairpin = hairpin_ok && baddr == pkt.saddr;
    if hairpin {
        let sport = pkt.ct_key.sport;
        nat::rewrite(
            ctx,
            pkt.l4_off,
            pkt.proto,
            End::Source,
            (pkt.saddr, sport),
            (vip, sport),
        )?;
        pkt.saddr = vip;
        pkt.ct_key.saddr = IpAddr6::from_v4_raw(vip);
    }
    Ok(Xlate::Translated {
        rev_nat: svc.rev_nat,
        hairpin,
    })
}

/// Reverse NAT of a reply on a connection translated to frontend `rev_nat`: the source
/// becomes the frontend; for a hairpin connection the destination becomes the pod again.
#[inline(always)]
pub fn reverse_v4(
    ctx: &TcContext,
    pkt: &mut V4Packet,
    rev_nat: u32,
    hairpin: bool,
) -> Result<(), DropReason> {
    if pkt.proto != IPPROTO_TCP && pkt.proto != IPPROTO_UDP {
        return Ok(());
    }
    // The frontend is gone: nothing to restore (the connection dies with its service).
    let Some(rn) = (unsafe { PLEXUS_LB_REVNAT.get(&rev_nat) }) else {
        return Ok(());
    };
    let (faddr, fport) = (rn.addr.words[3], rn.port);
    let (saddr, sport) = (pkt.saddr, pkt.ct_key.sport);
    nat::rewrite(
        ctx,
        pkt.l4_off,
        pkt.proto,
        End::Source,
        (saddr, sport),
        (faddr, fport),
    )?;
    if hairpin {
        let dport = pkt.ct_key.dport;
        nat::rewrite(
            ctx,
            pkt.l4_off,
            pkt.proto,
            End::Destination,
            (pkt.daddr, dport),
            (saddr, dport),
        )?;
        pkt.daddr = saddr;
        pkt.ct_key.daddr = IpAddr6::from_v4_raw(saddr);
    }
    pkt.saddr = faddr;
    pkt.ct_key.saddr = IpAddr6::from_v4_raw(faddr);
    pkt.ct_key.sport = fport;
    Ok(())
}

/// A new connection to a service without backends: counted and reported as a drop, and
/// answered with ICMP port unreachable so the client fails at once (TCP: connection refused)
/// instead of retrying into silence. The caller sends the answer back to the sender.
#[inline(always)]
pub fn refuse(ctx: &TcContext, m: &mut Meta) -> Result<(), DropReason> {
    let reason = DropReason::ServiceBackendNotFound;
    notify::count_drop(reason);
    notify::dropped(ctx, reason, m);
    nat::icmp_port_unreachable(ctx)?;
    m.trace = None;
    m.verdict = 0;
    Ok(())
}
