//! Flow filters with Hubble's semantics: one file per filter family, each turning the fields of a
//! `FlowFilter` it knows into checks over a flow, combined here.
//!
//! A flow passes a request when the allow list is empty or at least one allow filter matches, and
//! no deny filter matches. Within one `FlowFilter` every field that is set must match (AND);
//! within one repeated field any value may match (OR).

mod cluster;
mod drop_reason;
mod encrypted;
mod event_type;
mod fqdn;
mod http;
mod identity;
mod interface;
mod ip;
mod label_selector;
mod labels;
mod namespaced_name;
mod node;
mod patterns;
mod pod;
mod port;
mod protocol;
mod reply;
mod service;
mod tcp_flags;
mod trace;
mod traffic_direction;
mod uuid;
mod verdict;
mod workload;

#[cfg(test)]
pub(crate) mod testutil;

use crate::flow::{Flow, FlowFilter};

pub use label_selector::LabelSelector;

/// A filter field that could not be turned into a check.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// An entry of a filter field is malformed.
    #[error("invalid {field} filter {value:?}: {reason}")]
    Invalid {
        /// The `FlowFilter` field, as named in the protobuf schema.
        field: &'static str,
        /// The offending entry.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The field is valid in Hubble's API but Plexus does not implement it.
    #[error("{field} filters are not supported by Plexus")]
    Unsupported {
        /// The `FlowFilter` field, as named in the protobuf schema.
        field: &'static str,
    },
}

impl FilterError {
    pub(crate) fn invalid(field: &'static str, value: &str, reason: impl ToString) -> Self {
        FilterError::Invalid {
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// One check over a flow, built from one field of a `FlowFilter`.
pub(crate) type Check = Box<dyn Fn(&Flow) -> bool + Send + Sync>;

/// Adds the checks of one filter family for the fields of a `FlowFilter` it knows.
type Builder = fn(&FlowFilter, &mut Vec<Check>) -> Result<(), FilterError>;

/// The builders of every filter family, in the order Hubble applies them.
const BUILDERS: &[Builder] = &[
    uuid::build,
    event_type::build,
    verdict::build,
    drop_reason::build,
    reply::build,
    encrypted::build,
    identity::build,
    protocol::build,
    ip::build,
    pod::build,
    workload::build,
    service::build,
    fqdn::build,
    labels::build,
    port::build,
    http::build,
    tcp_flags::build,
    node::build,
    cluster::build,
    ip::build_version,
    trace::build,
    traffic_direction::build,
    interface::build,
    trace::build_ip_trace_id,
    build_experimental,
];

/// CEL expressions are part of Hubble's API, but Plexus evaluates no CEL: say so instead of
/// silently matching everything.
fn build_experimental(filter: &FlowFilter, _checks: &mut Vec<Check>) -> Result<(), FilterError> {
    match &filter.experimental {
        Some(e) if !e.cel_expression.is_empty() => Err(FilterError::Unsupported {
            field: "experimental.cel_expression",
        }),
        _ => Ok(()),
    }
}

/// One `FlowFilter`, parsed once: it matches a flow when all of its checks do.
pub struct CompiledFilter {
    checks: Vec<Check>,
}

impl CompiledFilter {
    /// Parses every field of `filter`; an empty filter matches every flow.
    pub fn new(filter: &FlowFilter) -> Result<Self, FilterError> {
        let mut checks = Vec::new();
        for build in BUILDERS {
            build(filter, &mut checks)?;
        }
        Ok(CompiledFilter { checks })
    }

    /// Whether every field of the filter matches `flow`.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.checks.iter().all(|check| check(flow))
    }
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("checks", &self.checks.len())
            .finish()
    }
}

/// The allow and deny lists of a request, parsed once.
#[derive(Debug)]
pub struct FilterSet {
    allow: Vec<CompiledFilter>,
    deny: Vec<CompiledFilter>,
}

impl FilterSet {
    /// Parses both lists; the first malformed field of any filter is the error.
    pub fn new(allow: &[FlowFilter], deny: &[FlowFilter]) -> Result<Self, FilterError> {
        Ok(FilterSet {
            allow: allow
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether `flow` passes: allowed by one allow filter (or the list is empty) and denied by
    /// none.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|f| f.matches(flow)))
            && !self.deny.iter().any(|f| f.matches(flow))
    }
}

/// Whether `flow` passes the allow and deny lists, parsing them on the way. A filter that does
/// not parse matches no flow here; use [`FilterSet::new`] to reject it instead (as the server
/// does, with `InvalidArgument`).
pub fn matches(flow: &Flow, allow: &[FlowFilter], deny: &[FlowFilter]) -> bool {
    let hits = |filter: &FlowFilter| CompiledFilter::new(filter).is_ok_and(|f| f.matches(flow));
    (allow.is_empty() || allow.iter().any(hits)) && !deny.iter().any(hits)
}

#[cfg(test)]
mod tests {
    use super::testutil::{tcp_flow, udp_flow};
    use super::*;
    use crate::flow::Verdict;

    fn pods(src: &str) -> FlowFilter {
        FlowFilter {
            source_pod: vec![src.to_string()],
            ..Default::default()
        }
    }

    #[test]
    fn empty_lists_let_everything_through() {
        assert!(matches(&tcp_flow(), &[], &[]));
    }

    #[test]
    fn empty_filter_matches_every_flow() {
        assert!(matches(&tcp_flow(), &[FlowFilter::default()], &[]));
        assert!(!matches(&tcp_flow(), &[], &[FlowFilter::default()]));
    }

    #[test]
    fn allow_list_is_an_or_of_filters() {
        let flow = tcp_flow(); // shop/frontend-7d4 -> shop/backend-5f9
        assert!(matches(&flow, &[pods("shop/frontend")], &[]));
        assert!(matches(
            &flow,
            &[pods("other/"), pods("shop/frontend")],
            &[]
        ));
        assert!(!matches(
            &flow,
            &[pods("other/"), pods("shop/backend")],
            &[]
        ));
    }

    #[test]
    fn fields_within_a_filter_are_anded() {
        let flow = tcp_flow();
        let both = FlowFilter {
            source_pod: vec!["shop/frontend".into()],
            verdict: vec![Verdict::Forwarded as i32],
            ..Default::default()
        };
        assert!(matches(&flow, std::slice::from_ref(&both), &[]));
        let wrong_verdict = FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..both
        };
        assert!(!matches(&flow, &[wrong_verdict], &[]));
    }

    #[test]
    fn values_within_a_field_are_ored() {
        let f = FlowFilter {
            verdict: vec![Verdict::Dropped as i32, Verdict::Forwarded as i32],
            ..Default::default()
        };
        assert!(matches(&tcp_flow(), &[f], &[]));
    }

    #[test]
    fn deny_wins_over_allow() {
        let flow = tcp_flow();
        assert!(!matches(
            &flow,
            &[pods("shop/")],
            &[FlowFilter {
                protocol: vec!["tcp".into()],
                ..Default::default()
            }]
        ));
        assert!(matches(
            &flow,
            &[pods("shop/")],
            &[FlowFilter {
                protocol: vec!["udp".into()],
                ..Default::default()
            }]
        ));
        // A deny list alone removes only what it matches.
        let deny_udp = [FlowFilter {
            protocol: vec!["udp".into()],
            ..Default::default()
        }];
        assert!(matches(&flow, &[], &deny_udp));
        assert!(!matches(&udp_flow(), &[], &deny_udp));
    }

    #[test]
    fn filter_set_rejects_malformed_fields() {
        let bad = FlowFilter {
            source_ip: vec!["10.0.0.300".into()],
            ..Default::default()
        };
        let err = FilterSet::new(std::slice::from_ref(&bad), &[]).unwrap_err();
        assert!(err.to_string().contains("source_ip"), "{err}");
        assert!(FilterSet::new(&[], std::slice::from_ref(&bad)).is_err());
        // The lenient helper treats it as matching nothing.
        assert!(!matches(&tcp_flow(), std::slice::from_ref(&bad), &[]));
        assert!(matches(&tcp_flow(), &[], &[bad]));
    }

    #[test]
    fn cel_is_refused_not_ignored() {
        let f = FlowFilter {
            experimental: Some(crate::flow::flow_filter::Experimental {
                cel_expression: vec!["true".into()],
            }),
            ..Default::default()
        };
        assert!(matches!(
            CompiledFilter::new(&f),
            Err(FilterError::Unsupported { .. })
        ));
    }

    #[test]
    fn filter_set_matches_like_the_helper() {
        let set = FilterSet::new(&[pods("shop/")], &[pods("shop/backend")]).unwrap();
        assert!(set.matches(&tcp_flow()));
        let mut reversed = tcp_flow();
        std::mem::swap(&mut reversed.source, &mut reversed.destination);
        assert!(!set.matches(&reversed));
    }
}
