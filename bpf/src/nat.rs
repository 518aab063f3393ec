//! Address translation of IPv4 packets with their checksums, and the ICMP "port unreachable"
//! answer for a service without backends.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::{bpf_csum_diff, bpf_skb_change_tail, bpf_skb_load_bytes},
    programs::TcContext,
};
use plexus_abi::DropReason;

use crate::parse::{EthHdr, ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP};

/// Offset of the IPv4 header checksum.
const IP_CSUM: usize = ETH_HLEN + 10;
/// Offset of the IPv4 source address.
const IP_SADDR: usize = ETH_HLEN + 12;
/// Offset of the IPv4 destination address.
const IP_DADDR: usize = ETH_HLEN + 16;

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The source address and port.
    Source,
    /// The destination address and port.
    Destination,
}

/// Rewrites one end of a TCP or UDP packet whose L4 header starts at `l4_off`: address
/// (network-order word) and port (network order), patching the IP and L4 checksums
/// incrementally. Other protocols get the address only.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    l4_off: usize,
    proto: u8,
    end: End,
    old: (u32, u16),
    new: (u32, u16),
) -> Result<(), DropReason> {
    let (addr_off, port_off) = match end {
        End::Source => (IP_SADDR, l4_off),
        End::Destination => (IP_DADDR, l4_off + 2),
    };
    let csum_off = match proto {
        IPPROTO_TCP => Some((l4_off + 16, 0u64)),
        IPPROTO_UDP => Some((l4_off + 6, BPF_F_MARK_MANGLED_0 as u64)),
        _ => None,
    };
    let fail = |_| DropReason::ErrorWritingToPacket;
    if old.0 != new.0 {
        if let Some((off, extra)) = csum_off {
            ctx.l4_csum_replace(
                off,
                old.0 as u64,
                new.0 as u64,
                BPF_F_PSEUDO_HDR as u64 | extra | 4,
            )
            .map_err(fail)?;
        }
        ctx.l3_csum_replace(IP_CSUM, old.0 as u64, new.0 as u64, 4)
            .map_err(fail)?;
        ctx.store(addr_off, &new.0, 0).map_err(fail)?;
    }
    if old.1 != new.1 {
        if let Some((off, extra)) = csum_off {
            ctx.l4_csum_replace(off, old.1 as u64, new.1 as u64, extra | 2)
                .map_err(fail)?;
            ctx.store(port_off, &new.1, 0).map_err(fail)?;
        }
    }
    Ok(())
}

/// Folds a 32-bit one's-complement sum to the 16-bit checksum field (in memory order).
#[inline(always)]
fn fold(sum: i64) -> u16 {
    let mut s = sum as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Length of the answer: Ethernet, IPv4, ICMP header, the offending IPv4 header and 8 bytes.
const ICMP_ANSWER_LEN: u32 = (ETH_HLEN + 20 + 8 + 28) as u32;

/// Turns the packet (IPv4 without options) into the ICMP port unreachable its sender would
/// get from a host with nothing listening (RFC 792: the offending header and 8 bytes of its
/// payload), addressed back to the sender from the address it tried. The caller sends it back.
#[inline(always)]
pub fn icmp_port_unreachable(ctx: &TcContext) -> Result<(), DropReason> {
    let bad = |_| DropReason::InvalidPacket;
    // out[0..20]: new IPv4 header; out[20..28]: ICMP header; out[28..56]: the original
    // IPv4 header and the first 8 bytes of its payload.
    let mut out = [0u32; 14];
    let mut eth = [0u8; 12];
    unsafe {
        let b = out.as_mut_ptr() as *mut u8;
        // The raw helper with constant lengths: aya's `load_bytes` clamps the length in a way
        // the verifier cannot bound away from zero.
        let skb = ctx.skb.skb as *const core::ffi::c_void;
        if bpf_skb_load_bytes(skb, ETH_HLEN as u32, b.add(28).cast(), 28) != 0
            || bpf_skb_load_bytes(skb, 0, eth.as_mut_ptr().cast(), 12) != 0
        {
            return Err(DropReason::InvalidPacket);
        }
        if *b.add(28) != 0x45 {
            return Err(DropReason::InvalidPacket);
        }
        let h = core::slice::from_raw_parts_mut(b, 28);
        h[0] = 0x45;
        h[1] = 0;
        h[2..4].copy_from_slice(&56u16.to_be_bytes());
        h[8] = 64;
        h[9] = 1; // ICMP
        for i in 0..4 {
            h[12 + i] = *b.add(28 + 16 + i);
            h[16 + i] = *b.add(28 + 12 + i);
        }
        h[20] = 3; // destination unreachable
        h[21] = 3; // port unreachable
    }
    let ip_sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, out.as_mut_ptr(), 20, 0) };
    let ip_csum = fold(ip_sum).to_ne_bytes();
    let icmp_sum =
        unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, out.as_mut_ptr().add(5), 36, 0) };
    let icmp_csum = fold(icmp_sum).to_ne_bytes();
    unsafe {
        let b = out.as_mut_ptr() as *mut u8;
        *b.add(10) = ip_csum[0];
        *b.add(11) = ip_csum[1];
        *b.add(22) = icmp_csum[0];
        *b.add(23) = icmp_csum[1];
    }
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, ICMP_ANSWER_LEN, 0) } != 0 {
        return Err(DropReason::InvalidPacket);
    }
    ctx.store(ETH_HLEN, &out, 0).map_err(bad)?;
    // Back the way it came: the destination MAC is the sender's.
    let eth_hdr: *mut EthHdr = crate::parse::ptr_at(ctx, 0)?;
    unsafe {
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&eth[6..12]);
        src.copy_from_slice(&eth[0..6]);
        (*eth_hdr).dst = dst;
        (*eth_hdr).src = src;
    }
    Ok(())
}
