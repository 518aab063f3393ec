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
    // Replies of NodePort connections leave the pods with a node address as their source
    // (reverse NAT in the pod's program); without accept_local the stack would drop them as
    // martians before routing them out.
    let _ = std::fs::write("/proc/sys/net/ipv4/conf/all/accept_local", "1");
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

/// The node's IPv4 addresses (identity `host`; without loopback ones, the NodePort frontends),
/// sorted. `getifaddrs` asks the kernel over netlink, so it answers for the agent's network
/// namespace, without starting a process.
pub fn addresses(loopback: bool) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read it in between.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null()
            && i32::from(unsafe { (*ifa.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if loopback || !ip.is_loopback() {
                out.push(std::net::IpAddr::V4(ip));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(ifap) };
    out.sort();
    out.dedup();
    out
}

/// Devices of the node that lead outside it: everything but loopback, the pods' veths and the
/// router device.
pub fn external_devices() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ending in a zero entry, freed with
    // if_freenameindex; names are C strings.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            if name != "lo" && !name.starts_with("lxc") && !name.starts_with("plexus_") {
                out.push(name);
            }
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}
