//! Policy enforcement: two longest-prefix lookups (the peer's identity and the wildcard), where
//! a deny from either wins, a match allows, and no match drops when the direction is
//! default-deny.

use aya_ebpf::maps::lpm_trie::Key;
use plexus_abi::{
    event::{verdict, EVENT_F_EGRESS},
    policy::{DIR_EGRESS, POLICY_DENY, POLICY_PREFIX_FULL},
    DropReason, PolicyKey,
};

use crate::{maps::PLEXUS_POLICY, notify::Meta};

/// The action and rule of the best match, action 0 for none. Plain integers rather than an
/// `Option`: comparisons on `Option<u8>` compile to reads of an uninitialised register the
/// verifier refuses.
#[inline(always)]
fn lookup(endpoint_id: u32, identity: u32, direction: u8, proto: u8, dport: u16) -> (u8, u32) {
    let key = Key::new(
        POLICY_PREFIX_FULL,
        PolicyKey::new(endpoint_id, identity, direction, proto, dport),
    );
    match PLEXUS_POLICY.get(&key) {
        Some(v) => (v.action, v.rule_id),
        None => (0, 0),
    }
}

/// Checks traffic of endpoint `endpoint_id` with a peer of `identity`, and notes the deciding
/// rule and the direction in `m` for the verdict or drop event.
#[inline(always)]
pub fn check(
    m: &mut Meta,
    endpoint_id: u32,
    identity: u32,
    direction: u8,
    dport: u16,
    enforced: bool,
) -> Result<(), DropReason> {
    let proto = m.tuple.proto;
    let (specific, rule_a) = lookup(endpoint_id, identity, direction, proto, dport);
    let (wildcard, rule_b) = lookup(endpoint_id, 0, direction, proto, dport);
    m.endpoint_id = endpoint_id;
    if direction == DIR_EGRESS {
        m.flags |= EVENT_F_EGRESS;
    } else {
        m.flags &= !EVENT_F_EGRESS;
    }
    if specific == POLICY_DENY {
        m.rule_id = rule_a;
        return Err(DropReason::PolicyDeny);
    }
    if wildcard == POLICY_DENY {
        m.rule_id = rule_b;
        return Err(DropReason::PolicyDeny);
    }
    m.rule_id = if specific != 0 { rule_a } else { rule_b };
    if specific != 0 || wildcard != 0 || !enforced {
        m.verdict = verdict::ALLOWED;
        return Ok(());
    }
    m.rule_id = 0;
    Err(DropReason::PolicyDenied)
}
