//! The node's load-balancing state kept between changes, so that one Service changing costs
//! work proportional to that Service and not to all of them (kube-proxy's weakness at scale).
//!
//! A change of Services or EndpointSlices recomputes only the Services it touches, with
//! [`desired()`](crate::desired()) over that Service alone, and numbers new frontends and
//! backends from the table's own id spaces. Changes that can move state between Services
//! (LoadBalancer address allocation, a new pool or node address) recompute everything, which
//! gives the same result as a full computation would.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::service::{parse_service, ServiceType, SERVICE_NAME_LABEL};
use crate::{
    desired, BackendId, BackendKey, FrontendKey, LbAllocations, LbError, LbIssue, LbPool, NodeInfo,
    ServiceEntry, ServiceId, ServiceName,
};

/// What a change did to the frontends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LbChange {
    /// New or changed frontends.
    pub upserted: Vec<ServiceEntry>,
    /// Frontends that are gone.
    pub removed: Vec<FrontendKey>,
    /// Whether everything was recomputed (the writer may then sync in full).
    pub full: bool,
}

/// Ids of one kind (from 1: 0 means none in the datapath): the lowest free one is reused first.
#[derive(Debug, Clone)]
struct IdSpace {
    free: BTreeSet<u32>,
    next: u32,
}

impl Default for IdSpace {
    fn default() -> Self {
        Self {
            free: BTreeSet::new(),
            next: 1,
        }
    }
}

impl IdSpace {
    fn from_used(used: impl Iterator<Item = u32>) -> Self {
        let used: BTreeSet<u32> = used.collect();
        let next = used.last().map_or(1, |m| m + 1);
        let free = (1..next).filter(|i| !used.contains(i)).collect();
        Self { free, next }
    }

    fn take(&mut self, what: &'static str) -> Result<u32, LbError> {
        if let Some(id) = self.free.pop_first() {
            return Ok(id);
        }
        let id = self.next;
        self.next = self.next.checked_add(1).ok_or(LbError::IdsExhausted {
            what,
            max: u32::MAX,
        })?;
        Ok(id)
    }

    fn give(&mut self, id: u32) {
        self.free.insert(id);
    }
}

/// Services, EndpointSlices, pools and the node, with the frontends computed from them.
#[derive(Debug, Default, Clone)]
pub struct LbTable {
    services: BTreeMap<ServiceName, Service>,
    /// Slices by Service, then by slice name.
    slices: BTreeMap<ServiceName, BTreeMap<String, EndpointSlice>>,
    /// The Service each slice (namespace, name) belongs to: no scan over all slices per change.
    slice_owner: HashMap<(String, String), ServiceName>,
    pools: Vec<LbPool>,
    node: NodeInfo,
    entries: BTreeMap<ServiceName, Vec<ServiceEntry>>,
    alloc: LbAllocations,
    owners: HashMap<FrontendKey, ServiceName>,
    backend_refs: HashMap<BackendKey, usize>,
    service_ids: IdSpace,
    backend_ids: IdSpace,
    issues: Vec<LbIssue>,
}

/// The Service an EndpointSlice belongs to, from its label.
fn slice_service(slice: &EndpointSlice) -> Option<ServiceName> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some(ServiceName::new(ns, service.as_str()))
}

fn service_name(svc: &Service) -> ServiceName {
    ServiceName::new(
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// A batch of changes to apply at once.
#[derive(Debug, Default, Clone)]
pub struct LbUpdate {
    /// Services created or replaced.
    pub services: Vec<Service>,
    /// Services deleted.
    pub deleted_services: Vec<ServiceName>,
    /// EndpointSlices created or replaced.
    pub slices: Vec<EndpointSlice>,
    /// EndpointSlices deleted, by namespace and name.
    pub deleted_slices: Vec<(String, String)>,
}

impl LbTable {
    /// An empty table for `node`.
    pub fn new(node: NodeInfo) -> Self {
        Self {
            node,
            ..Default::default()
        }
    }

    /// Every frontend, by Service.
    pub fn entries(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.entries.values().flatten()
    }

    /// What was left out at the last computation, and why.
    pub fn issues(&self) -> &[LbIssue] {
        &self.issues
    }

    /// The Services held.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// How many Services and EndpointSlices are held (without walking them).
    pub fn object_count(&self) -> usize {
        self.services.len() + self.slice_owner.len()
    }

    /// One Service by name.
    pub fn service(&self, name: &ServiceName) -> Option<&Service> {
        self.services.get(name)
    }

    /// The EndpointSlices held.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values().flat_map(|s| s.values())
    }

    /// One EndpointSlice by namespace and name.
    pub fn slice(&self, namespace: &str, name: &str) -> Option<&EndpointSlice> {
        let svc = self
            .slice_owner
            .get(&(namespace.to_string(), name.to_string()))?;
        self.slices.get(svc)?.get(name)
    }

    /// The node this table is for.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The allocations in force (LoadBalancer addresses, ids).
    pub fn allocations(&self) -> &LbAllocations {
        &self.alloc
    }

    /// Adopts allocations from an earlier run (before anything is applied), so frontends and
    /// backends keep their ids across agent restarts.
    pub fn adopt(&mut self, alloc: LbAllocations) {
        self.service_ids = IdSpace::from_used(alloc.service_ids.values().map(|i| i.0));
        self.backend_ids = IdSpace::from_used(alloc.backend_ids.values().map(|i| i.0));
        self.alloc = alloc;
    }

    /// Replaces the node (its addresses are NodePort frontends): everything is recomputed.
    pub fn set_node(&mut self, node: NodeInfo) -> Result<LbChange, LbError> {
        let old = std::mem::replace(&mut self.node, node);
        // Nothing changes on failure: full() changes the table only once it has a result.
        self.full().inspect_err(|_| self.node = old)
    }

    /// Replaces the LoadBalancer pools: everything is recomputed.
    pub fn set_pools(&mut self, pools: Vec<LbPool>) -> Result<LbChange, LbError> {
        let old = std::mem::replace(&mut self.pools, pools);
        match self.full() {
            Ok(c) => Ok(c),
            Err(e) => {
                self.pools = old;
                Err(e)
            }
        }
    }

    /// Applies a batch: all of it or, when any object is invalid, none of it.
    pub fn apply(&mut self, update: LbUpdate) -> Result<LbChange, LbError> {
        // Validate everything before anything changes.
        let mut touched: BTreeSet<ServiceName> = BTreeSet::new();
        let mut needs_full = false;
        for svc in &update.services {
            if let Some(p) = parse_service(svc)? {
                needs_full |= p.service_type == ServiceType::LoadBalancer;
            }
            touched.insert(service_name(svc));
        }
        crate::endpoints::index_slices(&update.slices)?;
        for name in &update.deleted_services {
            needs_full |= self.services.get(name).is_some_and(|s| {
                s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
            });
            touched.insert(name.clone());
        }
        for svc in update.services {
            self.services.insert(service_name(&svc), svc);
        }
        for name in update.deleted_services {
            self.services.remove(&name);
        }
        for (ns, name) in update.deleted_slices {
            self.remove_slice(ns, name, &mut touched);
        }
        for slice in update.slices {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let ns = slice
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            // A slice relabelled to another Service leaves the old one.
            self.remove_slice(ns.clone(), name.clone(), &mut touched);
            if let Some(svc) = slice_service(&slice) {
                touched.insert(svc.clone());
                self.slice_owner.insert((ns, name.clone()), svc.clone());
                self.slices.entry(svc).or_default().insert(name, slice);
            }
        }
        if needs_full
            || touched
                .iter()
                .any(|t| self.services.get(t).is_some_and(is_load_balancer))
        {
            return self.full();
        }
        let mut change = LbChange::default();
        for name in touched {
            self.recompute_one(&name, &mut change)?;
        }
        Ok(change)
    }

    fn remove_slice(&mut self, ns: String, name: String, touched: &mut BTreeSet<ServiceName>) {
        let Some(svc) = self.slice_owner.remove(&(ns, name.clone())) else {
            return;
        };
        if let Some(slices) = self.slices.get_mut(&svc) {
            slices.remove(&name);
            if slices.is_empty() {
                self.slices.remove(&svc);
            }
        }
        touched.insert(svc);
    }

    fn recompute_one(&mut self, name: &ServiceName, change: &mut LbChange) -> Result<(), LbError> {
        let mut fresh: Vec<ServiceEntry> = Vec::new();
        if let Some(svc) = self.services.get(name) {
            let slices: Vec<EndpointSlice> = self
                .slices
                .get(name)
                .map(|s| s.values().cloned().collect())
                .unwrap_or_default();
            let state = desired(
                std::slice::from_ref(svc),
                &slices,
                &self.pools,
                &self.node,
                &self.alloc,
            )?;
            for mut e in state.services {
                let key = e.frontend.key();
                if let Some(owner) = self.owners.get(&key) {
                    if owner != name {
                        self.issues.push(LbIssue::FrontendConflict {
                            frontend: key,
                            kept: owner.clone(),
                            dropped: name.clone(),
                        });
                        continue;
                    }
                }
                e.id = match self.alloc.service_ids.get(&key) {
                    Some(id) => *id,
                    None => ServiceId(self.service_ids.take("service")?),
                };
                for b in &mut e.backends {
                    let bk = BackendKey {
                        address: b.address,
                        port: b.port,
                        protocol: e.frontend.protocol,
                    };
                    b.id = match self.alloc.backend_ids.get(&bk) {
                        Some(id) => *id,
                        None => {
                            let id = BackendId(self.backend_ids.take("backend")?);
                            self.alloc.backend_ids.insert(bk, id);
                            id
                        }
                    };
                }
                e.backends.sort_by_key(|b| b.id);
                self.alloc.service_ids.insert(key, e.id);
                fresh.push(e);
            }
        }
        let old = self.entries.remove(name).unwrap_or_default();
        for e in &fresh {
            self.owners.insert(e.frontend.key(), name.clone());
            for b in &e.backends {
                *self.backend_refs.entry(e.backend_key(b)).or_insert(0) += 1;
            }
            if !old.contains(e) {
                change.upserted.push(e.clone());
            }
        }
        for e in &old {
            let key = e.frontend.key();
            if !fresh.iter().any(|f| f.frontend.key() == key) {
                change.removed.push(key);
                self.owners.remove(&key);
                if let Some(id) = self.alloc.service_ids.remove(&key) {
                    self.service_ids.give(id.0);
                }
            }
            for b in &e.backends {
                let bk = e.backend_key(b);
                if let Some(n) = self.backend_refs.get_mut(&bk) {
                    *n -= 1;
                    if *n == 0 {
                        self.backend_refs.remove(&bk);
                        if let Some(id) = self.alloc.backend_ids.remove(&bk) {
                            self.backend_ids.give(id.0);
                        }
                    }
                }
            }
        }
        if !fresh.is_empty() {
            self.entries.insert(name.clone(), fresh);
        }
        Ok(())
    }

    /// Recomputes every Service.
    fn full(&mut self) -> Result<LbChange, LbError> {
        let services: Vec<Service> = self.services.values().cloned().collect();
        let slices: Vec<EndpointSlice> = self.slices().cloned().collect();
        let state = desired(&services, &slices, &self.pools, &self.node, &self.alloc)?;
        let mut by_service: BTreeMap<ServiceName, Vec<ServiceEntry>> = BTreeMap::new();
        for e in state.services {
            by_service.entry(e.service()).or_default().push(e);
        }
        let old: HashMap<FrontendKey, &ServiceEntry> =
            self.entries().map(|e| (e.frontend.key(), e)).collect();
        let mut change = LbChange {
            full: true,
            ..Default::default()
        };
        let mut owners = HashMap::new();
        let mut refs: HashMap<BackendKey, usize> = HashMap::new();
        for (name, entries) in &by_service {
            for e in entries {
                owners.insert(e.frontend.key(), name.clone());
                for b in &e.backends {
                    *refs.entry(e.backend_key(b)).or_insert(0) += 1;
                }
                if old.get(&e.frontend.key()).is_none_or(|o| *o != e) {
                    change.upserted.push(e.clone());
                }
            }
        }
        change.removed = old
            .keys()
            .filter(|k| !owners.contains_key(*k))
            .copied()
            .collect();
        self.owners = owners;
        self.backend_refs = refs;
        self.entries = by_service;
        self.issues = state.issues;
        self.adopt(state.allocations);
        Ok(change)
    }
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "x"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap()
    }

    fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-1"), "namespace": "x",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    /// The table's frontends with their backends' addresses, as comparable tuples.
    fn view(entries: &[ServiceEntry]) -> BTreeSet<(FrontendKey, Vec<(std::net::IpAddr, u16)>)> {
        entries
            .iter()
            .map(|e| {
                let mut b: Vec<_> = e.backends.iter().map(|b| (b.address, b.port)).collect();
                b.sort();
                (e.frontend.key(), b)
            })
            .collect()
    }

    #[test]
    fn incremental_changes_give_what_a_full_computation_gives() {
        let mut t = LbTable::new(NodeInfo::default());
        let mut update = LbUpdate::default();
        for i in 0..50 {
            update
                .services
                .push(svc(&format!("s{i}"), &format!("10.96.0.{}", i + 10)));
            update.slices.push(slice(
                &format!("s{i}"),
                &["10.244.0.5", &format!("10.244.1.{i}")],
            ));
        }
        t.apply(update).unwrap();
        // One more, one changed, one deleted.
        let c = t
            .apply(LbUpdate {
                services: vec![svc("new", "10.96.1.1")],
                slices: vec![slice("new", &["10.244.0.5"]), slice("s3", &["10.244.9.9"])],
                deleted_services: vec![ServiceName::new("x", "s7")],
                ..Default::default()
            })
            .unwrap();
        assert!(!c.full);
        assert_eq!(c.upserted.len(), 2, "{c:?}");
        assert_eq!(c.removed.len(), 1);
        let incremental: Vec<ServiceEntry> = t.entries().cloned().collect();
        let services: Vec<Service> = t.services().cloned().collect();
        let slices: Vec<EndpointSlice> = t.slices().cloned().collect();
        let full = desired(
            &services,
            &slices,
            &[],
            &NodeInfo::default(),
            &LbAllocations::default(),
        )
        .unwrap();
        assert_eq!(view(&incremental), view(&full.services));
        // Ids are unique and every backend id names one backend.
        let ids: BTreeSet<u32> = incremental.iter().map(|e| e.id.0).collect();
        assert_eq!(ids.len(), incremental.len());
        assert!(!ids.contains(&0));
        let mut by_id: HashMap<u32, BackendKey> = HashMap::new();
        for e in &incremental {
            for b in &e.backends {
                let k = e.backend_key(b);
                assert_eq!(*by_id.entry(b.id.0).or_insert(k), k);
            }
        }
    }

    #[test]
    fn unchanged_services_keep_their_ids_and_freed_ids_are_reused() {
        let mut t = LbTable::new(NodeInfo::default());
        t.apply(LbUpdate {
            services: vec![svc("a", "10.96.0.1"), svc("b", "10.96.0.2")],
            ..Default::default()
        })
        .unwrap();
        let id_b = t.entries().find(|e| e.name == "b").unwrap().id;
        t.apply(LbUpdate {
            deleted_services: vec![ServiceName::new("x", "a")],
            ..Default::default()
        })
        .unwrap();
        let c = t
            .apply(LbUpdate {
                services: vec![svc("c", "10.96.0.3")],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(t.entries().find(|e| e.name == "b").unwrap().id, id_b);
        assert_eq!(c.upserted[0].id, ServiceId(1), "the freed id is reused");
    }

    #[test]
    fn a_bad_object_changes_nothing() {
        let mut t = LbTable::new(NodeInfo::default());
        t.apply(LbUpdate {
            services: vec![svc("a", "10.96.0.1")],
            ..Default::default()
        })
        .unwrap();
        let err = t
            .apply(LbUpdate {
                services: vec![svc("b", "10.96.0.2"), svc("bad", "not-an-ip")],
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("x/bad"), "{err}");
        assert_eq!(t.entries().count(), 1);
    }
}
