//! Services in force on the node: Kubernetes Services, EndpointSlices (given, or derived from
//! the pods a Service selects) and LoadBalancer address pools, kept in an incremental
//! [`LbTable`] and written to the datapath's load-balancing maps frontend by frontend.
//!
//! Changes are persisted as journal appends ([`crate::journal`]), so adding one Service to
//! 50,000 costs one small write and not a rewrite of everything; a restarted agent replays
//! them, adopts the maps it finds pinned and brings them to exactly the computed state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use plexus_api::{BackendView, ObjectRef, ServiceView};
use plexus_lb::{
    derive_slices, FrontendKey, LbChange, LbPool, LbTable, LbUpdate, NodeInfo, PodEndpoint,
    ServiceName,
};
use plexus_loader::lb_map::{self, BpfLbStore, LbWriter};
use serde_json::Value;
use tracing::info;

use crate::journal::{Entry, Journal};

/// Kinds this module owns.
pub fn is_lb_kind(api: &str, kind: &str) -> bool {
    matches!(
        (api, kind),
        ("v1", "Service")
            | ("discovery.k8s.io/v1", "EndpointSlice")
            | (
                "cilium.io/v2alpha1" | "cilium.io/v2",
                "CiliumLoadBalancerIPPool"
            )
    )
}

/// One parsed load-balancing object.
pub enum LbObject {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    Slice(Box<EndpointSlice>),
    /// A pool: its name, the pool, the object as applied.
    Pool(String, LbPool, Value),
}

fn name_of(v: &Value) -> String {
    let m = &v["metadata"];
    match (m["namespace"].as_str(), m["name"].as_str()) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Parses a Service, EndpointSlice or CiliumLoadBalancerIPPool; errors name the object and
/// the field.
pub fn parse(v: &Value) -> anyhow::Result<LbObject> {
    let kind = v["kind"].as_str().unwrap_or_default();
    let what = format!("{kind} {}", name_of(v));
    match kind {
        "Service" => Ok(LbObject::Service(Box::new(decode(
            v,
            &what,
            |s: &mut Service| &mut s.metadata,
        )?))),
        "EndpointSlice" => Ok(LbObject::Slice(Box::new(decode(
            v,
            &what,
            |s: &mut EndpointSlice| &mut s.metadata,
        )?))),
        "CiliumLoadBalancerIPPool" => {
            let name = v["metadata"]["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| anyhow!("{what}: field metadata.name is required"))?
                .to_string();
            let spec = &v["spec"];
            let mut blocks = Vec::new();
            for (i, b) in spec["blocks"].as_array().into_iter().flatten().enumerate() {
                let cidr = b["cidr"].as_str().ok_or_else(|| {
                    anyhow!("{what}: field spec.blocks[{i}].cidr is required (start/stop ranges are not supported)")
                })?;
                blocks.push(cidr.to_string());
            }
            let service_selector: Option<LabelSelector> = match spec.get("serviceSelector") {
                None | Some(Value::Null) => None,
                Some(s) => Some(
                    serde_json::from_value(s.clone())
                        .with_context(|| format!("{what}: field spec.serviceSelector"))?,
                ),
            };
            let allow_first_last_ips = match spec.get("allowFirstLastIPs") {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) if s == "Yes" => true,
                Some(Value::String(s)) if s == "No" => false,
                Some(other) => {
                    bail!("{what}: field spec.allowFirstLastIPs: {other} (expected Yes or No)")
                }
            };
            let disabled = spec["disabled"].as_bool().unwrap_or(false);
            let pool = LbPool {
                name: name.clone(),
                // A disabled pool allocates nothing (Cilium keeps existing allocations; the
                // lab has no long-lived allocations to keep).
                blocks: if disabled { Vec::new() } else { blocks },
                service_selector,
                allow_first_last_ips,
            };
            Ok(LbObject::Pool(name, pool, v.clone()))
        }
        other => bail!("{what}: unsupported kind {other:?}"),
    }
}

/// Decodes a namespaced Kubernetes object, naming the field that does not fit; the name is
/// required, the namespace defaults to `default`.
fn decode<T: serde::de::DeserializeOwned>(
    v: &Value,
    what: &str,
    meta: impl Fn(&mut T) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> anyhow::Result<T> {
    let mut body = v.clone();
    if let Some(o) = body.as_object_mut() {
        // The typed objects carry no apiVersion and kind fields.
        o.remove("apiVersion");
        o.remove("kind");
    }
    let mut t: T = serde_path_to_error::deserialize(body)
        .map_err(|e| anyhow!("{what}: field {}: {}", e.path(), e.inner()))?;
    let m = meta(&mut t);
    if m.name.as_deref().unwrap_or("").is_empty() {
        bail!("{what}: field metadata.name is required");
    }
    m.namespace.get_or_insert_with(|| "default".into());
    Ok(t)
}

/// Load balancing of the node.
pub struct Services {
    table: LbTable,
    writer: LbWriter,
    store: BpfLbStore,
    journal: Journal,
    pools: BTreeMap<String, (LbPool, Value)>,
    /// Names of the slices derived for each Service with a selector.
    derived: BTreeMap<ServiceName, BTreeSet<String>>,
    /// Services with a selector: the only ones whose backends follow the pods.
    selected: BTreeSet<ServiceName>,
    /// Whether the maps have been brought to the computed state since start; until then
    /// nothing is written.
    loaded: bool,
}

impl Services {
    /// Loads the persisted objects, adopts the pinned maps and brings them to the computed
    /// state.
    pub fn open(state_dir: &Path, pin_dir: &Path, node: NodeInfo) -> anyhow::Result<Self> {
        let (journal, values) = Journal::open(&state_dir.join("lb"))?;
        let store = BpfLbStore::open(pin_dir).context("opening the load-balancing maps")?;
        let writer = LbWriter::adopt(&store).context("reading the load-balancing maps")?;
        let mut table = LbTable::new(node);
        // Frontends and backends keep the ids the maps (and the flows pinned to them) use.
        table.adopt(adopted_ids(&writer));
        let mut s = Self {
            table,
            writer,
            store,
            journal,
            pools: BTreeMap::new(),
            derived: BTreeMap::new(),
            selected: BTreeSet::new(),
            loaded: false,
        };
        let objects = values
            .iter()
            .map(parse)
            .collect::<anyhow::Result<Vec<_>>>()
            .context("replaying the services journal")?;
        let n = objects.len();
        // Nothing is written yet: the slices derived from pods come first (see `adopted`), or
        // the maps would briefly lose their backends.
        s.apply_parsed(objects)?;
        info!(objects = n, "services loaded");
        Ok(s)
    }

    /// After a restart, once derived slices are back: brings the adopted maps to exactly the
    /// computed state (whatever they hold beyond it goes).
    pub fn adopted(&mut self) -> anyhow::Result<()> {
        let states: Vec<_> = self.table.entries().map(lb_map::frontend_state).collect();
        self.writer.apply(&mut self.store, &states, &[], true)?;
        self.loaded = true;
        info!(frontends = self.writer.len(), "services in force");
        Ok(())
    }

    /// Applies objects (`values` as received, `objects` parsed from them), all or nothing;
    /// returns one line per object.
    pub fn apply(
        &mut self,
        objects: Vec<LbObject>,
        values: Vec<Value>,
    ) -> anyhow::Result<Vec<String>> {
        let lines = self.apply_parsed(objects)?;
        self.journal.append(&Entry::Apply(values))?;
        self.maybe_compact()
            .context("compacting the services journal")?;
        Ok(lines)
    }

    /// Folds the journal into a snapshot once it is longer than what it describes, so replay
    /// stays proportional to the objects and compaction costs O(1) per change on average.
    fn maybe_compact(&mut self) -> anyhow::Result<()> {
        let objects = self.table.object_count();
        if self.journal.lines() <= (2 * objects).max(4096) {
            return Ok(());
        }
        let derived: BTreeSet<(String, String)> = self
            .derived
            .iter()
            .flat_map(|(svc, names)| names.iter().map(|n| (svc.namespace.clone(), n.clone())))
            .collect();
        let mut values: Vec<Value> = self.pools.values().map(|(_, v)| v.clone()).collect();
        for svc in self.table.services() {
            values.push(with_type(serde_json::to_value(svc)?, "v1", "Service"));
        }
        for slice in self.table.slices() {
            let key = (
                slice.metadata.namespace.clone().unwrap_or_default(),
                slice.metadata.name.clone().unwrap_or_default(),
            );
            if !derived.contains(&key) {
                values.push(with_type(
                    serde_json::to_value(slice)?,
                    "discovery.k8s.io/v1",
                    "EndpointSlice",
                ));
            }
        }
        self.journal.compact(&values)
    }

    fn apply_parsed(&mut self, objects: Vec<LbObject>) -> anyhow::Result<Vec<String>> {
        let mut update = LbUpdate::default();
        let mut lines = Vec::new();
        let mut pools = self.pools.clone();
        let mut pools_changed = false;
        let mut selected = self.selected.clone();
        for o in objects {
            match o {
                LbObject::Service(svc) => {
                    let (ns, name) = (
                        svc.metadata.namespace.clone().unwrap_or_default(),
                        svc.metadata.name.clone().unwrap_or_default(),
                    );
                    lines.push(format!("Service {ns}/{name} applied"));
                    let key = ServiceName::new(&ns, &name);
                    if svc
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|s| !s.is_empty())
                    {
                        selected.insert(key);
                    } else {
                        selected.remove(&key);
                    }
                    update.services.push(*svc);
                }
                LbObject::Slice(slice) => {
                    let (ns, name) = (
                        slice.metadata.namespace.clone().unwrap_or_default(),
                        slice.metadata.name.clone().unwrap_or_default(),
                    );
                    lines.push(format!("EndpointSlice {ns}/{name} applied"));
                    update.slices.push(*slice);
                }
                LbObject::Pool(name, pool, v) => {
                    lines.push(format!("CiliumLoadBalancerIPPool {name} applied"));
                    pools.insert(name, (pool, v));
                    pools_changed = true;
                }
            }
        }
        // The table checks every object before it changes anything, so bad input changes
        // nothing in force (and no copy of 50,000 Services is needed to make sure).
        let mut change = self.table.apply(update)?;
        if pools_changed {
            change = self
                .table
                .set_pools(pools.values().map(|(p, _)| p.clone()).collect())?;
        }
        self.pools = pools;
        self.selected = selected;
        self.write(&change)?;
        Ok(lines)
    }

    fn write(&mut self, change: &LbChange) -> anyhow::Result<()> {
        if !self.loaded {
            return Ok(());
        }
        let states: Vec<_> = if change.full {
            self.table.entries().map(lb_map::frontend_state).collect()
        } else {
            change.upserted.iter().map(lb_map::frontend_state).collect()
        };
        let removed: Vec<_> = change.removed.iter().map(abi_key).collect();
        self.writer
            .apply(&mut self.store, &states, &removed, change.full)?;
        Ok(())
    }

    /// Deletes Services, EndpointSlices and pools by reference; the lines say what went.
    pub fn delete(&mut self, refs: &[ObjectRef]) -> anyhow::Result<Vec<String>> {
        let mut update = LbUpdate::default();
        let mut lines = Vec::new();
        let mut ours = Vec::new();
        let mut pools = self.pools.clone();
        let mut pools_changed = false;
        for r in refs {
            let ns = r.namespace.clone().unwrap_or_else(|| "default".into());
            match r.kind.as_str() {
                "Service" => {
                    update.deleted_services.push(ServiceName::new(&ns, &r.name));
                }
                "EndpointSlice" => {
                    update.deleted_slices.push((ns.clone(), r.name.clone()));
                }
                "CiliumLoadBalancerIPPool" => {
                    pools_changed |= pools.remove(&r.name).is_some();
                }
                _ => continue,
            }
            ours.push(r.clone());
            lines.push(format!("{r} deleted"));
        }
        let gone = update.deleted_services.clone();
        let mut change = self.table.apply(update)?;
        if pools_changed {
            change = self
                .table
                .set_pools(pools.values().map(|(p, _)| p.clone()).collect())?;
        }
        for name in &gone {
            self.selected.remove(name);
        }
        self.pools = pools;
        self.write(&change)?;
        self.journal.append(&Entry::Delete(ours))?;
        Ok(lines)
    }

    /// Re-derives the EndpointSlices of Services with a selector from the pods (the
    /// endpoint-slice controller's job when no API server does it).
    pub fn sync_pods(&mut self, pods: &[PodEndpoint]) -> anyhow::Result<()> {
        let mut update = LbUpdate::default();
        let mut derived: BTreeMap<ServiceName, BTreeSet<String>> = BTreeMap::new();
        for name in &self.selected {
            let Some(slices) = self
                .table
                .service(name)
                .and_then(|svc| derive_slices(svc, pods))
            else {
                continue;
            };
            let name = name.clone();
            let names: BTreeSet<String> = slices
                .iter()
                .filter_map(|s| s.metadata.name.clone())
                .collect();
            for s in slices {
                let n = s.metadata.name.as_deref().unwrap_or_default();
                if self.table.slice(&name.namespace, n) != Some(&s) {
                    update.slices.push(s);
                }
            }
            for old in self.derived.get(&name).into_iter().flatten() {
                if !names.contains(old) {
                    update
                        .deleted_slices
                        .push((name.namespace.clone(), old.clone()));
                }
            }
            derived.insert(name, names);
        }
        for (name, old) in &self.derived {
            if !derived.contains_key(name) {
                for o in old {
                    update
                        .deleted_slices
                        .push((name.namespace.clone(), o.clone()));
                }
            }
        }
        self.derived = derived;
        if update.slices.is_empty() && update.deleted_slices.is_empty() {
            return Ok(());
        }
        let change = self.table.apply(update)?;
        self.write(&change)
    }

    /// The node's addresses changed (NodePort frontends follow them).
    pub fn set_node_addresses(&mut self, addresses: Vec<IpAddr>) -> anyhow::Result<()> {
        if self.table.node().addresses == addresses {
            return Ok(());
        }
        let node = NodeInfo {
            name: self.table.node().name.clone(),
            addresses,
        };
        let change = self.table.set_node(node)?;
        self.write(&change)
    }

    /// Frontends in force with their backends, for `plexus service list`.
    pub fn views(&self) -> Vec<ServiceView> {
        let mut out: Vec<ServiceView> = self
            .table
            .entries()
            .map(|e| ServiceView {
                id: e.id.0,
                namespace: e.namespace.clone(),
                name: e.name.clone(),
                port_name: e.port_name.clone(),
                frontend: e.frontend.key().to_string(),
                kind: format!("{:?}", e.frontend.kind),
                algorithm: format!("{:?}", e.algorithm).to_lowercase(),
                affinity_seconds: e.affinity.map(|d| d.as_secs()),
                backends: e
                    .backends
                    .iter()
                    .map(|b| BackendView {
                        id: b.id.0,
                        address: std::net::SocketAddr::new(b.address, b.port).to_string(),
                        state: format!("{:?}", b.state).to_lowercase(),
                        node_local: b.node_local,
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|v| v.id);
        out
    }

    /// Frontends in the maps.
    pub fn frontend_count(&self) -> usize {
        self.writer.len()
    }
}

/// The ids in the adopted maps, as allocations.
fn adopted_ids(w: &LbWriter) -> plexus_lb::LbAllocations {
    fn addr(a: &plexus_abi::IpAddr6) -> IpAddr {
        match a.to_v4_octets() {
            Some(o) => IpAddr::from(o),
            None => IpAddr::from(a.octets()),
        }
    }
    fn proto(n: u8) -> Option<plexus_lb::Proto> {
        use plexus_lb::Proto;
        [Proto::Tcp, Proto::Udp, Proto::Sctp]
            .into_iter()
            .find(|p| p.number() == n)
    }
    let mut alloc = plexus_lb::LbAllocations::default();
    for f in w.frontends() {
        if let Some(protocol) = proto(f.key.proto) {
            let key = FrontendKey {
                address: addr(&f.key.addr),
                port: u16::from_be(f.key.port),
                protocol,
            };
            alloc
                .service_ids
                .insert(key, plexus_lb::ServiceId(f.value.rev_nat));
        }
    }
    for (id, b) in w.backends() {
        if let Some(protocol) = proto(b.proto) {
            let key = plexus_lb::BackendKey {
                address: addr(&b.addr),
                port: u16::from_be(b.port),
                protocol,
            };
            alloc.backend_ids.insert(key, plexus_lb::BackendId(*id));
        }
    }
    alloc
}

/// A typed object's JSON with its apiVersion and kind put back (k8s-openapi leaves them out).
fn with_type(mut v: Value, api_version: &str, kind: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), api_version.into());
        o.insert("kind".into(), kind.into());
    }
    v
}

fn abi_key(k: &FrontendKey) -> lb_map::FrontendId {
    lb_map::frontend_key(k.address, k.port, k.protocol.number())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_objects_name_the_object_and_the_field() {
        let bad = json!({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "web", "namespace": "x"},
                         "spec": {"ports": [{"port": "eighty"}]}});
        let e = parse(&bad).err().unwrap().to_string();
        assert!(
            e.contains("Service x/web") && e.contains("spec.ports[0].port"),
            "{e}"
        );
        let unnamed = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                             "metadata": {}, "addressType": "IPv4", "endpoints": []});
        let e = parse(&unnamed).err().unwrap().to_string();
        assert!(e.contains("metadata.name is required"), "{e}");
        let pool = json!({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                          "metadata": {"name": "p"}, "spec": {"blocks": [{"start": "10.0.0.1"}]}});
        let e = parse(&pool).err().unwrap().to_string();
        assert!(e.contains("spec.blocks[0].cidr"), "{e}");
        let ok = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                        "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}});
        let LbObject::Service(s) = parse(&ok).unwrap() else {
            panic!("a Service")
        };
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
    }
}
