//! Realistic flows for the filter tests.

use crate::flow::{
    layer4, CiliumEventType, DropReason, Endpoint, Flow, FlowType, IcmPv6, Ip, IpVersion, Layer4,
    TcpFlags, TrafficDirection, Verdict, Workload,
};

use crate::message_type::{DROP, TRACE};

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

/// shop/frontend (10.0.1.12:43122) -> shop/backend (10.0.2.7:8080), TCP SYN, forwarded on
/// egress, traced towards the endpoint.
pub fn tcp_flow() -> Flow {
    Flow {
        time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        uuid: "7b1e3f52-0c2e-4a0e-9a53-6f1d2c3b4a01".into(),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.0.1.12".into(),
            destination: "10.0.2.7".into(),
            ip_version: IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(crate::flow::Tcp {
                source_port: 43122,
                destination_port: 8080,
                flags: Some(TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(endpoint(
            101,
            12345,
            "shop",
            "frontend-7d4c8b-x2v9q",
            "frontend",
        )),
        destination: Some(endpoint(
            202,
            23456,
            "shop",
            "backend-5f9d7-abcde",
            "backend",
        )),
        r#type: FlowType::L3L4 as i32,
        node_name: "kind-worker".into(),
        node_labels: vec!["kubernetes.io/hostname=kind-worker".into()],
        event_type: Some(CiliumEventType {
            r#type: TRACE,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Egress as i32,
        is_reply: Some(false),
        ..Default::default()
    }
}

/// shop/frontend -> kube-system/coredns (10.0.0.10:53), UDP, forwarded.
pub fn udp_flow() -> Flow {
    let mut f = tcp_flow();
    f.uuid = "7b1e3f52-0c2e-4a0e-9a53-6f1d2c3b4a02".into();
    f.destination = Some(endpoint(
        7,
        102,
        "kube-system",
        "coredns-5d78c9869d-q7x2z",
        "kube-dns",
    ));
    f.ip.as_mut().unwrap().destination = "10.0.0.10".into();
    f.l4 = Some(Layer4 {
        protocol: Some(layer4::Protocol::Udp(crate::flow::Udp {
            source_port: 53001,
            destination_port: 53,
        })),
    });
    f.destination_names = vec!["kube-dns.kube-system.svc.cluster.local".into()];
    f
}

/// default/curl -> shop/backend, TCP, dropped by policy on ingress.
pub fn dropped_flow() -> Flow {
    let mut f = tcp_flow();
    f.uuid = "7b1e3f52-0c2e-4a0e-9a53-6f1d2c3b4a03".into();
    f.source = Some(endpoint(303, 34567, "default", "curl", "curl"));
    f.ip.as_mut().unwrap().source = "10.0.3.3".into();
    f.verdict = Verdict::Dropped as i32;
    f.drop_reason_desc = DropReason::PolicyDenied as i32;
    f.event_type = Some(CiliumEventType {
        r#type: DROP,
        sub_type: DropReason::PolicyDenied as i32,
    });
    f.traffic_direction = TrafficDirection::Ingress as i32;
    f.is_reply = None;
    f
}

/// An ICMPv6 echo request between two IPv6 pods.
pub fn icmpv6_flow() -> Flow {
    let mut f = tcp_flow();
    f.ip = Some(Ip {
        source: "fd00:10:244::12".into(),
        destination: "fd00:10:244:1::7".into(),
        ip_version: IpVersion::IPv6 as i32,
        ..Default::default()
    });
    f.l4 = Some(Layer4 {
        protocol: Some(layer4::Protocol::IcmPv6(IcmPv6 {
            r#type: 128,
            code: 0,
        })),
    });
    f
}
