//! Guards the wire format against renumbering: encodes messages and checks the field tags
//! (field number << 3 | wire type) against the numbers of Hubble's schema (Cilium v1.19.4), and
//! checks every enum value that Plexus emits or filters on.

use plexus_hubble::flow::{
    layer4, CiliumEventType, DropReason, Endpoint, Flow, FlowFilter, FlowType, Ip, IpVersion,
    Layer4, LostEvent, LostEventSource, Policy, Service, Tcp, TcpFlags, TraceObservationPoint,
    TrafficDirection, Verdict, Workload,
};
use plexus_hubble::observer::{
    get_flows_response, GetFlowsRequest, GetFlowsResponse, Node, ServerStatusResponse,
};
use plexus_hubble::relay::NodeState;
use prost::Message;

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// The (field number, wire type) of each top-level field of an encoded message, in order.
fn tags(mut buf: &[u8]) -> Vec<(u64, u64)> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = buf[0];
            *buf = &buf[1..];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            VARINT => {
                varint(&mut buf);
            }
            FIXED64 => buf = &buf[8..],
            LEN => {
                let n = varint(&mut buf) as usize;
                buf = &buf[n..];
            }
            5 => buf = &buf[4..],
            other => panic!("unexpected wire type {other}"),
        }
        out.push((field, wire));
    }
    out
}

fn sorted(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort();
    v
}

#[test]
fn flow_field_numbers() {
    let flow = Flow {
        time: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        uuid: "u".into(),
        verdict: Verdict::Dropped as i32,
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp::default())),
        }),
        source: Some(Endpoint {
            id: 1,
            ..Default::default()
        }),
        destination: Some(Endpoint {
            id: 2,
            ..Default::default()
        }),
        r#type: FlowType::L3L4 as i32,
        node_name: "n".into(),
        source_names: vec!["a".into()],
        destination_names: vec!["b".into()],
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        source_service: Some(Service::default()),
        destination_service: Some(Service::default()),
        traffic_direction: TrafficDirection::Ingress as i32,
        policy_match_type: 1,
        trace_observation_point: TraceObservationPoint::ToEndpoint as i32,
        drop_reason_desc: DropReason::PolicyDenied as i32,
        is_reply: Some(false),
        egress_allowed_by: vec![Policy::default()],
        ingress_allowed_by: vec![Policy::default()],
        egress_denied_by: vec![Policy::default()],
        ingress_denied_by: vec![Policy::default()],
        ..Default::default()
    };
    let want = vec![
        (1, LEN),     // time
        (2, VARINT),  // verdict
        (5, LEN),     // IP
        (6, LEN),     // l4
        (8, LEN),     // source
        (9, LEN),     // destination
        (10, VARINT), // Type
        (11, LEN),    // node_name
        (13, LEN),    // source_names
        (14, LEN),    // destination_names
        (19, LEN),    // event_type
        (20, LEN),    // source_service
        (21, LEN),    // destination_service
        (22, VARINT), // traffic_direction
        (23, VARINT), // policy_match_type
        (24, VARINT), // trace_observation_point
        (25, VARINT), // drop_reason_desc
        (26, LEN),    // is_reply
        (34, LEN),    // uuid
        (21001, LEN), // egress_allowed_by
        (21002, LEN), // ingress_allowed_by
        (21004, LEN), // egress_denied_by
        (21005, LEN), // ingress_denied_by
    ];
    assert_eq!(sorted(tags(&flow.encode_to_vec())), want);

    #[allow(deprecated)]
    let old = Flow {
        drop_reason: 133,
        reply: true,
        summary: "s".into(),
        ..Default::default()
    };
    assert_eq!(
        sorted(tags(&old.encode_to_vec())),
        [(3, VARINT), (16, VARINT), (100000, LEN)]
    );
}

#[test]
fn endpoint_and_l4_field_numbers() {
    let ep = Endpoint {
        id: 1,
        identity: 2,
        cluster_name: "c".into(),
        namespace: "ns".into(),
        labels: vec!["k8s:app=x".into()],
        pod_name: "p".into(),
        workloads: vec![Workload::default()],
    };
    assert_eq!(
        sorted(tags(&ep.encode_to_vec())),
        [
            (1, VARINT),
            (2, VARINT),
            (3, LEN),
            (4, LEN),
            (5, LEN),
            (6, LEN),
            (7, LEN)
        ]
    );
    let tcp = Tcp {
        source_port: 1,
        destination_port: 2,
        flags: Some(TcpFlags {
            syn: true,
            ..Default::default()
        }),
    };
    assert_eq!(
        tags(&tcp.encode_to_vec()),
        [(1, VARINT), (2, VARINT), (3, LEN)]
    );
    let flags = TcpFlags {
        fin: true,
        syn: true,
        rst: true,
        psh: true,
        ack: true,
        urg: true,
        ece: true,
        cwr: true,
        ns: true,
    };
    let numbers: Vec<u64> = tags(&flags.encode_to_vec()).iter().map(|t| t.0).collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<_>>());
    let l4 = |p| tags(&Layer4 { protocol: Some(p) }.encode_to_vec())[0].0;
    assert_eq!(l4(layer4::Protocol::Tcp(Default::default())), 1);
    assert_eq!(l4(layer4::Protocol::Udp(Default::default())), 2);
    assert_eq!(l4(layer4::Protocol::IcmPv4(Default::default())), 3);
    assert_eq!(l4(layer4::Protocol::IcmPv6(Default::default())), 4);
    assert_eq!(l4(layer4::Protocol::Sctp(Default::default())), 5);
    let ip = Ip {
        source: "a".into(),
        destination: "b".into(),
        ip_version: IpVersion::IPv6 as i32,
        encrypted: true,
        source_xlated: "c".into(),
    };
    assert_eq!(
        sorted(tags(&ip.encode_to_vec())),
        [(1, LEN), (2, LEN), (3, VARINT), (4, VARINT), (5, LEN)]
    );
}

#[test]
fn flow_filter_field_numbers() {
    let s = || vec!["x".to_string()];
    let f = FlowFilter {
        source_ip: s(),
        source_pod: s(),
        destination_ip: s(),
        destination_pod: s(),
        verdict: vec![1],
        event_type: vec![Default::default()],
        source_fqdn: s(),
        destination_fqdn: s(),
        http_status_code: s(),
        source_label: s(),
        destination_label: s(),
        protocol: s(),
        source_port: s(),
        destination_port: s(),
        reply: vec![true],
        source_service: s(),
        destination_service: s(),
        dns_query: s(),
        source_identity: vec![1],
        destination_identity: vec![1],
        http_method: s(),
        http_path: s(),
        tcp_flags: vec![Default::default()],
        node_name: s(),
        ip_version: vec![1],
        source_workload: vec![Default::default()],
        destination_workload: vec![Default::default()],
        trace_id: s(),
        uuid: s(),
        traffic_direction: vec![1],
        http_url: s(),
        http_header: vec![Default::default()],
        drop_reason_desc: vec![133],
        source_ip_xlated: s(),
        interface: vec![Default::default()],
        node_labels: s(),
        source_cluster_name: s(),
        destination_cluster_name: s(),
        ip_trace_id: vec![1],
        encrypted: vec![true],
        experimental: Some(Default::default()),
    };
    let numbers: Vec<u64> = sorted(tags(&f.encode_to_vec()))
        .iter()
        .map(|t| t.0)
        .collect();
    // Hubble's FlowFilter numbers its fields 1 to 40 without gaps, plus `experimental` at 999.
    let want: Vec<u64> = (1..=40).chain([999]).collect();
    assert_eq!(numbers, want);
}

#[test]
fn observer_field_numbers() {
    let req = GetFlowsRequest {
        number: 1,
        follow: true,
        blacklist: vec![FlowFilter::default()],
        whitelist: vec![FlowFilter::default()],
        since: Some(Default::default()),
        until: Some(Default::default()),
        first: true,
        field_mask: Some(Default::default()),
        experimental: Some(Default::default()),
        extensions: Some(Default::default()),
    };
    assert_eq!(
        sorted(tags(&req.encode_to_vec())),
        [
            (1, VARINT),
            (3, VARINT),
            (5, LEN),
            (6, LEN),
            (7, LEN),
            (8, LEN),
            (9, VARINT),
            (10, LEN),
            (999, LEN),
            (150000, LEN)
        ]
    );

    let flow_resp = GetFlowsResponse {
        response_types: Some(get_flows_response::ResponseTypes::Flow(Flow::default())),
        node_name: "n".into(),
        time: Some(Default::default()),
    };
    assert_eq!(
        sorted(tags(&flow_resp.encode_to_vec())),
        [(1, LEN), (1000, LEN), (1001, LEN)]
    );
    let lost_resp = GetFlowsResponse {
        response_types: Some(get_flows_response::ResponseTypes::LostEvents(LostEvent {
            source: LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: 3,
            cpu: Some(1),
            first: Some(Default::default()),
            last: Some(Default::default()),
        })),
        ..Default::default()
    };
    assert_eq!(tags(&lost_resp.encode_to_vec()), [(3, LEN)]);
    if let Some(get_flows_response::ResponseTypes::LostEvents(lost)) = lost_resp.response_types {
        assert_eq!(
            tags(&lost.encode_to_vec()),
            [(1, VARINT), (2, VARINT), (3, LEN), (4, LEN), (5, LEN)]
        );
    }
    let node_status = GetFlowsResponse {
        response_types: Some(get_flows_response::ResponseTypes::NodeStatus(
            Default::default(),
        )),
        ..Default::default()
    };
    assert_eq!(tags(&node_status.encode_to_vec()), [(2, LEN)]);

    let status = ServerStatusResponse {
        num_flows: 1,
        max_flows: 1,
        seen_flows: 1,
        uptime_ns: 1,
        num_connected_nodes: Some(1),
        num_unavailable_nodes: Some(0),
        unavailable_nodes: vec!["x".into()],
        version: "v".into(),
        flows_rate: 1.5,
    };
    assert_eq!(
        tags(&status.encode_to_vec()),
        [
            (1, VARINT),
            (2, VARINT),
            (3, VARINT),
            (4, VARINT),
            (5, LEN),
            (6, LEN),
            (7, LEN),
            (8, LEN),
            (9, FIXED64)
        ]
    );

    let node = Node {
        name: "n".into(),
        version: "v".into(),
        address: "a".into(),
        state: NodeState::NodeConnected as i32,
        tls: Some(Default::default()),
        uptime_ns: 1,
        num_flows: 1,
        max_flows: 1,
        seen_flows: 1,
    };
    let numbers: Vec<u64> = tags(&node.encode_to_vec()).iter().map(|t| t.0).collect();
    assert_eq!(numbers, (1..=9).collect::<Vec<_>>());
}

#[test]
fn small_enums_match_hubble() {
    let verdicts = [
        ("VERDICT_UNKNOWN", 0),
        ("FORWARDED", 1),
        ("DROPPED", 2),
        ("ERROR", 3),
        ("AUDIT", 4),
        ("REDIRECTED", 5),
        ("TRACED", 6),
        ("TRANSLATED", 7),
    ];
    for (name, n) in verdicts {
        assert_eq!(
            Verdict::from_str_name(name).map(|v| v as i32),
            Some(n),
            "{name}"
        );
    }
    for (name, n) in [
        ("TRAFFIC_DIRECTION_UNKNOWN", 0),
        ("INGRESS", 1),
        ("EGRESS", 2),
    ] {
        assert_eq!(
            TrafficDirection::from_str_name(name).map(|v| v as i32),
            Some(n)
        );
    }
    for (name, n) in [("UNKNOWN_TYPE", 0), ("L3_L4", 1), ("L7", 2), ("SOCK", 3)] {
        assert_eq!(FlowType::from_str_name(name).map(|v| v as i32), Some(n));
    }
    for (name, n) in [("IP_NOT_USED", 0), ("IPv4", 1), ("IPv6", 2)] {
        assert_eq!(IpVersion::from_str_name(name).map(|v| v as i32), Some(n));
    }
    let points = [
        ("UNKNOWN_POINT", 0),
        ("TO_PROXY", 1),
        ("TO_HOST", 2),
        ("TO_STACK", 3),
        ("TO_OVERLAY", 4),
        ("TO_ENDPOINT", 101),
        ("FROM_ENDPOINT", 5),
        ("FROM_PROXY", 6),
        ("FROM_HOST", 7),
        ("FROM_STACK", 8),
        ("FROM_OVERLAY", 9),
        ("FROM_NETWORK", 10),
        ("TO_NETWORK", 11),
        ("FROM_CRYPTO", 12),
        ("TO_CRYPTO", 13),
    ];
    for (name, n) in points {
        assert_eq!(
            TraceObservationPoint::from_str_name(name).map(|v| v as i32),
            Some(n),
            "{name}"
        );
    }
    let lost = [
        ("UNKNOWN_LOST_EVENT_SOURCE", 0),
        ("PERF_EVENT_RING_BUFFER", 1),
        ("OBSERVER_EVENTS_QUEUE", 2),
        ("HUBBLE_RING_BUFFER", 3),
    ];
    for (name, n) in lost {
        assert_eq!(
            LostEventSource::from_str_name(name).map(|v| v as i32),
            Some(n)
        );
    }
    let states = [
        ("UNKNOWN_NODE_STATE", 0),
        ("NODE_CONNECTED", 1),
        ("NODE_UNAVAILABLE", 2),
        ("NODE_GONE", 3),
        ("NODE_ERROR", 4),
    ];
    for (name, n) in states {
        assert_eq!(NodeState::from_str_name(name).map(|v| v as i32), Some(n));
    }
}

/// Every value of Hubble's DropReason, by name and number.
const DROP_REASONS: &[(&str, i32)] = &[
    ("DROP_REASON_UNKNOWN", 0),
    ("INVALID_SOURCE_MAC", 130),
    ("INVALID_DESTINATION_MAC", 131),
    ("INVALID_SOURCE_IP", 132),
    ("POLICY_DENIED", 133),
    ("INVALID_PACKET_DROPPED", 134),
    ("CT_TRUNCATED_OR_INVALID_HEADER", 135),
    ("CT_MISSING_TCP_ACK_FLAG", 136),
    ("CT_UNKNOWN_L4_PROTOCOL", 137),
    ("CT_CANNOT_CREATE_ENTRY_FROM_PACKET", 138),
    ("UNSUPPORTED_L3_PROTOCOL", 139),
    ("MISSED_TAIL_CALL", 140),
    ("ERROR_WRITING_TO_PACKET", 141),
    ("UNKNOWN_L4_PROTOCOL", 142),
    ("UNKNOWN_ICMPV4_CODE", 143),
    ("UNKNOWN_ICMPV4_TYPE", 144),
    ("UNKNOWN_ICMPV6_CODE", 145),
    ("UNKNOWN_ICMPV6_TYPE", 146),
    ("ERROR_RETRIEVING_TUNNEL_KEY", 147),
    ("ERROR_RETRIEVING_TUNNEL_OPTIONS", 148),
    ("INVALID_GENEVE_OPTION", 149),
    ("UNKNOWN_L3_TARGET_ADDRESS", 150),
    ("STALE_OR_UNROUTABLE_IP", 151),
    ("NO_MATCHING_LOCAL_CONTAINER_FOUND", 152),
    ("ERROR_WHILE_CORRECTING_L3_CHECKSUM", 153),
    ("ERROR_WHILE_CORRECTING_L4_CHECKSUM", 154),
    ("CT_MAP_INSERTION_FAILED", 155),
    ("INVALID_IPV6_EXTENSION_HEADER", 156),
    ("IP_FRAGMENTATION_NOT_SUPPORTED", 157),
    ("SERVICE_BACKEND_NOT_FOUND", 158),
    ("NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT", 160),
    ("FAILED_TO_INSERT_INTO_PROXYMAP", 161),
    ("REACHED_EDT_RATE_LIMITING_DROP_HORIZON", 162),
    ("UNKNOWN_CONNECTION_TRACKING_STATE", 163),
    ("LOCAL_HOST_IS_UNREACHABLE", 164),
    ("NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION", 165),
    ("UNSUPPORTED_L2_PROTOCOL", 166),
    ("NO_MAPPING_FOR_NAT_MASQUERADE", 167),
    ("UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE", 168),
    ("FIB_LOOKUP_FAILED", 169),
    ("ENCAPSULATION_TRAFFIC_IS_PROHIBITED", 170),
    ("INVALID_IDENTITY", 171),
    ("UNKNOWN_SENDER", 172),
    ("NAT_NOT_NEEDED", 173),
    ("IS_A_CLUSTERIP", 174),
    ("FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND", 175),
    ("FORBIDDEN_ICMPV6_MESSAGE", 176),
    ("DENIED_BY_LB_SRC_RANGE_CHECK", 177),
    ("SOCKET_LOOKUP_FAILED", 178),
    ("SOCKET_ASSIGN_FAILED", 179),
    ("PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL", 180),
    ("POLICY_DENY", 181),
    ("VLAN_FILTERED", 182),
    ("INVALID_VNI", 183),
    ("INVALID_TC_BUFFER", 184),
    ("NO_SID", 185),
    ("MISSING_SRV6_STATE", 186),
    ("NAT46", 187),
    ("NAT64", 188),
    ("AUTH_REQUIRED", 189),
    ("CT_NO_MAP_FOUND", 190),
    ("SNAT_NO_MAP_FOUND", 191),
    ("INVALID_CLUSTER_ID", 192),
    ("UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP", 193),
    ("NO_EGRESS_GATEWAY", 194),
    ("UNENCRYPTED_TRAFFIC", 195),
    ("TTL_EXCEEDED", 196),
    ("NO_NODE_ID", 197),
    ("DROP_RATE_LIMITED", 198),
    ("IGMP_HANDLED", 199),
    ("IGMP_SUBSCRIBED", 200),
    ("MULTICAST_HANDLED", 201),
    ("DROP_HOST_NOT_READY", 202),
    ("DROP_EP_NOT_READY", 203),
    ("DROP_NO_EGRESS_IP", 204),
    ("DROP_PUNT_PROXY", 205),
];

#[test]
fn every_drop_reason_matches_hubble() {
    for &(name, n) in DROP_REASONS {
        let reason = DropReason::from_str_name(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(reason as i32, n, "{name}");
        assert_eq!(reason.as_str_name(), name);
    }
    // No value beyond Hubble's: every number that decodes is in the table.
    let known = (0..1024)
        .filter(|n| DropReason::try_from(*n).is_ok())
        .count();
    assert_eq!(known, DROP_REASONS.len());
}
