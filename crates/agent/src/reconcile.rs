//! The reconciler: from endpoints and objects, compute identities, the ipcache and every
//! endpoint's policy, then bring the kernel maps to exactly that state with the smallest change,
//! in an order that opens no gap (see `plexus_loader::policy_map::sync`).

use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use anyhow::Context;
use plexus_abi::{
    endpoint::{
        ENDPOINT_F_EGRESS_ENFORCED, ENDPOINT_F_EGRESS_POLICY, ENDPOINT_F_INGRESS_ENFORCED,
        ENDPOINT_F_INGRESS_POLICY,
    },
    EndpointInfo, EndpointKey, IpAddr6, IpcacheValue,
};
use plexus_api::{EndpointSpec, EndpointState};
use plexus_identity::{endpoint_labels, reserved, Labels, NumericIdentity, Prefix};
use plexus_loader::policy_map::{self, BpfPolicyStore};
use plexus_netdev::parse_mac;
use plexus_policy::{compile, Direction, EndpointInput, EndpointPolicy, Inputs, ParsedPolicy};
use tracing::{debug, info};

use crate::endpoints::Agent;

/// The policy view the reconciler last put in force, for `policy get` and `policy trace`.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Parsed policies.
    pub policies: Vec<ParsedPolicy>,
    /// Compiled state per endpoint id.
    pub compiled: BTreeMap<u32, EndpointPolicy>,
    /// CIDR identities.
    pub cidr_identities: BTreeMap<Prefix, NumericIdentity>,
    /// The node's own addresses (identity `host`).
    pub node_addrs: Vec<IpAddr>,
    /// How long the last computation took.
    pub compute_ms: f64,
    /// Rule id → (kind, namespace, name, rule path), for flows.
    pub rules: BTreeMap<u32, (String, String, String, String)>,
}

impl Resolved {
    /// The identity of an address, as the datapath's ipcache resolves it.
    pub fn identity_of_ip(
        &self,
        ip: IpAddr,
        endpoints: &[(IpAddr, NumericIdentity)],
    ) -> NumericIdentity {
        if let Some((_, id)) = endpoints.iter().find(|(a, _)| *a == ip) {
            return *id;
        }
        if self.node_addrs.contains(&ip) {
            return reserved::HOST;
        }
        self.cidr_identities
            .iter()
            .filter(|(p, _)| p.contains_addr(ip))
            .max_by_key(|(p, _)| p.len)
            .map_or(reserved::world_of(ip.is_ipv4()), |(_, id)| *id)
    }
}

/// The identity labels of an endpoint from the objects the agent knows.
pub fn labels_for(agent_objects: &crate::objects::Objects, spec: &EndpointSpec) -> Labels {
    let ns = spec.namespace();
    let pod_labels = agent_objects
        .pod_of(spec)
        .map(|p| p.labels.clone())
        .unwrap_or_default();
    let ns_labels = agent_objects
        .namespaces
        .get(ns)
        .cloned()
        .unwrap_or_else(|| [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into());
    endpoint_labels(ns, &pod_labels, &ns_labels)
}

fn ipcache_key(p: &Prefix) -> (u32, [u8; 16]) {
    match p.addr {
        IpAddr::V4(v) => (
            96 + p.len as u32,
            IpAddr6::from_v4_octets(v.octets()).octets(),
        ),
        IpAddr::V6(v) => (p.len as u32, v.octets()),
    }
}

fn flags(pol: Option<&EndpointPolicy>) -> u32 {
    let Some(p) = pol else { return 0 };
    let mut f = 0;
    if p.has_policy(Direction::Ingress) {
        f |= ENDPOINT_F_INGRESS_POLICY;
    }
    if p.enforced(Direction::Ingress) {
        f |= ENDPOINT_F_INGRESS_ENFORCED;
    }
    if p.has_policy(Direction::Egress) {
        f |= ENDPOINT_F_EGRESS_POLICY;
    }
    if p.enforced(Direction::Egress) {
        f |= ENDPOINT_F_EGRESS_ENFORCED;
    }
    f
}

impl Agent {
    /// Gives every endpoint the identity of its current labels (acquire the new one before
    /// releasing the old, so a number in use never changes hands).
    fn assign_identities(&mut self) -> anyhow::Result<()> {
        let keys: Vec<String> = self.state.endpoints.keys().cloned().collect();
        for k in keys {
            let Some(ep) = self.state.endpoints.get(&k) else {
                continue;
            };
            let labels = labels_for(&self.state.objects, &ep.spec);
            let held = self.state.endpoint_labels.get(&k);
            if held == Some(&labels) && ep.identity != 0 {
                continue;
            }
            let new = self.state.identities.acquire(&labels)?;
            if held.is_some() && ep.identity != 0 {
                self.state.identities.release(ep.identity);
            }
            self.state.endpoint_labels.insert(k.clone(), labels);
            if let Some(ep) = self.state.endpoints.get_mut(&k) {
                ep.identity = new;
            }
        }
        Ok(())
    }

    /// Drops an endpoint's identity reference (it is being deleted).
    pub(crate) fn release_identity(&mut self, key: &str, identity: NumericIdentity) {
        if self.state.endpoint_labels.remove(key).is_some() && identity != 0 {
            self.state.identities.release(identity);
        }
    }

    fn rule_id(&mut self, origin: &str) -> u32 {
        let next = self.state.rule_ids.len() as u32 + 1;
        *self
            .state
            .rule_ids
            .entry(origin.to_string())
            .or_insert(next)
    }

    /// Recomputes everything and brings the maps to it.
    pub(crate) fn reconcile(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.assign_identities()?;
        let policies = self.state.objects.parsed_policies();
        let cidrs: Vec<Prefix> = plexus_policy::cidrs(&policies).into_iter().collect();
        let cidr_identities: BTreeMap<Prefix, NumericIdentity> = cidrs
            .iter()
            .map(|p| (*p, self.state.identities.cidr(p)))
            .collect();
        self.state.identities.retain_cidrs(&cidrs);
        let identities: BTreeMap<NumericIdentity, Labels> = self
            .state
            .identities
            .list()
            .into_iter()
            .filter(|(id, _, refs)| *id < reserved::FIRST_LOCAL && *refs > 0)
            .map(|(id, l, _)| (id, l))
            .collect();

        let ready: Vec<_> = self
            .state
            .endpoints
            .values()
            .filter(|e| e.state == EndpointState::Ready)
            .cloned()
            .collect();
        let inputs: Vec<EndpointInput> = ready
            .iter()
            .map(|e| EndpointInput {
                id: e.id,
                identity: e.identity,
                labels: self
                    .state
                    .endpoint_labels
                    .get(&e.spec.attachment.owner())
                    .cloned()
                    .unwrap_or_default(),
                named_ports: self
                    .state
                    .objects
                    .pod_of(&e.spec)
                    .map(|p| p.named_ports.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let compiled = compile(&Inputs {
            policies: &policies,
            endpoints: &inputs,
            identities: &identities,
            cidr_identities: &cidr_identities,
        });
        let compute_ms = started.elapsed().as_secs_f64() * 1000.0;

        // ipcache: pods, the node's own addresses, and every CIDR policies mention.
        let node_addrs = crate::node::addresses(true);
        let mut ipcache = BTreeMap::new();
        let value = |identity| IpcacheValue {
            identity,
            flags: 0,
            tunnel_endpoint: IpAddr6::default(),
        };
        for p in &cidrs {
            ipcache.insert(ipcache_key(p), value(cidr_identities[p]));
        }
        // IPv4 lives in the IPv4-mapped part of one trie: an IPv6 range that covers it must not
        // claim IPv4 addresses, so the mapped /96 gets IPv4's world unless IPv4 ranges say more.
        let mapped = (96, IpAddr6::from_v4_octets([0; 4]).octets());
        if cidrs.iter().any(|p| {
            !p.addr.is_ipv4()
                && p.len <= 96
                && p.contains(&"::ffff:0:0/96".parse().expect("static prefix"))
        }) {
            ipcache.insert(mapped, value(reserved::WORLD_IPV4));
        }
        for a in &node_addrs {
            ipcache.insert(ipcache_key(&Prefix::host(*a)), value(reserved::HOST));
        }
        for e in &ready {
            if let Ok(ip) = e.spec.ipv4.parse::<IpAddr>() {
                ipcache.insert(ipcache_key(&Prefix::host(ip)), value(e.identity));
            }
        }
        let maps = self.datapath.maps()?;
        maps.sync_ipcache(&ipcache).context("writing the ipcache")?;

        // Policy entries of every endpoint, in kernel form.
        let mut desired = BTreeMap::new();
        let mut rules = BTreeMap::new();
        for (ep, pol) in &compiled {
            for (k, e) in &pol.entries {
                let origin = e
                    .origins
                    .first()
                    .and_then(|i| pol.origin(*i))
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let rule_id = self.rule_id(&origin);
                if let Some(o) = e.origins.first().and_then(|i| pol.origin(*i)) {
                    rules.entry(rule_id).or_insert_with(|| {
                        (
                            o.policy.kind.clone(),
                            o.policy.namespace.clone().unwrap_or_default(),
                            o.policy.name.clone(),
                            o.rule.clone(),
                        )
                    });
                }
                let (prefix, key) = policy_map::to_kernel(*ep, k);
                desired.insert((prefix, key), policy_map::to_value(e.action, rule_id));
            }
        }
        // The endpoints map as it should be after the change.
        let mut new_eps: BTreeMap<EndpointKey, EndpointInfo> = BTreeMap::new();
        for e in &ready {
            let (Ok(ip), Some(pod_mac), Some(host_mac)) = (
                e.spec.ipv4.parse::<std::net::Ipv4Addr>(),
                parse_mac(&e.spec.pod_mac),
                parse_mac(&e.spec.host_mac),
            ) else {
                continue;
            };
            let key = EndpointKey {
                ip: IpAddr6::from_v4_octets(ip.octets()),
            };
            new_eps.insert(
                key,
                EndpointInfo {
                    ifindex: e.spec.host_ifindex,
                    endpoint_id: e.id,
                    pod_mac,
                    host_mac,
                    identity: e.identity,
                    flags: flags(compiled.get(&e.id)),
                },
            );
        }
        let old_eps = maps.endpoints_raw()?;
        let mut store = BpfPolicyStore::open(self.datapath.pin_dir())?;
        // What the map holds: read from the kernel once (adopting a predecessor's map), then
        // kept in step with every write.
        let mut actual = match self.policy_shadow.take() {
            Some(a) => a,
            None => {
                use plexus_loader::policy_map::PolicyStore;
                store.entries()?
            }
        };
        let stats = policy_map::sync(
            &mut store,
            &mut actual,
            &desired,
            || {
                // Enforcement that goes away goes first; nothing else changes yet.
                for (k, old) in &old_eps {
                    if let Some(new) = new_eps.get(k) {
                        if old.flags & !new.flags != 0 {
                            maps.put_endpoint(
                                *k,
                                EndpointInfo {
                                    flags: old.flags & new.flags,
                                    ..*old
                                },
                            )?;
                        }
                    }
                }
                Ok(())
            },
            || {
                for (k, new) in &new_eps {
                    match old_eps.get(k) {
                        Some(old) if old == new => continue,
                        Some(old) if old.endpoint_id == new.endpoint_id => {}
                        // A new endpoint may reuse a freed id: start its counters at zero.
                        _ => maps.reset_counters(new.endpoint_id)?,
                    }
                    maps.upsert_endpoint(*k, *new)?;
                }
                Ok(())
            },
        )?;
        self.policy_shadow = Some(actual);
        for (k, old) in &old_eps {
            if !new_eps.contains_key(k) {
                maps.remove_endpoint(k, old.endpoint_id)?;
            }
        }
        debug!(?stats, compute_ms, "policy in force");
        if stats.written + stats.removed > 0 {
            info!(
                written = stats.written,
                removed = stats.removed,
                unchanged = stats.unchanged,
                compute_ms,
                "policy map updated"
            );
        }
        self.resolved = Resolved {
            policies,
            compiled,
            cidr_identities,
            node_addrs,
            compute_ms,
            rules,
        };
        self.refresh_directory();
        Ok(())
    }
}

impl Agent {
    /// Hands the observer the names it enriches flows with.
    pub(crate) fn refresh_directory(&self) {
        let Some(obs) = &self.observer else { return };
        let Ok(mut dir) = obs.directory.write() else {
            return;
        };
        dir.endpoints.clear();
        for e in self.state.endpoints.values() {
            let Ok(ip) = e.spec.ipv4.parse::<IpAddr>() else {
                continue;
            };
            let pod = self.state.objects.pod_of(&e.spec);
            let labels = self
                .state
                .endpoint_labels
                .get(&e.spec.attachment.owner())
                .map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            dir.endpoints.insert(
                ip,
                crate::observer::EndpointMeta {
                    id: e.id,
                    namespace: e.spec.pod_namespace.clone(),
                    pod: e.spec.pod_name.clone(),
                    labels,
                    workload: pod.and_then(|p| p.workload.clone()),
                },
            );
        }
        dir.identity_labels = self
            .state
            .identities
            .list()
            .into_iter()
            .map(|(id, l, _)| {
                (
                    id,
                    l.iter()
                        .map(|(k, v)| {
                            if v.is_empty() {
                                k.clone()
                            } else {
                                format!("{k}={v}")
                            }
                        })
                        .collect(),
                )
            })
            .chain(
                reserved::ALL
                    .iter()
                    .map(|(id, n)| (*id, vec![format!("reserved:{n}")])),
            )
            .collect();
        dir.rules = self
            .resolved
            .rules
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
    }

    /// Events the datapath lost because the ring buffer was full.
    pub(crate) fn events_lost(&self) -> u64 {
        self.datapath
            .maps()
            .and_then(|m| m.events_lost())
            .unwrap_or(0)
    }

    /// The agent's metrics in Prometheus text format.
    pub(crate) fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        for e in self.state.endpoints.values() {
            *by_state.entry(e.state.to_string()).or_insert(0) += 1;
        }
        let _ = writeln!(out, "# TYPE plexus_endpoint gauge");
        for (s, n) in by_state {
            let _ = writeln!(out, "plexus_endpoint{{endpoint_state=\"{s}\"}} {n}");
        }
        let ids = self.state.identities.list();
        let _ = writeln!(out, "# TYPE plexus_identity gauge");
        let _ = writeln!(
            out,
            "plexus_identity{{type=\"cluster_local\"}} {}",
            ids.iter()
                .filter(|(i, _, _)| *i < reserved::FIRST_LOCAL)
                .count()
        );
        let _ = writeln!(
            out,
            "plexus_identity{{type=\"node_local\"}} {}",
            ids.iter()
                .filter(|(i, _, _)| *i >= reserved::FIRST_LOCAL)
                .count()
        );
        let _ = writeln!(out, "# TYPE plexus_policy gauge");
        let _ = writeln!(out, "plexus_policy {}", self.resolved.policies.len());
        let _ = writeln!(out, "# TYPE plexus_policy_regeneration_time_seconds gauge");
        let _ = writeln!(
            out,
            "plexus_policy_regeneration_time_seconds {:.6}",
            self.resolved.compute_ms / 1000.0
        );
        if let Ok(maps) = self.datapath.maps() {
            let _ = writeln!(out, "# TYPE plexus_bpf_map_pressure gauge");
            let pressure = [
                (
                    plexus_abi::maps::ENDPOINTS,
                    maps.endpoint_count().unwrap_or(0) as f64,
                    plexus_abi::maps::ENDPOINTS_MAX,
                ),
                (
                    plexus_abi::maps::POLICY,
                    self.policy_shadow.as_ref().map_or(0, |p| p.len()) as f64,
                    plexus_abi::maps::POLICY_MAX,
                ),
                (
                    plexus_abi::maps::IPCACHE,
                    maps.ipcache_entries().map(|m| m.len()).unwrap_or(0) as f64,
                    plexus_abi::maps::IPCACHE_MAX,
                ),
            ];
            for (name, n, cap) in pressure {
                let _ = writeln!(
                    out,
                    "plexus_bpf_map_pressure{{map_name=\"{name}\"}} {:.6}",
                    n / cap as f64
                );
            }
            let _ = writeln!(out, "# TYPE plexus_datapath_drop_total counter");
            for (code, n) in maps.drops().unwrap_or_default() {
                let reason =
                    plexus_abi::DropReason::from_code(code).map_or("UNKNOWN", |r| r.hubble_name());
                let _ = writeln!(out, "plexus_datapath_drop_total{{reason=\"{reason}\"}} {n}");
            }
            let _ = writeln!(out, "# TYPE plexus_datapath_events_lost_total counter");
            let _ = writeln!(
                out,
                "plexus_datapath_events_lost_total {}",
                maps.events_lost().unwrap_or(0)
            );
        }
        out
    }
}
