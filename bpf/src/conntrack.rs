//! Connection tracking. One entry per connection, under a canonical key (the lower
//! address/port pair first), so every packet costs one lookup whichever way it goes; the entry
//! remembers which side opened the connection.
//!
//! A packet is classified first and recorded only once it is let through, so a packet that
//! policy drops leaves no trace.

use aya_ebpf::helpers::bpf_jiffies64;
use plexus_abi::{
    conntrack::{CT_F_HAIRPIN, CT_F_SEEN_REPLY, CT_OPENER_HIGHER, CT_OPENER_LOWER},
    CtEntry, CtKey,
};

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

/// A packet's place in the table.
pub struct Ct {
    /// The canonical key.
    key: CtKey,
    /// The packet goes from the lower side to the higher one.
    from_lower: bool,
    /// The entry if the connection is known, else null. A nullable pointer rather than an
    /// `Option`: the two-word enum gets copied bytewise and the verifier loses the pointer type.
    entry: *mut CtEntry,
    /// Classification.
    pub dir: CtDir,
}

/// Whether (a, ap) sorts after (b, bp).
#[inline(always)]
fn greater(a: &[u32; 4], ap: u16, b: &[u32; 4], bp: u16) -> bool {
    // IPv4-mapped addresses differ only in the last word: compare it first.
    let (a3, b3) = (u32::from_be(a[3]), u32::from_be(b[3]));
    if a3 != b3 {
        return a3 > b3;
    }
    if a[2] != b[2] {
        return u32::from_be(a[2]) > u32::from_be(b[2]);
    }
    if a[1] != b[1] {
        return u32::from_be(a[1]) > u32::from_be(b[1]);
    }
    if a[0] != b[0] {
        return u32::from_be(a[0]) > u32::from_be(b[0]);
    }
    u16::from_be(ap) > u16::from_be(bp)
}

/// Classifies a packet whose tuple (source first) is `pkt`.
#[inline(always)]
pub fn lookup(pkt: &CtKey) -> Ct {
    let swap = greater(&pkt.saddr.words, pkt.sport, &pkt.daddr.words, pkt.dport);
    let key = if swap { pkt.reversed() } else { *pkt };
    let from_lower = !swap;
    let (entry, dir) = match PLEXUS_CT.get_ptr_mut(&key) {
        None => (core::ptr::null_mut(), CtDir::New),
        Some(e) => {
            let opener_lower = unsafe { (*e).opener } == CT_OPENER_LOWER;
            let dir = if opener_lower == from_lower {
                CtDir::Original
            } else {
                CtDir::Reply
            };
            (e, dir)
        }
    };
    Ct {
        key,
        from_lower,
        entry,
        dir,
    }
}

impl Ct {
    /// Brings a known connection's translation in line with its opening-direction packet: a
    /// tuple reused by a new connection (an ephemeral port picked again, once translated in tc
    /// and once balanced at the socket) must not keep the old connection's reverse NAT.
    #[inline(always)]
    pub fn set_translation(&self, rev_nat: u32, ct_flags: u8) {
        if self.entry.is_null() || self.dir != CtDir::Original {
            return;
        }
        let e = unsafe { &mut *self.entry };
        if e.rev_nat != rev_nat || e.flags & CT_F_HAIRPIN != ct_flags & CT_F_HAIRPIN {
            e.rev_nat = rev_nat;
            e.flags = (e.flags & !CT_F_HAIRPIN) | (ct_flags & CT_F_HAIRPIN);
        }
    }

    /// The service translation of a known connection: (frontend id, `CT_F_*` flags); id 0
    /// when the connection was not translated in tc.
    #[inline(always)]
    pub fn translation(&self) -> (u32, u8) {
        if self.entry.is_null() {
            return (0, 0);
        }
        unsafe { ((*self.entry).rev_nat, (*self.entry).flags) }
    }
}

/// TCP FIN and RST: a connection closing is always reported.
const TCP_CLOSE: u8 = 0x01 | 0x04;

/// Records a packet that was let through: refreshes its entry, or creates one for a new
/// connection (with the service frontend `rev_nat` it was translated from, if any). An LRU insert that fails only loses tracking of this flow. Returns whether the
/// packet is worth reporting under aggregation: the first packet each way, new TCP flags, a
/// close.
#[inline(always)]
pub fn record(ct: &Ct, tcp_flags: u8, src_identity: u32, rev_nat: u32, ct_flags: u8) -> bool {
    // Jiffies are plenty for idle tracking; the precise clock costs ~35 ns a packet here.
    let now = unsafe { bpf_jiffies64() };
    if !ct.entry.is_null() {
        let e = ct.entry;
        // Counters race between CPUs; they are advisory (last_seen and flags are what matter).
        let e = unsafe { &mut *e };
        e.last_seen_jiffies = now;
        let mut report = tcp_flags & !e.tcp_flags != 0 || tcp_flags & TCP_CLOSE != 0;
        e.tcp_flags |= tcp_flags;
        if ct.dir == CtDir::Reply {
            e.rx_packets += 1;
            if e.flags & CT_F_SEEN_REPLY == 0 {
                report = true;
                e.flags |= CT_F_SEEN_REPLY;
            }
        } else {
            e.tx_packets += 1;
        }
        return report;
    }
    let entry = CtEntry {
        created_jiffies: now,
        last_seen_jiffies: now,
        tx_packets: 1,
        rx_packets: 0,
        tcp_flags,
        flags: ct_flags,
        opener: if ct.from_lower {
            CT_OPENER_LOWER
        } else {
            CT_OPENER_HIGHER
        },
        _pad: 0,
        src_identity,
        rev_nat,
        _pad2: 0,
    };
    let _ = PLEXUS_CT.insert(&ct.key, &entry, 0);
    true
}
