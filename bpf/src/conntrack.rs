//! Connection tracking: create or refresh the entry of a packet's flow, in either direction.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use plexus_abi::{conntrack::CT_F_SEEN_REPLY, CtEntry, CtKey};

use crate::maps::PLEXUS_CT;

/// Which way a packet goes relative to the connection it belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CtDir {
    /// The first packet of a connection.
    New,
    /// A later packet in the opening direction.
    Original,
    /// A packet in the reply direction.
    Reply,
}

/// Looks the packet's flow up, updating its entry, or creates one. Never fails the packet:
/// an LRU insert that fails only loses tracking of this flow.
#[inline(always)]
pub fn track(key: &CtKey, tcp_flags: u8, src_identity: u32) -> CtDir {
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = PLEXUS_CT.get_ptr_mut(key) {
        // Counters race between CPUs; they are advisory (last_seen and flags are what matter).
        let e = unsafe { &mut *e };
        e.last_seen_ns = now;
        e.tx_packets += 1;
        e.tcp_flags |= tcp_flags;
        return CtDir::Original;
    }
    let rev = key.reversed();
    if let Some(e) = PLEXUS_CT.get_ptr_mut(&rev) {
        let e = unsafe { &mut *e };
        e.last_seen_ns = now;
        e.rx_packets += 1;
        e.tcp_flags |= tcp_flags;
        e.flags |= CT_F_SEEN_REPLY;
        return CtDir::Reply;
    }
    let entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        tx_packets: 1,
        rx_packets: 0,
        tcp_flags,
        flags: 0,
        _pad: [0; 2],
        src_identity,
    };
    let _ = PLEXUS_CT.insert(key, &entry, 0);
    CtDir::New
}
