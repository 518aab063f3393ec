//! `verdict`: flows with one of the listed verdicts.

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.verdict.is_empty() {
        let verdicts = filter.verdict.clone();
        checks.push(Box::new(move |flow| verdicts.contains(&flow.verdict)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{dropped_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, Verdict};

    fn filter(v: &[Verdict]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            verdict: v.iter().map(|v| *v as i32).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn matches_listed_verdicts() {
        assert!(filter(&[Verdict::Forwarded]).matches(&tcp_flow()));
        assert!(!filter(&[Verdict::Forwarded]).matches(&dropped_flow()));
        assert!(filter(&[Verdict::Audit, Verdict::Dropped]).matches(&dropped_flow()));
    }
}
