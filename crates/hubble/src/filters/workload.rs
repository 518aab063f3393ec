//! `source_workload`, `destination_workload`: owning workloads; an empty name or kind in the
//! filter matches any.

use super::{Check, FilterError};
use crate::flow::{Endpoint, Flow, FlowFilter, Workload};

fn by_workload(wanted: &[Workload], endpoint: fn(&Flow) -> Option<&Endpoint>) -> Check {
    let wanted = wanted.to_vec();
    Box::new(move |flow| {
        endpoint(flow).is_some_and(|ep| {
            ep.workloads.iter().any(|w| {
                wanted.iter().any(|f| {
                    (f.name.is_empty() || f.name == w.name)
                        && (f.kind.is_empty() || f.kind == w.kind)
                })
            })
        })
    })
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_workload.is_empty() {
        checks.push(by_workload(&filter.source_workload, |f| f.source.as_ref()));
    }
    if !filter.destination_workload.is_empty() {
        checks.push(by_workload(&filter.destination_workload, |f| {
            f.destination.as_ref()
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, Workload};

    fn src(name: &str, kind: &str) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            source_workload: vec![Workload {
                name: name.into(),
                kind: kind.into(),
            }],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn name_and_kind() {
        let flow = tcp_flow(); // frontend Deployment
        assert!(src("frontend", "Deployment").matches(&flow));
        assert!(src("frontend", "").matches(&flow));
        assert!(src("", "Deployment").matches(&flow));
        assert!(!src("frontend", "DaemonSet").matches(&flow));
        assert!(!src("backend", "").matches(&flow));
    }
}
