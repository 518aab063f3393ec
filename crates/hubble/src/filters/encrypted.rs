//! `encrypted`: flows whose IP header is (or is not) marked for encryption.

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.encrypted.is_empty() {
        let wanted = filter.encrypted.clone();
        checks.push(Box::new(move |flow| {
            let encrypted = flow.ip.as_ref().is_some_and(|ip| ip.encrypted);
            wanted.contains(&encrypted)
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    fn filter(v: bool) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            encrypted: vec![v],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn matches_encryption_status() {
        let mut flow = tcp_flow();
        assert!(filter(false).matches(&flow));
        assert!(!filter(true).matches(&flow));
        flow.ip.as_mut().unwrap().encrypted = true;
        assert!(filter(true).matches(&flow));
    }
}
