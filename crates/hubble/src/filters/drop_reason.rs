//! `drop_reason_desc`: dropped flows with one of the listed drop reasons.

use super::{Check, FilterError};
use crate::flow::{FlowFilter, Verdict};

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.drop_reason_desc.is_empty() {
        let reasons = filter.drop_reason_desc.clone();
        checks.push(Box::new(move |flow| {
            flow.verdict == Verdict::Dropped as i32 && reasons.contains(&flow.drop_reason_desc)
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{dropped_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{DropReason, FlowFilter};

    fn filter(r: &[DropReason]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            drop_reason_desc: r.iter().map(|r| *r as i32).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn matches_dropped_flows_with_listed_reason() {
        assert!(filter(&[DropReason::PolicyDenied]).matches(&dropped_flow()));
        assert!(
            filter(&[DropReason::CtMapInsertionFailed, DropReason::PolicyDenied])
                .matches(&dropped_flow())
        );
        assert!(!filter(&[DropReason::PolicyDeny]).matches(&dropped_flow()));
    }

    #[test]
    fn never_matches_flows_that_were_not_dropped() {
        let mut forwarded = tcp_flow();
        forwarded.drop_reason_desc = DropReason::PolicyDenied as i32;
        assert!(!filter(&[DropReason::PolicyDenied]).matches(&forwarded));
    }
}
