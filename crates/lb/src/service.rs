//! A Kubernetes Service read and checked into what load balancing needs: its frontends' parts,
//! traffic policies, session affinity and algorithm. Errors name the Service and the field.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{Algorithm, IpFamily, LbError, Proto, ServiceName};

/// Cilium's per-Service load-balancing algorithm annotation: `random` or `maglev`.
pub const ALGORITHM_ANNOTATION: &str = "service.cilium.io/lb-algorithm";

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service with this label belongs to another service proxy and is left alone, as kube-proxy
/// and Cilium do.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when not given: 3 hours.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// The largest affinity timeout Kubernetes allows: 1 day.
const MAX_AFFINITY_TIMEOUT_SECONDS: i32 = 86400;

/// `loadBalancerClass` prefix of the classes Cilium's LB IPAM serves; other classes belong to
/// another controller.
const CILIUM_LB_CLASS_PREFIX: &str = "io.cilium/";

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// Where a Service port's traffic goes on the endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetPort {
    Number(u16),
    /// A container port name, resolved per endpoint by the EndpointSlice's port numbers.
    Named(String),
}

/// One checked entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Proto,
    pub node_port: Option<u16>,
    pub target_port: TargetPort,
}

/// A checked Service.
#[derive(Debug)]
pub(crate) struct ParsedService<'a> {
    pub name: ServiceName,
    pub created: Option<&'a Time>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub service_type: ServiceType,
    pub cluster_ips: Vec<IpAddr>,
    pub families: Vec<IpFamily>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`, except those with `ipMode: Proxy` (traffic to them
    /// goes through the external load balancer, so it is not short-circuited here).
    pub ingress_ips: Vec<IpAddr>,
    /// Whether an address should be allocated from a pool when status has none.
    pub pool_allocation: bool,
    pub ports: Vec<ParsedPort>,
    pub algorithm: Algorithm,
    pub affinity: Option<Duration>,
    pub external_traffic_local: bool,
    pub internal_traffic_local: bool,
}

/// Reads a Service. `Ok(None)` for Services that are not load balanced: `ExternalName`,
/// headless (`clusterIP: None`) or without a cluster IP, and those of another service proxy.
pub(crate) fn parse_service(svc: &Service) -> Result<Option<ParsedService<'_>>, LbError> {
    let meta = &svc.metadata;
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let Some(name) = meta.name.as_deref() else {
        return Err(LbError::service(namespace, "metadata.name", "missing"));
    };
    let name = ServiceName::new(namespace, name);
    let object = name.to_string();
    let err = |field: String, reason: String| LbError::service(&object, field, reason);

    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return Ok(None);
    }
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(None);
    };
    let service_type = match spec.type_.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => return Ok(None),
        Some(other) => {
            return Err(err(
                "spec.type".into(),
                format!(
                    "unknown type {other:?} (expected ClusterIP, NodePort, LoadBalancer or \
                     ExternalName)"
                ),
            ))
        }
    };

    // spec.clusterIPs is authoritative when set; spec.clusterIP is its first entry.
    let (field, raw_ips): (&str, Vec<&str>) = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => {
            ("spec.clusterIPs", ips.iter().map(String::as_str).collect())
        }
        _ => (
            "spec.clusterIP",
            spec.cluster_ip.as_deref().into_iter().collect(),
        ),
    };
    if raw_ips.iter().all(|ip| ip.is_empty() || *ip == "None") {
        return Ok(None);
    }
    let mut cluster_ips = Vec::new();
    for (i, raw) in raw_ips.iter().enumerate() {
        let at = if field == "spec.clusterIPs" {
            format!("{field}[{i}]")
        } else {
            field.to_owned()
        };
        cluster_ips.push(parse_ip(raw).map_err(|e| err(at, e))?);
    }

    let families = match &spec.ip_families {
        Some(families) if !families.is_empty() => families
            .iter()
            .enumerate()
            .map(|(i, f)| match f.as_str() {
                "IPv4" => Ok(IpFamily::V4),
                "IPv6" => Ok(IpFamily::V6),
                other => Err(err(
                    format!("spec.ipFamilies[{i}]"),
                    format!("unknown family {other:?} (expected IPv4 or IPv6)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            let mut families: Vec<IpFamily> = Vec::new();
            for ip in &cluster_ips {
                if !families.contains(&IpFamily::of(ip)) {
                    families.push(IpFamily::of(ip));
                }
            }
            families
        }
    };

    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, raw)| parse_ip(raw).map_err(|e| err(format!("spec.externalIPs[{i}]"), e)))
        .collect::<Result<Vec<_>, _>>()?;

    let mut ingress_ips = Vec::new();
    if service_type == ServiceType::LoadBalancer {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, entry) in ingress.into_iter().flatten().enumerate() {
            let Some(raw) = entry.ip.as_deref() else {
                continue;
            };
            let ip = parse_ip(raw)
                .map_err(|e| err(format!("status.loadBalancer.ingress[{i}].ip"), e))?;
            if entry.ip_mode.as_deref() != Some("Proxy") {
                ingress_ips.push(ip);
            }
        }
    }
    let pool_allocation = service_type == ServiceType::LoadBalancer
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c.starts_with(CILIUM_LB_CLASS_PREFIX));

    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        let port = u16::try_from(p.port)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| {
                err(
                    at("port"),
                    format!("{} is not a port number (1-65535)", p.port),
                )
            })?;
        let protocol = Proto::parse(p.protocol.as_deref()).map_err(|e| err(at("protocol"), e))?;
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => Some(u16::try_from(n).map_err(|_| {
                err(
                    at("nodePort"),
                    format!("{n} is not a port number (1-65535)"),
                )
            })?),
        };
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(u16::try_from(*n).ok().filter(|&n| n != 0).ok_or_else(|| {
                    err(
                        at("targetPort"),
                        format!("{n} is not a port number (1-65535)"),
                    )
                })?)
            }
            Some(IntOrString::String(s)) if s.is_empty() => TargetPort::Number(port),
            Some(IntOrString::String(s)) => TargetPort::Named(s.clone()),
        };
        ports.push(ParsedPort {
            name: p.name.clone().unwrap_or_default(),
            port,
            protocol,
            node_port,
            target_port,
        });
    }

    let algorithm = match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALGORITHM_ANNOTATION))
        .map(String::as_str)
    {
        None => Algorithm::Random,
        Some("random") => Algorithm::Random,
        Some("maglev") => Algorithm::Maglev,
        Some(other) => {
            return Err(err(
                format!("metadata.annotations[{ALGORITHM_ANNOTATION}]"),
                format!("unknown load-balancing algorithm {other:?} (expected random or maglev)"),
            ))
        }
    };

    let affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => Some(DEFAULT_AFFINITY_TIMEOUT),
                Some(t) if (1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(&t) => {
                    Some(Duration::from_secs(t.unsigned_abs().into()))
                }
                Some(t) => {
                    return Err(err(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                        format!("{t} is out of range (1-{MAX_AFFINITY_TIMEOUT_SECONDS})"),
                    ))
                }
            }
        }
        Some(other) => {
            return Err(err(
                "spec.sessionAffinity".into(),
                format!("unknown affinity {other:?} (expected None or ClientIP)"),
            ))
        }
    };

    let policy = |value: Option<&str>, field: &str| match value {
        None | Some("Cluster") => Ok(false),
        Some("Local") => Ok(true),
        Some(other) => Err(err(
            field.into(),
            format!("unknown policy {other:?} (expected Cluster or Local)"),
        )),
    };
    let external_traffic_local = policy(
        spec.external_traffic_policy.as_deref(),
        "spec.externalTrafficPolicy",
    )?;
    let internal_traffic_local = policy(
        spec.internal_traffic_policy.as_deref(),
        "spec.internalTrafficPolicy",
    )?;

    Ok(Some(ParsedService {
        name,
        created: meta.creation_timestamp.as_ref(),
        labels: meta.labels.as_ref(),
        service_type,
        cluster_ips,
        families,
        external_ips,
        ingress_ips,
        pool_allocation,
        ports,
        algorithm,
        affinity,
        external_traffic_local,
        internal_traffic_local,
    }))
}

/// Parses an address, in the words of an error message when it is not one.
pub(crate) fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    raw.parse()
        .map_err(|_| format!("{raw:?} is not an IP address"))
}
