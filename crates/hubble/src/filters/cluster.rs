//! `source_cluster_name`, `destination_cluster_name`: exact cluster names of the endpoints.

use super::{Check, FilterError};
use crate::flow::{Endpoint, Flow, FlowFilter};

fn by_cluster(
    field: &'static str,
    names: &[String],
    endpoint: fn(&Flow) -> Option<&Endpoint>,
) -> Result<Check, FilterError> {
    if names.iter().any(String::is_empty) {
        return Err(FilterError::invalid(field, "", "name must not be empty"));
    }
    let names = names.to_vec();
    Ok(Box::new(move |flow| {
        let cluster = endpoint(flow).map_or("", |ep| ep.cluster_name.as_str());
        names.iter().any(|n| n == cluster)
    }))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_cluster_name.is_empty() {
        checks.push(by_cluster(
            "source_cluster_name",
            &filter.source_cluster_name,
            |f| f.source.as_ref(),
        )?);
    }
    if !filter.destination_cluster_name.is_empty() {
        checks.push(by_cluster(
            "destination_cluster_name",
            &filter.destination_cluster_name,
            |f| f.destination.as_ref(),
        )?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    #[test]
    fn exact_cluster_names() {
        let f = |n: &str| {
            CompiledFilter::new(&FlowFilter {
                source_cluster_name: vec![n.into()],
                ..Default::default()
            })
        };
        assert!(f("default").unwrap().matches(&tcp_flow()));
        assert!(!f("other").unwrap().matches(&tcp_flow()));
        assert!(f("").is_err());
    }
}
