//! The endpoint-slice controller's job for Services with a selector: which pods back a Service,
//! on which ports, in which state — as EndpointSlices, the one input backends come from.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::SERVICE_NAME_LABEL;

/// A pod as the endpoint-slice controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its IPv4 address.
    pub ip: String,
    /// The node it runs on.
    pub node: String,
    /// Ready for traffic.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Named container ports: (name, port, protocol).
    pub named_ports: Vec<(String, u16, String)>,
}

/// The label on slices the controller manages (Kubernetes' own value).
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Who manages derived slices.
pub const MANAGED_BY: &str = "plexus-agent";

/// The EndpointSlices of a Service with a selector: one per distinct set of resolved ports
/// (a named `targetPort` may resolve differently per pod), named `<service>-<n>`. `None` for a
/// Service without selector, whose slices are given.
pub fn derive_slices(svc: &Service, pods: &[PodEndpoint]) -> Option<Vec<EndpointSlice>> {
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        if pod.namespace != ns
            || !selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            || pod.ip.is_empty()
        {
            continue;
        }
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = match &p.target_port {
                None => Some(p.port),
                Some(IntOrString::Int(n)) => Some(*n),
                Some(IntOrString::String(s)) if s.is_empty() => Some(p.port),
                Some(IntOrString::String(s)) => pod
                    .named_ports
                    .iter()
                    .find(|(n, _, pr)| n == s && *pr == proto)
                    .map(|(_, port, _)| i32::from(*port)),
            };
            if let Some(port) = port {
                ports.push((p.name.clone().unwrap_or_default(), port, proto));
            }
        }
        let ready = pod.ready && !pod.terminating;
        groups.entry(ports).or_default().push(Endpoint {
            addresses: vec![pod.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(pod.ready),
                terminating: Some(pod.terminating),
            }),
            node_name: Some(pod.node.clone()),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(pod.namespace.clone()),
                name: Some(pod.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let slices = groups
        .into_iter()
        .enumerate()
        .map(|(i, (ports, endpoints))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{i}")),
                namespace: Some(ns.to_string()),
                labels: Some(BTreeMap::from([
                    (SERVICE_NAME_LABEL.to_string(), name.to_string()),
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                ])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: Some(name),
                        port: Some(port),
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    Some(slices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, app: &str, ip: &str, http: u16) -> PodEndpoint {
        PodEndpoint {
            namespace: "x".into(),
            name: name.into(),
            labels: BTreeMap::from([("app".into(), app.into())]),
            ip: ip.into(),
            node: "n1".into(),
            ready: true,
            terminating: false,
            named_ports: vec![("http".into(), http, "TCP".into())],
        }
    }

    #[test]
    fn selected_pods_become_endpoints_grouped_by_resolved_port() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "x"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.5",
                     "ports": [{"name": "h", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        let pods = [
            pod("a", "web", "10.244.0.2", 8080),
            pod("b", "web", "10.244.0.3", 8080),
            pod("c", "web", "10.244.0.4", 9090),
            pod("d", "db", "10.244.0.5", 8080),
        ];
        let slices = derive_slices(&svc, &pods).unwrap();
        assert_eq!(slices.len(), 2);
        let ports: Vec<i32> = slices
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        assert_eq!(ports, vec![8080, 9090]);
        assert_eq!(slices[0].endpoints.len(), 2);
        assert_eq!(
            slices[0].metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        let no_selector: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "x"}, "spec": {"clusterIP": "10.96.0.6"}
        }))
        .unwrap();
        assert!(derive_slices(&no_selector, &pods).is_none());
    }
}
