//! Resolving an address to the identity behind it.

use aya_ebpf::maps::lpm_trie::Key;
use plexus_abi::{IpAddr6, IpcacheKey};

use crate::maps::PLEXUS_IPCACHE;

/// Identity of the world: addresses the ipcache does not know.
const WORLD: u32 = 2;

/// The identity of an IPv4 address (network-order word).
#[inline(always)]
pub fn identity_v4(addr: u32) -> u32 {
    let key = Key::new(
        128,
        IpcacheKey {
            ip: IpAddr6::from_v4_raw(addr),
        },
    );
    PLEXUS_IPCACHE.get(&key).map_or(WORLD, |v| v.identity)
}
