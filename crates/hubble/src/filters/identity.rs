//! `source_identity`, `destination_identity`: flows whose endpoint has one of the listed numeric
//! security identities.

use super::{Check, FilterError};
use crate::flow::{Endpoint, Flow, FlowFilter};

fn by_identity(identities: &[u32], endpoint: fn(&Flow) -> Option<&Endpoint>) -> Check {
    let identities = identities.to_vec();
    Box::new(move |flow| endpoint(flow).is_some_and(|ep| identities.contains(&ep.identity)))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_identity.is_empty() {
        checks.push(by_identity(&filter.source_identity, |f| f.source.as_ref()));
    }
    if !filter.destination_identity.is_empty() {
        checks.push(by_identity(&filter.destination_identity, |f| {
            f.destination.as_ref()
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    #[test]
    fn matches_source_and_destination_identities() {
        let flow = tcp_flow(); // 12345 -> 23456
        let f = |src: Vec<u32>, dst: Vec<u32>| {
            CompiledFilter::new(&FlowFilter {
                source_identity: src,
                destination_identity: dst,
                ..Default::default()
            })
            .unwrap()
            .matches(&flow)
        };
        assert!(f(vec![12345], vec![]));
        assert!(f(vec![1, 12345], vec![23456]));
        assert!(!f(vec![23456], vec![]));
        assert!(!f(vec![], vec![12345]));
    }

    #[test]
    fn missing_endpoint_never_matches() {
        let mut flow = tcp_flow();
        flow.source = None;
        let f = CompiledFilter::new(&FlowFilter {
            source_identity: vec![0],
            ..Default::default()
        })
        .unwrap();
        assert!(!f.matches(&flow));
    }
}
