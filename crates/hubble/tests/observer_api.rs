//! The Observer API end to end: a ring of realistic flows served on a unix socket and a loopback
//! TCP port, read with the generated tonic client.

mod common;

use std::time::Duration;

use common::{serve_samples, Served, CAPACITY, NODE};
use plexus_hubble::flow::{DropReason, Flow, FlowFilter, Verdict};
use plexus_hubble::observer::observer_client::ObserverClient;
use plexus_hubble::observer::{
    get_flows_response::ResponseTypes, GetAgentEventsRequest, GetFlowsRequest, GetFlowsResponse,
    GetNamespacesRequest, GetNodesRequest, ServerStatusRequest,
};
use plexus_hubble::relay::NodeState;
use plexus_hubble::FlowSource;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn client(uri: String) -> ObserverClient<Channel> {
    tokio::time::timeout(TIMEOUT, ObserverClient::connect(uri))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// The uuid suffix (the fixture's sequence number) of each flow of a finished stream.
async fn seqs(client: &mut ObserverClient<Channel>, req: GetFlowsRequest) -> Vec<u64> {
    let stream = client.get_flows(req).await.expect("get_flows").into_inner();
    let responses: Vec<GetFlowsResponse> =
        tokio::time::timeout(TIMEOUT, stream.map(|r| r.expect("stream item")).collect())
            .await
            .expect("stream did not end");
    responses.iter().map(|r| seq(flow_of(r))).collect()
}

fn flow_of(resp: &GetFlowsResponse) -> &Flow {
    match resp.response_types.as_ref() {
        Some(ResponseTypes::Flow(f)) => f,
        other => panic!("expected a flow, got {other:?}"),
    }
}

fn seq(flow: &Flow) -> u64 {
    flow.uuid.rsplit('-').next().unwrap().parse().unwrap()
}

/// The sequence number of the next flow of a stream that stays open.
async fn next_seq(stream: &mut tonic::Streaming<GetFlowsResponse>) -> u64 {
    let item = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("no flow in time");
    seq(flow_of(&item.expect("stream ended").expect("stream error")))
}

fn filter(f: impl FnOnce(&mut FlowFilter)) -> FlowFilter {
    let mut filter = FlowFilter::default();
    f(&mut filter);
    filter
}

#[tokio::test]
async fn last_and_first_n_over_the_unix_socket() {
    let served = serve_samples("last-first").await;
    let mut c = client(served.unix_uri()).await;
    let last = GetFlowsRequest {
        number: 3,
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, last).await, [4, 5, 6]);
    let first = GetFlowsRequest {
        number: 2,
        first: true,
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, first).await, [1, 2]);
    let all = GetFlowsRequest::default();
    assert_eq!(seqs(&mut c, all).await, [1, 2, 3, 4, 5, 6]);
    served.shutdown().await;
}

#[tokio::test]
async fn flows_arrive_whole_over_tcp() {
    let served = serve_samples("whole").await;
    let mut c = client(served.tcp_uri()).await;
    let req = GetFlowsRequest {
        number: 1,
        first: true,
        ..Default::default()
    };
    let mut stream = c.get_flows(req).await.unwrap().into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    assert_eq!(resp.node_name, NODE);
    let got = flow_of(&resp);
    assert_eq!(got, served.ring.snapshot()[0].as_ref());
    assert_eq!(resp.time, got.time);
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn allow_and_deny_lists() {
    let served = serve_samples("filters").await;
    let mut c = client(served.tcp_uri()).await;

    // Allow: from shop/frontend over UDP (one filter, two fields: AND).
    let req = GetFlowsRequest {
        whitelist: vec![filter(|f| {
            f.source_pod = vec!["shop/frontend".into()];
            f.protocol = vec!["udp".into()];
        })],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [4]);

    // Allow either of two filters (OR).
    let req = GetFlowsRequest {
        whitelist: vec![
            filter(|f| f.destination_port = vec!["53".into()]),
            filter(|f| f.source_label = vec!["k8s:app=prometheus".into()]),
        ],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [4, 6]);

    // Deny dropped flows, last two of what is left.
    let req = GetFlowsRequest {
        number: 2,
        blacklist: vec![filter(|f| f.verdict = vec![Verdict::Dropped as i32])],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [4, 5]);

    // Allow minus deny: everything into shop/backend except from default/.
    let req = GetFlowsRequest {
        whitelist: vec![filter(|f| f.destination_pod = vec!["shop/backend".into()])],
        blacklist: vec![filter(|f| f.source_pod = vec!["default/".into()])],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [1, 6]);

    // Drop reasons, replies, identities, CIDRs.
    let req = GetFlowsRequest {
        whitelist: vec![filter(|f| {
            f.drop_reason_desc = vec![DropReason::PolicyDeny as i32]
        })],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [6]);
    let req = GetFlowsRequest {
        whitelist: vec![filter(|f| f.reply = vec![true])],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [2, 5]);
    let req = GetFlowsRequest {
        whitelist: vec![filter(|f| {
            f.source_identity = vec![12345];
            f.destination_ip = vec!["10.0.2.0/24".into()];
        })],
        ..Default::default()
    };
    assert_eq!(seqs(&mut c, req).await, [1]);
    served.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let served = serve_samples("invalid").await;
    let mut c = client(served.tcp_uri()).await;
    let bad_filter = GetFlowsRequest {
        whitelist: vec![filter(|f| f.source_ip = vec!["not-an-ip".into()])],
        ..Default::default()
    };
    let err = c.get_flows(bad_filter).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("source_ip"), "{}", err.message());
    let first_follow = GetFlowsRequest {
        first: true,
        follow: true,
        ..Default::default()
    };
    let err = c.get_flows(first_follow).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c
        .get_agent_events(GetAgentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    served.shutdown().await;
}

#[tokio::test]
async fn follow_streams_history_then_new_flows() {
    let served = serve_samples("follow").await;
    let mut c = client(served.unix_uri()).await;
    let req = GetFlowsRequest {
        number: 1,
        follow: true,
        blacklist: vec![filter(|f| f.verdict = vec![Verdict::Dropped as i32])],
        ..Default::default()
    };
    let mut stream = c.get_flows(req).await.unwrap().into_inner();
    assert_eq!(
        next_seq(&mut stream).await,
        5,
        "the last allowed stored flow first"
    );

    // The stream is established: new flows arrive, denied ones do not.
    let mut samples = common::sample_flows();
    let mut denied = samples.remove(2); // dropped
    denied.uuid = "00000000-0000-4000-8000-000000000007".into();
    let mut allowed = samples.remove(0);
    allowed.uuid = "00000000-0000-4000-8000-000000000008".into();
    served.ring.push(denied);
    served.ring.push(allowed);
    assert_eq!(next_seq(&mut stream).await, 8);
    drop(stream);
    served.shutdown().await;
}

#[tokio::test]
async fn follow_ends_when_the_client_goes_away() {
    let served = serve_samples("leave").await;
    let mut c = client(served.tcp_uri()).await;
    let req = GetFlowsRequest {
        follow: true,
        ..Default::default()
    };
    let stream = c.get_flows(req).await.unwrap().into_inner();
    let wait_for = |n: usize| {
        let ring = served.ring.clone();
        async move {
            while ring.followers() != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, wait_for(1))
        .await
        .expect("the follower never subscribed");
    drop(stream);
    tokio::time::timeout(TIMEOUT, wait_for(0))
        .await
        .expect("the follower outlived its client");
    tokio::time::timeout(TIMEOUT, served.shutdown())
        .await
        .expect("server did not stop");
}

#[tokio::test]
async fn server_status_and_nodes() {
    let served = serve_samples("status").await;
    let mut c = client(served.tcp_uri()).await;
    let status = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.num_flows, 6);
    assert_eq!(status.max_flows, CAPACITY as u64);
    assert_eq!(status.seen_flows, 6);
    assert_eq!(status.num_connected_nodes, Some(1));
    assert_eq!(status.num_unavailable_nodes, Some(0));
    assert!(status.version.ends_with("+plexus"), "{}", status.version);
    assert!(status.uptime_ns > 0);
    assert!(status.flows_rate > 0.0, "six flows in the last minute");

    let nodes = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node.name, NODE);
    assert_eq!(node.state, NodeState::NodeConnected as i32);
    assert_eq!(node.address, "127.0.0.1:4244");
    assert_eq!(
        (node.num_flows, node.max_flows, node.seen_flows),
        (6, 64, 6)
    );
    assert_eq!(node.tls.as_ref().map(|t| t.enabled), Some(false));

    let namespaces = c
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    let names: Vec<_> = namespaces.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(names, ["default", "kube-system", "monitoring", "shop"]);
    served.shutdown().await;
}

#[tokio::test]
async fn shutdown_removes_the_unix_socket() {
    let served: Served = serve_samples("socket").await;
    let path = served.unix.clone();
    assert!(path.exists());
    served.shutdown().await;
    assert!(!path.exists());
}

#[tokio::test]
async fn shutdown_ends_open_follow_streams() {
    let served = serve_samples("shutdown-follow").await;
    let mut c = client(served.tcp_uri()).await;
    let req = GetFlowsRequest {
        number: 1,
        follow: true,
        ..Default::default()
    };
    let mut stream = c.get_flows(req).await.unwrap().into_inner();
    assert_eq!(next_seq(&mut stream).await, 6);
    // The client stays connected; the server must still stop, ending the stream cleanly.
    tokio::time::timeout(TIMEOUT, served.shutdown())
        .await
        .expect("server did not stop while a follower was connected");
    let end = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("stream did not end");
    assert!(end.is_none(), "expected a clean end of stream, got {end:?}");
}
