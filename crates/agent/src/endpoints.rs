//! The agent's core: IPAM leases and endpoint lifecycle, kept in step with the datapath maps
//! and persisted after every change.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{anyhow, bail, Context};
use plexus_abi::{maps as m, DropReason, EndpointInfo, EndpointKey, IpAddr6};
use plexus_api::{
    Attachment, Endpoint, EndpointSpec, EndpointState, IpamLease, Request, Response, Status,
};
use plexus_ipam::{Cidr, Ipam};
use plexus_loader::{Datapath, PinnedMaps};
use plexus_netdev::parse_mac;
use tracing::{info, warn};

use crate::{
    node, objects,
    reconcile::Resolved,
    state::{State, Store},
};

/// The running agent.
pub struct Agent {
    node: String,
    pub(crate) datapath: Datapath,
    store: Store,
    pub(crate) state: State,
    bpf_dir: PathBuf,
    started: Instant,
    /// What the last reconcile put in force.
    pub(crate) resolved: Resolved,
    /// The observer's handles, to refresh its names after every reconcile.
    pub(crate) observer: Option<crate::observer::ObserverHandle>,
    /// Services, EndpointSlices and pools in force, and the load-balancing maps.
    pub(crate) services: crate::services::Services,
    /// External devices carrying the NodePort program.
    pub(crate) devices: std::collections::BTreeSet<String>,
    /// The policy map's contents as last written (None: read it from the kernel).
    pub(crate) policy_shadow:
        Option<std::collections::BTreeMap<(u32, plexus_abi::PolicyKey), plexus_abi::PolicyValue>>,
}

/// Whether an object is a Service, EndpointSlice or LoadBalancer pool.
fn is_lb(v: &serde_json::Value) -> bool {
    crate::services::is_lb_kind(
        v["apiVersion"].as_str().unwrap_or_default(),
        v["kind"].as_str().unwrap_or_default(),
    )
}

impl Agent {
    /// Loads saved state and the datapath (adopting pinned maps and links), sets up the node's
    /// router address, and re-programs every known endpoint.
    pub fn start(
        node: &str,
        pod_cidr: Cidr,
        state_dir: &Path,
        bpf_dir: &Path,
        cgroup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let store = Store::open(state_dir)?;
        let state = match store.load()? {
            Some(s) if s.ipam.cidr() == pod_cidr => s,
            Some(s) => bail!(
                "saved state is for pod CIDR {}, not {pod_cidr}",
                s.ipam.cidr()
            ),
            None => State::new(Ipam::new(pod_cidr)),
        };
        let mut datapath = Datapath::load(bpf_dir).context("loading the datapath")?;
        node::ensure_router(state.ipam.gateway()).context("setting up the router address")?;
        if let Some(cg) = cgroup {
            datapath
                .attach_cgroup(cg)
                .with_context(|| format!("attaching socket load balancing to {}", cg.display()))?;
        }
        let services = crate::services::Services::open(
            state_dir,
            bpf_dir,
            plexus_lb::NodeInfo {
                name: node.to_string(),
                addresses: node::addresses(false),
            },
        )
        .context("loading services")?;
        let mut agent = Self {
            node: node.to_string(),
            datapath,
            store,
            state,
            bpf_dir: bpf_dir.to_path_buf(),
            started: Instant::now(),
            resolved: Resolved::default(),
            policy_shadow: None,
            observer: None,
            services,
            devices: Default::default(),
        };
        agent.restore()?;
        agent.reconcile().context("reconciling the datapath")?;
        agent.sync_service_pods()?;
        agent.services.adopted().context("writing services")?;
        agent.save()?;
        info!(node, %pod_cidr, endpoints = agent.state.endpoints.len(), "agent ready");
        Ok(agent)
    }

    fn save(&self) -> anyhow::Result<()> {
        self.store.save(&self.state)
    }

    /// Re-programs known endpoints after a restart: swaps the new programs in behind the pinned
    /// links (no detach in between) and rewrites their map entries. An endpoint whose interface
    /// vanished while the agent was down is taken out of the datapath until CNI DEL or GC.
    fn restore(&mut self) -> anyhow::Result<()> {
        let keys: Vec<String> = self.state.endpoints.keys().cloned().collect();
        for k in keys {
            let Some(ep) = self.state.endpoints.get(&k).cloned() else {
                continue;
            };
            let state = match node::ifindex(&ep.spec.host_ifname) {
                Some(idx) if idx == ep.spec.host_ifindex => match self.program(&ep) {
                    Ok(()) => EndpointState::Ready,
                    Err(e) => {
                        warn!(endpoint = ep.id, error = %e, "re-programming endpoint failed");
                        EndpointState::NotReady
                    }
                },
                _ => {
                    warn!(endpoint = ep.id, interface = %ep.spec.host_ifname, "interface gone; endpoint not ready");
                    self.unprogram(&ep);
                    EndpointState::NotReady
                }
            };
            if let Some(e) = self.state.endpoints.get_mut(&k) {
                e.state = state;
            }
        }
        Ok(())
    }

    fn maps(&self) -> anyhow::Result<PinnedMaps> {
        Ok(self.datapath.maps()?)
    }

    /// Puts an endpoint into the datapath: programs on its veth, its map entry, its route.
    fn program(&mut self, ep: &Endpoint) -> anyhow::Result<()> {
        let ip: Ipv4Addr = ep
            .spec
            .ipv4
            .parse()
            .with_context(|| format!("endpoint ipv4 {:?}", ep.spec.ipv4))?;
        let pod_mac = parse_mac(&ep.spec.pod_mac)
            .ok_or_else(|| anyhow!("endpoint pod_mac {:?} is not a MAC", ep.spec.pod_mac))?;
        let host_mac = parse_mac(&ep.spec.host_mac)
            .ok_or_else(|| anyhow!("endpoint host_mac {:?} is not a MAC", ep.spec.host_mac))?;
        self.datapath.attach_endpoint(&ep.spec.host_ifname)?;
        let info = EndpointInfo {
            ifindex: ep.spec.host_ifindex,
            endpoint_id: ep.id,
            pod_mac,
            host_mac,
            identity: 0,
            flags: 0,
        };
        self.maps()?.upsert_endpoint(
            EndpointKey {
                ip: IpAddr6::from_v4_octets(ip.octets()),
            },
            info,
        )?;
        node::add_pod_route(
            ip,
            self.state.ipam.gateway(),
            &ep.spec.host_ifname,
            &ep.spec.pod_mac,
        )?;
        Ok(())
    }

    /// Takes an endpoint out of the datapath; every step tolerates what is already gone.
    fn unprogram(&mut self, ep: &Endpoint) {
        if let Ok(ip) = ep.spec.ipv4.parse::<Ipv4Addr>() {
            if let Ok(maps) = self.maps() {
                if let Err(e) = maps.remove_endpoint(
                    &EndpointKey {
                        ip: IpAddr6::from_v4_octets(ip.octets()),
                    },
                    ep.id,
                ) {
                    warn!(endpoint = ep.id, error = %e, "removing endpoint from map");
                }
            }
            node::del_pod_route(ip);
        }
        Datapath::detach_endpoint(&self.bpf_dir, &ep.spec.host_ifname);
    }

    /// Serves one API request.
    pub fn handle(&mut self, req: Request) -> Response {
        let res = match req {
            Request::Health => Ok(Response::Ok),
            Request::Status => self.status().map(Response::Status),
            Request::IpamAllocate(a) => self.allocate(&a).map(Response::Lease),
            Request::EndpointCreate(spec) => self.create(spec).map(Response::Endpoint),
            Request::EndpointDelete(a) => self.delete(&a).map(|()| Response::Ok),
            Request::EndpointGet(a) => Ok(match self.state.endpoints.get(&State::key(&a)) {
                Some(e) => Response::Endpoint(e.clone()),
                None => Response::NotFound,
            }),
            Request::EndpointList => Ok(Response::Endpoints {
                endpoints: self.state.endpoints.values().cloned().collect(),
            }),
            Request::Gc { valid } => self.gc(&valid).map(|()| Response::Ok),
            Request::ApplyObjects { objects } => {
                let started = Instant::now();
                self.apply_objects(&objects).map(|lines| Response::Changed {
                    lines,
                    elapsed_us: started.elapsed().as_micros() as u64,
                })
            }
            Request::ValidateObjects { objects } => objects
                .iter()
                .map(|o| {
                    if is_lb(o) {
                        crate::services::parse(o).map(|_| ())
                    } else {
                        objects::parse(o).map(|_| ())
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()
                .map(|v| Response::Changed {
                    lines: vec![format!("{} objects valid", v.len())],
                    elapsed_us: 0,
                }),
            Request::ServiceList => Ok(Response::Services {
                services: self.services.views(),
            }),
            Request::DeleteObjects { refs } => {
                let started = Instant::now();
                self.delete_objects(&refs).map(|lines| Response::Changed {
                    lines,
                    elapsed_us: started.elapsed().as_micros() as u64,
                })
            }
            Request::PolicyGet => Ok(Response::Policies {
                policies: self.policy_views(),
            }),
            Request::PolicyTrace {
                from,
                to,
                port,
                protocol,
            } => self.trace(&from, &to, port, &protocol).map(Response::Trace),
            Request::IdentityList => Ok(Response::Identities {
                identities: self.identity_views(),
            }),
            Request::Capture(_) => Err(anyhow!(
                "capture is served by the API server, not the agent core"
            )),
        };
        res.unwrap_or_else(|e| Response::Error {
            message: format!("{e:#}"),
        })
    }

    fn lease(&self, ip: Ipv4Addr) -> IpamLease {
        IpamLease {
            ipv4: ip.to_string(),
            prefix_len: self.state.ipam.cidr().prefix,
            gateway: self.state.ipam.gateway().to_string(),
            pod_cidr: self.state.ipam.cidr().to_string(),
        }
    }

    fn allocate(&mut self, a: &Attachment) -> anyhow::Result<IpamLease> {
        let ip = self.state.ipam.allocate(&a.owner())?;
        self.save()?;
        Ok(self.lease(ip))
    }

    fn create(&mut self, spec: EndpointSpec) -> anyhow::Result<Endpoint> {
        let owner = spec.attachment.owner();
        let leased = self.state.ipam.owned_by(&owner).ok_or_else(|| {
            anyhow!("endpoint {owner}: no address was allocated for this attachment")
        })?;
        if spec.ipv4 != leased.to_string() {
            bail!(
                "endpoint {owner}: field ipv4 is {} but the address leased to it is {leased}",
                spec.ipv4
            );
        }
        match node::ifindex(&spec.host_ifname) {
            Some(i) if i == spec.host_ifindex => {}
            Some(i) => bail!(
                "endpoint {owner}: field host_ifindex is {} but {} has ifindex {i}",
                spec.host_ifindex,
                spec.host_ifname
            ),
            None => bail!(
                "endpoint {owner}: field host_ifname {:?} does not exist on the node",
                spec.host_ifname
            ),
        }
        let key = State::key(&spec.attachment);
        let id = match self.state.endpoints.get(&key) {
            Some(e) => e.id,
            // The lowest free id: ids index the datapath's counter array.
            None => (1..m::ENDPOINTS_MAX)
                .find(|i| !self.state.endpoints.values().any(|e| e.id == *i))
                .ok_or_else(|| {
                    anyhow!(
                        "endpoint {owner}: the node already has {} endpoints",
                        m::ENDPOINTS_MAX - 1
                    )
                })?,
        };
        let identity = self.state.endpoints.get(&key).map_or(0, |e| e.identity);
        let mut ep = Endpoint {
            id,
            spec,
            state: EndpointState::WaitingForWiring,
            identity,
        };
        self.state.endpoints.insert(key.clone(), ep.clone());
        self.save()?;
        if let Err(e) = self.program(&ep) {
            self.unprogram(&ep);
            self.state.endpoints.remove(&key);
            self.save()?;
            return Err(e.context(format!("endpoint {owner}: programming the datapath")));
        }
        ep.state = EndpointState::Ready;
        self.state.endpoints.insert(key.clone(), ep.clone());
        // Identity, ipcache, policy and the endpoint's map entry, before the pod's first packet
        // can count on them.
        if let Err(e) = self.reconcile() {
            self.unprogram(&ep);
            if let Some(gone) = self.state.endpoints.remove(&key) {
                self.release_identity(&key, gone.identity);
            }
            let _ = self.reconcile();
            self.save()?;
            return Err(e.context(format!("endpoint {owner}: computing its policy")));
        }
        let ep = self.state.endpoints.get(&key).cloned().unwrap_or(ep);
        self.save()?;
        if let Err(e) = self.sync_service_pods() {
            warn!(endpoint = id, error = %e, "updating service backends");
        }
        info!(endpoint = id, pod = %format!("{}/{}", ep.spec.pod_namespace, ep.spec.pod_name), ip = %ep.spec.ipv4, "endpoint ready");
        Ok(ep)
    }

    fn delete(&mut self, a: &Attachment) -> anyhow::Result<()> {
        let key = State::key(a);
        if let Some(ep) = self.state.endpoints.remove(&key) {
            self.release_identity(&key, ep.identity);
            // No new connection goes to it once it is gone.
            self.sync_service_pods()?;
            self.reconcile()?;
            self.unprogram(&ep);
            info!(endpoint = ep.id, "endpoint deleted");
        }
        self.state.ipam.release(&a.owner());
        self.save()
    }

    /// Applies objects all-or-nothing: parse everything, store, reconcile; on a reconcile
    /// failure the previous objects come back and are reconciled again.
    fn apply_objects(&mut self, objs: &[serde_json::Value]) -> anyhow::Result<Vec<String>> {
        // Everything is parsed before anything is applied.
        let (lb_values, rest): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
            objs.iter().partition(|o| is_lb(o));
        let lb = lb_values
            .iter()
            .map(|v| crate::services::parse(v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let parsed = rest
            .into_iter()
            .map(objects::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut lines = Vec::new();
        let has_lb = !lb.is_empty();
        if has_lb {
            // Services first: they change no policy, and a policy apply below may fail alone.
            let values = lb_values.into_iter().cloned().collect();
            lines.extend(self.services.apply(lb, values)?);
        }
        if !parsed.is_empty() {
            let before = self.state.objects.clone();
            lines.extend(self.state.objects.apply(parsed));
            self.commit_objects(before)?;
        }
        if has_lb || !lines.is_empty() {
            self.sync_service_pods()?;
        }
        Ok(lines)
    }

    fn delete_objects(&mut self, refs: &[plexus_api::ObjectRef]) -> anyhow::Result<Vec<String>> {
        let (lb, rest): (Vec<_>, Vec<_>) = refs.iter().cloned().partition(|r| {
            matches!(
                r.kind.as_str(),
                "Service" | "EndpointSlice" | "CiliumLoadBalancerIPPool"
            )
        });
        let mut lines = Vec::new();
        if !lb.is_empty() {
            lines.extend(self.services.delete(&lb)?);
        }
        if !rest.is_empty() {
            let before = self.state.objects.clone();
            lines.extend(self.state.objects.delete(&rest));
            self.commit_objects(before)?;
            self.sync_service_pods()?;
        }
        Ok(lines)
    }

    /// Pods as the endpoint-slice controller sees them: every ready endpoint with its pod's
    /// labels and named ports.
    fn pod_endpoints(&self) -> Vec<plexus_lb::PodEndpoint> {
        self.state
            .endpoints
            .values()
            .map(|e| {
                let pod = self.state.objects.pod_of(&e.spec);
                plexus_lb::PodEndpoint {
                    namespace: e.spec.namespace().to_string(),
                    name: e.spec.pod_name.clone(),
                    labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
                    ip: e.spec.ipv4.clone(),
                    node: self.node.clone(),
                    ready: e.state == EndpointState::Ready,
                    terminating: false,
                    named_ports: pod
                        .map(|p| {
                            p.named_ports
                                .iter()
                                .map(|n| (n.name.clone(), n.port, n.proto.to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Re-derives the backends of Services with selectors after pods or endpoints changed.
    pub(crate) fn sync_service_pods(&mut self) -> anyhow::Result<()> {
        let pods = self.pod_endpoints();
        self.services
            .sync_pods(&pods)
            .context("updating service backends")
    }

    /// Attaches the NodePort program to external devices that appeared and follows the node's
    /// addresses (NodePort frontends). Called periodically.
    pub fn scan_devices(&mut self) {
        let present = node::external_devices();
        self.devices.retain(|d| present.contains(d));
        for dev in present {
            if self.devices.contains(&dev) {
                continue;
            }
            match self.datapath.attach_netdev(&dev) {
                Ok(_) => {
                    info!(device = %dev, "NodePort program attached");
                    self.devices.insert(dev);
                }
                Err(e) => warn!(device = %dev, error = %e, "attaching the NodePort program"),
            }
        }
        if let Err(e) = self.services.set_node_addresses(node::addresses(false)) {
            warn!(error = %e, "updating NodePort frontends");
        }
    }

    fn commit_objects(&mut self, before: objects::Objects) -> anyhow::Result<()> {
        if let Err(e) = self.reconcile() {
            self.state.objects = before;
            let _ = self.reconcile();
            return Err(e.context("putting the change in force; nothing changed"));
        }
        self.save()
    }

    fn gc(&mut self, valid: &[Attachment]) -> anyhow::Result<()> {
        let keep: std::collections::BTreeSet<String> =
            valid.iter().map(Attachment::owner).collect();
        let stale: Vec<Endpoint> = self
            .state
            .endpoints
            .iter()
            .filter(|(k, _)| !keep.contains(*k))
            .map(|(_, e)| e.clone())
            .collect();
        for ep in stale {
            self.delete(&ep.spec.attachment)?;
        }
        let stale_leases: Vec<String> = self
            .state
            .ipam
            .allocations()
            .values()
            .filter(|o| !keep.contains(*o))
            .cloned()
            .collect();
        for owner in stale_leases {
            self.state.ipam.release(&owner);
        }
        self.save()
    }

    fn status(&self) -> anyhow::Result<Status> {
        let maps = self.maps()?;
        let programs = Datapath::attached(&self.bpf_dir)
            .into_iter()
            .map(|p| (p.interface, p.direction.to_string(), p.program.to_string()))
            .collect();
        let drops = maps
            .drops()?
            .into_iter()
            .map(|(code, n)| {
                let name = DropReason::from_code(code).map_or("unknown", |r| r.hubble_name());
                (code, name.to_string(), n)
            })
            .collect();
        Ok(Status {
            node: self.node.clone(),
            pod_cidr: self.state.ipam.cidr().to_string(),
            bpf_dir: self.bpf_dir.display().to_string(),
            programs,
            maps: vec![
                (
                    m::ENDPOINTS.to_string(),
                    maps.endpoint_count()? as u64,
                    m::ENDPOINTS_MAX as u64,
                ),
                (
                    m::CONNTRACK.to_string(),
                    maps.conntrack()?.len() as u64,
                    m::CONNTRACK_MAX as u64,
                ),
                (
                    m::POLICY.to_string(),
                    self.policy_shadow.as_ref().map_or(0, |p| p.len()) as u64,
                    m::POLICY_MAX as u64,
                ),
                (
                    m::IPCACHE.to_string(),
                    maps.ipcache_entries()?.len() as u64,
                    m::IPCACHE_MAX as u64,
                ),
                (
                    m::LB_REVNAT.to_string(),
                    self.services.frontend_count() as u64,
                    m::LB_REVNAT_MAX as u64,
                ),
            ],
            endpoints: self.state.endpoints.len(),
            drops,
            uptime_secs: self.started.elapsed().as_secs(),
            policies: self.resolved.policies.len(),
            policy_compute_us: (self.resolved.compute_ms * 1000.0) as u64,
        })
    }
}
