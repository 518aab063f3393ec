//! `source_ip`, `destination_ip`, `source_ip_xlated` (exact addresses or CIDRs) and `ip_version`.

use std::net::IpAddr;

use super::{Check, FilterError};
use crate::flow::{Flow, FlowFilter};

/// One entry of an IP filter: an address or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpMatch {
    Addr(IpAddr),
    Prefix(IpAddr, u8),
}

impl IpMatch {
    fn parse(field: &'static str, s: &str) -> Result<Self, FilterError> {
        match s.split_once('/') {
            None => s
                .parse()
                .map(IpMatch::Addr)
                .map_err(|e| FilterError::invalid(field, s, e)),
            Some((addr, len)) => {
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|e| FilterError::invalid(field, s, e))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| FilterError::invalid(field, s, "bad prefix length"))?;
                Ok(IpMatch::Prefix(addr, len))
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match *self {
            IpMatch::Addr(a) => a == ip,
            IpMatch::Prefix(net, len) => match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    masked(u32::from(n).into(), u32::from(a).into(), len, 32)
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => masked(u128::from(n), u128::from(a), len, 128),
                _ => false,
            },
        }
    }
}

/// Whether `a` lies in `net/len`, for addresses of `bits` bits held in a u128.
fn masked(net: u128, a: u128, len: u8, bits: u32) -> bool {
    let shift = bits - u32::from(len);
    shift >= bits || (net >> shift) == (a >> shift)
}

fn by_ips(
    field: &'static str,
    entries: &[String],
    address: fn(&Flow) -> Option<&str>,
) -> Result<Check, FilterError> {
    let matchers = entries
        .iter()
        .map(|s| IpMatch::parse(field, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(move |flow| {
        let Some(ip) = address(flow).filter(|s| !s.is_empty()) else {
            return false;
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return false;
        };
        matchers.iter().any(|m| m.contains(ip))
    }))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_ip.is_empty() {
        checks.push(by_ips("source_ip", &filter.source_ip, |f| {
            f.ip.as_ref().map(|ip| ip.source.as_str())
        })?);
    }
    if !filter.destination_ip.is_empty() {
        checks.push(by_ips("destination_ip", &filter.destination_ip, |f| {
            f.ip.as_ref().map(|ip| ip.destination.as_str())
        })?);
    }
    if !filter.source_ip_xlated.is_empty() {
        checks.push(by_ips("source_ip_xlated", &filter.source_ip_xlated, |f| {
            f.ip.as_ref().map(|ip| ip.source_xlated.as_str())
        })?);
    }
    Ok(())
}

/// `ip_version`; a flow without an IP header has version `IP_NOT_USED`.
pub(super) fn build_version(
    filter: &FlowFilter,
    checks: &mut Vec<Check>,
) -> Result<(), FilterError> {
    if !filter.ip_version.is_empty() {
        let versions = filter.ip_version.clone();
        checks.push(Box::new(move |flow| {
            versions.contains(&flow.ip.as_ref().map_or(0, |ip| ip.ip_version))
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{icmpv6_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, IpVersion};

    fn src(entries: &[&str]) -> Result<CompiledFilter, super::FilterError> {
        CompiledFilter::new(&FlowFilter {
            source_ip: entries.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn exact_addresses_and_cidrs() {
        let flow = tcp_flow(); // 10.0.1.12 -> 10.0.2.7
        assert!(src(&["10.0.1.12"]).unwrap().matches(&flow));
        assert!(src(&["10.0.1.0/24"]).unwrap().matches(&flow));
        assert!(src(&["10.0.1.12/32"]).unwrap().matches(&flow));
        assert!(src(&["0.0.0.0/0"]).unwrap().matches(&flow));
        assert!(
            src(&["10.0.1.99/24"]).unwrap().matches(&flow),
            "host bits are masked"
        );
        assert!(!src(&["10.0.2.0/24", "10.0.1.13"]).unwrap().matches(&flow));
        assert!(
            !src(&["::/0"]).unwrap().matches(&flow),
            "families never mix"
        );
    }

    #[test]
    fn destination_and_ipv6() {
        let flow = icmpv6_flow();
        let f = CompiledFilter::new(&FlowFilter {
            destination_ip: vec!["fd00:10:244:1::/64".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(f.matches(&flow));
        assert!(!f.matches(&tcp_flow()));
    }

    #[test]
    fn xlated_source() {
        let mut flow = tcp_flow();
        let f = CompiledFilter::new(&FlowFilter {
            source_ip_xlated: vec!["192.168.0.1".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(!f.matches(&flow));
        flow.ip.as_mut().unwrap().source_xlated = "192.168.0.1".into();
        assert!(f.matches(&flow));
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert!(src(&["10.0.0.256"]).is_err());
        assert!(src(&["10.0.0.0/33"]).is_err());
        assert!(src(&["fd00::/129"]).is_err());
        assert!(src(&["pod-a"]).is_err());
    }

    #[test]
    fn flow_without_ip_never_matches() {
        let mut flow = tcp_flow();
        flow.ip = None;
        assert!(!src(&["0.0.0.0/0"]).unwrap().matches(&flow));
    }

    #[test]
    fn ip_version() {
        let f = |v: IpVersion| {
            CompiledFilter::new(&FlowFilter {
                ip_version: vec![v as i32],
                ..Default::default()
            })
            .unwrap()
        };
        assert!(f(IpVersion::IPv4).matches(&tcp_flow()));
        assert!(!f(IpVersion::IPv4).matches(&icmpv6_flow()));
        assert!(f(IpVersion::IPv6).matches(&icmpv6_flow()));
        let mut no_ip = tcp_flow();
        no_ip.ip = None;
        assert!(f(IpVersion::IpNotUsed).matches(&no_ip));
    }
}
