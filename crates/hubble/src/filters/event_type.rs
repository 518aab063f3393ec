//! `event_type`: the datapath message type of a flow and, when `match_sub_type` is set, its
//! sub-type. A type of 0 in the filter matches any type.

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.event_type.is_empty() {
        let wanted = filter.event_type.clone();
        checks.push(Box::new(move |flow| {
            let Some(ev) = flow.event_type.as_ref() else {
                return false;
            };
            wanted.iter().any(|w| {
                (w.r#type == 0 || w.r#type == ev.r#type)
                    && (!w.match_sub_type || w.sub_type == ev.sub_type)
            })
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{dropped_flow, tcp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{EventTypeFilter, FlowFilter};
    use crate::message_type::{DROP, TRACE};

    fn f(entries: &[(i32, Option<i32>)]) -> CompiledFilter {
        CompiledFilter::new(&FlowFilter {
            event_type: entries
                .iter()
                .map(|(t, sub)| EventTypeFilter {
                    r#type: *t,
                    match_sub_type: sub.is_some(),
                    sub_type: sub.unwrap_or(0),
                })
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn type_and_optional_sub_type() {
        let trace = tcp_flow(); // trace, sub-type 0
        let drop = dropped_flow(); // drop, sub-type 133
        assert!(f(&[(TRACE, None)]).matches(&trace));
        assert!(!f(&[(TRACE, None)]).matches(&drop));
        assert!(
            f(&[(TRACE, Some(0))]).matches(&trace),
            "0 is a real sub-type"
        );
        assert!(!f(&[(TRACE, Some(5))]).matches(&trace));
        assert!(f(&[(DROP, Some(133))]).matches(&drop));
        assert!(f(&[(TRACE, None), (DROP, None)]).matches(&drop));
        assert!(f(&[(0, None)]).matches(&drop), "type 0 matches any type");
    }

    #[test]
    fn flow_without_event_type_never_matches() {
        let mut flow = tcp_flow();
        flow.event_type = None;
        assert!(!f(&[(0, None)]).matches(&flow));
    }
}
