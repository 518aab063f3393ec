//! `source_pod`, `destination_pod`: pod name prefixes, optionally within a namespace.

use super::namespaced_name::by_namespaced_name;
use super::{Check, FilterError};
use crate::flow::{Endpoint, Flow, FlowFilter};

fn pod(ep: Option<&Endpoint>) -> (&str, &str) {
    ep.map_or(("", ""), |ep| (ep.namespace.as_str(), ep.pod_name.as_str()))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_pod.is_empty() {
        checks.push(by_namespaced_name(
            "source_pod",
            &filter.source_pod,
            |f: &Flow| pod(f.source.as_ref()),
        )?);
    }
    if !filter.destination_pod.is_empty() {
        checks.push(by_namespaced_name(
            "destination_pod",
            &filter.destination_pod,
            |f: &Flow| pod(f.destination.as_ref()),
        )?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{dropped_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    fn src(entries: &[&str]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            source_pod: entries.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn namespace_and_prefix() {
        let flow = tcp_flow(); // shop/frontend-7d4c8b-x2v9q -> shop/backend-5f9d7-abcde
        assert!(src(&["shop/frontend-"]).matches(&flow));
        assert!(src(&["shop/frontend-7d4c8b-x2v9q"]).matches(&flow));
        assert!(src(&["shop/"]).matches(&flow));
        assert!(src(&["/frontend"]).matches(&flow));
        assert!(!src(&["other/frontend"]).matches(&flow));
        assert!(!src(&["shop/backend"]).matches(&flow));
        assert!(src(&["shop/backend", "shop/front"]).matches(&flow));
    }

    #[test]
    fn bare_name_means_default_namespace() {
        assert!(!src(&["frontend"]).matches(&tcp_flow()));
        assert!(src(&["curl"]).matches(&dropped_flow())); // default/curl
    }

    #[test]
    fn destination() {
        let f = CompiledFilter::new(&FlowFilter {
            destination_pod: vec!["shop/backend".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(f.matches(&tcp_flow()));
    }

    #[test]
    fn endpoint_without_pod_or_namespace_never_matches() {
        let mut flow = tcp_flow();
        flow.source = None;
        assert!(!src(&["/"]).matches(&flow));
    }

    #[test]
    fn empty_entry_is_an_error() {
        assert!(CompiledFilter::new(&FlowFilter {
            source_pod: vec![String::new()],
            ..Default::default()
        })
        .is_err());
    }
}
