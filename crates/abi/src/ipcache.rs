//! The ipcache: an LPM trie from IP prefixes to the identity behind them.

use crate::IpAddr6;

/// Data part of an ipcache key: an address (IPv4-mapped for IPv4); the prefix length counts
/// from the first of the 128 bits, so an IPv4 /n is 96 + n.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct IpcacheKey {
    /// The address.
    pub ip: IpAddr6,
}

/// What the ipcache knows about a prefix.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct IpcacheValue {
    /// Security identity.
    pub identity: u32,
    /// Reserved flags, 0.
    pub flags: u32,
    /// Node hosting the address (0 = this node or outside the cluster).
    pub tunnel_endpoint: IpAddr6,
}

/// Prefix length of an IPv4 /n in the ipcache.
pub const fn v4_prefix(n: u8) -> u32 {
    96 + n as u32
}
