//! `tcp_flags`: TCP flows carrying flags; an entry matches when every flag it sets is set on the
//! flow (others may be set too), and any entry may match.

use super::{Check, FilterError};
use crate::flow::{layer4, Flow, FlowFilter, TcpFlags};

fn flags(flow: &Flow) -> Option<&TcpFlags> {
    match flow.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Tcp(tcp) => tcp.flags.as_ref(),
        _ => None,
    }
}

/// Whether every flag set in `want` is set in `have`.
fn subset(want: &TcpFlags, have: &TcpFlags) -> bool {
    let pairs = [
        (want.fin, have.fin),
        (want.syn, have.syn),
        (want.rst, have.rst),
        (want.psh, have.psh),
        (want.ack, have.ack),
        (want.urg, have.urg),
        (want.ece, have.ece),
        (want.cwr, have.cwr),
        (want.ns, have.ns),
    ];
    pairs.iter().all(|(w, h)| !w || *h)
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.tcp_flags.is_empty() {
        let entries = filter.tcp_flags.clone();
        checks.push(Box::new(move |flow| {
            flags(flow).is_some_and(|have| entries.iter().any(|want| subset(want, have)))
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{tcp_flow, udp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{layer4, FlowFilter, TcpFlags};

    fn f(entries: Vec<TcpFlags>) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            tcp_flags: entries,
            ..Default::default()
        })
        .unwrap()
    }

    fn syn_ack() -> crate::flow::Flow {
        let mut flow = tcp_flow();
        if let Some(layer4::Protocol::Tcp(t)) = flow.l4.as_mut().unwrap().protocol.as_mut() {
            t.flags = Some(TcpFlags {
                syn: true,
                ack: true,
                ..Default::default()
            });
        }
        flow
    }

    #[test]
    fn all_flags_of_an_entry_must_be_set() {
        let syn = TcpFlags {
            syn: true,
            ..Default::default()
        };
        let syn_ack_f = TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        };
        let fin = TcpFlags {
            fin: true,
            ..Default::default()
        };
        assert!(f(vec![syn]).matches(&tcp_flow()));
        assert!(
            f(vec![syn]).matches(&syn_ack()),
            "extra flags on the flow are fine"
        );
        assert!(!f(vec![syn_ack_f]).matches(&tcp_flow()));
        assert!(f(vec![syn_ack_f]).matches(&syn_ack()));
        assert!(!f(vec![fin]).matches(&syn_ack()));
        assert!(
            f(vec![fin, syn_ack_f]).matches(&syn_ack()),
            "entries are ORed"
        );
    }

    #[test]
    fn non_tcp_flows_never_match() {
        assert!(!f(vec![TcpFlags::default()]).matches(&udp_flow()));
    }
}
