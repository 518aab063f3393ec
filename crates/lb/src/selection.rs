//! Backend selection as the datapath performs it: the slot list of a frontend (backends that take
//! new connections first, then terminating ones that only keep theirs), random selection, and
//! the Maglev table of a frontend.

use crate::maglev::{maglev_table_keyed, MaglevBackend};
use crate::{Backend, BackendId, BackendState, ServiceEntry};

/// A frontend's backends in the order of the datapath's slots: `slots[..active]` take new
/// connections, `slots[active..]` are terminating backends that stay reachable for the
/// connections they already have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotList {
    /// Every backend, those that take new connections first; each group sorted by id.
    pub slots: Vec<BackendId>,
    /// How many of the first slots take new connections.
    pub active: usize,
}

impl SlotList {
    /// The backends new connections are spread over.
    pub fn for_new_connections(&self) -> &[BackendId] {
        &self.slots[..self.active]
    }

    /// The backends kept only for existing connections.
    pub fn draining(&self) -> &[BackendId] {
        &self.slots[self.active..]
    }
}

/// The slot list of a frontend's backends.
///
/// Active backends take new connections and terminating ones do not; but when no backend is
/// active, the terminating (still serving) ones take new connections rather than the frontend
/// dropping them, as kube-proxy does since Kubernetes 1.28 (KEP-1669).
pub fn slot_list(backends: &[Backend]) -> SlotList {
    let mut active: Vec<BackendId> = backends
        .iter()
        .filter(|b| b.state == BackendState::Active)
        .map(|b| b.id)
        .collect();
    let mut draining: Vec<BackendId> = backends
        .iter()
        .filter(|b| b.state == BackendState::Terminating)
        .map(|b| b.id)
        .collect();
    active.sort_unstable();
    draining.sort_unstable();
    if active.is_empty() {
        std::mem::swap(&mut active, &mut draining);
    }
    let count = active.len();
    active.extend(draining);
    SlotList {
        slots: active,
        active: count,
    }
}

/// The backend a flow hash picks among the backends that take new connections:
/// `active[hash mod len]`, as the datapath computes it; `None` when there is none.
pub fn select_random(hash: u32, active: &[BackendId]) -> Option<BackendId> {
    if active.is_empty() {
        return None;
    }
    active.get(hash as usize % active.len()).copied()
}

/// The Maglev table of size `m` (a prime) of a frontend, over the backends that take new
/// connections (see [`slot_list`]), each with weight 1 and hashed from its
/// [`crate::BackendKey::hash_key`] so that every node builds the same table. Empty when no
/// backend takes new connections.
///
/// # Panics
///
/// If `m` is not a prime.
pub fn maglev_table_for(entry: &ServiceEntry, m: usize) -> Vec<BackendId> {
    let slots = slot_list(&entry.backends);
    let new = slots.for_new_connections();
    let keys: Vec<(BackendId, Vec<u8>)> = entry
        .backends
        .iter()
        .filter(|b| new.contains(&b.id))
        .map(|b| (b.id, entry.backend_key(b).hash_key()))
        .collect();
    let backends: Vec<MaglevBackend<'_>> = keys
        .iter()
        .map(|(id, key)| MaglevBackend {
            id: *id,
            key,
            weight: 1,
        })
        .collect();
    maglev_table_keyed(&backends, m)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{Algorithm, Frontend, FrontendKind, Proto, ServiceId, MAGLEV_TABLE_SIZE};

    fn backend(id: u32, state: BackendState) -> Backend {
        Backend {
            id: BackendId(id),
            address: IpAddr::from([10, 0, 0, id as u8]),
            port: 8080,
            state,
            node_local: false,
            zone: None,
        }
    }

    fn entry(backends: Vec<Backend>) -> ServiceEntry {
        ServiceEntry {
            id: ServiceId(1),
            namespace: "x".into(),
            name: "web".into(),
            port_name: String::new(),
            frontend: Frontend {
                address: IpAddr::from([10, 96, 0, 10]),
                port: 80,
                protocol: Proto::Tcp,
                kind: FrontendKind::ClusterIp,
            },
            backends,
            algorithm: Algorithm::Maglev,
            affinity: None,
            external_traffic_local: false,
            internal_traffic_local: false,
        }
    }

    #[test]
    fn active_backends_come_first_and_terminating_ones_drain() {
        let slots = slot_list(&[
            backend(4, BackendState::Terminating),
            backend(3, BackendState::Active),
            backend(1, BackendState::Active),
            backend(2, BackendState::Terminating),
        ]);
        assert_eq!(slots.slots, [1, 3, 2, 4].map(BackendId));
        assert_eq!(slots.for_new_connections(), [1, 3].map(BackendId));
        assert_eq!(slots.draining(), [2, 4].map(BackendId));
    }

    #[test]
    fn terminating_backends_take_new_connections_when_none_is_active() {
        let slots = slot_list(&[
            backend(2, BackendState::Terminating),
            backend(1, BackendState::Terminating),
        ]);
        assert_eq!(slots.for_new_connections(), [1, 2].map(BackendId));
        assert!(slots.draining().is_empty());
        assert_eq!(slot_list(&[]), SlotList::default());
    }

    #[test]
    fn random_selection_is_hash_modulo_the_active_count() {
        let active = [5, 7, 9].map(BackendId);
        assert_eq!(select_random(0, &active), Some(BackendId(5)));
        assert_eq!(select_random(4, &active), Some(BackendId(7)));
        assert_eq!(select_random(u32::MAX, &active), Some(BackendId(5)));
        assert_eq!(select_random(17, &[]), None);
        // Every backend is reachable and roughly equally likely.
        let mut counts = [0u32; 3];
        for h in 0..30_000u32 {
            let id = select_random(h, &active).unwrap();
            counts[active.iter().position(|a| *a == id).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c == 10_000), "{counts:?}");
    }

    #[test]
    fn the_maglev_table_of_a_frontend_leaves_draining_backends_out() {
        let e = entry(vec![
            backend(1, BackendState::Active),
            backend(2, BackendState::Terminating),
            backend(3, BackendState::Active),
        ]);
        let table = maglev_table_for(&e, MAGLEV_TABLE_SIZE);
        assert_eq!(table.len(), MAGLEV_TABLE_SIZE);
        assert!(table.contains(&BackendId(1)) && table.contains(&BackendId(3)));
        assert!(!table.contains(&BackendId(2)));
        assert!(maglev_table_for(&entry(vec![]), MAGLEV_TABLE_SIZE).is_empty());
    }

    #[test]
    fn the_maglev_table_of_a_frontend_does_not_depend_on_backend_ids() {
        // Two nodes that numbered the same backends differently build the same table.
        let a = entry(vec![
            backend(1, BackendState::Active),
            backend(2, BackendState::Active),
        ]);
        let mut b = a.clone();
        b.backends[0].id = BackendId(20);
        b.backends[1].id = BackendId(10);
        let rename = |id: BackendId| {
            if id == BackendId(1) {
                BackendId(20)
            } else {
                BackendId(10)
            }
        };
        let ta: Vec<BackendId> = maglev_table_for(&a, 251).into_iter().map(rename).collect();
        assert_eq!(ta, maglev_table_for(&b, 251));
    }
}
