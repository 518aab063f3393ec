//! The Services a `services` benchmark programs: N ClusterIP Services of one TCP port with three
//! endpoints each, as plain data (for the kube-proxy rule writers) and as the Kubernetes objects
//! (Service and EndpointSlice) the Plexus agent takes.
//!
//! Service `i` is `bench-svc/svc-<i>` on `10.100.0.0 + 1 + i` port 80. The last Service of a set
//! (the one measured) points at the real servers; every other one at three addresses of its own
//! in `10.200.0.0/14` that nothing answers on.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// Namespace of every Service.
pub const NAMESPACE: &str = "bench-svc";
/// The Services' port.
pub const SERVICE_PORT: u16 = 80;
/// The endpoints' port (the servers listen on it).
pub const TARGET_PORT: u16 = 8080;
/// Endpoints per Service.
pub const ENDPOINTS: usize = 3;
/// Most Services a set can hold (ClusterIPs in 10.100.0.0/15, endpoints in 10.200.0.0/14).
pub const MAX_SERVICES: usize = 80_000;

/// First ClusterIP minus one: `10.100.0.0`, outside the lab's own Service range (10.96.0.0/16).
const VIP_BASE: u32 = u32::from_be_bytes([10, 100, 0, 0]);
/// First fake endpoint address minus one.
const FAKE_BASE: u32 = u32::from_be_bytes([10, 200, 0, 0]);

/// One Service: its name, ClusterIP and endpoint addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    /// Service name (namespace [`NAMESPACE`]).
    pub name: String,
    /// ClusterIP.
    pub vip: Ipv4Addr,
    /// Endpoint addresses, serving [`TARGET_PORT`].
    pub endpoints: Vec<Ipv4Addr>,
}

/// The ClusterIP of Service `i`.
pub fn vip(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SERVICES, "service index {i} out of range");
    Ipv4Addr::from(VIP_BASE + 1 + i as u32)
}

/// Service `i` with fake endpoints.
pub fn fake(i: usize) -> Svc {
    Svc {
        name: format!("svc-{i}"),
        vip: vip(i),
        endpoints: (0..ENDPOINTS)
            .map(|j| Ipv4Addr::from(FAKE_BASE + 1 + (i * ENDPOINTS + j) as u32))
            .collect(),
    }
}

/// Service `i` of a set of `n` whose last Service points at `real`.
pub fn service(i: usize, n: usize, real: &[Ipv4Addr]) -> Svc {
    let mut s = fake(i);
    if i + 1 == n {
        s.endpoints = real.to_vec();
    }
    s
}

/// Services `from..to` of a set of `n` (the last, `n - 1`, points at `real`).
pub fn services(from: usize, to: usize, n: usize, real: &[Ipv4Addr]) -> Vec<Svc> {
    (from..to).map(|i| service(i, n, real)).collect()
}

impl Svc {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{NAMESPACE}/{}", self.name)
    }

    /// The `v1` Service: an explicit ClusterIP, no selector, one unnamed TCP port.
    pub fn service_object(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": NAMESPACE},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.vip.to_string(),
                "clusterIPs": [self.vip.to_string()],
                "ipFamilies": ["IPv4"],
                "ports": [{"port": SERVICE_PORT, "targetPort": TARGET_PORT, "protocol": "TCP"}],
            },
        })
    }

    /// Its one `discovery.k8s.io/v1` EndpointSlice: every endpoint ready.
    pub fn slice_object(&self) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-bench", self.name),
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": self.name},
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "", "port": TARGET_PORT, "protocol": "TCP"}],
        })
    }
}

/// The Service and EndpointSlice objects of `svcs`, in order.
pub fn objects(svcs: &[Svc]) -> Vec<Value> {
    svcs.iter()
        .flat_map(|s| [s.service_object(), s.slice_object()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_the_real_last_service() {
        let real = [
            Ipv4Addr::new(10, 250, 0, 20),
            Ipv4Addr::new(10, 250, 0, 21),
            Ipv4Addr::new(10, 250, 0, 22),
        ];
        let set = services(0, 3, 3, &real);
        assert_eq!(set[0].vip, Ipv4Addr::new(10, 100, 0, 1));
        assert_eq!(
            set[0].endpoints,
            [
                Ipv4Addr::new(10, 200, 0, 1),
                Ipv4Addr::new(10, 200, 0, 2),
                Ipv4Addr::new(10, 200, 0, 3)
            ]
        );
        assert_eq!(set[1].endpoints[0], Ipv4Addr::new(10, 200, 0, 4));
        assert_eq!(set[2].endpoints, real);
        assert_eq!(vip(49_999), Ipv4Addr::new(10, 100, 195, 80));
        let last = fake(MAX_SERVICES - 1);
        assert!(last.vip < Ipv4Addr::new(10, 102, 0, 0));
        assert!(last.endpoints[2] < Ipv4Addr::new(10, 204, 0, 0));
    }

    #[test]
    fn kubernetes_objects() {
        let objs = objects(&[fake(7)]);
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["spec"]["clusterIP"], "10.100.0.8");
        assert!(objs[0]["spec"].get("selector").is_none());
        assert_eq!(
            objs[1]["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-7"
        );
        assert_eq!(objs[1]["endpoints"].as_array().unwrap().len(), 3);
        assert_eq!(objs[1]["ports"][0]["port"], 8080);
    }
}
