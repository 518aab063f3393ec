//! Map names and capacities. The kernel programs declare their maps with these names, and the
//! loader finds and pins them by the same names.

/// Pod IP → [`crate::EndpointInfo`].
pub const ENDPOINTS: &str = "PLEXUS_ENDPOINTS";
/// Endpoint id → per-CPU [`crate::EndpointCounters`].
pub const ENDPOINT_COUNTERS: &str = "PLEXUS_EP_COUNTERS";
/// [`crate::CtKey`] → [`crate::CtEntry`] (LRU).
pub const CONNTRACK: &str = "PLEXUS_CT";
/// Drop reason code → per-CPU packet count.
pub const DROP_COUNTERS: &str = "PLEXUS_DROPS";

/// Capacity of the endpoints map (pods on one node).
pub const ENDPOINTS_MAX: u32 = 4096;
/// Capacity of the conntrack map.
pub const CONNTRACK_MAX: u32 = 262_144;
/// Size of the drop counters array: indexed by reason code (a u8).
pub const DROP_COUNTERS_MAX: u32 = 256;

/// Every map name, in the order the CLI shows them.
pub const ALL: [&str; 4] = [ENDPOINTS, ENDPOINT_COUNTERS, CONNTRACK, DROP_COUNTERS];

/// Names of the kernel programs (the function names in the object file).
pub mod programs {
    /// tc ingress of a pod's host-side veth: packets leaving the pod.
    pub const FROM_CONTAINER: &str = "plexus_from_container";
    /// tc egress of a pod's host-side veth: packets the stack delivers to the pod.
    pub const TO_CONTAINER: &str = "plexus_to_container";
}
