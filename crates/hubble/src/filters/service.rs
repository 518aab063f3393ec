//! `source_service`, `destination_service`: service name prefixes, same syntax as pods.

use super::namespaced_name::by_namespaced_name;
use super::{Check, FilterError};
use crate::flow::{Flow, FlowFilter, Service};

fn service(s: Option<&Service>) -> (&str, &str) {
    s.map_or(("", ""), |s| (s.namespace.as_str(), s.name.as_str()))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_service.is_empty() {
        checks.push(by_namespaced_name(
            "source_service",
            &filter.source_service,
            |f: &Flow| service(f.source_service.as_ref()),
        )?);
    }
    if !filter.destination_service.is_empty() {
        checks.push(by_namespaced_name(
            "destination_service",
            &filter.destination_service,
            |f: &Flow| service(f.destination_service.as_ref()),
        )?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::udp_flow;
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, Service};

    #[test]
    fn matches_service_names() {
        let mut flow = udp_flow();
        let f = CompiledFilter::new(&FlowFilter {
            destination_service: vec!["kube-system/kube-dns".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(!f.matches(&flow), "no service on the flow");
        flow.destination_service = Some(Service {
            name: "kube-dns".into(),
            namespace: "kube-system".into(),
        });
        assert!(f.matches(&flow));
        let src = CompiledFilter::new(&FlowFilter {
            source_service: vec!["kube-system/".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(!src.matches(&flow));
    }
}
