//! Writing compiled policy into the policy map without gaps.
//!
//! [`sync`] takes the desired entries of every endpoint and whatever the map holds now (also
//! what a previous agent left there) and applies the difference in an order that never drops
//! traffic allowed before and after the change: enforcement bits that go away are cleared first,
//! then new and changed entries are written, then enforcement bits that appear are set, and
//! stale entries are removed last. The store is a trait so the ordering is unit-tested against
//! an in-memory map; [`BpfPolicyStore`] is the kernel one.

use std::collections::BTreeMap;

use aya::maps::{lpm_trie::Key, LpmTrie, Map, MapData};
use plexus_abi::{
    maps as m,
    policy::{
        DIR_EGRESS, DIR_INGRESS, POLICY_ALLOW, POLICY_DENY, POLICY_PREFIX_ANY_PORT,
        POLICY_PREFIX_ANY_PROTO,
    },
    PolicyKey, PolicyValue,
};
use plexus_policy::{Action, Direction, MapKey};

use crate::LoaderError;

/// A policy map entry in kernel form: (prefix length, key) → value.
pub type RawEntry = ((u32, PolicyKey), PolicyValue);

/// Converts a compiled key of endpoint `ep` to the kernel's (prefix, key).
pub fn to_kernel(ep: u32, k: &MapKey) -> (u32, PolicyKey) {
    let dir = match k.direction {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    };
    if k.proto == 0 {
        return (
            POLICY_PREFIX_ANY_PROTO,
            PolicyKey::new(ep, k.identity, dir, 0, 0),
        );
    }
    let prefix = POLICY_PREFIX_ANY_PORT + k.port_prefix as u32;
    // Bits beyond the prefix must be zero for the trie to treat keys as equal.
    let mask = if k.port_prefix == 0 {
        0
    } else {
        u16::MAX << (16 - k.port_prefix as u32)
    };
    (
        prefix,
        PolicyKey::new(ep, k.identity, dir, k.proto, k.port & mask),
    )
}

/// The kernel value of a compiled entry.
pub fn to_value(action: Action, rule_id: u32) -> PolicyValue {
    let action = match action {
        Action::Allow => POLICY_ALLOW,
        Action::Deny => POLICY_DENY,
    };
    PolicyValue {
        action,
        flags: 0,
        _pad: [0; 2],
        rule_id,
    }
}

/// Where policy entries live.
pub trait PolicyStore {
    /// Everything in the store.
    fn entries(&self) -> Result<BTreeMap<(u32, PolicyKey), PolicyValue>, LoaderError>;
    /// Inserts or replaces one entry.
    fn put(&mut self, prefix: u32, key: PolicyKey, value: PolicyValue) -> Result<(), LoaderError>;
    /// Removes one entry (absent is fine).
    fn del(&mut self, prefix: u32, key: PolicyKey) -> Result<(), LoaderError>;
}

/// An in-memory store, for tests; records every operation in order.
#[derive(Debug, Default)]
pub struct MemPolicyStore {
    /// Current contents.
    pub map: BTreeMap<(u32, PolicyKey), PolicyValue>,
    /// Operations applied, in order: ("put"|"del", prefix, key).
    pub log: Vec<(&'static str, u32, PolicyKey)>,
}

impl PolicyStore for MemPolicyStore {
    fn entries(&self) -> Result<BTreeMap<(u32, PolicyKey), PolicyValue>, LoaderError> {
        Ok(self.map.clone())
    }
    fn put(&mut self, prefix: u32, key: PolicyKey, value: PolicyValue) -> Result<(), LoaderError> {
        self.map.insert((prefix, key), value);
        self.log.push(("put", prefix, key));
        Ok(())
    }
    fn del(&mut self, prefix: u32, key: PolicyKey) -> Result<(), LoaderError> {
        self.map.remove(&(prefix, key));
        self.log.push(("del", prefix, key));
        Ok(())
    }
}

/// The kernel's policy map, opened from its pin.
pub struct BpfPolicyStore {
    map: LpmTrie<MapData, PolicyKey, PolicyValue>,
}

fn err(source: aya::maps::MapError) -> LoaderError {
    LoaderError::Map {
        map: m::POLICY,
        source,
    }
}

impl BpfPolicyStore {
    /// Opens the pinned policy map of a node.
    pub fn open(pin_dir: &std::path::Path) -> Result<Self, LoaderError> {
        let data = MapData::from_pin(pin_dir.join("maps").join(m::POLICY)).map_err(err)?;
        Ok(Self {
            map: LpmTrie::try_from(Map::LpmTrie(data)).map_err(err)?,
        })
    }
}

impl PolicyStore for BpfPolicyStore {
    fn entries(&self) -> Result<BTreeMap<(u32, PolicyKey), PolicyValue>, LoaderError> {
        let mut out = BTreeMap::new();
        for item in self.map.iter() {
            let (k, v) = item.map_err(err)?;
            out.insert((k.prefix_len(), k.data()), v);
        }
        Ok(out)
    }
    fn put(&mut self, prefix: u32, key: PolicyKey, value: PolicyValue) -> Result<(), LoaderError> {
        self.map
            .insert(&Key::new(prefix, key), value, 0)
            .map_err(err)
    }
    fn del(&mut self, prefix: u32, key: PolicyKey) -> Result<(), LoaderError> {
        match self.map.remove(&Key::new(prefix, key)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

/// What a sync changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries written (new or changed).
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
    /// Entries left as they were.
    pub unchanged: usize,
}

/// Applies `desired` (every endpoint's entries, in kernel form) to `store`, whose contents are
/// `actual` (read once with [`PolicyStore::entries`] when adopting a map, then kept by the caller:
/// reading a large map back costs two syscalls per entry). `actual` becomes `desired`.
/// `clear_flags` runs before anything is written, to drop enforcement bits that go away;
/// `set_flags` runs between writing and removing, to switch endpoints to their new bits.
pub fn sync<S: PolicyStore>(
    store: &mut S,
    actual: &mut BTreeMap<(u32, PolicyKey), PolicyValue>,
    desired: &BTreeMap<(u32, PolicyKey), PolicyValue>,
    clear_flags: impl FnOnce() -> Result<(), LoaderError>,
    set_flags: impl FnOnce() -> Result<(), LoaderError>,
) -> Result<SyncStats, LoaderError> {
    let mut stats = SyncStats::default();
    clear_flags()?;
    for ((prefix, key), value) in desired {
        if actual.get(&(*prefix, *key)) == Some(value) {
            stats.unchanged += 1;
        } else {
            store.put(*prefix, *key, *value)?;
            actual.insert((*prefix, *key), *value);
            stats.written += 1;
        }
    }
    set_flags()?;
    let stale: Vec<(u32, PolicyKey)> = actual
        .keys()
        .filter(|k| !desired.contains_key(k))
        .copied()
        .collect();
    for (prefix, key) in stale {
        store.del(prefix, key)?;
        actual.remove(&(prefix, key));
        stats.removed += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(identity: u32, proto: u8, port: u16, bits: u8) -> MapKey {
        MapKey {
            direction: Direction::Ingress,
            identity,
            proto,
            port,
            port_prefix: bits,
        }
    }

    #[test]
    fn kernel_keys_mask_port_bits_and_set_prefixes() {
        let (p, k) = to_kernel(7, &key(300, 6, 8081, 14));
        assert_eq!(p, 94);
        assert_eq!(
            u16::from_be_bytes(k.dport),
            8080,
            "bits past the prefix are zero"
        );
        assert_eq!(u32::from_be_bytes(k.endpoint_id), 7);
        assert_eq!(u32::from_be_bytes(k.identity), 300);
        assert_eq!(to_kernel(7, &key(300, 0, 0, 0)).0, 72);
        assert_eq!(to_kernel(7, &key(300, 17, 0, 0)).0, 80);
        assert_eq!(to_kernel(7, &key(300, 17, 53, 16)).0, 96);
    }

    #[test]
    fn writes_before_flags_before_removals_and_skips_unchanged() {
        let mut store = MemPolicyStore::default();
        let keep = to_kernel(1, &key(300, 6, 80, 16));
        let old = to_kernel(1, &key(301, 6, 80, 16));
        let new = to_kernel(1, &key(302, 6, 80, 16));
        store.map.insert(keep, to_value(Action::Allow, 1));
        store.map.insert(old, to_value(Action::Allow, 2));
        let desired: BTreeMap<_, _> = [
            (keep, to_value(Action::Allow, 1)),
            (new, to_value(Action::Allow, 3)),
        ]
        .into();
        let order = std::cell::RefCell::new(Vec::new());
        let mut actual = store.entries().unwrap();
        let stats = sync(
            &mut store,
            &mut actual,
            &desired,
            || {
                order.borrow_mut().push("clear");
                Ok(())
            },
            || {
                order.borrow_mut().push("set");
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            stats,
            SyncStats {
                written: 1,
                removed: 1,
                unchanged: 1
            }
        );
        assert_eq!(
            store.log,
            vec![("put", new.0, new.1), ("del", old.0, old.1)]
        );
        assert_eq!(*order.borrow(), vec!["clear", "set"]);
        assert_eq!(store.map.len(), 2);
        assert_eq!(actual, store.map, "the caller's view follows the store");
    }
}
