//! `ObserverService`: Hubble's `observer.Observer` gRPC service over a [`FlowSource`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::flow::{Flow, LostEvent, LostEventSource};
use crate::observer::observer_server::Observer;
use crate::observer::{
    get_flows_response, GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
    GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
    GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest,
    ServerStatusResponse, Tls,
};
use crate::query::{FlowQuery, Live, QueryError};
use crate::relay::NodeState;
use crate::source::FlowSource;

/// How often a follower checks the source's loss counters.
const LOST_POLL: Duration = Duration::from_secs(1);
/// Responses buffered per GetFlows stream before the sender waits for the client.
const STREAM_BUFFER: usize = 128;
/// Namespaces count as active for `GetNamespaces` this long after their last flow.
const NAMESPACE_WINDOW: Duration = Duration::from_secs(3600);
/// Window of the flow rate in `ServerStatus`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The Observer service over a flow source; wrap it in
/// [`ObserverServer`](crate::observer::observer_server::ObserverServer) to serve it.
#[derive(Debug)]
pub struct ObserverService<S: FlowSource> {
    source: Arc<S>,
    version: String,
    address: String,
    /// Flipped to true to end every follow stream (shared by clones).
    closing: Arc<watch::Sender<bool>>,
}

impl<S: FlowSource> Clone for ObserverService<S> {
    fn clone(&self) -> Self {
        ObserverService {
            source: Arc::clone(&self.source),
            version: self.version.clone(),
            address: self.address.clone(),
            closing: Arc::clone(&self.closing),
        }
    }
}

impl<S: FlowSource> ObserverService<S> {
    /// A service reading `source`, reporting this crate's version.
    pub fn new(source: Arc<S>) -> Self {
        ObserverService {
            source,
            version: concat!(env!("CARGO_PKG_VERSION"), "+plexus").to_string(),
            address: String::new(),
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Sets the version string reported by `ServerStatus` and `GetNodes`.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the API address `GetNodes` reports for this node.
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// The source the service reads.
    pub fn source(&self) -> &Arc<S> {
        &self.source
    }

    /// Ends every follow stream of this service and its clones, now and from now on, so that a
    /// server shutting down does not wait for followers that never leave.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn flow_response(flow: &Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time,
        response_types: Some(get_flows_response::ResponseTypes::Flow(flow.clone())),
    }
}

fn lost_response(node: &str, source: LostEventSource, count: u64) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: node.to_string(),
        time: Some(now()),
        response_types: Some(get_flows_response::ResponseTypes::LostEvents(LostEvent {
            source: source as i32,
            num_events_lost: count,
            ..Default::default()
        })),
    }
}

impl From<QueryError> for Status {
    fn from(e: QueryError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// How long ago `flow` was observed; `None` when it has no time (or one before the epoch).
fn age(flow: &Flow, now: SystemTime) -> Option<Duration> {
    let t = flow.time.as_ref()?;
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::new(
        u64::try_from(t.seconds).ok()?,
        t.nanos.max(0) as u32,
    ))?;
    Some(now.duration_since(at).unwrap_or_default())
}

/// Completes once the service closes its streams (or is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not in the caller's state.
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}

/// Streams live flows to one follower until the client leaves, the source closes or the query's
/// `until` passes. Lag of the follower and losses the source reports become `lost_events`.
struct Follower<S: FlowSource> {
    source: Arc<S>,
    query: FlowQuery,
    node: String,
    tx: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    /// Flows of the snapshot, by address, that a non-atomic source may deliver again; the
    /// snapshot is kept alive so the addresses stay unique.
    repeats: Option<(HashSet<usize>, Vec<Arc<Flow>>)>,
    lost_baseline: HashMap<i32, u64>,
}

impl<S: FlowSource> Follower<S> {
    async fn send(&self, resp: GetFlowsResponse) -> bool {
        self.tx.send(Ok(resp)).await.is_ok()
    }

    /// Whether `flow` was already sent from the snapshot.
    fn repeated(&mut self, flow: &Arc<Flow>) -> bool {
        if let Some((seen, _)) = &self.repeats {
            if seen.contains(&(Arc::as_ptr(flow) as usize)) {
                return true;
            }
            // The first flow not in the snapshot: all later ones are new.
            self.repeats = None;
        }
        false
    }

    /// Losses the source counted since the last look, as responses.
    fn new_losses(&mut self) -> Vec<GetFlowsResponse> {
        let mut out = Vec::new();
        for (source, count) in self.source.status().lost {
            let seen = self.lost_baseline.entry(source as i32).or_insert(0);
            if count > *seen {
                out.push(lost_response(&self.node, source, count - *seen));
                *seen = count;
            }
        }
        out
    }

    async fn run(
        mut self,
        mut rx: broadcast::Receiver<Arc<Flow>>,
        mut closing: watch::Receiver<bool>,
    ) {
        let mut poll = tokio::time::interval(LOST_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.tx.closed() => return,
                () = closed(&mut closing) => return,
                received = rx.recv() => match received {
                    Ok(flow) => {
                        if self.repeated(&flow) {
                            continue;
                        }
                        match self.query.live(&flow) {
                            Live::Send => {
                                if !self.send(flow_response(&flow)).await {
                                    return;
                                }
                            }
                            Live::Skip => {}
                            Live::End => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.repeats = None;
                        let lost = lost_response(&self.node, LostEventSource::HubbleRingBuffer, n);
                        if !self.send(lost).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = poll.tick() => {
                    for lost in self.new_losses() {
                        if !self.send(lost).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl<S: FlowSource> Observer for ObserverService<S> {
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<BoxStream<GetFlowsResponse>>, Status> {
        let query = FlowQuery::new(request.get_ref())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let source = Arc::clone(&self.source);
        let node = source.node_name();
        if query.follow() {
            // Loss counters before the snapshot: anything lost later is news to this client.
            let lost_baseline = source
                .status()
                .lost
                .into_iter()
                .map(|(s, n)| (s as i32, n))
                .collect();
            let (snapshot, live) = source.snapshot_and_subscribe();
            let closing = self.closing.subscribe();
            tokio::spawn(async move {
                let history = query.history(&snapshot);
                for flow in &history.flows {
                    if tx.send(Ok(flow_response(flow))).await.is_err() {
                        return;
                    }
                }
                if history.ended {
                    return;
                }
                let seen = snapshot.iter().map(|f| Arc::as_ptr(f) as usize).collect();
                let follower = Follower {
                    source,
                    query,
                    node,
                    tx,
                    repeats: Some((seen, snapshot)),
                    lost_baseline,
                };
                follower.run(live, closing).await;
            });
        } else {
            let snapshot = source.snapshot();
            tokio::spawn(async move {
                for flow in query.history(&snapshot).flows {
                    if tx.send(Ok(flow_response(flow))).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<BoxStream<GetAgentEventsResponse>>, Status> {
        Err(Status::unimplemented("Plexus does not export agent events"))
    }

    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<BoxStream<GetDebugEventsResponse>>, Status> {
        Err(Status::unimplemented("Plexus does not export debug events"))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let status = self.source.status();
        let node = Node {
            name: self.source.node_name(),
            version: self.version.clone(),
            address: self.address.clone(),
            state: NodeState::NodeConnected as i32,
            tls: Some(Tls {
                enabled: false,
                server_name: String::new(),
            }),
            uptime_ns: status.uptime.as_nanos() as u64,
            num_flows: status.num_flows,
            max_flows: status.max_flows,
            seen_flows: status.seen_flows,
        };
        Ok(Response::new(GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let now = SystemTime::now();
        let mut seen = BTreeSet::new();
        for flow in self.source.snapshot() {
            if age(&flow, now).is_some_and(|a| a > NAMESPACE_WINDOW) {
                continue;
            }
            for ep in [&flow.source, &flow.destination].into_iter().flatten() {
                if !ep.namespace.is_empty() {
                    seen.insert((ep.cluster_name.clone(), ep.namespace.clone()));
                }
            }
        }
        let namespaces = seen
            .into_iter()
            .map(|(cluster, namespace)| Namespace { cluster, namespace })
            .collect();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let status = self.source.status();
        let now = SystemTime::now();
        let recent = self
            .source
            .snapshot()
            .iter()
            .filter(|f| age(f, now).is_some_and(|a| a <= RATE_WINDOW))
            .count();
        let window = status.uptime.clamp(Duration::from_secs(1), RATE_WINDOW);
        Ok(Response::new(ServerStatusResponse {
            num_flows: status.num_flows,
            max_flows: status.max_flows,
            seen_flows: status.seen_flows,
            uptime_ns: status.uptime.as_nanos() as u64,
            num_connected_nodes: Some(1),
            num_unavailable_nodes: Some(0),
            unavailable_nodes: Vec::new(),
            version: self.version.clone(),
            flows_rate: recent as f64 / window.as_secs_f64(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::FlowRing;
    use tokio_stream::StreamExt;

    fn flow(n: i64) -> Flow {
        Flow {
            uuid: n.to_string(),
            node_name: "node-a".into(),
            time: Some(prost_types::Timestamp::from(SystemTime::now())),
            ..Default::default()
        }
    }

    fn uuid(resp: &GetFlowsResponse) -> Option<&str> {
        match resp.response_types.as_ref()? {
            get_flows_response::ResponseTypes::Flow(f) => Some(&f.uuid),
            _ => None,
        }
    }

    /// A source without an atomic snapshot-and-subscribe, to exercise repeat removal.
    struct Racy(FlowRing);

    impl FlowSource for Racy {
        fn snapshot(&self) -> Vec<Arc<Flow>> {
            self.0.snapshot()
        }
        fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
            let rx = self.0.subscribe();
            // A flow stored between subscribing and the snapshot lands in both.
            self.0.push(flow(100));
            rx
        }
        fn status(&self) -> crate::source::Status {
            self.0.status()
        }
        fn node_name(&self) -> String {
            self.0.node_name()
        }
    }

    #[tokio::test]
    async fn repeats_of_a_non_atomic_source_are_dropped() {
        let racy = Arc::new(Racy(FlowRing::new("node-a", 16)));
        racy.0.push(flow(1));
        let svc = ObserverService::new(Arc::clone(&racy));
        let req = GetFlowsRequest {
            follow: true,
            number: 10,
            ..Default::default()
        };
        let mut stream = svc.get_flows(Request::new(req)).await.unwrap().into_inner();
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(
                uuid(&stream.next().await.unwrap().unwrap())
                    .unwrap()
                    .to_string(),
            );
        }
        racy.0.push(flow(2));
        got.push(
            uuid(&stream.next().await.unwrap().unwrap())
                .unwrap()
                .to_string(),
        );
        assert_eq!(got, ["1", "100", "2"]);
    }

    #[tokio::test]
    async fn lagging_follower_gets_a_lost_event() {
        let ring = Arc::new(FlowRing::with_follower_backlog("node-a", 64, 2));
        let svc = ObserverService::new(Arc::clone(&ring));
        let req = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        let mut stream = svc.get_flows(Request::new(req)).await.unwrap().into_inner();
        tokio::task::yield_now().await;
        // Five flows into a backlog of two, before the follower task runs: three are lost.
        for n in 0..5 {
            ring.push(flow(n));
        }
        let first = stream.next().await.unwrap().unwrap();
        match first.response_types {
            Some(get_flows_response::ResponseTypes::LostEvents(lost)) => {
                assert_eq!(lost.source, LostEventSource::HubbleRingBuffer as i32);
                assert_eq!(lost.num_events_lost, 3);
                assert_eq!(first.node_name, "node-a");
            }
            other => panic!("expected lost events, got {other:?}"),
        }
        let next: Vec<_> = [stream.next().await, stream.next().await]
            .into_iter()
            .map(|r| uuid(&r.unwrap().unwrap()).unwrap().to_string())
            .collect();
        assert_eq!(next, ["3", "4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn source_losses_reach_followers() {
        let ring = Arc::new(FlowRing::new("node-a", 8));
        ring.record_lost(LostEventSource::PerfEventRingBuffer, 7); // before: not news
        let svc = ObserverService::new(Arc::clone(&ring));
        let req = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        let mut stream = svc.get_flows(Request::new(req)).await.unwrap().into_inner();
        ring.record_lost(LostEventSource::PerfEventRingBuffer, 4);
        let resp = stream.next().await.unwrap().unwrap();
        match resp.response_types {
            Some(get_flows_response::ResponseTypes::LostEvents(lost)) => {
                assert_eq!(lost.source, LostEventSource::PerfEventRingBuffer as i32);
                assert_eq!(lost.num_events_lost, 4);
            }
            other => panic!("expected lost events, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn first_with_follow_is_invalid() {
        let svc = ObserverService::new(Arc::new(FlowRing::new("n", 1)));
        let req = GetFlowsRequest {
            follow: true,
            first: true,
            ..Default::default()
        };
        let err = svc.get_flows(Request::new(req)).await.err().unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn namespaces_of_recent_flows_sorted() {
        let ring = Arc::new(FlowRing::new("n", 8));
        let ep = |ns: &str| crate::flow::Endpoint {
            namespace: ns.into(),
            cluster_name: "default".into(),
            ..Default::default()
        };
        let mut f = flow(1);
        f.source = Some(ep("shop"));
        f.destination = Some(ep("kube-system"));
        ring.push(f);
        let mut old = flow(2);
        old.time = Some(prost_types::Timestamp {
            seconds: 1_000,
            nanos: 0,
        });
        old.source = Some(ep("ancient"));
        ring.push(old);
        let svc = ObserverService::new(ring);
        let got = svc
            .get_namespaces(Request::new(GetNamespacesRequest {}))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<_> = got
            .namespaces
            .iter()
            .map(|n| n.namespace.as_str())
            .collect();
        assert_eq!(names, ["kube-system", "shop"]);
    }
}
