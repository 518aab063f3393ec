//! The identity allocator: label set → numeric identity, reference counted, with stable numbers
//! across restarts (the state serialises), and CIDR identities in the node-local range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{reserved, Labels, NumericIdentity, Prefix, SOURCE_CIDR};

/// Allocation failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The cluster-wide range is used up.
    #[error(
        "no free identity left in {}..={}",
        reserved::FIRST_ALLOCATED,
        reserved::LAST_ALLOCATED
    )]
    Exhausted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    labels: Labels,
    refs: u32,
}

/// Allocates identities for label sets and CIDRs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocator {
    by_id: BTreeMap<NumericIdentity, Entry>,
    /// Label set (serialised as a sorted `k=v,...` string) → identity.
    by_labels: BTreeMap<String, NumericIdentity>,
    next: NumericIdentity,
    next_local: NumericIdentity,
}

fn key(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Allocator {
    /// An empty allocator.
    pub fn new() -> Self {
        Self {
            next: reserved::FIRST_ALLOCATED,
            next_local: reserved::FIRST_LOCAL,
            ..Default::default()
        }
    }

    /// Takes a reference on the identity of `labels`, allocating one if none exists.
    pub fn acquire(&mut self, labels: &Labels) -> Result<NumericIdentity, IdentityError> {
        let k = key(labels);
        if let Some(id) = self.by_labels.get(&k) {
            if let Some(e) = self.by_id.get_mut(id) {
                e.refs += 1;
            }
            return Ok(*id);
        }
        let id = self.free_id()?;
        self.by_id.insert(
            id,
            Entry {
                labels: labels.clone(),
                refs: 1,
            },
        );
        self.by_labels.insert(k, id);
        Ok(id)
    }

    fn free_id(&mut self) -> Result<NumericIdentity, IdentityError> {
        let span = reserved::LAST_ALLOCATED - reserved::FIRST_ALLOCATED + 1;
        for step in 0..span {
            let id =
                reserved::FIRST_ALLOCATED + (self.next - reserved::FIRST_ALLOCATED + step) % span;
            if !self.by_id.contains_key(&id) {
                self.next = reserved::FIRST_ALLOCATED + (id - reserved::FIRST_ALLOCATED + 1) % span;
                return Ok(id);
            }
        }
        Err(IdentityError::Exhausted)
    }

    /// Drops a reference; the identity is released when none is left. Returns whether it was.
    pub fn release(&mut self, id: NumericIdentity) -> bool {
        let Some(e) = self.by_id.get_mut(&id) else {
            return false;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return false;
        }
        let k = key(&e.labels);
        self.by_id.remove(&id);
        self.by_labels.remove(&k);
        true
    }

    /// The identity of a CIDR (node-local range), allocated on first use. CIDR identities are
    /// not reference counted: [`Allocator::retain_cidrs`] drops the ones no policy needs.
    pub fn cidr(&mut self, p: &Prefix) -> NumericIdentity {
        let labels: Labels = [(format!("{SOURCE_CIDR}:{p}"), String::new())].into();
        let k = key(&labels);
        if let Some(id) = self.by_labels.get(&k) {
            return *id;
        }
        while self.by_id.contains_key(&self.next_local) {
            self.next_local += 1;
        }
        let id = self.next_local;
        self.next_local += 1;
        self.by_id.insert(id, Entry { labels, refs: 0 });
        self.by_labels.insert(k, id);
        id
    }

    /// Keeps only the CIDR identities of `keep`.
    pub fn retain_cidrs(&mut self, keep: &[Prefix]) {
        let keep: Vec<String> = keep.iter().map(|p| format!("{SOURCE_CIDR}:{p}=")).collect();
        let drop: Vec<NumericIdentity> = self
            .by_id
            .range(reserved::FIRST_LOCAL..)
            .filter(|(_, e)| !keep.contains(&key(&e.labels)))
            .map(|(id, _)| *id)
            .collect();
        for id in drop {
            if let Some(e) = self.by_id.remove(&id) {
                self.by_labels.remove(&key(&e.labels));
            }
        }
    }

    /// The labels of an identity (reserved identities included).
    pub fn labels(&self, id: NumericIdentity) -> Option<Labels> {
        if let Some(name) = reserved::name(id) {
            return Some([(format!("reserved:{name}"), String::new())].into());
        }
        self.by_id.get(&id).map(|e| e.labels.clone())
    }

    /// Every allocated identity with its labels and reference count.
    pub fn list(&self) -> Vec<(NumericIdentity, Labels, u32)> {
        self.by_id
            .iter()
            .map(|(id, e)| (*id, e.labels.clone(), e.refs))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn same_labels_share_an_identity_until_released() {
        let mut a = Allocator::new();
        let x = a.acquire(&l(&[("k8s:app", "a")])).unwrap();
        let y = a.acquire(&l(&[("k8s:app", "a")])).unwrap();
        let z = a.acquire(&l(&[("k8s:app", "b")])).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!(x >= reserved::FIRST_ALLOCATED);
        assert!(!a.release(x));
        assert!(a.release(x));
        assert_eq!(a.labels(x), None);
        // A released number is not handed out again at once.
        let w = a.acquire(&l(&[("k8s:app", "c")])).unwrap();
        assert_ne!(w, x);
    }

    #[test]
    fn cidr_identities_are_local_and_stable() {
        let mut a = Allocator::new();
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        let i = a.cidr(&p);
        assert!(i >= reserved::FIRST_LOCAL);
        assert_eq!(a.cidr(&p), i);
        a.retain_cidrs(&[]);
        assert_eq!(a.labels(i), None);
    }

    #[test]
    fn survives_serialisation() {
        let mut a = Allocator::new();
        let x = a.acquire(&l(&[("k8s:app", "a")])).unwrap();
        let mut b: Allocator = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(b.acquire(&l(&[("k8s:app", "a")])).unwrap(), x);
        assert_eq!(b.labels(1).unwrap().keys().next().unwrap(), "reserved:host");
    }
}
