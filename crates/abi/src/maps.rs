//! Map names and capacities. The kernel programs declare their maps with these names, and the
//! loader finds and pins them by the same names.

/// Pod IP → [`crate::EndpointInfo`].
pub const ENDPOINTS: &str = "PLEXUS_ENDPOINTS";
/// Endpoint id (array index) → per-CPU [`crate::EndpointCounters`].
pub const ENDPOINT_COUNTERS: &str = "PLEXUS_EP_COUNTERS";
/// [`crate::CtKey`] → [`crate::CtEntry`] (LRU).
pub const CONNTRACK: &str = "PLEXUS_CT";
/// Drop reason code → per-CPU packet count.
pub const DROP_COUNTERS: &str = "PLEXUS_DROPS";
/// [`crate::PolicyKey`] (LPM) → [`crate::PolicyValue`].
pub const POLICY: &str = "PLEXUS_POLICY";
/// [`crate::IpcacheKey`] (LPM) → [`crate::IpcacheValue`].
pub const IPCACHE: &str = "PLEXUS_IPCACHE";

/// Capacity of the endpoints map (pods on one node); endpoint ids are below it.
pub const ENDPOINTS_MAX: u32 = 4096;
/// Capacity of the conntrack map.
pub const CONNTRACK_MAX: u32 = 262_144;
/// Size of the drop counters array: indexed by reason code (a u8).
pub const DROP_COUNTERS_MAX: u32 = 256;

/// Ring buffer of [`crate::Event`]s.
pub const EVENTS: &str = "PLEXUS_EVENTS";
/// Events lost because the ring buffer was full (per-CPU counter, index 0).
pub const EVENTS_LOST: &str = "PLEXUS_EVENTS_LOST";
/// [`crate::MonitorConfig`] at index 0.
pub const CONFIG: &str = "PLEXUS_CONFIG";
/// Endpoint id → [`crate::CaptureSpec`].
pub const CAPTURE: &str = "PLEXUS_CAPTURE";
/// Ring buffer size in bytes (a power of two).
pub const EVENTS_BYTES: u32 = 4 << 20;

/// Capacity of the policy map (entries over all endpoints of a node).
pub const POLICY_MAX: u32 = 262_144;
/// Capacity of the ipcache.
pub const IPCACHE_MAX: u32 = 65_536;

/// [`crate::LbServiceKey`] → [`crate::LbServiceValue`]: frontends and their backend slots.
pub const LB_SERVICES: &str = "PLEXUS_LB_SERVICES";
/// Backend id → [`crate::LbBackend`].
pub const LB_BACKENDS: &str = "PLEXUS_LB_BACKENDS";
/// Frontend id → [`crate::LbRevNat`].
pub const LB_REVNAT: &str = "PLEXUS_LB_REVNAT";
/// Original tuple of a tc-translated flow ([`crate::CtKey`]) → [`crate::LbFlow`] (LRU).
pub const LB_FLOWS: &str = "PLEXUS_LB_FLOWS";
/// [`crate::LbAffinityKey`] → [`crate::LbAffinityValue`] (LRU).
pub const LB_AFFINITY: &str = "PLEXUS_LB_AFFINITY";
/// Frontend id → [`crate::MaglevTable`].
pub const LB_MAGLEV: &str = "PLEXUS_LB_MAGLEV";
/// (socket, backend) → [`crate::LbSockRev`] (LRU): what `recvmsg`/`getpeername` show.
pub const LB_SOCK_REV: &str = "PLEXUS_LB_SOCK_REV";
/// (socket, frontend) → backend id (LRU): one backend per unconnected UDP flow.
pub const LB_SOCK_FWD: &str = "PLEXUS_LB_SOCK_FWD";

/// Capacity of the services map (frontends plus backend slots).
pub const LB_SERVICES_MAX: u32 = 524_288;
/// Capacity of the backends map.
pub const LB_BACKENDS_MAX: u32 = 262_144;
/// Capacity of the reverse-NAT map (frontends).
pub const LB_REVNAT_MAX: u32 = 131_072;
/// Capacity of the translated-flows map.
pub const LB_FLOWS_MAX: u32 = 131_072;
/// Capacity of the affinity map.
pub const LB_AFFINITY_MAX: u32 = 65_536;
/// Capacity of the Maglev map (services using Maglev; allocated on demand).
pub const LB_MAGLEV_MAX: u32 = 1024;
/// Capacity of each socket map.
pub const LB_SOCK_MAX: u32 = 65_536;

/// Every map name, in the order the CLI shows them.
pub const ALL: [&str; 18] = [
    ENDPOINTS,
    ENDPOINT_COUNTERS,
    CONNTRACK,
    DROP_COUNTERS,
    POLICY,
    IPCACHE,
    EVENTS,
    EVENTS_LOST,
    CONFIG,
    CAPTURE,
    LB_SERVICES,
    LB_BACKENDS,
    LB_REVNAT,
    LB_FLOWS,
    LB_AFFINITY,
    LB_MAGLEV,
    LB_SOCK_REV,
    LB_SOCK_FWD,
];

/// Names of the kernel programs (the function names in the object file).
pub mod programs {
    /// tc ingress of a pod's host-side veth: packets leaving the pod.
    pub const FROM_CONTAINER: &str = "plexus_from_container";
    /// tc egress of a pod's host-side veth: packets the stack delivers to the pod.
    pub const TO_CONTAINER: &str = "plexus_to_container";
    /// tc ingress of the node's external devices: NodePort, LoadBalancer and external IPs.
    pub const FROM_NETDEV: &str = "plexus_from_netdev";
    /// cgroup `connect4`: socket-level load balancing of connected sockets.
    pub const SOCK_CONNECT4: &str = "plexus_sock_connect4";
    /// cgroup `sendmsg4`: socket-level load balancing of unconnected UDP.
    pub const SOCK_SENDMSG4: &str = "plexus_sock_sendmsg4";
    /// cgroup `recvmsg4`: UDP answers appear to come from the service.
    pub const SOCK_RECVMSG4: &str = "plexus_sock_recvmsg4";
    /// cgroup `getpeername4`: the peer of a balanced socket is the service.
    pub const SOCK_GETPEERNAME4: &str = "plexus_sock_getpeername4";
}
