//! The desired load-balancing state: every frontend of every Service with its backends, from
//! Services, EndpointSlices, LoadBalancer pools, the node, and the previous allocations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::endpoints::{candidates, index_slices, Candidate};
use crate::ids;
use crate::pool::{allocate, LbRequest, ValidPool};
use crate::service::{parse_service, ParsedPort, ParsedService, ServiceType};
use crate::{
    Backend, BackendId, BackendKey, Frontend, FrontendKey, FrontendKind, IpFamily, LbAllocations,
    LbError, LbIssue, LbPool, LbState, NodeInfo, ServiceEntry, ServiceId,
};

/// Computes every frontend and its backends, as kube-proxy and Cilium do.
///
/// - **Frontends**, per Service port: each cluster IP (ClusterIP); for `type: NodePort` and
///   `LoadBalancer`, the `nodePort` on each node address of the Service's families and on the
///   wildcard address of each family (NodePort); for `type: LoadBalancer`, the addresses of
///   `status.loadBalancer.ingress` (except `ipMode: Proxy`), or when there are none, addresses
///   allocated from the matching pool (LoadBalancer); each of `spec.externalIPs` (ExternalIP).
///   Headless and `ExternalName` Services, and Services labelled with
///   [`crate::SERVICE_PROXY_NAME_LABEL`], have none.
/// - **Backends** come from the EndpointSlices labelled [`crate::SERVICE_NAME_LABEL`] with the
///   Service's name in its namespace, for the slice port of the same name and protocol; ready
///   endpoints are active, serving and terminating ones are terminating, others are left out. A
///   frontend only has backends of its address family. `externalTrafficPolicy: Local` keeps only
///   node-local backends on external frontends, `internalTrafficPolicy: Local` on ClusterIP ones.
/// - **Allocations** in `previous` are kept: a frontend, a backend and a Service's LoadBalancer
///   address keep their ids and address while they exist; new ones get the lowest free id or
///   address. The result's [`LbState::allocations`] is the `previous` of the next call.
/// - **Conflicts**: when two Services claim one frontend, the older Service (by creation time,
///   then namespace and name) keeps it and the conflict is reported in [`LbState::issues`].
///
/// Any invalid input fails the whole computation with an error naming the object and field.
pub fn desired(
    services: &[Service],
    slices: &[EndpointSlice],
    pools: &[LbPool],
    node: &NodeInfo,
    previous: &LbAllocations,
) -> Result<LbState, LbError> {
    let pools = pools
        .iter()
        .map(ValidPool::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut parsed = Vec::new();
    for service in services {
        if let Some(p) = parse_service(service)? {
            parsed.push(p);
        }
    }
    parsed.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    let index = index_slices(slices)?;

    let requests: Vec<LbRequest<'_>> = parsed
        .iter()
        .filter(|s| s.service_type == ServiceType::LoadBalancer)
        .map(|s| LbRequest {
            service: &s.name,
            labels: s.labels,
            families: &s.families,
            ingress: &s.ingress_ips,
            allocate: s.pool_allocation,
        })
        .collect();
    let (addresses, mut issues) = allocate(&requests, &pools, &previous.addresses);

    let mut drafts: Vec<Draft<'_>> = Vec::new();
    let mut owners: HashMap<FrontendKey, usize> = HashMap::new();
    for service in &parsed {
        let service_slices = index
            .get(&(service.name.namespace.as_str(), service.name.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let lb_addresses: Vec<IpAddr> = if service.ingress_ips.is_empty() {
            addresses
                .get(&service.name)
                .into_iter()
                .flatten()
                .map(|a| a.address)
                .collect()
        } else {
            service.ingress_ips.clone()
        };
        for port in &service.ports {
            let all = candidates(service_slices, port, &node.name);
            for frontend in frontends(service, port, node, &lb_addresses) {
                let key = frontend.key();
                if let Some(&owner) = owners.get(&key) {
                    let kept = &drafts[owner].service.name;
                    if *kept != service.name {
                        issues.push(LbIssue::FrontendConflict {
                            frontend: key,
                            kept: kept.clone(),
                            dropped: service.name.clone(),
                        });
                    }
                    continue;
                }
                let local_only = if frontend.kind.is_external() {
                    service.external_traffic_local
                } else {
                    service.internal_traffic_local
                };
                let family = IpFamily::of(&frontend.address);
                let backends = all
                    .iter()
                    .filter(|c| IpFamily::of(&c.address) == family && (!local_only || c.node_local))
                    .cloned()
                    .collect();
                owners.insert(key, drafts.len());
                drafts.push(Draft {
                    service,
                    port,
                    frontend,
                    backends,
                });
            }
        }
    }

    let frontend_keys: BTreeSet<FrontendKey> = owners.keys().copied().collect();
    let service_ids = ids::assign(
        &frontend_keys,
        |k| previous.service_ids.get(k).map(|id| id.0),
        "service",
    )?;
    let backend_keys: BTreeSet<BackendKey> = drafts
        .iter()
        .flat_map(|d| d.backends.iter().map(|c| backend_key(&d.frontend, c)))
        .collect();
    let backend_ids = ids::assign(
        &backend_keys,
        |k| previous.backend_ids.get(k).map(|id| id.0),
        "backend",
    )?;

    let mut entries: Vec<ServiceEntry> = drafts
        .into_iter()
        .map(|d| {
            let mut backends: Vec<Backend> = d
                .backends
                .into_iter()
                .map(|c| Backend {
                    id: BackendId(backend_ids[&backend_key(&d.frontend, &c)]),
                    address: c.address,
                    port: c.port,
                    state: c.state,
                    node_local: c.node_local,
                    zone: c.zone,
                })
                .collect();
            backends.sort_by_key(|b| b.id);
            ServiceEntry {
                id: ServiceId(service_ids[&d.frontend.key()]),
                namespace: d.service.name.namespace.clone(),
                name: d.service.name.name.clone(),
                port_name: d.port.name.clone(),
                frontend: d.frontend,
                backends,
                algorithm: d.service.algorithm,
                affinity: d.service.affinity,
                external_traffic_local: d.service.external_traffic_local,
                internal_traffic_local: d.service.internal_traffic_local,
            }
        })
        .collect();
    entries.sort_by_key(|e| e.id);

    Ok(LbState {
        services: entries,
        allocations: LbAllocations {
            addresses,
            service_ids: service_ids
                .into_iter()
                .map(|(k, id)| (k, ServiceId(id)))
                .collect(),
            backend_ids: backend_ids
                .into_iter()
                .map(|(k, id)| (k, BackendId(id)))
                .collect::<BTreeMap<_, _>>(),
        },
        issues,
    })
}

/// A frontend before it has ids.
struct Draft<'a> {
    service: &'a ParsedService<'a>,
    port: &'a ParsedPort,
    frontend: Frontend,
    backends: Vec<Candidate>,
}

fn backend_key(frontend: &Frontend, c: &Candidate) -> BackendKey {
    BackendKey {
        address: c.address,
        port: c.port,
        protocol: frontend.protocol,
    }
}

/// The frontends of one Service port: cluster IPs, NodePorts, LoadBalancer addresses, external
/// IPs, in that order.
fn frontends(
    service: &ParsedService<'_>,
    port: &ParsedPort,
    node: &NodeInfo,
    lb_addresses: &[IpAddr],
) -> Vec<Frontend> {
    let make = |address: IpAddr, number: u16, kind: FrontendKind| Frontend {
        address,
        port: number,
        protocol: port.protocol,
        kind,
    };
    let mut out: Vec<Frontend> = service
        .cluster_ips
        .iter()
        .map(|&a| make(a, port.port, FrontendKind::ClusterIp))
        .collect();
    if let (ServiceType::NodePort | ServiceType::LoadBalancer, Some(node_port)) =
        (service.service_type, port.node_port)
    {
        for address in &node.addresses {
            if service.families.contains(&IpFamily::of(address)) {
                out.push(make(*address, node_port, FrontendKind::NodePort));
            }
        }
        for family in &service.families {
            out.push(make(
                family.unspecified(),
                node_port,
                FrontendKind::NodePort,
            ));
        }
    }
    if service.service_type == ServiceType::LoadBalancer {
        out.extend(
            lb_addresses
                .iter()
                .map(|&a| make(a, port.port, FrontendKind::LoadBalancer)),
        );
    }
    out.extend(
        service
            .external_ips
            .iter()
            .map(|&a| make(a, port.port, FrontendKind::ExternalIp)),
    );
    out
}
