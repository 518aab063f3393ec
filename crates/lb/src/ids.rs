//! Stable numeric ids: a key that had an id keeps it; a new key gets the lowest id nobody holds,
//! so adding or removing one frontend or backend never renumbers the others.

use std::collections::{BTreeMap, BTreeSet};

use crate::LbError;

/// Assigns ids (from 1; 0 means "none" in the datapath) to `needed`.
///
/// A key that had an id (`previous` gives it) keeps it (if two keys had the
/// same id, the first in key order keeps it). Keys without an id get the lowest free ids, in key
/// order, so the result depends only on the inputs. `what` names the kind of id in errors.
pub fn assign<K: Ord + Clone>(
    needed: &BTreeSet<K>,
    previous: impl Fn(&K) -> Option<u32>,
    what: &'static str,
) -> Result<BTreeMap<K, u32>, LbError> {
    let mut assigned = BTreeMap::new();
    let mut used = BTreeSet::new();
    let mut fresh = Vec::new();
    for key in needed {
        match previous(key) {
            Some(id) if id != 0 && used.insert(id) => {
                assigned.insert(key.clone(), id);
            }
            _ => fresh.push(key),
        }
    }
    let mut used = used.into_iter().map(u64::from).peekable();
    let mut candidate: u64 = 1;
    for key in fresh {
        while used.peek() == Some(&candidate) {
            used.next();
            candidate += 1;
        }
        let id = u32::try_from(candidate).map_err(|_| LbError::IdsExhausted {
            what,
            max: u32::MAX,
        })?;
        assigned.insert(key.clone(), id);
        candidate += 1;
    }
    Ok(assigned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&'static str]) -> BTreeSet<&'static str> {
        keys.iter().copied().collect()
    }

    #[test]
    fn new_keys_get_lowest_free_ids_in_key_order() {
        let ids = assign(&set(&["b", "a", "c"]), |_| None, "service").unwrap();
        assert_eq!(ids, BTreeMap::from([("a", 1), ("b", 2), ("c", 3)]));
    }

    #[test]
    fn kept_keys_keep_their_ids_and_new_ones_fill_gaps() {
        let previous = BTreeMap::from([("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        // "b" is gone; "0new" sorts first but must not take anyone's id.
        let ids = assign(
            &set(&["0new", "a", "c", "d", "e"]),
            |k| previous.get(k).copied(),
            "service",
        )
        .unwrap();
        assert_eq!(
            ids,
            BTreeMap::from([("0new", 2), ("a", 1), ("c", 3), ("d", 4), ("e", 5)])
        );
    }

    #[test]
    fn duplicate_or_zero_previous_ids_are_reassigned() {
        let previous = BTreeMap::from([("a", 7), ("b", 7), ("c", 0)]);
        let ids = assign(
            &set(&["a", "b", "c"]),
            |k| previous.get(k).copied(),
            "backend",
        )
        .unwrap();
        assert_eq!(ids, BTreeMap::from([("a", 7), ("b", 1), ("c", 2)]));
    }

    #[test]
    fn a_key_near_the_top_of_the_range_does_not_overflow() {
        let previous = BTreeMap::from([("a", u32::MAX)]);
        let ids = assign(&set(&["a", "b"]), |k| previous.get(k).copied(), "backend").unwrap();
        assert_eq!(ids, BTreeMap::from([("a", u32::MAX), ("b", 1)]));
    }
}
