//! `source_label`, `destination_label`: label selectors over the endpoints' identity labels.

use super::label_selector::LabelSelector;
use super::{Check, FilterError};
use crate::flow::{Flow, FlowFilter};

/// Parses `selectors`, reporting a bad one under `field`.
pub(super) fn parse_selectors(
    field: &'static str,
    selectors: &[String],
) -> Result<Vec<LabelSelector>, FilterError> {
    selectors
        .iter()
        .map(|s| LabelSelector::parse(s).map_err(|why| FilterError::invalid(field, s, why)))
        .collect()
}

/// A check that the labels picked from a flow satisfy one of `selectors`.
pub(super) fn by_selectors(
    field: &'static str,
    selectors: &[String],
    labels: fn(&Flow) -> &[String],
) -> Result<Check, FilterError> {
    let selectors = parse_selectors(field, selectors)?;
    Ok(Box::new(move |flow| {
        let labels = labels(flow);
        selectors.iter().any(|s| s.matches(labels))
    }))
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_label.is_empty() {
        checks.push(by_selectors("source_label", &filter.source_label, |f| {
            f.source.as_ref().map_or(&[], |ep| ep.labels.as_slice())
        })?);
    }
    if !filter.destination_label.is_empty() {
        checks.push(by_selectors(
            "destination_label",
            &filter.destination_label,
            |f| {
                f.destination
                    .as_ref()
                    .map_or(&[], |ep| ep.labels.as_slice())
            },
        )?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    fn f(src: &[&str], dst: &[&str]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            source_label: src.iter().map(|s| s.to_string()).collect(),
            destination_label: dst.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn source_and_destination_selectors() {
        let flow = tcp_flow(); // app=frontend -> app=backend, both in shop
        assert!(f(&["k8s:app=frontend"], &[]).matches(&flow));
        assert!(f(&["app=frontend"], &["app=backend"]).matches(&flow));
        assert!(
            f(&["app=db", "app=frontend"], &[]).matches(&flow),
            "selectors are ORed"
        );
        assert!(!f(&["app=backend"], &[]).matches(&flow));
        assert!(f(&[], &["k8s:io.kubernetes.pod.namespace=shop,app"]).matches(&flow));
    }

    #[test]
    fn missing_endpoint_has_no_labels() {
        let mut flow = tcp_flow();
        flow.source = None;
        assert!(!f(&["app"], &[]).matches(&flow));
        assert!(f(&["!app"], &[]).matches(&flow));
    }

    #[test]
    fn bad_selector_is_an_error() {
        assert!(CompiledFilter::new(&FlowFilter {
            source_label: vec!["app in web".into()],
            ..Default::default()
        })
        .is_err());
    }
}
