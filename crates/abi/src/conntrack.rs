//! The connection-tracking map: one entry per connection under a canonical 5-tuple (the lower
//! address/port side first), so a packet in either direction finds it with one lookup.

use crate::IpAddr6;

/// Key of the conntrack map: a connection's 5-tuple with the lower (address, port) side as
/// "source"; [`CtEntry::opener`] says which side opened it.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CtKey {
    /// Source address of the opening packet.
    pub saddr: IpAddr6,
    /// Destination address of the opening packet.
    pub daddr: IpAddr6,
    /// Source port (network order); ICMP echo id for ICMP, 0 otherwise.
    pub sport: u16,
    /// Destination port (network order); 0 for ICMP.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding; always 0 so keys hash identically.
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The key of the opposite direction of the same connection.
    #[inline(always)]
    pub fn reversed(&self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Value of the conntrack map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CtEntry {
    /// `bpf_jiffies64` when the entry was created (ticks: idle tracking needs no finer clock,
    /// and reading the precise clock costs a sixth of the forwarding path).
    pub created_jiffies: u64,
    /// `bpf_jiffies64` of the last packet in either direction.
    pub last_seen_jiffies: u64,
    /// Packets in the opening direction.
    pub tx_packets: u64,
    /// Packets in the reply direction.
    pub rx_packets: u64,
    /// Union of TCP flags seen in either direction.
    pub tcp_flags: u8,
    /// `CT_F_*` bits.
    pub flags: u8,
    /// [`CT_OPENER_LOWER`] or [`CT_OPENER_HIGHER`]: which side of the key opened.
    pub opener: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Security identity of the opening side (0 until policy assigns identities).
    pub src_identity: u32,
    /// The service frontend id (reverse-NAT index) a tc-translated connection was opened to;
    /// replies get its address as source. 0: not translated.
    pub rev_nat: u32,
    /// Explicit padding.
    pub _pad2: u32,
}

/// A reply has been seen: the connection is established.
pub const CT_F_SEEN_REPLY: u8 = 1;
/// A translated connection from a pod to a service that chose the pod itself: its source was
/// rewritten to the frontend address, so replies get both addresses restored.
pub const CT_F_HAIRPIN: u8 = 2;
/// The key's source side (the lower one) opened the connection.
pub const CT_OPENER_LOWER: u8 = 0;
/// The key's destination side (the higher one) opened the connection.
pub const CT_OPENER_HIGHER: u8 = 1;

impl CtEntry {
    /// The key oriented the way the connection was opened.
    pub fn oriented(&self, key: &CtKey) -> CtKey {
        if self.opener == CT_OPENER_HIGHER {
            key.reversed()
        } else {
            *key
        }
    }
}
