//! Events the datapath sends to userspace through the ring buffer: traces (a packet forwarded,
//! with its observation point), drops (with Cilium's reason), policy verdicts and captured
//! packets. Type and observation-point numbers are Cilium's, so Hubble's tooling reads them.

use crate::IpAddr6;

/// A dropped packet (Cilium's `CILIUM_NOTIFY_DROP`).
pub const EVENT_DROP: u8 = 1;
/// A forwarded packet (`CILIUM_NOTIFY_TRACE`).
pub const EVENT_TRACE: u8 = 4;
/// A policy decision on a new connection (`CILIUM_NOTIFY_POLICY_VERDICT`).
pub const EVENT_POLICY_VERDICT: u8 = 5;
/// A packet copied for `plexus capture` (`CILIUM_NOTIFY_CAPTURE`).
pub const EVENT_CAPTURE: u8 = 6;

/// Observation points (Cilium's `enum trace_point`; Hubble maps `TO_LXC` to `TO_ENDPOINT`).
pub mod point {
    /// Delivered to a local endpoint.
    pub const TO_LXC: u8 = 0;
    /// Handed to the node's stack.
    pub const TO_STACK: u8 = 3;
    /// Sent into the overlay.
    pub const TO_OVERLAY: u8 = 4;
    /// Sent by a local endpoint.
    pub const FROM_LXC: u8 = 5;
    /// Arrived from the node's stack.
    pub const FROM_STACK: u8 = 8;
}

/// Bytes of the packet carried in an event (headers, for decoding and capture).
pub const EVENT_DATA_LEN: usize = 128;

/// Policy verdict event subtypes.
pub mod verdict {
    /// Allowed.
    pub const ALLOWED: u8 = 1;
    /// Dropped.
    pub const DENIED: u8 = 2;
}

/// Direction of a policy verdict (matches the policy map's direction byte).
pub const EVENT_F_EGRESS: u8 = 1;
/// The packet is a reply of a tracked connection.
pub const EVENT_F_REPLY: u8 = 2;
/// The packet opened a connection.
pub const EVENT_F_NEW: u8 = 4;

/// One event record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns` (monotonic).
    pub ts_ns: u64,
    /// `EVENT_*`.
    pub kind: u8,
    /// Observation point (traces), drop reason (drops), verdict (policy verdicts).
    pub subtype: u8,
    /// `EVENT_F_*` bits.
    pub flags: u8,
    /// IP protocol.
    pub proto: u8,
    /// TCP flags of the packet.
    pub tcp_flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
    /// Source identity.
    pub src_identity: u32,
    /// Destination identity.
    pub dst_identity: u32,
    /// The endpoint the event is about (source for egress, destination for ingress), 0 if none.
    pub endpoint_id: u32,
    /// The interface the program ran on.
    pub ifindex: u32,
    /// The policy rule behind a verdict or policy drop (0 = none / default deny).
    pub rule_id: u32,
    /// Length of the packet on the wire.
    pub pkt_len: u32,
    /// Source address.
    pub saddr: IpAddr6,
    /// Destination address.
    pub daddr: IpAddr6,
    /// Source port (network order).
    pub sport: u16,
    /// Destination port (network order).
    pub dport: u16,
    /// How many bytes of `data` are the packet's.
    pub cap_len: u16,
    /// Explicit padding.
    pub _pad2: u16,
    /// The packet's first bytes.
    pub data: [u8; EVENT_DATA_LEN],
}

/// Monitoring settings the agent writes into the config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// [`MONITOR_OFF`], [`MONITOR_DROPS`], [`MONITOR_AGGREGATED`] or [`MONITOR_ALL`].
    pub level: u32,
    /// Whether any capture is active (skip the capture lookup otherwise).
    pub capture: u32,
}

/// No events at all.
pub const MONITOR_OFF: u32 = 0;
/// Only drops.
pub const MONITOR_DROPS: u32 = 1;
/// Drops, plus per connection: the first packet each way, TCP flag changes and the close.
pub const MONITOR_AGGREGATED: u32 = 2;
/// Every packet.
pub const MONITOR_ALL: u32 = 3;

/// What to capture for an endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Only this port (source or destination; 0 = any).
    pub port: u16,
    /// Bytes per packet to copy (≤ [`EVENT_DATA_LEN`]).
    pub snaplen: u16,
}
