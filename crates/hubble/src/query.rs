//! What a `GetFlowsRequest` selects, as Hubble's observer does it: which stored flows to send
//! (`number`, `first`, `since`, `until`, allow and deny lists) and what to do with each live flow
//! when following. Pure: no I/O, no clock.

use std::sync::Arc;

use crate::filters::{FilterError, FilterSet};
use crate::flow::Flow;
use crate::observer::GetFlowsRequest;

/// A request that cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    /// `first` asks for the oldest flows, `follow` for an endless stream: Hubble refuses both.
    #[error("first cannot be specified with follow")]
    FirstWithFollow,
    /// A timestamp outside the protobuf Timestamp range.
    #[error("invalid {field} timestamp: {reason}")]
    Timestamp {
        /// `since` or `until`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A malformed allow or deny filter.
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// A point in time with nanosecond resolution, ordered.
type Instant = (i64, i32);

/// The largest seconds value a protobuf Timestamp may hold (9999-12-31T23:59:59Z).
const MAX_SECONDS: i64 = 253_402_300_799;
/// The smallest (0001-01-01T00:00:00Z).
const MIN_SECONDS: i64 = -62_135_596_800;

fn instant(field: &'static str, ts: &prost_types::Timestamp) -> Result<Instant, QueryError> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(QueryError::Timestamp {
            field,
            reason: "nanos out of range",
        });
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(QueryError::Timestamp {
            field,
            reason: "seconds out of range",
        });
    }
    Ok((ts.seconds, ts.nanos))
}

/// When a flow was observed; a flow without a time counts as older than any bound.
fn flow_instant(flow: &Flow) -> Instant {
    flow.time
        .as_ref()
        .map_or((i64::MIN, 0), |t| (t.seconds, t.nanos))
}

/// What to do with one live flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Live {
    /// Send it.
    Send,
    /// Leave it out.
    Skip,
    /// It is past `until`: the stream is over.
    End,
}

/// The stored flows a request selects.
#[derive(Debug)]
pub(crate) struct History<'a> {
    /// Flows to send, oldest first.
    pub flows: Vec<&'a Arc<Flow>>,
    /// Whether a flow past `until` was reached, so the stream ends even when following.
    pub ended: bool,
}

/// A parsed `GetFlowsRequest`.
#[derive(Debug)]
pub(crate) struct FlowQuery {
    filters: FilterSet,
    number: u64,
    first: bool,
    follow: bool,
    since: Option<Instant>,
    until: Option<Instant>,
}

impl FlowQuery {
    /// Validates and parses `req`.
    pub fn new(req: &GetFlowsRequest) -> Result<Self, QueryError> {
        if req.first && req.follow {
            return Err(QueryError::FirstWithFollow);
        }
        Ok(FlowQuery {
            filters: FilterSet::new(&req.whitelist, &req.blacklist)?,
            number: req.number,
            first: req.first,
            follow: req.follow,
            since: req
                .since
                .as_ref()
                .map(|t| instant("since", t))
                .transpose()?,
            until: req
                .until
                .as_ref()
                .map(|t| instant("until", t))
                .transpose()?,
        })
    }

    /// Whether the request keeps streaming new flows.
    pub fn follow(&self) -> bool {
        self.follow
    }

    /// Where in `snapshot` (oldest first) reading starts: the oldest flow with `first`, nothing
    /// stored when only following, otherwise far enough back for `number` matching flows or to
    /// the first flow at or after `since` (which wins over `number`).
    fn start(&self, snapshot: &[Arc<Flow>]) -> usize {
        if self.first && self.since.is_none() {
            return 0;
        }
        if self.follow && self.number == 0 && self.since.is_none() {
            return snapshot.len();
        }
        let mut count = 0;
        for (i, flow) in snapshot.iter().enumerate().rev() {
            if !self.filters.matches(flow) {
                continue;
            }
            count += 1;
            match self.since {
                Some(since) if flow_instant(flow) < since => return i + 1,
                Some(_) => {}
                None if count == self.number => return i,
                None => {}
            }
        }
        0
    }

    /// The stored flows to send.
    pub fn history<'a>(&self, snapshot: &'a [Arc<Flow>]) -> History<'a> {
        let mut flows = Vec::new();
        for flow in &snapshot[self.start(snapshot)..] {
            if !self.follow && self.number > 0 && flows.len() as u64 >= self.number {
                break;
            }
            match self.live(flow) {
                Live::Send => flows.push(flow),
                Live::Skip => {}
                Live::End => return History { flows, ended: true },
            }
        }
        History {
            flows,
            ended: false,
        }
    }

    /// What to do with `flow`, judged by the time range and the filters.
    pub fn live(&self, flow: &Flow) -> Live {
        if self.since.is_some() || self.until.is_some() {
            let at = flow_instant(flow);
            if self.until.is_some_and(|until| at > until) {
                return Live::End;
            }
            if self.since.is_some_and(|since| at < since) {
                return Live::Skip;
            }
        }
        if self.filters.matches(flow) {
            Live::Send
        } else {
            Live::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowFilter, Verdict};

    /// Flows 0..n at t = 1000 + i seconds; odd ones dropped, even ones forwarded.
    fn ring(n: i64) -> Vec<Arc<Flow>> {
        (0..n)
            .map(|i| {
                Arc::new(Flow {
                    uuid: i.to_string(),
                    time: Some(prost_types::Timestamp {
                        seconds: 1000 + i,
                        nanos: 0,
                    }),
                    verdict: if i % 2 == 0 {
                        Verdict::Forwarded
                    } else {
                        Verdict::Dropped
                    } as i32,
                    ..Default::default()
                })
            })
            .collect()
    }

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn dropped() -> Vec<FlowFilter> {
        vec![FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..Default::default()
        }]
    }

    fn select(req: GetFlowsRequest, snapshot: &[Arc<Flow>]) -> (Vec<String>, bool) {
        let q = FlowQuery::new(&req).unwrap();
        let h = q.history(snapshot);
        (h.flows.iter().map(|f| f.uuid.clone()).collect(), h.ended)
    }

    fn ids(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn last_n_is_the_default() {
        let r = ring(10);
        let req = GetFlowsRequest {
            number: 3,
            ..Default::default()
        };
        assert_eq!(select(req, &r).0, ids(&["7", "8", "9"]));
    }

    #[test]
    fn zero_means_everything() {
        assert_eq!(select(GetFlowsRequest::default(), &ring(4)).0.len(), 4);
    }

    #[test]
    fn first_n_from_the_oldest() {
        let req = GetFlowsRequest {
            number: 2,
            first: true,
            ..Default::default()
        };
        assert_eq!(select(req, &ring(10)).0, ids(&["0", "1"]));
    }

    #[test]
    fn number_counts_matching_flows_only() {
        let r = ring(10);
        let last = GetFlowsRequest {
            number: 2,
            whitelist: dropped(),
            ..Default::default()
        };
        assert_eq!(select(last, &r).0, ids(&["7", "9"]));
        let first = GetFlowsRequest {
            number: 2,
            first: true,
            whitelist: dropped(),
            ..Default::default()
        };
        assert_eq!(select(first, &r).0, ids(&["1", "3"]));
        let denied = GetFlowsRequest {
            number: 2,
            blacklist: dropped(),
            ..Default::default()
        };
        assert_eq!(select(denied, &r).0, ids(&["6", "8"]));
    }

    #[test]
    fn since_and_until() {
        let r = ring(10);
        let since = GetFlowsRequest {
            since: ts(1007),
            ..Default::default()
        };
        assert_eq!(select(since, &r).0, ids(&["7", "8", "9"]));
        let window = GetFlowsRequest {
            since: ts(1002),
            until: ts(1004),
            ..Default::default()
        };
        assert_eq!(select(window, &r), (ids(&["2", "3", "4"]), true));
        let since_wins = GetFlowsRequest {
            number: 2,
            since: ts(1005),
            ..Default::default()
        };
        assert_eq!(select(since_wins, &r).0, ids(&["5", "6"]));
        let until_only = GetFlowsRequest {
            until: ts(1001),
            ..Default::default()
        };
        assert_eq!(select(until_only, &r), (ids(&["0", "1"]), true));
    }

    #[test]
    fn follow_without_number_sends_no_history() {
        let req = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        assert!(select(req, &ring(5)).0.is_empty());
        let with_number = GetFlowsRequest {
            follow: true,
            number: 2,
            ..Default::default()
        };
        assert_eq!(select(with_number, &ring(5)).0, ids(&["3", "4"]));
    }

    #[test]
    fn live_flows_respect_filters_and_until() {
        let r = ring(10);
        let q = FlowQuery::new(&GetFlowsRequest {
            follow: true,
            whitelist: dropped(),
            until: ts(1005),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.live(&r[1]), Live::Send);
        assert_eq!(q.live(&r[2]), Live::Skip);
        assert_eq!(q.live(&r[7]), Live::End);
    }

    #[test]
    fn invalid_requests() {
        let both = GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        };
        assert!(matches!(
            FlowQuery::new(&both),
            Err(QueryError::FirstWithFollow)
        ));
        let bad_ts = GetFlowsRequest {
            since: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        };
        assert!(matches!(
            FlowQuery::new(&bad_ts),
            Err(QueryError::Timestamp { field: "since", .. })
        ));
        let bad_filter = GetFlowsRequest {
            whitelist: vec![FlowFilter {
                protocol: vec!["bogus".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            FlowQuery::new(&bad_filter),
            Err(QueryError::Filter(_))
        ));
    }
}
