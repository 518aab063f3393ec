//! EndpointSlices read into backend candidates: which endpoints of a Service serve a given
//! Service port, on which port, and in which state.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::service::{parse_ip, ParsedPort, TargetPort, SERVICE_NAME_LABEL};
use crate::{BackendState, IpFamily, LbError, Proto};

/// A checked EndpointSlice.
#[derive(Debug)]
pub(crate) struct ParsedSlice<'a> {
    ports: Vec<SlicePort<'a>>,
    endpoints: Vec<ParsedEndpoint<'a>>,
}

#[derive(Debug)]
struct SlicePort<'a> {
    name: &'a str,
    protocol: Proto,
    /// `None`: the slice does not restrict the port.
    port: Option<u16>,
}

#[derive(Debug)]
struct ParsedEndpoint<'a> {
    address: IpAddr,
    /// `None`: neither ready nor serving-and-terminating, so no backend.
    state: Option<BackendState>,
    node_name: Option<&'a str>,
    zone: Option<&'a str>,
}

/// A backend before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub address: IpAddr,
    pub port: u16,
    pub state: BackendState,
    pub node_local: bool,
    pub zone: Option<String>,
}

/// EndpointSlices by the namespace and name of their Service.
pub(crate) type SliceIndex<'a> = HashMap<(&'a str, &'a str), Vec<ParsedSlice<'a>>>;

/// Reads every EndpointSlice labelled with a Service name (others belong to no Service);
/// errors name the slice and the field.
pub(crate) fn index_slices(slices: &[EndpointSlice]) -> Result<SliceIndex<'_>, LbError> {
    let mut index: SliceIndex<'_> = HashMap::new();
    for slice in slices {
        let meta = &slice.metadata;
        let Some(service) = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        let object = format!("{namespace}/{}", meta.name.as_deref().unwrap_or(""));
        if let Some(parsed) = parse_slice(slice, &object)? {
            index
                .entry((namespace, service.as_str()))
                .or_default()
                .push(parsed);
        }
    }
    Ok(index)
}

/// Reads one slice; `Ok(None)` for FQDN slices, which carry no addresses to balance to.
fn parse_slice<'a>(
    slice: &'a EndpointSlice,
    object: &str,
) -> Result<Option<ParsedSlice<'a>>, LbError> {
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return Ok(None),
        other => {
            return Err(LbError::slice(
                object,
                "addressType",
                format!("unknown address type {other:?} (expected IPv4, IPv6 or FQDN)"),
            ))
        }
    };
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let protocol = Proto::parse(p.protocol.as_deref())
            .map_err(|e| LbError::slice(object, format!("ports[{i}].protocol"), e))?;
        let port = p
            .port
            .map(|n| {
                u16::try_from(n).ok().filter(|&n| n != 0).ok_or_else(|| {
                    LbError::slice(
                        object,
                        format!("ports[{i}].port"),
                        format!("{n} is not a port number (1-65535)"),
                    )
                })
            })
            .transpose()?;
        ports.push(SlicePort {
            name: p.name.as_deref().unwrap_or(""),
            protocol,
            port,
        });
    }
    let mut endpoints = Vec::new();
    for (i, e) in slice.endpoints.iter().enumerate() {
        // Consumers use the first address; the API allows only one today.
        let Some(raw) = e.addresses.first() else {
            return Err(LbError::slice(
                object,
                format!("endpoints[{i}].addresses"),
                "an endpoint needs an address",
            ));
        };
        let at = format!("endpoints[{i}].addresses[0]");
        let address = parse_ip(raw).map_err(|e| LbError::slice(object, at.clone(), e))?;
        if IpFamily::of(&address) != family {
            return Err(LbError::slice(
                object,
                at,
                format!("{address} is not an {family} address (addressType {family})"),
            ));
        }
        endpoints.push(ParsedEndpoint {
            address,
            state: state(e.conditions.as_ref()),
            node_name: e.node_name.as_deref(),
            zone: e.zone.as_deref(),
        });
    }
    Ok(Some(ParsedSlice { ports, endpoints }))
}

/// An endpoint's backend state from its conditions, read as kube-proxy reads them: `ready` and
/// `serving` default to true, `terminating` to false. Ready → active; serving and terminating →
/// terminating; anything else → not a backend.
fn state(
    conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>,
) -> Option<BackendState> {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Some(BackendState::Active)
    } else if serving && terminating {
        Some(BackendState::Terminating)
    } else {
        None
    }
}

/// The backends of one Service port over the Service's slices.
///
/// A slice serves the port if it has a port of the same name and protocol; that port's number is
/// where traffic goes (the endpoint controller resolves a named `targetPort` per endpoint into
/// it). A slice port without a number falls back to a numeric `targetPort`. An address listed by
/// several slices is one backend, active if any slice says so. Sorted by address and port.
pub(crate) fn candidates(
    slices: &[ParsedSlice<'_>],
    port: &ParsedPort,
    node: &str,
) -> Vec<Candidate> {
    let mut found: BTreeMap<(IpAddr, u16), Candidate> = BTreeMap::new();
    for slice in slices {
        let Some(slice_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        let number = match (slice_port.port, &port.target_port) {
            (Some(n), _) => n,
            (None, TargetPort::Number(n)) => *n,
            (None, TargetPort::Named(_)) => continue,
        };
        for e in &slice.endpoints {
            let Some(state) = e.state else { continue };
            let candidate = Candidate {
                address: e.address,
                port: number,
                state,
                node_local: !node.is_empty() && e.node_name == Some(node),
                zone: e.zone.map(str::to_owned),
            };
            found
                .entry((e.address, number))
                .and_modify(|c| {
                    if state < c.state {
                        *c = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    found.into_values().collect()
}
