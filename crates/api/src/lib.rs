//! The agent's local API, spoken over its unix socket by the CNI plugin, the CLI and the lab.
//!
//! Wire format: one JSON [`Request`] per line from the client, one JSON [`Response`] per line
//! back, then the connection closes. Small and dependency-free on purpose: the CNI plugin is
//! exec'd for every pod and must start fast.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the agent up and its datapath loaded?
    Health,
    /// Agent status: programs, maps, endpoints.
    Status,
    /// Reserve an address for a container interface (idempotent per owner).
    IpamAllocate(Attachment),
    /// Create (or refresh) the endpoint of a wired-up pod interface.
    EndpointCreate(EndpointSpec),
    /// Delete an endpoint and release its address; deleting nothing succeeds.
    EndpointDelete(Attachment),
    /// One endpoint.
    EndpointGet(Attachment),
    /// Every endpoint.
    EndpointList,
    /// Delete every endpoint not in `valid` (CNI GC).
    Gc {
        /// Attachments to keep.
        valid: Vec<Attachment>,
    },
    /// Create or replace Kubernetes objects (Namespace, Pod, NetworkPolicy,
    /// CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy): all or nothing, in force when the
    /// answer comes.
    ApplyObjects {
        /// The objects, as JSON.
        objects: Vec<serde_json::Value>,
    },
    /// Delete objects by reference (absent ones are ignored).
    DeleteObjects {
        /// The objects.
        refs: Vec<ObjectRef>,
    },
    /// Check objects without applying them.
    ValidateObjects {
        /// The objects, as JSON.
        objects: Vec<serde_json::Value>,
    },
    /// Policies in force with their rules.
    PolicyGet,
    /// What policy decides for traffic from `from` to `to` (each `ns/pod` or an IP).
    PolicyTrace {
        /// Source.
        from: String,
        /// Destination.
        to: String,
        /// Destination port.
        port: u16,
        /// TCP, UDP, SCTP (or a protocol number).
        protocol: String,
    },
    /// Identities with their labels and endpoints.
    IdentityList,
    /// Copy packets of pods (by name or label) from the datapath.
    Capture(CaptureRequest),
    /// Service frontends in force with their backends.
    ServiceList,
}

/// One service frontend in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Frontend id (reverse-NAT index).
    pub id: u32,
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service port name.
    pub port_name: String,
    /// `address:port/PROTO`.
    pub frontend: String,
    /// ClusterIp, NodePort, LoadBalancer or ExternalIp.
    pub kind: String,
    /// random or maglev.
    pub algorithm: String,
    /// ClientIP affinity timeout.
    pub affinity_seconds: Option<u64>,
    /// Backends.
    pub backends: Vec<BackendView>,
}

/// One backend of a frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    /// Backend id.
    pub id: u32,
    /// `address:port`.
    pub address: String,
    /// active or terminating.
    pub state: String,
    /// Runs on this node.
    pub node_local: bool,
}

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Pods by `ns/name`.
    pub pods: Vec<String>,
    /// Pods whose labels match all of these `key=value` pairs.
    pub labels: Vec<String>,
    /// Only packets from or to this port (0 = any).
    pub port: u16,
    /// Stop after this many packets.
    pub count: usize,
    /// Bytes per packet (at most 128).
    pub snaplen: u16,
    /// Give up after this long.
    pub timeout_ms: u64,
}

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedPacket {
    /// The pod (`ns/name`) whose traffic it is.
    pub pod: String,
    /// Unix time in nanoseconds.
    pub ts_ns: u64,
    /// Length on the wire.
    pub orig_len: u32,
    /// The bytes, base64.
    pub data: String,
}

/// A reference to a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Kind.
    pub kind: String,
    /// Namespace (None for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One rule of a policy, as `plexus policy get` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    /// Where it is in the policy, e.g. `spec.ingress[0]`.
    pub rule: String,
    /// Human summary: direction, action, peers, ports.
    pub summary: String,
    /// Endpoints (`ns/pod`) it applies to now.
    pub endpoints: Vec<String>,
    /// The rule has L7 parts that are only enforced at L4 for now.
    pub l7_at_l4: bool,
}

/// One policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Directions it puts into default-deny, with the endpoints affected.
    pub enforces: Vec<String>,
    /// Its rules.
    pub rules: Vec<RuleView>,
}

/// One direction's part of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// `egress of ns/pod` or `ingress of ns/pod`.
    pub stage: String,
    /// `allowed`, `denied` (an explicit deny), `no rule allows`, or `no policy`.
    pub verdict: String,
    /// The deciding rules (`Kind ns/name rule-path`).
    pub rules: Vec<String>,
}

/// The result of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Source as resolved (`ns/pod (identity N)` or `IP (identity N)`).
    pub from: String,
    /// Destination as resolved.
    pub to: String,
    /// Overall: `allowed` or `denied`.
    pub verdict: String,
    /// The Cilium drop reason when denied (`POLICY_DENIED` or `POLICY_DENY`).
    pub drop_reason: Option<String>,
    /// Each stage.
    pub steps: Vec<TraceStep>,
}

/// One identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    /// Numeric identity.
    pub id: u32,
    /// Labels (`source:key=value`).
    pub labels: Vec<String>,
    /// Endpoints (`ns/pod`) with this identity.
    pub endpoints: Vec<String>,
}

/// A container's attachment: the CNI identity of one pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME inside the container.
    pub ifname: String,
}

impl Attachment {
    /// The IPAM owner key.
    pub fn owner(&self) -> String {
        format!("{}/{}", self.container_id, self.ifname)
    }
}

/// What the CNI plugin tells the agent once the pod's interface is wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// The attachment.
    pub attachment: Attachment,
    /// Kubernetes namespace of the pod (CNI_ARGS K8S_POD_NAMESPACE), if known.
    pub pod_namespace: String,
    /// Pod name (CNI_ARGS K8S_POD_NAME), or the container id.
    pub pod_name: String,
    /// Path of the pod's network namespace.
    pub netns: String,
    /// Host-side veth name (in the node's namespace).
    pub host_ifname: String,
    /// Host-side veth ifindex.
    pub host_ifindex: u32,
    /// Host-side veth MAC.
    pub host_mac: String,
    /// Pod-side interface MAC.
    pub pod_mac: String,
    /// The pod's IPv4 address.
    pub ipv4: String,
}

impl EndpointSpec {
    /// The pod's namespace (`default` when the runtime did not say).
    pub fn namespace(&self) -> &str {
        if self.pod_namespace.is_empty() {
            "default"
        } else {
            &self.pod_namespace
        }
    }

    /// `namespace/name` of the pod.
    pub fn pod_key(&self) -> String {
        format!("{}/{}", self.namespace(), self.pod_name)
    }
}

/// An address handed out by IPAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamLease {
    /// The pod's address.
    pub ipv4: String,
    /// Prefix length of the pod CIDR.
    pub prefix_len: u8,
    /// Gateway (the node's router address).
    pub gateway: String,
    /// The node's pod CIDR.
    pub pod_cidr: String,
}

/// State of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    /// Address reserved, datapath not yet programmed.
    WaitingForWiring,
    /// In the datapath.
    Ready,
    /// Programming failed; the agent retries.
    NotReady,
}

impl std::fmt::Display for EndpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndpointState::WaitingForWiring => "waiting-for-wiring",
            EndpointState::Ready => "ready",
            EndpointState::NotReady => "not-ready",
        })
    }
}

/// One endpoint as the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id (node-local).
    pub id: u32,
    /// The spec the CNI plugin gave.
    pub spec: EndpointSpec,
    /// State.
    pub state: EndpointState,
    /// Security identity (0 until assigned).
    #[serde(default)]
    pub identity: u32,
}

/// The agent's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// Pod CIDR.
    pub pod_cidr: String,
    /// Where the node's pins live.
    pub bpf_dir: String,
    /// Programs attached: (interface, direction, program).
    pub programs: Vec<(String, String, String)>,
    /// Map fill: (map, entries, capacity).
    pub maps: Vec<(String, u64, u64)>,
    /// Endpoint count.
    pub endpoints: usize,
    /// Drops by reason: (code, name, count).
    pub drops: Vec<(u8, String, u64)>,
    /// Seconds since this agent process started.
    pub uptime_secs: u64,
    /// Policies in force.
    #[serde(default)]
    pub policies: usize,
    /// Time the last policy computation took, in microseconds.
    #[serde(default)]
    pub policy_compute_us: u64,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Success with nothing to return.
    Ok,
    /// An address.
    Lease(IpamLease),
    /// One endpoint.
    Endpoint(Endpoint),
    /// Endpoints (a struct variant: internally tagged enums cannot carry a bare sequence).
    Endpoints {
        /// The endpoints.
        endpoints: Vec<Endpoint>,
    },
    /// Status.
    Status(Status),
    /// What an apply or delete changed, one line per object.
    Changed {
        /// `Kind ns/name created|configured|unchanged|deleted`.
        lines: Vec<String>,
        /// How long the agent took to put the change in force (compute and write the maps).
        #[serde(default)]
        elapsed_us: u64,
    },
    /// Policies.
    Policies {
        /// Policies in force.
        policies: Vec<PolicyView>,
    },
    /// A trace.
    Trace(Trace),
    /// Captured packets.
    Packets {
        /// In arrival order.
        packets: Vec<CapturedPacket>,
    },
    /// Identities.
    Identities {
        /// Every identity in use.
        identities: Vec<IdentityView>,
    },
    /// Service frontends.
    Services {
        /// Frontends in force.
        services: Vec<ServiceView>,
    },
    /// Nothing found.
    NotFound,
    /// The request failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached: the agent is not running.
    #[error("agent at {path} unreachable: {source}")]
    Unreachable {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("talking to agent at {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not valid JSON.
    #[error("bad answer from agent at {path}: {source}")]
    Decode {
        /// Socket path.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The agent said no.
    #[error("agent: {0}")]
    Agent(String),
}

/// Sends one request and waits for the answer (up to `timeout`).
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Unreachable {
        path: socket.into(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: socket.into(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|source| ClientError::Decode {
        path: socket.into(),
        source,
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let resp: Response = serde_json::from_str(&answer).map_err(|source| ClientError::Decode {
        path: socket.into(),
        source,
    })?;
    match resp {
        Response::Error { message } => Err(ClientError::Agent(message)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_tagged_json() {
        let r = Request::EndpointDelete(Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"endpoint_delete","container_id":"c1","ifname":"eth0"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let e = serde_json::to_string(&Response::Error {
            message: "x".into(),
        })
        .unwrap();
        assert_eq!(e, r#"{"result":"error","message":"x"}"#);
        // Every response variant must serialise (a serde failure would close the connection).
        let l = serde_json::to_string(&Response::Endpoints { endpoints: vec![] }).unwrap();
        assert_eq!(l, r#"{"result":"endpoints","endpoints":[]}"#);
    }
}
