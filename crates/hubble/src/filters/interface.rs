//! `interface`: the network interface a flow was seen on; a zero index or empty name in the
//! filter matches any.

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.interface.is_empty() {
        let wanted = filter.interface.clone();
        checks.push(Box::new(move |flow| {
            let Some(iface) = flow.interface.as_ref() else {
                return false;
            };
            wanted.iter().any(|w| {
                (w.index == 0 || w.index == iface.index)
                    && (w.name.is_empty() || w.name == iface.name)
            })
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, NetworkInterface};

    #[test]
    fn index_and_name() {
        let f = |index: u32, name: &str| {
            CompiledFilter::new(&FlowFilter {
                interface: vec![NetworkInterface {
                    index,
                    name: name.into(),
                }],
                ..Default::default()
            })
            .unwrap()
        };
        let mut flow = tcp_flow();
        assert!(!f(0, "").matches(&flow), "no interface on the flow");
        flow.interface = Some(NetworkInterface {
            index: 7,
            name: "lxc12ab".into(),
        });
        assert!(f(0, "").matches(&flow));
        assert!(f(7, "").matches(&flow));
        assert!(f(0, "lxc12ab").matches(&flow));
        assert!(!f(8, "lxc12ab").matches(&flow));
    }
}
