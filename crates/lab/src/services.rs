//! The API server's part in Services, done by the lab: cluster IPs from the Service CIDR, node
//! ports from the node-port range, the defaults the API server writes, and the refusal of
//! addresses or ports another Service holds. Pure: from the Services in force and the ones being
//! applied, it computes the objects to send, or an error naming file, object and field.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::manifest::{ManifestError, Origin, Source, NODE_PORT_RANGE};
use crate::state::ServiceState;

/// The Service CIDR cluster IPs come from (the API server's default `--service-cluster-ip-range`).
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);

/// The first address handed out (`.0` is the network, `.1` is kept for the `kubernetes`
/// Service, as in a real cluster).
const FIRST_OFFSET: u32 = 2;

/// A Service being applied: its key `ns/name`, the decoded object and where it was declared.
#[derive(Debug, Clone)]
pub struct Applied<'a> {
    /// `ns/name`.
    pub key: String,
    /// The validated Service.
    pub service: &'a Service,
    /// Where it was declared (for errors).
    pub source: &'a Source,
}

/// Whether `ip` is in the Service CIDR and not its network or broadcast address.
fn in_service_cidr(ip: Ipv4Addr) -> bool {
    let (net, len) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - u32::from(len));
    let host = u32::from(ip) & !mask;
    u32::from(ip) & mask == u32::from(net) && host != 0 && host != !mask
}

/// The `n`th address of the Service CIDR, if it is a usable host address.
fn nth_address(n: u32) -> Option<Ipv4Addr> {
    let (net, len) = SERVICE_CIDR;
    let size = 1u32 << (32 - u32::from(len));
    (n < size - 1 && n > 0).then(|| Ipv4Addr::from(u32::from(net) + n))
}

/// What is taken: cluster IPs and node ports, each with the `ns/name` of its Service.
#[derive(Debug, Default)]
struct Holdings {
    ips: BTreeMap<Ipv4Addr, String>,
    node_ports: BTreeMap<u16, String>,
}

impl Holdings {
    fn of(existing: &BTreeMap<String, ServiceState>) -> Self {
        let mut h = Holdings::default();
        for (key, s) in existing {
            if let Some(ip) = s.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                h.ips.insert(ip, key.clone());
            }
            for (port, _) in s.node_ports() {
                h.node_ports.insert(port, key.clone());
            }
        }
        h
    }

    fn release(&mut self, key: &str) {
        self.ips.retain(|_, k| k != key);
        self.node_ports.retain(|_, k| k != key);
    }
}

/// Allocates and defaults every Service in `applied`, in order, against the Services in force
/// (`existing`, by `ns/name`). A re-applied Service keeps its cluster IP and node ports. The
/// first conflict aborts: nothing is returned, so nothing changes.
pub fn allocate(
    existing: &BTreeMap<String, ServiceState>,
    applied: &[Applied<'_>],
) -> Result<Vec<(String, ServiceState)>, ManifestError> {
    let mut held = Holdings::of(existing);
    let mut out = Vec::with_capacity(applied.len());
    for a in applied {
        held.release(&a.key);
        let state = allocate_one(existing.get(&a.key), a, &mut held)?;
        out.push((a.key.clone(), state));
    }
    Ok(out)
}

/// One Service: cluster IP, node ports, defaults.
fn allocate_one(
    old: Option<&ServiceState>,
    a: &Applied<'_>,
    held: &mut Holdings,
) -> Result<ServiceState, ManifestError> {
    let invalid = |field: &str, message: String| ManifestError::Invalid {
        at: Box::new(Origin {
            source: a.source.clone(),
            object: Some(format!("Service {}", a.key)),
        }),
        field: field.to_owned(),
        message,
    };
    let mut svc = a.service.clone();
    if let Some((ns, _)) = a.key.split_once('/') {
        svc.metadata.namespace = Some(ns.to_owned());
    }
    let spec = svc.spec.get_or_insert_with(Default::default);
    let ty = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_owned())
        .clone();
    let old_ip = old.and_then(|o| o.cluster_ip.clone());
    let requested = spec.cluster_ip.clone().unwrap_or_default();
    let cluster_ip: Option<Ipv4Addr> = if ty == "ExternalName" {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        None
    } else if requested == "None" {
        if let Some(old) = &old_ip {
            return Err(invalid(
                "spec.clusterIP",
                format!("invalid value \"None\": field is immutable (the Service has {old})"),
            ));
        }
        spec.cluster_ips = Some(vec!["None".to_owned()]);
        None
    } else if !requested.is_empty() {
        let ip = match requested.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if in_service_cidr(ip) => ip,
            _ => {
                return Err(invalid(
                    "spec.clusterIP",
                    format!(
                        "invalid value {requested:?}: provided IP is not in the valid range; \
                         the range of valid IPs is {}/{}",
                        SERVICE_CIDR.0, SERVICE_CIDR.1
                    ),
                ))
            }
        };
        if let Some(old) = old_ip.as_deref().filter(|o| *o != requested) {
            return Err(invalid(
                "spec.clusterIP",
                format!("invalid value {requested:?}: field is immutable (the Service has {old})"),
            ));
        }
        if let Some(owner) = held.ips.get(&ip) {
            return Err(invalid(
                "spec.clusterIP",
                format!(
                    "invalid value {requested:?}: provided IP is already allocated \
                     (to Service {owner})"
                ),
            ));
        }
        Some(ip)
    } else if let Some(ip) = old_ip.as_deref().and_then(|o| o.parse::<Ipv4Addr>().ok()) {
        Some(ip)
    } else {
        let free = (FIRST_OFFSET..)
            .map_while(nth_address)
            .find(|ip| !held.ips.contains_key(ip))
            .ok_or_else(|| {
                invalid(
                    "spec.clusterIP",
                    format!(
                        "no address left in the Service CIDR {}/{}",
                        SERVICE_CIDR.0, SERVICE_CIDR.1
                    ),
                )
            })?;
        Some(free)
    };
    if let Some(ip) = cluster_ip {
        held.ips.insert(ip, a.key.clone());
        spec.cluster_ip = Some(ip.to_string());
        spec.cluster_ips = Some(vec![ip.to_string()]);
    }
    if ty != "ExternalName" {
        spec.ip_families = Some(vec!["IPv4".to_owned()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_owned());
    }
    spec.session_affinity
        .get_or_insert_with(|| "None".to_owned());
    if ty != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    let external = matches!(ty.as_str(), "NodePort" | "LoadBalancer");
    if external {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false));
    // Node ports the old object held, by (port, protocol), for re-use.
    let old_node_ports: BTreeMap<(i64, String), u16> = old
        .and_then(|o| o.object.pointer("/spec/ports"))
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p.get("port")?.as_i64()?;
            let proto = p.get("protocol").and_then(|v| v.as_str()).unwrap_or("TCP");
            let node_port = u16::try_from(p.get("nodePort")?.as_u64()?).ok()?;
            Some(((port, proto.to_owned()), node_port))
        })
        .collect();
    for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
        let field = format!("spec.ports[{i}].nodePort");
        let protocol = port
            .protocol
            .get_or_insert_with(|| "TCP".to_owned())
            .clone();
        port.target_port.get_or_insert(IntOrString::Int(port.port));
        if !external {
            continue;
        }
        let wanted = port
            .node_port
            .filter(|n| *n != 0)
            .and_then(|n| u16::try_from(n).ok());
        let node_port = match wanted {
            Some(n) => {
                if let Some(owner) = held.node_ports.get(&n).filter(|o| **o != a.key) {
                    return Err(invalid(
                        &field,
                        format!("invalid value {n}: provided port is already allocated (to Service {owner})"),
                    ));
                }
                Some(n)
            }
            None if !wants_node_ports => None,
            None => match old_node_ports.get(&(i64::from(port.port), protocol)) {
                Some(n) if held.node_ports.get(n).is_none_or(|o| *o == a.key) => Some(*n),
                _ => Some(
                    NODE_PORT_RANGE
                        .filter_map(|n| u16::try_from(n).ok())
                        .find(|n| !held.node_ports.contains_key(n))
                        .ok_or_else(|| {
                            invalid(
                                &field,
                                format!(
                                    "no node port left in {}-{}",
                                    NODE_PORT_RANGE.start(),
                                    NODE_PORT_RANGE.end()
                                ),
                            )
                        })?,
                ),
            },
        };
        if let Some(n) = node_port {
            held.node_ports.insert(n, a.key.clone());
            port.node_port = Some(i32::from(n));
        }
    }
    let object = serde_json::to_value(&svc).map_err(|e| invalid("", e.to_string()))?;
    Ok(ServiceState {
        cluster_ip: cluster_ip.map(|ip| ip.to_string()),
        object,
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::manifest::{parse_str, Object};

    fn services(text: &str) -> Vec<(String, Service, Source)> {
        parse_str(Path::new("svc.yaml"), text)
            .expect("valid manifests")
            .into_iter()
            .filter_map(|l| match l.object {
                Object::Service(s) => {
                    let key = format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref().unwrap_or("default"),
                        s.metadata.name.as_deref().unwrap_or_default()
                    );
                    Some((key, s, l.source))
                }
                _ => None,
            })
            .collect()
    }

    fn run(
        existing: &BTreeMap<String, ServiceState>,
        text: &str,
    ) -> Result<Vec<(String, ServiceState)>, ManifestError> {
        let svcs = services(text);
        let applied: Vec<Applied<'_>> = svcs
            .iter()
            .map(|(key, service, source)| Applied {
                key: key.clone(),
                service,
                source,
            })
            .collect();
        allocate(existing, &applied)
    }

    fn apply(existing: &mut BTreeMap<String, ServiceState>, text: &str) -> Vec<String> {
        let out = run(existing, text).expect("allocation");
        let keys = out.iter().map(|(k, _)| k.clone()).collect();
        existing.extend(out);
        keys
    }

    fn svc(name: &str, ty: &str, extra_spec: &str, ports: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  selector:\n    app: web\n{extra_spec}  ports:\n{ports}---\n"
        )
    }

    const ONE_PORT: &str = "  - port: 80\n    targetPort: 8080\n";

    fn ip(st: &BTreeMap<String, ServiceState>, key: &str) -> String {
        st[key].cluster_ip.clone().expect("cluster IP")
    }

    #[test]
    fn cluster_ips_are_allocated_skipping_network_and_first() {
        let mut st = BTreeMap::new();
        apply(
            &mut st,
            &(svc("a", "ClusterIP", "", ONE_PORT) + &svc("b", "ClusterIP", "", ONE_PORT)),
        );
        assert_eq!(ip(&st, "default/a"), "10.96.0.2");
        assert_eq!(ip(&st, "default/b"), "10.96.0.3");
        let spec = &st["default/a"].object["spec"];
        assert_eq!(spec["clusterIP"], "10.96.0.2");
        assert_eq!(spec["clusterIPs"], serde_json::json!(["10.96.0.2"]));
        assert_eq!(spec["ipFamilies"], serde_json::json!(["IPv4"]));
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 8080);
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(st["default/a"].object["kind"], "Service");
        assert_eq!(st["default/a"].object["metadata"]["namespace"], "default");
        assert!(spec["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn reapplied_services_keep_their_addresses() {
        let mut st = BTreeMap::new();
        apply(
            &mut st,
            &(svc("a", "ClusterIP", "", ONE_PORT) + &svc("b", "NodePort", "", ONE_PORT)),
        );
        let (a, b) = (ip(&st, "default/a"), ip(&st, "default/b"));
        let b_port = st["default/b"].node_ports();
        assert_eq!(b_port, [(30000, "TCP".to_owned())]);
        // Re-applied in the other order, with a new Service in between: nothing moves.
        apply(
            &mut st,
            &(svc("b", "NodePort", "", ONE_PORT)
                + &svc("c", "NodePort", "", ONE_PORT)
                + &svc("a", "ClusterIP", "", ONE_PORT)),
        );
        assert_eq!(ip(&st, "default/a"), a);
        assert_eq!(ip(&st, "default/b"), b);
        assert_eq!(st["default/b"].node_ports(), b_port);
        assert_eq!(ip(&st, "default/c"), "10.96.0.4");
        assert_eq!(st["default/c"].node_ports(), [(30001, "TCP".to_owned())]);
        // A freed address is reused by a later Service.
        st.remove("default/a");
        apply(&mut st, &svc("d", "ClusterIP", "", ONE_PORT));
        assert_eq!(ip(&st, "default/d"), a);
    }

    #[test]
    fn node_ports_are_unique_and_explicit_ones_kept() {
        let mut st = BTreeMap::new();
        let ports = "  - name: http\n    port: 80\n    nodePort: 30000\n  - name: dns\n    port: 53\n    protocol: UDP\n  - name: dnt\n    port: 53\n";
        apply(&mut st, &svc("a", "LoadBalancer", "", ports));
        let mut got = st["default/a"].node_ports();
        got.sort();
        assert_eq!(
            got,
            [
                (30000, "TCP".to_owned()),
                (30001, "UDP".to_owned()),
                (30002, "TCP".to_owned())
            ]
        );
        // allocateLoadBalancerNodePorts: false allocates none.
        apply(
            &mut st,
            &svc(
                "b",
                "LoadBalancer",
                "  allocateLoadBalancerNodePorts: false\n",
                ONE_PORT,
            ),
        );
        assert!(st["default/b"].node_ports().is_empty());
    }

    #[test]
    fn collisions_are_refused_naming_file_object_and_field() {
        let mut st = BTreeMap::new();
        apply(
            &mut st,
            &svc("a", "NodePort", "", "  - port: 80\n    nodePort: 31000\n"),
        );
        let a_ip = ip(&st, "default/a");
        let err = run(
            &st,
            &svc(
                "b",
                "ClusterIP",
                &format!("  clusterIP: {a_ip}\n"),
                ONE_PORT,
            ),
        )
        .expect_err("IP collision")
        .to_string();
        for part in [
            "svc.yaml",
            "Service default/b",
            "spec.clusterIP",
            "already allocated",
            "default/a",
        ] {
            assert!(err.contains(part), "{err} should mention {part}");
        }
        let err = run(
            &st,
            &svc("b", "NodePort", "", "  - port: 80\n    nodePort: 31000\n"),
        )
        .expect_err("node port collision")
        .to_string();
        for part in [
            "Service default/b",
            "spec.ports[0].nodePort",
            "already allocated",
        ] {
            assert!(err.contains(part), "{err} should mention {part}");
        }
        // Within one batch too: the second asks for what the first was just given.
        let err = run(
            &BTreeMap::new(),
            &(svc("x", "ClusterIP", "", ONE_PORT)
                + &svc("y", "ClusterIP", "  clusterIP: 10.96.0.2\n", ONE_PORT)),
        )
        .expect_err("collision in a batch")
        .to_string();
        assert!(err.contains("Service default/y"), "{err}");
        // Out of range, and a changed address.
        let err = run(
            &st,
            &svc("c", "ClusterIP", "  clusterIP: 10.0.0.5\n", ONE_PORT),
        )
        .expect_err("out of range")
        .to_string();
        assert!(
            err.contains("not in the valid range") && err.contains("10.96.0.0/16"),
            "{err}"
        );
        let err = run(
            &st,
            &svc("a", "NodePort", "  clusterIP: 10.96.9.9\n", ONE_PORT),
        )
        .expect_err("immutable")
        .to_string();
        assert!(err.contains("immutable"), "{err}");
        // Re-applying a with its own explicit IP and node port is fine.
        run(
            &st,
            &svc(
                "a",
                "NodePort",
                &format!("  clusterIP: {a_ip}\n"),
                "  - port: 80\n    nodePort: 31000\n",
            ),
        )
        .expect("own addresses");
    }

    #[test]
    fn headless_and_external_name_get_no_address() {
        let mut st = BTreeMap::new();
        apply(
            &mut st,
            &(svc("h", "ClusterIP", "  clusterIP: None\n", ONE_PORT)
                + "apiVersion: v1\nkind: Service\nmetadata:\n  name: e\nspec:\n  type: ExternalName\n  externalName: example.com\n"),
        );
        assert_eq!(st["default/h"].cluster_ip, None);
        assert_eq!(
            st["default/h"].object["spec"]["clusterIPs"],
            serde_json::json!(["None"])
        );
        assert_eq!(st["default/e"].cluster_ip, None);
        let _ = PathBuf::new();
    }

    #[test]
    fn service_cidr_bounds() {
        assert!(!in_service_cidr(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(in_service_cidr(Ipv4Addr::new(10, 96, 0, 1)));
        assert!(in_service_cidr(Ipv4Addr::new(10, 96, 255, 254)));
        assert!(!in_service_cidr(Ipv4Addr::new(10, 96, 255, 255)));
        assert!(!in_service_cidr(Ipv4Addr::new(10, 97, 0, 1)));
        assert_eq!(nth_address(2), Some(Ipv4Addr::new(10, 96, 0, 2)));
        assert_eq!(nth_address(65535), None);
    }
}
