//! `uuid`: flows whose uuid is one of the listed ones.

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.uuid.is_empty() {
        let uuids = filter.uuid.clone();
        checks.push(Box::new(move |flow| uuids.contains(&flow.uuid)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    #[test]
    fn matches_listed_uuids() {
        let flow = tcp_flow();
        let f = |u: &str| {
            CompiledFilter::new(&FlowFilter {
                uuid: vec!["other".into(), u.into()],
                ..Default::default()
            })
            .unwrap()
        };
        assert!(f(&flow.uuid).matches(&flow));
        assert!(!f("nope").matches(&flow));
    }
}
