//! Resolving an address to the identity behind it.

use aya_ebpf::maps::lpm_trie::Key;
use plexus_abi::{IpAddr6, IpcacheKey};

use crate::maps::PLEXUS_IPCACHE;

/// Identity of IPv4 addresses the ipcache does not know (Cilium's `world-ipv4`).
const WORLD_IPV4: u32 = 9;

/// The identity of an IPv4 address (network-order word).
#[inline(always)]
pub fn identity_v4(addr: u32) -> u32 {
    let key = Key::new(
        128,
        IpcacheKey {
            ip: IpAddr6::from_v4_raw(addr),
        },
    );
    PLEXUS_IPCACHE.get(&key).map_or(WORLD_IPV4, |v| v.identity)
}
