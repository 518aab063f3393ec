//! Shared fixtures of the integration tests: realistic flows and a served ring.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plexus_hubble::flow::{
    layer4, CiliumEventType, DropReason, Endpoint, Flow, FlowType, Ip, IpVersion, Layer4, Tcp,
    TcpFlags, TraceObservationPoint, TrafficDirection, Udp, Verdict, Workload,
};
use plexus_hubble::message_type::{DROP, TRACE};
use plexus_hubble::{FlowRing, HubbleServer, ObserverService};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The node the fixture flows were observed on.
pub const NODE: &str = "kind-worker";
/// Capacity of the fixture ring.
pub const CAPACITY: usize = 64;

pub fn endpoint(id: u32, identity: u32, ns: &str, pod: &str, app: &str) -> Endpoint {
    Endpoint {
        id,
        identity,
        cluster_name: "default".into(),
        namespace: ns.into(),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
            "k8s:io.cilium.k8s.policy.cluster=default".into(),
        ],
        pod_name: pod.into(),
        workloads: vec![Workload {
            name: app.into(),
            kind: "Deployment".into(),
        }],
    }
}

pub fn frontend() -> Endpoint {
    endpoint(101, 12345, "shop", "frontend-7d4c8b-x2v9q", "frontend")
}
pub fn backend() -> Endpoint {
    endpoint(202, 23456, "shop", "backend-5f9d7-abcde", "backend")
}
pub fn coredns() -> Endpoint {
    endpoint(
        7,
        102,
        "kube-system",
        "coredns-5d78c9869d-q7x2z",
        "kube-dns",
    )
}
pub fn curl() -> Endpoint {
    endpoint(303, 34567, "default", "curl", "curl")
}
pub fn prometheus() -> Endpoint {
    endpoint(404, 45678, "monitoring", "prometheus-0", "prometheus")
}

fn tcp(sport: u32, dport: u32, flags: TcpFlags) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(layer4::Protocol::Tcp(Tcp {
            source_port: sport,
            destination_port: dport,
            flags: Some(flags),
        })),
    })
}

fn udp(sport: u32, dport: u32) -> Option<Layer4> {
    Some(Layer4 {
        protocol: Some(layer4::Protocol::Udp(Udp {
            source_port: sport,
            destination_port: dport,
        })),
    })
}

fn ipv4(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: IpVersion::IPv4 as i32,
        ..Default::default()
    })
}

/// A flow `seq` seconds after `base`, with the common fields filled in.
#[allow(clippy::too_many_arguments)]
pub fn flow(
    base: SystemTime,
    seq: u64,
    src: Endpoint,
    dst: Endpoint,
    ip: Option<Ip>,
    l4: Option<Layer4>,
    verdict: Verdict,
    reply: bool,
) -> Flow {
    Flow {
        time: Some((base + Duration::from_secs(seq)).into()),
        uuid: format!("00000000-0000-4000-8000-{seq:012}"),
        verdict: verdict as i32,
        ip,
        l4,
        source: Some(src),
        destination: Some(dst),
        r#type: FlowType::L3L4 as i32,
        node_name: NODE.into(),
        event_type: Some(CiliumEventType {
            r#type: TRACE,
            sub_type: 0,
        }),
        trace_observation_point: TraceObservationPoint::ToEndpoint as i32,
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: Some(reply),
        ..Default::default()
    }
}

fn dropped(mut f: Flow, reason: DropReason) -> Flow {
    f.drop_reason_desc = reason as i32;
    f.event_type = Some(CiliumEventType {
        r#type: DROP,
        sub_type: reason as i32,
    });
    f.trace_observation_point = TraceObservationPoint::UnknownPoint as i32;
    f.traffic_direction = TrafficDirection::Ingress as i32;
    f.is_reply = None;
    f
}

/// Six flows a minute ago, a second apart, oldest first:
/// 1. shop/frontend -> shop/backend TCP 8080 SYN, forwarded
/// 2. shop/backend -> shop/frontend TCP SYN-ACK reply, forwarded
/// 3. default/curl -> shop/backend TCP 8080, dropped (POLICY_DENIED)
/// 4. shop/frontend -> kube-system/coredns UDP 53, forwarded
/// 5. kube-system/coredns -> shop/frontend UDP reply, forwarded
/// 6. monitoring/prometheus -> shop/backend TCP 9090, dropped (POLICY_DENY)
pub fn sample_flows() -> Vec<Flow> {
    let base = SystemTime::now() - Duration::from_secs(60);
    let syn = TcpFlags {
        syn: true,
        ..Default::default()
    };
    let syn_ack = TcpFlags {
        syn: true,
        ack: true,
        ..Default::default()
    };
    vec![
        flow(
            base,
            1,
            frontend(),
            backend(),
            ipv4("10.0.1.12", "10.0.2.7"),
            tcp(43122, 8080, syn),
            Verdict::Forwarded,
            false,
        ),
        flow(
            base,
            2,
            backend(),
            frontend(),
            ipv4("10.0.2.7", "10.0.1.12"),
            tcp(8080, 43122, syn_ack),
            Verdict::Forwarded,
            true,
        ),
        dropped(
            flow(
                base,
                3,
                curl(),
                backend(),
                ipv4("10.0.3.3", "10.0.2.7"),
                tcp(51000, 8080, syn),
                Verdict::Dropped,
                false,
            ),
            DropReason::PolicyDenied,
        ),
        flow(
            base,
            4,
            frontend(),
            coredns(),
            ipv4("10.0.1.12", "10.0.0.10"),
            udp(53001, 53),
            Verdict::Forwarded,
            false,
        ),
        flow(
            base,
            5,
            coredns(),
            frontend(),
            ipv4("10.0.0.10", "10.0.1.12"),
            udp(53, 53001),
            Verdict::Forwarded,
            true,
        ),
        dropped(
            flow(
                base,
                6,
                prometheus(),
                backend(),
                ipv4("10.0.4.4", "10.0.2.7"),
                tcp(39000, 9090, syn),
                Verdict::Dropped,
                false,
            ),
            DropReason::PolicyDeny,
        ),
    ]
}

/// A served ring; shuts the server down and removes its socket directory when dropped.
pub struct Served {
    pub ring: Arc<FlowRing>,
    pub tcp: SocketAddr,
    pub unix: PathBuf,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), plexus_hubble::ServeError>>>,
}

impl Served {
    /// `http://127.0.0.1:PORT`.
    pub fn tcp_uri(&self) -> String {
        format!("http://{}", self.tcp)
    }

    /// `unix:/path/to/hubble.sock`.
    pub fn unix_uri(&self) -> String {
        format!("unix:{}", self.unix.display())
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves a ring pre-filled with [`sample_flows`] on a loopback TCP port and a unix socket.
pub async fn serve_samples(name: &str) -> Served {
    let ring = Arc::new(FlowRing::new(NODE, CAPACITY));
    for f in sample_flows() {
        ring.push(f);
    }
    let dir = std::env::temp_dir().join(format!("plexus-hubble-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let unix = dir.join("hubble.sock");
    let service = ObserverService::new(Arc::clone(&ring)).with_address("127.0.0.1:4244");
    let server = HubbleServer::bind(
        service,
        Some("127.0.0.1:0".parse().unwrap()),
        Some(unix.clone()),
    )
    .await
    .expect("bind");
    let tcp = server.tcp_local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Served {
        ring,
        tcp,
        unix,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}
