//! `protocol`: L4 (tcp, udp, sctp, icmp, icmpv4, icmpv6, vrrp, igmp) or L7 (dns, http, kafka)
//! protocols, case-insensitive.

use super::{Check, FilterError};
use crate::flow::{layer4::Protocol as L4, layer7::Record as L7, Flow, FlowFilter};

/// One protocol a filter entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Icmp,
    Icmpv4,
    Icmpv6,
    Tcp,
    Udp,
    Sctp,
    Vrrp,
    Igmp,
    Dns,
    Http,
    Kafka,
}

impl Proto {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "icmp" => Proto::Icmp,
            "icmpv4" => Proto::Icmpv4,
            "icmpv6" => Proto::Icmpv6,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "sctp" => Proto::Sctp,
            "vrrp" => Proto::Vrrp,
            "igmp" => Proto::Igmp,
            "dns" => Proto::Dns,
            "http" => Proto::Http,
            "kafka" => Proto::Kafka,
            _ => return None,
        })
    }

    fn matches(self, flow: &Flow) -> bool {
        let l4 = flow.l4.as_ref().and_then(|l| l.protocol.as_ref());
        let l7 = flow.l7.as_ref().and_then(|l| l.record.as_ref());
        match self {
            Proto::Icmp => matches!(l4, Some(L4::IcmPv4(_) | L4::IcmPv6(_))),
            Proto::Icmpv4 => matches!(l4, Some(L4::IcmPv4(_))),
            Proto::Icmpv6 => matches!(l4, Some(L4::IcmPv6(_))),
            Proto::Tcp => matches!(l4, Some(L4::Tcp(_))),
            Proto::Udp => matches!(l4, Some(L4::Udp(_))),
            Proto::Sctp => matches!(l4, Some(L4::Sctp(_))),
            Proto::Vrrp => matches!(l4, Some(L4::Vrrp(_))),
            Proto::Igmp => matches!(l4, Some(L4::Igmp(_))),
            Proto::Dns => matches!(l7, Some(L7::Dns(_))),
            Proto::Http => matches!(l7, Some(L7::Http(_))),
            #[allow(deprecated)]
            Proto::Kafka => matches!(l7, Some(L7::Kafka(_))),
        }
    }
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.protocol.is_empty() {
        let protos = filter
            .protocol
            .iter()
            .map(|p| {
                Proto::parse(p)
                    .ok_or_else(|| FilterError::invalid("protocol", p, "unknown protocol"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        checks.push(Box::new(move |flow| protos.iter().any(|p| p.matches(flow))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{icmpv6_flow, tcp_flow, udp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{layer7, FlowFilter, Http, Layer7};

    fn f(p: &[&str]) -> Result<CompiledFilter, super::FilterError> {
        CompiledFilter::new(&FlowFilter {
            protocol: p.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn l4_protocols_case_insensitive() {
        assert!(f(&["tcp"]).unwrap().matches(&tcp_flow()));
        assert!(f(&["TCP"]).unwrap().matches(&tcp_flow()));
        assert!(!f(&["udp"]).unwrap().matches(&tcp_flow()));
        assert!(f(&["udp", "tcp"]).unwrap().matches(&udp_flow()));
        assert!(f(&["icmp"]).unwrap().matches(&icmpv6_flow()));
        assert!(f(&["ICMPv6"]).unwrap().matches(&icmpv6_flow()));
        assert!(!f(&["icmpv4"]).unwrap().matches(&icmpv6_flow()));
    }

    #[test]
    fn l7_protocols() {
        let mut flow = tcp_flow();
        flow.l7 = Some(Layer7 {
            record: Some(layer7::Record::Http(Http {
                code: 200,
                method: "GET".into(),
                url: "http://backend/api".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert!(f(&["http"]).unwrap().matches(&flow));
        assert!(!f(&["dns"]).unwrap().matches(&flow));
    }

    #[test]
    fn unknown_protocol_is_an_error() {
        assert!(f(&["quic"]).is_err());
    }
}
