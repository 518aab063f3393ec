//! The endpoints map: pod IP → where and how to deliver to that pod.

use crate::IpAddr6;

/// Key of the endpoints map: a pod's IP address.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct EndpointKey {
    /// The pod's address (IPv4-mapped for IPv4).
    pub ip: IpAddr6,
}

/// Value of the endpoints map: one local pod.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EndpointInfo {
    /// ifindex of the host-side veth (in the node's namespace); the redirect target.
    pub ifindex: u32,
    /// The agent's endpoint id; keys the counters map.
    pub endpoint_id: u32,
    /// MAC of the pod's interface: destination MAC of frames delivered to it.
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth: source MAC of frames delivered to the pod.
    pub host_mac: [u8; 6],
    /// Security identity of the endpoint (0 until policy assigns one).
    pub identity: u32,
    /// `ENDPOINT_F_*` bits. A u32, not a bool, so the layout has no padding.
    pub flags: u32,
}

/// The endpoint is being deleted: deliver nothing new to it.
pub const ENDPOINT_F_TERMINATING: u32 = 1;
/// Ingress has policy entries to look up.
pub const ENDPOINT_F_INGRESS_POLICY: u32 = 1 << 1;
/// Ingress is default-deny: no matching entry means drop.
pub const ENDPOINT_F_INGRESS_ENFORCED: u32 = 1 << 2;
/// Egress has policy entries to look up.
pub const ENDPOINT_F_EGRESS_POLICY: u32 = 1 << 3;
/// Egress is default-deny.
pub const ENDPOINT_F_EGRESS_ENFORCED: u32 = 1 << 4;
