//! Writing load-balancing state into the services, backends, reverse-NAT and Maglev maps,
//! frontend by frontend, without gaps.
//!
//! [`LbWriter`] keeps a view of what the maps hold (read once from the kernel, so a restarted
//! agent adopts its predecessor's maps) and applies changes of individual frontends: a change
//! to one Service costs writes proportional to that Service, whatever the number of others.
//! Order per change: backends first, then a frontend's Maglev table, reverse-NAT entry and
//! backend slots, its slot-0 entry (which makes the new slots live) last; slots beyond the new
//! count, and backends no frontend uses any more go after that; frontends that go are removed
//! before anything is written (they may free an id a new frontend takes). A packet
//! therefore never finds a slot count pointing at a missing slot or a slot naming a missing
//! backend. The kernel maps sit behind [`LbStore`], with an in-memory store for tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use plexus_abi::{
    lb::{LB_BACKEND_F_TERMINATING, LB_F_AFFINITY, LB_F_EXTERNAL, LB_F_MAGLEV, MAGLEV_M},
    maps as m, IpAddr6, LbBackend, LbRevNat, LbServiceKey, LbServiceValue, MaglevTable,
};
use plexus_lb::{slot_list, Algorithm, BackendState, ServiceEntry};

use crate::LoaderError;

/// A frontend as the services map keys it (slot 0).
pub type FrontendId = LbServiceKey;

/// Everything the maps hold for one frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendState {
    /// Its slot-0 key.
    pub key: LbServiceKey,
    /// Its slot-0 value.
    pub value: LbServiceValue,
    /// Backend ids of slots `1..=value.count`.
    pub slots: Vec<u32>,
    /// Every backend it uses, also those that only keep their connections (terminating).
    pub backends: Vec<(u32, LbBackend)>,
    /// Its reverse-NAT entry.
    pub revnat: LbRevNat,
    /// Its Maglev table, for Maglev services.
    pub maglev: Option<Vec<u32>>,
}

/// An address as the datapath stores it.
pub fn addr6(a: IpAddr) -> IpAddr6 {
    match a {
        IpAddr::V4(v) => IpAddr6::from_v4_octets(v.octets()),
        IpAddr::V6(v) => IpAddr6::from_octets(v.octets()),
    }
}

/// The slot-0 key of a frontend.
pub fn frontend_key(address: IpAddr, port: u16, proto: u8) -> LbServiceKey {
    LbServiceKey {
        addr: addr6(address),
        port: port.to_be(),
        proto,
        _pad: 0,
        slot: 0,
        _pad2: 0,
    }
}

/// The map contents of one computed frontend.
pub fn frontend_state(e: &ServiceEntry) -> FrontendState {
    let proto = e.frontend.protocol.number();
    let key = frontend_key(e.frontend.address, e.frontend.port, proto);
    let slots: Vec<u32> = slot_list(&e.backends)
        .for_new_connections()
        .iter()
        .map(|b| b.0)
        .collect();
    let mut flags = 0;
    if e.algorithm == Algorithm::Maglev {
        flags |= LB_F_MAGLEV;
    }
    if e.affinity.is_some() {
        flags |= LB_F_AFFINITY;
    }
    if e.frontend.kind.is_external() {
        flags |= LB_F_EXTERNAL;
    }
    let value = LbServiceValue {
        count: u16::try_from(slots.len()).unwrap_or(u16::MAX),
        flags,
        rev_nat: e.id.0,
        backend_id: 0,
        affinity_timeout: e
            .affinity
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
    };
    let backends = e
        .backends
        .iter()
        .map(|b| {
            (
                b.id.0,
                LbBackend {
                    addr: addr6(b.address),
                    port: b.port.to_be(),
                    proto,
                    flags: if b.state == BackendState::Terminating {
                        LB_BACKEND_F_TERMINATING
                    } else {
                        0
                    },
                    _pad: 0,
                },
            )
        })
        .collect();
    let maglev = (e.algorithm == Algorithm::Maglev && !slots.is_empty()).then(|| {
        plexus_lb::maglev_table_for(e, MAGLEV_M)
            .into_iter()
            .map(|b| b.0)
            .collect()
    });
    FrontendState {
        key,
        value,
        slots,
        backends,
        revnat: LbRevNat {
            addr: key.addr,
            port: key.port,
            _pad: 0,
        },
        maglev,
    }
}

/// Where load-balancing entries live.
pub trait LbStore {
    /// Writes a services-map entry.
    fn put_service(&mut self, k: &LbServiceKey, v: &LbServiceValue) -> Result<(), LoaderError>;
    /// Removes a services-map entry (absent is fine).
    fn del_service(&mut self, k: &LbServiceKey) -> Result<(), LoaderError>;
    /// Writes a backend.
    fn put_backend(&mut self, id: u32, v: &LbBackend) -> Result<(), LoaderError>;
    /// Removes a backend (absent is fine).
    fn del_backend(&mut self, id: u32) -> Result<(), LoaderError>;
    /// Writes a reverse-NAT entry.
    fn put_revnat(&mut self, id: u32, v: &LbRevNat) -> Result<(), LoaderError>;
    /// Removes a reverse-NAT entry (absent is fine).
    fn del_revnat(&mut self, id: u32) -> Result<(), LoaderError>;
    /// Writes a Maglev table.
    fn put_maglev(&mut self, id: u32, table: &[u32]) -> Result<(), LoaderError>;
    /// Removes a Maglev table (absent is fine).
    fn del_maglev(&mut self, id: u32) -> Result<(), LoaderError>;
}

/// One operation on a store, as [`MemLbStore`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbOp {
    /// A services-map write: (key, count, backend id).
    PutService(LbServiceKey, u16, u32),
    /// A services-map removal.
    DelService(LbServiceKey),
    /// A backend write.
    PutBackend(u32),
    /// A backend removal.
    DelBackend(u32),
    /// A reverse-NAT write.
    PutRevNat(u32),
    /// A reverse-NAT removal.
    DelRevNat(u32),
    /// A Maglev write.
    PutMaglev(u32),
    /// A Maglev removal.
    DelMaglev(u32),
}

/// An in-memory store, for tests: the contents and every operation in order.
#[derive(Debug, Default)]
pub struct MemLbStore {
    /// Services map.
    pub services: BTreeMap<LbServiceKey, LbServiceValue>,
    /// Backends map.
    pub backends: BTreeMap<u32, LbBackend>,
    /// Reverse-NAT map.
    pub revnat: BTreeMap<u32, LbRevNat>,
    /// Maglev map.
    pub maglev: BTreeMap<u32, Vec<u32>>,
    /// Operations in order.
    pub ops: Vec<LbOp>,
}

impl LbStore for MemLbStore {
    fn put_service(&mut self, k: &LbServiceKey, v: &LbServiceValue) -> Result<(), LoaderError> {
        self.ops.push(LbOp::PutService(*k, v.count, v.backend_id));
        self.services.insert(*k, *v);
        Ok(())
    }
    fn del_service(&mut self, k: &LbServiceKey) -> Result<(), LoaderError> {
        self.ops.push(LbOp::DelService(*k));
        self.services.remove(k);
        Ok(())
    }
    fn put_backend(&mut self, id: u32, v: &LbBackend) -> Result<(), LoaderError> {
        self.ops.push(LbOp::PutBackend(id));
        self.backends.insert(id, *v);
        Ok(())
    }
    fn del_backend(&mut self, id: u32) -> Result<(), LoaderError> {
        self.ops.push(LbOp::DelBackend(id));
        self.backends.remove(&id);
        Ok(())
    }
    fn put_revnat(&mut self, id: u32, v: &LbRevNat) -> Result<(), LoaderError> {
        self.ops.push(LbOp::PutRevNat(id));
        self.revnat.insert(id, *v);
        Ok(())
    }
    fn del_revnat(&mut self, id: u32) -> Result<(), LoaderError> {
        self.ops.push(LbOp::DelRevNat(id));
        self.revnat.remove(&id);
        Ok(())
    }
    fn put_maglev(&mut self, id: u32, table: &[u32]) -> Result<(), LoaderError> {
        self.ops.push(LbOp::PutMaglev(id));
        self.maglev.insert(id, table.to_vec());
        Ok(())
    }
    fn del_maglev(&mut self, id: u32) -> Result<(), LoaderError> {
        self.ops.push(LbOp::DelMaglev(id));
        self.maglev.remove(&id);
        Ok(())
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { map, source }
}

fn ignore_missing(
    map: &'static str,
    r: Result<(), aya::maps::MapError>,
) -> Result<(), LoaderError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(map)(e)),
    }
}

/// The node's pinned load-balancing maps.
pub struct BpfLbStore {
    services: BpfHashMap<MapData, LbServiceKey, LbServiceValue>,
    backends: BpfHashMap<MapData, u32, LbBackend>,
    revnat: BpfHashMap<MapData, u32, LbRevNat>,
    maglev: BpfHashMap<MapData, u32, MaglevTable>,
}

fn open_hash<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, LoaderError> {
    let data = MapData::from_pin(pin_dir.join("maps").join(name)).map_err(map_err(name))?;
    BpfHashMap::try_from(Map::HashMap(data)).map_err(map_err(name))
}

impl BpfLbStore {
    /// Opens the maps pinned under a node's pin directory.
    pub fn open(pin_dir: &Path) -> Result<Self, LoaderError> {
        Ok(Self {
            services: open_hash(pin_dir, m::LB_SERVICES)?,
            backends: open_hash(pin_dir, m::LB_BACKENDS)?,
            revnat: open_hash(pin_dir, m::LB_REVNAT)?,
            maglev: open_hash(pin_dir, m::LB_MAGLEV)?,
        })
    }

    /// Every services-map entry.
    pub fn services(&self) -> Result<Vec<(LbServiceKey, LbServiceValue)>, LoaderError> {
        self.services
            .iter()
            .map(|r| r.map_err(map_err(m::LB_SERVICES)))
            .collect()
    }

    /// Every backend.
    pub fn backends(&self) -> Result<Vec<(u32, LbBackend)>, LoaderError> {
        self.backends
            .iter()
            .map(|r| r.map_err(map_err(m::LB_BACKENDS)))
            .collect()
    }

    /// Every reverse-NAT entry.
    pub fn revnats(&self) -> Result<Vec<(u32, LbRevNat)>, LoaderError> {
        self.revnat
            .iter()
            .map(|r| r.map_err(map_err(m::LB_REVNAT)))
            .collect()
    }

    /// Ids of the Maglev tables present.
    pub fn maglev_ids(&self) -> Result<Vec<u32>, LoaderError> {
        self.maglev
            .keys()
            .map(|r| r.map_err(map_err(m::LB_MAGLEV)))
            .collect()
    }
}

impl LbStore for BpfLbStore {
    fn put_service(&mut self, k: &LbServiceKey, v: &LbServiceValue) -> Result<(), LoaderError> {
        self.services
            .insert(k, v, 0)
            .map_err(map_err(m::LB_SERVICES))
    }
    fn del_service(&mut self, k: &LbServiceKey) -> Result<(), LoaderError> {
        ignore_missing(m::LB_SERVICES, self.services.remove(k))
    }
    fn put_backend(&mut self, id: u32, v: &LbBackend) -> Result<(), LoaderError> {
        self.backends
            .insert(id, v, 0)
            .map_err(map_err(m::LB_BACKENDS))
    }
    fn del_backend(&mut self, id: u32) -> Result<(), LoaderError> {
        ignore_missing(m::LB_BACKENDS, self.backends.remove(&id))
    }
    fn put_revnat(&mut self, id: u32, v: &LbRevNat) -> Result<(), LoaderError> {
        self.revnat.insert(id, v, 0).map_err(map_err(m::LB_REVNAT))
    }
    fn del_revnat(&mut self, id: u32) -> Result<(), LoaderError> {
        ignore_missing(m::LB_REVNAT, self.revnat.remove(&id))
    }
    fn put_maglev(&mut self, id: u32, table: &[u32]) -> Result<(), LoaderError> {
        // 256 KiB: built on the heap, never on the stack.
        let mut t: Box<MaglevTable> = Box::new(MaglevTable {
            slots: [0; plexus_abi::lb::MAGLEV_SLOTS],
        });
        for (slot, b) in t.slots.iter_mut().zip(table) {
            *slot = *b;
        }
        self.maglev
            .insert(id, t.as_ref(), 0)
            .map_err(map_err(m::LB_MAGLEV))
    }
    fn del_maglev(&mut self, id: u32) -> Result<(), LoaderError> {
        ignore_missing(m::LB_MAGLEV, self.maglev.remove(&id))
    }
}

/// What a write changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LbStats {
    /// Entries written (services, backends, reverse NAT, Maglev).
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
}

/// The maps' contents as last written, by frontend, plus backend reference counts.
#[derive(Debug, Default)]
pub struct LbWriter {
    frontends: HashMap<FrontendId, FrontendState>,
    backends: HashMap<u32, LbBackend>,
    refs: HashMap<u32, u32>,
    /// Backends whose last reference went (or that were adopted unreferenced).
    maybe_stale: HashSet<u32>,
    /// Maglev tables present whose contents are not known (adopted): rewritten on first use.
    maglev_unknown: HashSet<u32>,
}

impl LbWriter {
    /// A writer for empty maps.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer that adopts what the kernel maps hold.
    pub fn adopt(store: &BpfLbStore) -> Result<Self, LoaderError> {
        let mut w = Self::new();
        let revnat: HashMap<u32, LbRevNat> = store.revnats()?.into_iter().collect();
        let mut slots: HashMap<FrontendId, BTreeMap<u16, u32>> = HashMap::new();
        let mut heads = Vec::new();
        for (k, v) in store.services()? {
            if k.slot == 0 {
                heads.push((k, v));
            } else {
                let head = LbServiceKey { slot: 0, ..k };
                slots.entry(head).or_default().insert(k.slot, v.backend_id);
            }
        }
        w.maglev_unknown = store.maglev_ids()?.into_iter().collect();
        for (k, v) in heads {
            let s: Vec<u32> = slots.remove(&k).unwrap_or_default().into_values().collect();
            let state = FrontendState {
                key: k,
                value: v,
                backends: Vec::new(),
                revnat: revnat.get(&v.rev_nat).copied().unwrap_or_default(),
                maglev: None,
                slots: s,
            };
            w.frontends.insert(k, state);
        }
        for (id, b) in store.backends()? {
            w.backends.insert(id, b);
            w.maybe_stale.insert(id);
        }
        Ok(w)
    }

    /// Frontends in the maps.
    pub fn len(&self) -> usize {
        self.frontends.len()
    }

    /// Whether the maps hold no frontend.
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// The frontends in the maps.
    pub fn frontends(&self) -> impl Iterator<Item = &FrontendState> {
        self.frontends.values()
    }

    /// The backends in the maps, by id.
    pub fn backends(&self) -> impl Iterator<Item = (&u32, &LbBackend)> {
        self.backends.iter()
    }

    /// Writes `upsert` (new or changed frontends), removes `remove`, then removes backends no
    /// frontend uses. `full` also removes every frontend not in `upsert` (a full sync).
    pub fn apply<S: LbStore>(
        &mut self,
        store: &mut S,
        upsert: &[FrontendState],
        remove: &[FrontendId],
        full: bool,
    ) -> Result<LbStats, LoaderError> {
        let mut stats = LbStats::default();
        // Frontends that go are removed first: an id they free may be taken by a frontend
        // written below, whose entries must not be deleted after it wrote them.
        let mut gone: Vec<FrontendId> = remove.to_vec();
        if full {
            let keep: HashSet<FrontendId> = upsert.iter().map(|f| f.key).collect();
            gone.extend(self.frontends.keys().filter(|k| !keep.contains(k)).copied());
        }
        for k in gone {
            let Some(old) = self.frontends.remove(&k) else {
                continue;
            };
            store.del_service(&old.key)?;
            for i in 0..old.slots.len() {
                store.del_service(&slot_key(&old.key, i))?;
            }
            store.del_revnat(old.value.rev_nat)?;
            if old.maglev.is_some() || self.maglev_unknown.remove(&old.value.rev_nat) {
                store.del_maglev(old.value.rev_nat)?;
            }
            stats.removed += 2 + old.slots.len();
            self.unref(&old.backends);
        }
        for f in upsert {
            for (id, b) in &f.backends {
                if self.backends.get(id) != Some(b) {
                    store.put_backend(*id, b)?;
                    self.backends.insert(*id, *b);
                    stats.written += 1;
                }
            }
        }
        for f in upsert {
            self.write_frontend(store, f, &mut stats)?;
        }
        for id in std::mem::take(&mut self.maybe_stale) {
            if self.refs.get(&id).copied().unwrap_or(0) == 0 && self.backends.remove(&id).is_some()
            {
                store.del_backend(id)?;
                stats.removed += 1;
            }
        }
        Ok(stats)
    }

    fn unref(&mut self, backends: &[(u32, LbBackend)]) {
        for (id, _) in backends {
            if let Some(n) = self.refs.get_mut(id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.refs.remove(id);
                    self.maybe_stale.insert(*id);
                }
            }
        }
    }

    fn write_frontend<S: LbStore>(
        &mut self,
        store: &mut S,
        f: &FrontendState,
        stats: &mut LbStats,
    ) -> Result<(), LoaderError> {
        let old = self.frontends.get(&f.key).cloned();
        let id = f.value.rev_nat;
        match (&f.maglev, old.as_ref().and_then(|o| o.maglev.as_ref())) {
            (Some(new), Some(prev)) if new == prev && !self.maglev_unknown.contains(&id) => {}
            (Some(new), _) => {
                store.put_maglev(id, new)?;
                self.maglev_unknown.remove(&id);
                stats.written += 1;
            }
            (None, _) => {}
        }
        if old.as_ref().map(|o| (o.value.rev_nat, o.revnat)) != Some((id, f.revnat)) {
            store.put_revnat(id, &f.revnat)?;
            stats.written += 1;
        }
        let old_slots = old.as_ref().map(|o| o.slots.as_slice()).unwrap_or_default();
        for (i, b) in f.slots.iter().enumerate() {
            if old_slots.get(i) != Some(b) || old.as_ref().map(|o| o.value.rev_nat) != Some(id) {
                let v = LbServiceValue {
                    count: 0,
                    flags: 0,
                    rev_nat: id,
                    backend_id: *b,
                    affinity_timeout: 0,
                };
                store.put_service(&slot_key(&f.key, i), &v)?;
                stats.written += 1;
            }
        }
        if old.as_ref().map(|o| o.value) != Some(f.value) {
            store.put_service(&f.key, &f.value)?;
            stats.written += 1;
        }
        for i in f.slots.len()..old_slots.len() {
            store.del_service(&slot_key(&f.key, i))?;
            stats.removed += 1;
        }
        if let Some(o) = &old {
            if o.value.rev_nat != id {
                store.del_revnat(o.value.rev_nat)?;
            }
            if o.maglev.is_some() && f.maglev.is_none() {
                store.del_maglev(o.value.rev_nat)?;
            }
        }
        for (b, _) in &f.backends {
            *self.refs.entry(*b).or_insert(0) += 1;
        }
        if let Some(o) = &old {
            let backends = o.backends.clone();
            self.unref(&backends);
        }
        self.frontends.insert(f.key, f.clone());
        Ok(())
    }
}

/// The key of backend slot `i` (0-based) of a frontend.
fn slot_key(head: &LbServiceKey, i: usize) -> LbServiceKey {
    LbServiceKey {
        slot: u16::try_from(i + 1).unwrap_or(u16::MAX),
        ..*head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(n: u8) -> (u32, LbBackend) {
        (
            n as u32,
            LbBackend {
                addr: IpAddr6::from_v4_octets([10, 0, 0, n]),
                port: 80u16.to_be(),
                proto: 6,
                flags: 0,
                _pad: 0,
            },
        )
    }

    fn frontend(id: u32, backends: &[u8]) -> FrontendState {
        let key = frontend_key("10.96.0.10".parse().unwrap(), 80, 6);
        let key = LbServiceKey {
            port: (id as u16).to_be(),
            ..key
        };
        FrontendState {
            key,
            value: LbServiceValue {
                count: backends.len() as u16,
                flags: 0,
                rev_nat: id,
                backend_id: 0,
                affinity_timeout: 0,
            },
            slots: backends.iter().map(|b| *b as u32).collect(),
            backends: backends.iter().map(|b| backend(*b)).collect(),
            revnat: LbRevNat {
                addr: key.addr,
                port: key.port,
                _pad: 0,
            },
            maglev: None,
        }
    }

    #[test]
    fn backends_and_slots_are_written_before_the_count_that_uses_them() {
        let mut store = MemLbStore::default();
        let mut w = LbWriter::new();
        let f = frontend(1, &[1, 2]);
        w.apply(&mut store, &[f], &[], false).unwrap();
        let head = store
            .ops
            .iter()
            .position(|o| matches!(o, LbOp::PutService(k, _, _) if k.slot == 0))
            .unwrap();
        let last_other = store
            .ops
            .iter()
            .rposition(|o| !matches!(o, LbOp::PutService(k, _, _) if k.slot == 0))
            .unwrap();
        assert!(head > last_other, "{:?}", store.ops);
        assert_eq!(store.services.len(), 3);
        assert_eq!(store.backends.len(), 2);
    }

    #[test]
    fn shrinking_lowers_the_count_before_removing_slots_and_backends() {
        let mut store = MemLbStore::default();
        let mut w = LbWriter::new();
        w.apply(&mut store, &[frontend(1, &[1, 2, 3])], &[], false)
            .unwrap();
        store.ops.clear();
        w.apply(&mut store, &[frontend(1, &[1, 2])], &[], false)
            .unwrap();
        let count = store
            .ops
            .iter()
            .position(|o| matches!(o, LbOp::PutService(k, 2, _) if k.slot == 0))
            .unwrap();
        let del_slot = store
            .ops
            .iter()
            .position(|o| matches!(o, LbOp::DelService(k) if k.slot == 3))
            .unwrap();
        let del_backend = store
            .ops
            .iter()
            .position(|o| *o == LbOp::DelBackend(3))
            .unwrap();
        assert!(
            count < del_slot && del_slot < del_backend,
            "{:?}",
            store.ops
        );
        assert_eq!(store.backends.len(), 2);
    }

    #[test]
    fn one_change_touches_only_its_frontend_and_shared_backends_stay() {
        let mut store = MemLbStore::default();
        let mut w = LbWriter::new();
        let all: Vec<FrontendState> = (1..=100).map(|i| frontend(i, &[1, 2])).collect();
        w.apply(&mut store, &all, &[], false).unwrap();
        store.ops.clear();
        let stats = w
            .apply(&mut store, &[frontend(101, &[1, 3])], &[], false)
            .unwrap();
        // one backend, one reverse NAT, two slots, one head
        assert_eq!(stats.written, 5, "{:?}", store.ops);
        store.ops.clear();
        w.apply(&mut store, &[], &[frontend(101, &[]).key], false)
            .unwrap();
        assert!(store.ops.contains(&LbOp::DelBackend(3)));
        assert!(!store.ops.contains(&LbOp::DelBackend(1)));
        assert_eq!(w.len(), 100);
        // A full sync with nothing desired empties everything.
        w.apply(&mut store, &[], &[], true).unwrap();
        assert!(store.services.is_empty() && store.backends.is_empty() && store.revnat.is_empty());
    }
}
