//! Packet parsing: bounds-checked views of the Ethernet, IPv4 and L4 headers.

use aya_ebpf::programs::TcContext;
use plexus_abi::DropReason;

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
