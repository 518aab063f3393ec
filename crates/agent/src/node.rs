//! Node-level network set-up: the router address pods use as their gateway, and per-pod
//! routes and neighbour entries in the node's namespace.

use std::net::Ipv4Addr;

use plexus_netdev::{ip, link, NetdevError};

/// Name of the device that holds the node's router address.
pub const HOST_DEVICE: &str = "plexus_host";

/// Makes sure the router address exists on the node (idempotent).
pub fn ensure_router(gateway: Ipv4Addr) -> Result<(), NetdevError> {
    if link(None, HOST_DEVICE)?.is_none() {
        // A veth pair rather than a dummy: the dummy driver is not on every kernel.
        ip(
            None,
            &[
                "link",
                "add",
                HOST_DEVICE,
                "type",
                "veth",
                "peer",
                "name",
                "plexus_net",
            ],
        )?;
        ip(None, &["link", "set", "plexus_net", "up"])?;
    }
    ip(
        None,
        &[
            "addr",
            "replace",
            &format!("{gateway}/32"),
            "dev",
            HOST_DEVICE,
        ],
    )?;
    ip(None, &["link", "set", HOST_DEVICE, "up"])?;
    Ok(())
}

/// Route and permanent neighbour entry for a pod behind its host-side veth, so the node reaches
/// the pod without ARP and with the router address as source.
pub fn add_pod_route(
    pod: Ipv4Addr,
    gateway: Ipv4Addr,
    host_if: &str,
    pod_mac: &str,
) -> Result<(), NetdevError> {
    ip(
        None,
        &[
            "route",
            "replace",
            &format!("{pod}/32"),
            "dev",
            host_if,
            "src",
            &gateway.to_string(),
        ],
    )?;
    ip(
        None,
        &[
            "neigh",
            "replace",
            &pod.to_string(),
            "lladdr",
            pod_mac,
            "dev",
            host_if,
            "nud",
            "permanent",
        ],
    )?;
    Ok(())
}

/// Removes the pod's route; a missing route is fine (the veth may already be gone).
pub fn del_pod_route(pod: Ipv4Addr) {
    let _ = ip(None, &["route", "del", &format!("{pod}/32")]);
}

/// The ifindex of an interface in the agent's namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid C string; if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}
