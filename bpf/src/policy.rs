//! Policy enforcement: two longest-prefix lookups (the peer's identity and the wildcard), where
//! a deny from either wins, a match allows, and no match drops when the direction is
//! default-deny.

use aya_ebpf::maps::lpm_trie::Key;
use plexus_abi::{
    policy::{POLICY_DENY, POLICY_PREFIX_FULL},
    DropReason, PolicyKey,
};

use crate::maps::PLEXUS_POLICY;

/// The action of the best match, or 0 for none. A plain integer rather than an `Option`:
/// comparisons on `Option<u8>` compile to reads of an uninitialised register the verifier refuses.
#[inline(always)]
fn lookup(endpoint_id: u32, identity: u32, direction: u8, proto: u8, dport: u16) -> u8 {
    let key = Key::new(
        POLICY_PREFIX_FULL,
        PolicyKey::new(endpoint_id, identity, direction, proto, dport),
    );
    match PLEXUS_POLICY.get(&key) {
        Some(v) => v.action,
        None => 0,
    }
}

/// Checks traffic of endpoint `endpoint_id` with a peer of `identity`.
#[inline(always)]
pub fn check(
    endpoint_id: u32,
    identity: u32,
    direction: u8,
    proto: u8,
    dport: u16,
    enforced: bool,
) -> Result<(), DropReason> {
    let specific = lookup(endpoint_id, identity, direction, proto, dport);
    let wildcard = lookup(endpoint_id, 0, direction, proto, dport);
    if specific == POLICY_DENY || wildcard == POLICY_DENY {
        return Err(DropReason::PolicyDeny);
    }
    if specific != 0 || wildcard != 0 || !enforced {
        return Ok(());
    }
    Err(DropReason::PolicyDenied)
}
