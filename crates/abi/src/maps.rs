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

/// Every map name, in the order the CLI shows them.
pub const ALL: [&str; 10] = [
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
];

/// Names of the kernel programs (the function names in the object file).
pub mod programs {
    /// tc ingress of a pod's host-side veth: packets leaving the pod.
    pub const FROM_CONTAINER: &str = "plexus_from_container";
    /// tc egress of a pod's host-side veth: packets the stack delivers to the pod.
    pub const TO_CONTAINER: &str = "plexus_to_container";
}
