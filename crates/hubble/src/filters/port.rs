//! `source_port`, `destination_port`: L4 ports (decimal strings) of TCP, UDP and SCTP flows.

use super::{Check, FilterError};
use crate::flow::{layer4, Flow, FlowFilter};

/// The (source, destination) ports of a flow, when its L4 protocol has ports.
fn ports(flow: &Flow) -> Option<(u32, u32)> {
    match flow.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Tcp(t) => Some((t.source_port, t.destination_port)),
        layer4::Protocol::Udp(u) => Some((u.source_port, u.destination_port)),
        layer4::Protocol::Sctp(s) => Some((s.source_port, s.destination_port)),
        _ => None,
    }
}

fn by_port(
    field: &'static str,
    entries: &[String],
    pick: fn((u32, u32)) -> u32,
) -> Result<Check, FilterError> {
    let wanted = entries
        .iter()
        .map(|p| {
            p.parse::<u16>()
                .map_err(|e| FilterError::invalid(field, p, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Ports travel as uint32 but are 16 bits on the wire; compare them as such.
    Ok(Box::new(move |flow| {
        ports(flow).is_some_and(|p| wanted.contains(&(pick(p) as u16)))
    }))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_port.is_empty() {
        checks.push(by_port("source_port", &filter.source_port, |p| p.0)?);
    }
    if !filter.destination_port.is_empty() {
        checks.push(by_port(
            "destination_port",
            &filter.destination_port,
            |p| p.1,
        )?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{icmpv6_flow, tcp_flow, udp_flow};
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    fn f(src: &[&str], dst: &[&str]) -> Result<CompiledFilter, super::FilterError> {
        CompiledFilter::new(&FlowFilter {
            source_port: src.iter().map(|s| s.to_string()).collect(),
            destination_port: dst.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn tcp_and_udp_ports() {
        assert!(f(&[], &["8080"]).unwrap().matches(&tcp_flow()));
        assert!(f(&["43122"], &["80", "8080"]).unwrap().matches(&tcp_flow()));
        assert!(!f(&["8080"], &[]).unwrap().matches(&tcp_flow()));
        assert!(f(&[], &["53"]).unwrap().matches(&udp_flow()));
    }

    #[test]
    fn flows_without_ports_never_match() {
        assert!(!f(&[], &["0"]).unwrap().matches(&icmpv6_flow()));
    }

    #[test]
    fn malformed_ports_are_errors() {
        assert!(f(&["http"], &[]).is_err());
        assert!(f(&[], &["65536"]).is_err());
        assert!(f(&[], &["-1"]).is_err());
    }
}
