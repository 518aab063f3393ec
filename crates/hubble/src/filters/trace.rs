//! `trace_id` (the trace context's trace id) and `ip_trace_id` (the trace id in IP options).

use super::{Check, FilterError};
use crate::flow::FlowFilter;

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.trace_id.is_empty() {
        let ids = filter.trace_id.clone();
        checks.push(Box::new(move |flow| {
            let id = flow
                .trace_context
                .as_ref()
                .and_then(|c| c.parent.as_ref())
                .map_or("", |p| p.trace_id.as_str());
            ids.iter().any(|want| want == id)
        }));
    }
    Ok(())
}

pub(super) fn build_ip_trace_id(
    filter: &FlowFilter,
    checks: &mut Vec<Check>,
) -> Result<(), FilterError> {
    if !filter.ip_trace_id.is_empty() {
        let ids = filter.ip_trace_id.clone();
        checks.push(Box::new(move |flow| {
            ids.contains(&flow.ip_trace_id.as_ref().map_or(0, |t| t.trace_id))
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use crate::flow::{FlowFilter, IpTraceId, TraceContext, TraceParent};

    #[test]
    fn trace_context_id() {
        let f = CompiledFilter::new(&FlowFilter {
            trace_id: vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()],
            ..Default::default()
        })
        .unwrap();
        let mut flow = tcp_flow();
        assert!(!f.matches(&flow));
        flow.trace_context = Some(TraceContext {
            parent: Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            }),
        });
        assert!(f.matches(&flow));
    }

    #[test]
    fn ip_option_trace_id() {
        let f = CompiledFilter::new(&FlowFilter {
            ip_trace_id: vec![42],
            ..Default::default()
        })
        .unwrap();
        let mut flow = tcp_flow();
        assert!(!f.matches(&flow));
        flow.ip_trace_id = Some(IpTraceId {
            trace_id: 42,
            ip_option_type: 136,
        });
        assert!(f.matches(&flow));
    }
}
