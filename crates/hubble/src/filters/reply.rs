//! `reply`: flows in (or not in) the reply direction. A flow whose direction is unknown matches
//! neither, except dropped flows, which count as non-replies (as Hubble does for old clients).

use super::{Check, FilterError};
use crate::flow::{FlowFilter, Verdict};

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.reply.is_empty() {
        let wanted = filter.reply.clone();
        checks.push(Box::new(move |flow| {
            match (flow.is_reply, flow.verdict == Verdict::Dropped as i32) {
                (Some(reply), _) => wanted.contains(&reply),
                (None, true) => wanted.contains(&false),
                (None, false) => false,
            }
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{dropped_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::FlowFilter;

    fn f(r: &[bool]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            reply: r.to_vec(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn known_direction() {
        let mut flow = tcp_flow();
        assert!(f(&[false]).matches(&flow));
        assert!(!f(&[true]).matches(&flow));
        flow.is_reply = Some(true);
        assert!(f(&[true]).matches(&flow));
        assert!(f(&[false, true]).matches(&flow));
    }

    #[test]
    fn unknown_direction() {
        let mut flow = tcp_flow();
        flow.is_reply = None;
        assert!(!f(&[false]).matches(&flow));
        assert!(!f(&[true]).matches(&flow));
        let dropped = dropped_flow(); // is_reply unset
        assert!(f(&[false]).matches(&dropped));
        assert!(!f(&[true]).matches(&dropped));
    }
}
