//! `node_name` (wildcard patterns over `cluster/node`; a node name without a cluster is in
//! cluster `default`) and `node_labels` (label selectors over the node's labels).

use super::labels::by_selectors;
use super::patterns::compile_node_name;
use super::{Check, FilterError};
use crate::flow::FlowFilter;

/// The cluster assumed for node names that do not carry one.
const DEFAULT_CLUSTER: &str = "default";

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.node_name.is_empty() {
        let re = compile_node_name(&filter.node_name)
            .map_err(|(p, why)| FilterError::invalid("node_name", &p, why))?;
        checks.push(Box::new(move |flow| {
            let name = flow.node_name.as_str();
            if name.is_empty() {
                false
            } else if name.contains('/') {
                re.is_match(name)
            } else {
                re.is_match(&format!("{DEFAULT_CLUSTER}/{name}"))
            }
        }));
    }
    if !filter.node_labels.is_empty() {
        checks.push(by_selectors("node_labels", &filter.node_labels, |f| {
            &f.node_labels
        })?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    fn names(p: &[&str]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            node_name: p.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn node_name_patterns() {
        let flow = tcp_flow(); // kind-worker
        assert!(names(&["kind-worker"]).matches(&flow));
        assert!(names(&["kind-*"]).matches(&flow));
        assert!(names(&["default/kind-*"]).matches(&flow));
        assert!(names(&["default/"]).matches(&flow));
        assert!(!names(&["prod/"]).matches(&flow));
        assert!(!names(&["kind"]).matches(&flow), "patterns are anchored");
        let mut clustered = tcp_flow();
        clustered.node_name = "prod/kind-worker".into();
        assert!(names(&["prod/kind-*"]).matches(&clustered));
        assert!(!names(&["default/kind-*"]).matches(&clustered));
    }

    #[test]
    fn empty_node_name_never_matches() {
        let mut flow = tcp_flow();
        flow.node_name.clear();
        assert!(!names(&["*"]).matches(&flow));
    }

    #[test]
    fn node_labels() {
        let f = CompiledFilter::new(&FlowFilter {
            node_labels: vec!["kubernetes.io/hostname=kind-worker".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(f.matches(&tcp_flow()));
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(CompiledFilter::new(&FlowFilter {
            node_name: vec!["a/b/c".into()],
            ..Default::default()
        })
        .is_err());
    }
}
