//! Connection tracking: classify a packet against its flow's entry (without creating one, so a
//! packet that policy then drops leaves no trace), and record it once it is let through.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use plexus_abi::{conntrack::CT_F_SEEN_REPLY, CtEntry, CtKey};

use crate::maps::PLEXUS_CT;

/// Which way a packet goes relative to the connection it belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CtDir {
    /// No entry yet: the first packet of a connection.
    New,
    /// A later packet in the opening direction.
    Original,
    /// A packet in the reply direction.
    Reply,
}

/// Which way the packet goes, from the table.
#[inline(always)]
pub fn lookup(key: &CtKey) -> CtDir {
    if PLEXUS_CT.get_ptr(key).is_some() {
        CtDir::Original
    } else if PLEXUS_CT.get_ptr(&key.reversed()).is_some() {
        CtDir::Reply
    } else {
        CtDir::New
    }
}

/// Records a packet that was let through: refreshes its entry, or creates one for a new
/// connection. An LRU insert that fails only loses tracking of this flow.
#[inline(always)]
pub fn record(key: &CtKey, dir: CtDir, tcp_flags: u8, src_identity: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    let (k, reply) = match dir {
        CtDir::Reply => (key.reversed(), true),
        _ => (*key, false),
    };
    if let Some(e) = PLEXUS_CT.get_ptr_mut(&k) {
        // Counters race between CPUs; they are advisory (last_seen and flags are what matter).
        let e = unsafe { &mut *e };
        e.last_seen_ns = now;
        e.tcp_flags |= tcp_flags;
        if reply {
            e.rx_packets += 1;
            e.flags |= CT_F_SEEN_REPLY;
        } else {
            e.tx_packets += 1;
        }
        return;
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
}
