//! Packet parsing: bounds-checked views of the Ethernet, IPv4 and L4 headers.

use aya_ebpf::programs::TcContext;
use plexus_abi::{CtKey, DropReason, IpAddr6};

/// Length of an Ethernet header.
pub const ETH_HLEN: usize = 14;
/// EtherType IPv4 (host order).
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType IPv6 (host order).
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType ARP (host order).
pub const ETH_P_ARP: u16 = 0x0806;
/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// Ethernet header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// EtherType in network order.
    pub proto: u16,
}

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    /// Network-order source address.
    pub saddr: u32,
    /// Network-order destination address.
    pub daddr: u32,
}

/// Returns a pointer to a `T` at `offset` in the packet, or an error if it would run past the
/// end of the linear data.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, DropReason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(DropReason::InvalidPacket);
    }
    Ok((start + offset) as *mut T)
}

/// The L4 part of a flow key: ports (network order) and TCP flags.
#[derive(Clone, Copy, Default)]
pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
}

/// Reads ports (and TCP flags) of a TCP, UDP, SCTP or ICMP echo packet whose L4 header starts
/// at `off`. Other protocols and non-first fragments get zero ports.
#[inline(always)]
pub fn l4(ctx: &TcContext, proto: u8, off: usize, first_fragment: bool) -> Result<L4, DropReason> {
    if !first_fragment {
        return Ok(L4::default());
    }
    match proto {
        IPPROTO_TCP => {
            let p: *const [u8; 14] =
                ptr_at(ctx, off).map_err(|_| DropReason::CtTruncatedOrInvalidHeader)?;
            let b = unsafe { &*p };
            Ok(L4 {
                sport: u16::from_ne_bytes([b[0], b[1]]),
                dport: u16::from_ne_bytes([b[2], b[3]]),
                tcp_flags: b[13],
            })
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let p: *const [u8; 4] =
                ptr_at(ctx, off).map_err(|_| DropReason::CtTruncatedOrInvalidHeader)?;
            let b = unsafe { &*p };
            Ok(L4 {
                sport: u16::from_ne_bytes([b[0], b[1]]),
                dport: u16::from_ne_bytes([b[2], b[3]]),
                tcp_flags: 0,
            })
        }
        IPPROTO_ICMP => {
            // Echo request/reply: track by identifier so a ping and its reply share one entry.
            let p: *const [u8; 6] =
                ptr_at(ctx, off).map_err(|_| DropReason::CtTruncatedOrInvalidHeader)?;
            let b = unsafe { &*p };
            let id = u16::from_ne_bytes([b[4], b[5]]);
            Ok(L4 {
                sport: id,
                dport: id,
                tcp_flags: 0,
            })
        }
        _ => Ok(L4::default()),
    }
}

/// The parts of an IPv4 packet the stages need.
pub struct V4Packet {
    /// Source address, network order.
    pub saddr: u32,
    /// Destination address, network order.
    pub daddr: u32,
    /// Time to live.
    pub ttl: u8,
    /// Destination port for policy (host order; 0 for ICMP and non-first fragments).
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// The tuple, source first, ports in network order.
    pub ct_key: CtKey,
    /// Offset of the L4 header.
    pub l4_off: usize,
    /// IP protocol.
    pub proto: u8,
    /// Not a non-first fragment: the L4 header is there.
    pub first_fragment: bool,
}

#[inline(always)]
pub fn parse_v4(ctx: &TcContext) -> Result<V4Packet, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
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
    let first_fragment = frag_off & 0x1fff == 0;
    let l4 = l4(ctx, proto, ETH_HLEN + ihl, first_fragment)?;
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
    Ok(V4Packet {
        saddr,
        daddr,
        ttl,
        dport,
        tcp_flags: l4.tcp_flags,
        ct_key,
        l4_off: ETH_HLEN + ihl,
        proto,
        first_fragment,
    })
}
