//! The load-balancing model: frontends, backends, service entries, ids, and the computed state
//! with the allocations that the next computation takes as its input.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The IANA protocol number, as the datapath sees it in the IP header.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// Parses a Kubernetes protocol name; absent means TCP.
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("TCP") => Ok(Proto::Tcp),
            Some("UDP") => Ok(Proto::Udp),
            Some("SCTP") => Ok(Proto::Sctp),
            Some(other) => Err(format!(
                "unsupported protocol {other:?} (expected TCP, UDP or SCTP)"
            )),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(address: &IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The unspecified address of the family (`0.0.0.0` or `::`): the NodePort wildcard frontend.
    pub fn unspecified(self) -> IpAddr {
        match self {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// How a frontend is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// The Service's cluster IP.
    ClusterIp,
    /// A node address (or the wildcard address) and the port's `nodePort`.
    NodePort,
    /// A LoadBalancer ingress address, from the Service's status or allocated from a pool.
    LoadBalancer,
    /// An address of `spec.externalIPs`.
    ExternalIp,
}

impl FrontendKind {
    /// Whether traffic to this frontend comes from outside the cluster, so that
    /// `externalTrafficPolicy` (rather than `internalTrafficPolicy`) applies to it.
    pub fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

/// An address, port and protocol that clients connect to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The address (`0.0.0.0` / `::` for the NodePort wildcard).
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Proto,
    /// How it is reached.
    pub kind: FrontendKind,
}

impl Frontend {
    /// The frontend's identity in the datapath's service map (the kind is not part of it).
    pub fn key(&self) -> FrontendKey {
        FrontendKey {
            address: self.address,
            port: self.port,
            protocol: self.protocol,
        }
    }
}

/// A frontend as the datapath's service map keys it: one per address, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendKey {
    /// The address.
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Proto,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.protocol),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.protocol),
        }
    }
}

/// A backend as the datapath's backend map keys it: one per address, port and protocol, shared
/// by every frontend that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// The address.
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Proto,
}

impl BackendKey {
    /// The bytes Maglev hashes for this backend: the address octets (4 or 16), the port
    /// (big-endian) and the IANA protocol number. The same on every node, so every node builds
    /// the same Maglev table for the same backends.
    pub fn hash_key(&self) -> Vec<u8> {
        let mut key = match self.address {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        key.extend_from_slice(&self.port.to_be_bytes());
        key.push(self.protocol.number());
        key
    }
}

/// The numeric id of a frontend (the service map's id and the reverse-NAT index). Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u32);

/// The numeric id of a backend in the datapath's backend map. Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u32);

/// Whether a backend takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendState {
    /// Ready: selected for new connections.
    Active,
    /// Serving but terminating: keeps its existing connections and gets no new ones (unless the
    /// frontend has no active backend at all, see [`crate::slot_list`]).
    Terminating,
}

/// One backend of a frontend. Endpoints that are neither ready nor serving-and-terminating are
/// not backends at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its id in the backend map.
    pub id: BackendId,
    /// The endpoint's address.
    pub address: IpAddr,
    /// The port on the endpoint (the resolved `targetPort`).
    pub port: u16,
    /// Whether it takes new connections.
    pub state: BackendState,
    /// Whether the endpoint runs on this node (`nodeName` is this node's name).
    pub node_local: bool,
    /// The endpoint's zone, when the EndpointSlice gives one.
    pub zone: Option<String>,
}

/// How the datapath picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// A random backend among the active ones (the default).
    #[default]
    Random,
    /// A Maglev consistent-hashing table over the active backends.
    Maglev,
}

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceName {
    /// A name from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One frontend of one Service port, with the backends it balances over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Its id (stable across recomputations, see [`LbAllocations`]).
    pub id: ServiceId,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port's name (empty for an unnamed single port).
    pub port_name: String,
    /// Where clients connect.
    pub frontend: Frontend,
    /// The backends, sorted by id; empty means the datapath drops new connections.
    pub backends: Vec<Backend>,
    /// How new connections pick a backend.
    pub algorithm: Algorithm,
    /// `sessionAffinity: ClientIP`: how long a client stays with its backend.
    pub affinity: Option<Duration>,
    /// `externalTrafficPolicy: Local` (applied to this entry if its frontend is external).
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local` (applied to this entry if it is a ClusterIP frontend).
    pub internal_traffic_local: bool,
}

impl ServiceEntry {
    /// The Service this entry belongs to.
    pub fn service(&self) -> ServiceName {
        ServiceName::new(&self.namespace, &self.name)
    }

    /// The backend map key of one of this entry's backends.
    pub fn backend_key(&self, backend: &Backend) -> BackendKey {
        BackendKey {
            address: backend.address,
            port: backend.port,
            protocol: self.frontend.protocol,
        }
    }
}

/// The node this computation is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// The node's name, compared with the endpoints' `nodeName`.
    pub name: String,
    /// The node's addresses, each a NodePort frontend.
    pub addresses: Vec<IpAddr>,
}

/// An address allocated to a Service from a pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolAddress {
    /// The pool's name.
    pub pool: String,
    /// The address.
    pub address: IpAddr,
}

/// Everything allocated by a computation, given back to the next one so that nothing already
/// allocated moves: LoadBalancer addresses, frontend ids and backend ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LbAllocations {
    /// LoadBalancer addresses, per Service (at most one per address family).
    pub addresses: BTreeMap<ServiceName, Vec<PoolAddress>>,
    /// Frontend ids.
    pub service_ids: BTreeMap<FrontendKey, ServiceId>,
    /// Backend ids.
    pub backend_ids: BTreeMap<BackendKey, BackendId>,
}

/// Something that kept part of a Service out of the datapath without being invalid input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbIssue {
    /// No matching pool had a free address of this family for a LoadBalancer Service.
    NoAddress {
        /// The Service.
        service: ServiceName,
        /// The family it wanted an address of.
        family: IpFamily,
    },
    /// Two Services claim the same frontend; the older one (then the first by name) keeps it.
    FrontendConflict {
        /// The frontend.
        frontend: FrontendKey,
        /// The Service that has it.
        kept: ServiceName,
        /// The Service that does not.
        dropped: ServiceName,
    },
}

/// The desired load-balancing state of the node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LbState {
    /// Every frontend with its backends, sorted by id.
    pub services: Vec<ServiceEntry>,
    /// The allocations to give to the next computation.
    pub allocations: LbAllocations,
    /// What was left out, and why.
    pub issues: Vec<LbIssue>,
}

impl LbState {
    /// The backend map's contents: every backend used by some frontend, by id.
    pub fn backends(&self) -> BTreeMap<BackendId, BackendKey> {
        self.services
            .iter()
            .flat_map(|e| e.backends.iter().map(move |b| (b.id, e.backend_key(b))))
            .collect()
    }

    /// The entry of a frontend.
    pub fn entry(&self, frontend: &FrontendKey) -> Option<&ServiceEntry> {
        let id = self.allocations.service_ids.get(frontend)?;
        self.services
            .binary_search_by_key(id, |e| e.id)
            .ok()
            .map(|i| &self.services[i])
    }
}
