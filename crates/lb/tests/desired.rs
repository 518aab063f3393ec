//! `desired`: Services and EndpointSlices to frontends and backends, rule by rule.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use plexus_lb::{
    desired, Algorithm, BackendState, FrontendKey, FrontendKind, IpFamily, LbAllocations, LbError,
    LbIssue, LbPool, LbState, NodeInfo, Proto, ServiceEntry, ServiceName,
};
use serde_json::{json, Value};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(value: Value) -> Service {
    serde_json::from_value(value).unwrap()
}

fn slice(value: Value) -> EndpointSlice {
    serde_json::from_value(value).unwrap()
}

/// A ClusterIP Service `x/<name>` with one port `http` 80 → named target port `web`.
fn web(name: &str, cluster_ip: &str) -> Value {
    json!({
        "metadata": {"namespace": "x", "name": name},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        },
    })
}

/// An endpoint on `node` with the given conditions.
fn endpoint(address: &str, node: &str, conditions: Value) -> Value {
    json!({"addresses": [address], "nodeName": node, "zone": "z1", "conditions": conditions})
}

fn ready() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

/// An IPv4 slice of Service `x/<service>` whose port `http` is 8080.
fn web_slice(service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "metadata": {
            "namespace": "x",
            "name": format!("{service}-abc"),
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "n1".into(),
        addresses: vec![ip("192.168.1.10"), ip("fd00::10")],
    }
}

fn run(services: &[Value], slices: &[Value]) -> LbState {
    run_with(services, slices, &[], &LbAllocations::default())
}

fn run_with(
    services: &[Value],
    slices: &[Value],
    pools: &[LbPool],
    previous: &LbAllocations,
) -> LbState {
    try_run(services, slices, pools, previous).unwrap()
}

fn try_run(
    services: &[Value],
    slices: &[Value],
    pools: &[LbPool],
    previous: &LbAllocations,
) -> Result<LbState, LbError> {
    let services: Vec<Service> = services.iter().cloned().map(service).collect();
    let slices: Vec<EndpointSlice> = slices.iter().cloned().map(slice).collect();
    desired(&services, &slices, pools, &node(), previous)
}

fn error(services: &[Value], slices: &[Value]) -> String {
    try_run(services, slices, &[], &LbAllocations::default())
        .unwrap_err()
        .to_string()
}

fn key(address: &str, port: u16, protocol: Proto) -> FrontendKey {
    FrontendKey {
        address: ip(address),
        port,
        protocol,
    }
}

fn entry<'a>(state: &'a LbState, address: &str, port: u16) -> &'a ServiceEntry {
    state
        .entry(&key(address, port, Proto::Tcp))
        .unwrap_or_else(|| panic!("no frontend {address}:{port}"))
}

/// The backends of an entry as `address:port state`.
fn backends(entry: &ServiceEntry) -> Vec<String> {
    entry
        .backends
        .iter()
        .map(|b| format!("{}:{} {:?}", b.address, b.port, b.state))
        .collect()
}

fn frontends(state: &LbState) -> Vec<String> {
    let mut all: Vec<String> = state
        .services
        .iter()
        .map(|e| format!("{:?} {}", e.frontend.kind, e.frontend.key()))
        .collect();
    all.sort();
    all
}

#[test]
fn cluster_ip_per_port_with_backends_from_the_named_slice_port() {
    let svc = json!({
        "metadata": {"namespace": "x", "name": "web"},
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "metrics", "port": 9090, "targetPort": 9090},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        },
    });
    let s = json!({
        "metadata": {"namespace": "x", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [
            {"name": "http", "port": 8080},
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ],
        "endpoints": [endpoint("10.0.1.1", "n1", ready()), endpoint("10.0.2.1", "n2", ready())],
    });
    let state = run(&[svc], &[s]);
    assert_eq!(
        frontends(&state),
        [
            "ClusterIp 10.96.0.10:53/UDP",
            "ClusterIp 10.96.0.10:80/TCP",
            "ClusterIp 10.96.0.10:9090/TCP"
        ]
    );
    let http = entry(&state, "10.96.0.10", 80);
    assert_eq!(http.port_name, "http");
    assert_eq!((http.namespace.as_str(), http.name.as_str()), ("x", "web"));
    assert_eq!(
        backends(http),
        ["10.0.1.1:8080 Active", "10.0.2.1:8080 Active"]
    );
    assert!(http.backends[0].node_local && !http.backends[1].node_local);
    assert_eq!(http.backends[0].zone.as_deref(), Some("z1"));
    assert_eq!(
        backends(entry(&state, "10.96.0.10", 9090)),
        ["10.0.1.1:9090 Active", "10.0.2.1:9090 Active"]
    );
    let dns = state.entry(&key("10.96.0.10", 53, Proto::Udp)).unwrap();
    assert_eq!(dns.frontend.protocol, Proto::Udp);
    assert_eq!(
        backends(dns),
        ["10.0.1.1:5353 Active", "10.0.2.1:5353 Active"]
    );
    assert_eq!(http.algorithm, Algorithm::Random);
    assert_eq!(http.affinity, None);
}

#[test]
fn a_named_target_port_resolves_per_slice() {
    // Pods of two versions name the container port `web` differently; the endpoint controller
    // writes one slice per port number.
    let mut a = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    let mut b = web_slice("web", vec![endpoint("10.0.1.2", "n1", ready())]);
    a["metadata"]["name"] = json!("web-a");
    b["metadata"]["name"] = json!("web-b");
    b["ports"][0]["port"] = json!(9000);
    let state = run(&[web("web", "10.96.0.10")], &[a, b]);
    assert_eq!(
        backends(entry(&state, "10.96.0.10", 80)),
        ["10.0.1.1:8080 Active", "10.0.1.2:9000 Active"]
    );
}

#[test]
fn slice_ports_match_by_name_and_protocol() {
    let svc = json!({
        "metadata": {"namespace": "x", "name": "dns"},
        "spec": {"clusterIP": "10.96.0.53", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    });
    let s = json!({
        "metadata": {"namespace": "x", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        // Same name, other protocol: not this port.
        "ports": [{"name": "dns", "port": 53, "protocol": "TCP"}],
        "endpoints": [endpoint("10.0.1.1", "n1", ready())],
    });
    let state = run(&[svc], &[s]);
    let e = state.entry(&key("10.96.0.53", 53, Proto::Udp)).unwrap();
    assert!(e.backends.is_empty());
}

#[test]
fn a_slice_port_without_number_falls_back_to_a_numeric_target_port() {
    let mut svc = web("web", "10.96.0.10");
    svc["spec"]["ports"][0]["targetPort"] = json!(8443);
    let mut s = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    s["ports"][0] = json!({"name": "http"});
    let state = run(&[svc.clone()], &[s.clone()]);
    assert_eq!(
        backends(entry(&state, "10.96.0.10", 80)),
        ["10.0.1.1:8443 Active"]
    );
    // A named target port cannot be resolved without the slice's number.
    svc["spec"]["ports"][0]["targetPort"] = json!("web");
    let state = run(&[svc], &[s]);
    assert!(entry(&state, "10.96.0.10", 80).backends.is_empty());
}

#[test]
fn endpoint_conditions_decide_the_backend_state() {
    let s = web_slice(
        "web",
        vec![
            endpoint("10.0.1.1", "n1", ready()),
            endpoint(
                "10.0.1.2",
                "n1",
                json!({"ready": false, "serving": true, "terminating": true}),
            ),
            endpoint(
                "10.0.1.3",
                "n1",
                json!({"ready": false, "serving": false, "terminating": true}),
            ),
            endpoint(
                "10.0.1.4",
                "n1",
                json!({"ready": false, "serving": false, "terminating": false}),
            ),
            endpoint("10.0.1.5", "n1", json!({"ready": false})),
            // Conditions left out mean ready.
            json!({"addresses": ["10.0.1.6"]}),
        ],
    );
    let state = run(&[web("web", "10.96.0.10")], &[s]);
    assert_eq!(
        backends(entry(&state, "10.96.0.10", 80)),
        [
            "10.0.1.1:8080 Active",
            "10.0.1.2:8080 Terminating",
            "10.0.1.6:8080 Active"
        ]
    );
    let slots = plexus_lb::slot_list(&entry(&state, "10.96.0.10", 80).backends);
    assert_eq!(slots.for_new_connections().len(), 2);
    assert_eq!(slots.draining().len(), 1);
}

#[test]
fn an_endpoint_in_two_slices_is_one_backend_and_active_wins() {
    let mut a = web_slice(
        "web",
        vec![endpoint(
            "10.0.1.1",
            "n1",
            json!({"ready": false, "serving": true, "terminating": true}),
        )],
    );
    let mut b = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    a["metadata"]["name"] = json!("web-a");
    b["metadata"]["name"] = json!("web-b");
    let state = run(&[web("web", "10.96.0.10")], &[a, b]);
    assert_eq!(
        backends(entry(&state, "10.96.0.10", 80)),
        ["10.0.1.1:8080 Active"]
    );
}

#[test]
fn slices_of_other_services_and_namespaces_are_not_backends() {
    let mut other_ns = web_slice("web", vec![endpoint("10.0.9.1", "n1", ready())]);
    other_ns["metadata"]["namespace"] = json!("y");
    let other_service = web_slice("api", vec![endpoint("10.0.9.2", "n1", ready())]);
    let mut unlabelled = web_slice("web", vec![endpoint("10.0.9.3", "n1", ready())]);
    unlabelled["metadata"]["labels"] = json!({});
    let state = run(
        &[web("web", "10.96.0.10")],
        &[other_ns, other_service, unlabelled],
    );
    assert!(entry(&state, "10.96.0.10", 80).backends.is_empty());
}

#[test]
fn node_port_on_every_node_address_of_the_family_and_the_wildcard() {
    let mut svc = web("web", "10.96.0.10");
    svc["spec"]["type"] = json!("NodePort");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    let s = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    let state = run(&[svc], &[s]);
    assert_eq!(
        frontends(&state),
        [
            "ClusterIp 10.96.0.10:80/TCP",
            "NodePort 0.0.0.0:30080/TCP",
            "NodePort 192.168.1.10:30080/TCP"
        ]
    );
    for address in ["0.0.0.0", "192.168.1.10"] {
        assert_eq!(
            backends(entry(&state, address, 30080)),
            ["10.0.1.1:8080 Active"]
        );
    }
}

#[test]
fn dual_stack_frontends_only_get_backends_of_their_family() {
    let svc = json!({
        "metadata": {"namespace": "x", "name": "web"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:96::10"],
            "ipFamilies": ["IPv4", "IPv6"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
        },
    });
    let v4 = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    let mut v6 = web_slice("web", vec![endpoint("fd00:1::1", "n1", ready())]);
    v6["metadata"]["name"] = json!("web-v6");
    v6["addressType"] = json!("IPv6");
    let state = run(&[svc], &[v4, v6]);
    assert_eq!(
        frontends(&state),
        [
            "ClusterIp 10.96.0.10:80/TCP",
            "ClusterIp [fd00:96::10]:80/TCP",
            "NodePort 0.0.0.0:30080/TCP",
            "NodePort 192.168.1.10:30080/TCP",
            "NodePort [::]:30080/TCP",
            "NodePort [fd00::10]:30080/TCP"
        ]
    );
    assert_eq!(
        backends(entry(&state, "fd00:96::10", 80)),
        ["fd00:1::1:8080 Active"]
    );
    assert_eq!(
        backends(entry(&state, "::", 30080)),
        ["fd00:1::1:8080 Active"]
    );
    assert_eq!(
        backends(entry(&state, "192.168.1.10", 30080)),
        ["10.0.1.1:8080 Active"]
    );
}

fn load_balancer(name: &str, cluster_ip: &str) -> Value {
    let mut svc = web(name, cluster_ip);
    svc["spec"]["type"] = json!("LoadBalancer");
    svc
}

fn pool(name: &str, blocks: &[&str]) -> LbPool {
    LbPool {
        name: name.into(),
        blocks: blocks.iter().map(|b| b.to_string()).collect(),
        ..LbPool::default()
    }
}

fn lb_addresses(state: &LbState) -> Vec<String> {
    let mut all: Vec<String> = state
        .services
        .iter()
        .filter(|e| e.frontend.kind == FrontendKind::LoadBalancer)
        .map(|e| format!("{}/{} {}", e.namespace, e.name, e.frontend.address))
        .collect();
    all.sort();
    all
}

#[test]
fn load_balancer_addresses_come_from_status_when_set() {
    let mut svc = load_balancer("web", "10.96.0.10");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    svc["status"] = json!({"loadBalancer": {"ingress": [
        {"ip": "203.0.113.7"},
        {"hostname": "lb.example.com"},
        {"ip": "203.0.113.8", "ipMode": "Proxy"},
    ]}});
    let s = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    let state = run_with(
        &[svc],
        &[s],
        &[pool("p", &["10.0.10.0/24"])],
        &LbAllocations::default(),
    );
    assert_eq!(lb_addresses(&state), ["x/web 203.0.113.7"]);
    assert_eq!(
        backends(entry(&state, "203.0.113.7", 80)),
        ["10.0.1.1:8080 Active"]
    );
    // NodePort frontends too, as for every LoadBalancer Service.
    assert!(state
        .entry(&key("192.168.1.10", 30080, Proto::Tcp))
        .is_some());
    // Nothing is allocated from the pool.
    assert!(state.allocations.addresses.is_empty());
}

#[test]
fn load_balancer_addresses_are_allocated_from_pools_and_stay_put() {
    let pools = [pool("p", &["10.0.10.0/29"])]; // .1 to .6 are allocatable
    let services = [
        load_balancer("b", "10.96.0.2"),
        load_balancer("c", "10.96.0.3"),
    ];
    let first = run_with(&services, &[], &pools, &LbAllocations::default());
    assert_eq!(lb_addresses(&first), ["x/b 10.0.10.1", "x/c 10.0.10.2"]);
    assert_eq!(
        first.allocations.addresses[&ServiceName::new("x", "b")][0].pool,
        "p"
    );

    // A new Service that sorts first takes a free address; the others keep theirs.
    let mut more = services.to_vec();
    more.push(load_balancer("a", "10.96.0.1"));
    let second = run_with(&more, &[], &pools, &first.allocations);
    assert_eq!(
        lb_addresses(&second),
        ["x/a 10.0.10.3", "x/b 10.0.10.1", "x/c 10.0.10.2"]
    );

    // Removing one frees its address for the next newcomer; nobody else moves.
    let mut fewer = vec![
        more[1].clone(),
        more[2].clone(),
        load_balancer("d", "10.96.0.4"),
    ];
    let third = run_with(&fewer, &[], &pools, &second.allocations);
    assert_eq!(
        lb_addresses(&third),
        ["x/a 10.0.10.3", "x/c 10.0.10.2", "x/d 10.0.10.1"]
    );

    // Recomputing with the same inputs changes nothing.
    assert_eq!(run_with(&fewer, &[], &pools, &third.allocations), third);

    // A Service turned ClusterIP gives its address back.
    fewer[0]["spec"]["type"] = json!("ClusterIP");
    let fourth = run_with(&fewer, &[], &pools, &third.allocations);
    assert_eq!(lb_addresses(&fourth), ["x/a 10.0.10.3", "x/d 10.0.10.1"]);
    assert!(!fourth
        .allocations
        .addresses
        .contains_key(&ServiceName::new("x", "c")));
}

#[test]
fn without_allocation_input_the_result_is_deterministic_in_creation_order() {
    let pools = [pool("p", &["10.0.10.0/29"])];
    let mut older = load_balancer("z-old", "10.96.0.2");
    older["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    let mut newer = load_balancer("a-new", "10.96.0.1");
    newer["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    let state = run_with(
        &[newer.clone(), older.clone()],
        &[],
        &pools,
        &LbAllocations::default(),
    );
    assert_eq!(
        lb_addresses(&state),
        ["x/a-new 10.0.10.2", "x/z-old 10.0.10.1"]
    );
    let again = run_with(&[older, newer], &[], &pools, &LbAllocations::default());
    assert_eq!(again, state);
}

#[test]
fn an_exhausted_pool_is_an_issue_not_an_error() {
    let pools = [pool("p", &["10.0.10.0/30"])]; // .1 and .2
    let services = [
        load_balancer("a", "10.96.0.1"),
        load_balancer("b", "10.96.0.2"),
        load_balancer("c", "10.96.0.3"),
    ];
    let state = run_with(&services, &[], &pools, &LbAllocations::default());
    assert_eq!(lb_addresses(&state), ["x/a 10.0.10.1", "x/b 10.0.10.2"]);
    assert_eq!(
        state.issues,
        [LbIssue::NoAddress {
            service: ServiceName::new("x", "c"),
            family: IpFamily::V4
        }]
    );
    // Its ClusterIP and NodePort frontends are there all the same.
    assert!(state.entry(&key("10.96.0.3", 80, Proto::Tcp)).is_some());
}

#[test]
fn pools_serve_the_services_their_selector_matches() {
    let blue = LbPool {
        service_selector: Some(LabelSelector {
            match_labels: Some([("color".to_string(), "blue".to_string())].into()),
            match_expressions: None,
        }),
        ..pool("blue", &["10.0.20.0/24"])
    };
    let tenant = LbPool {
        service_selector: Some(LabelSelector {
            match_labels: Some(
                [(
                    "io.kubernetes.service.namespace".to_string(),
                    "y".to_string(),
                )]
                .into(),
            ),
            match_expressions: None,
        }),
        ..pool("tenant-y", &["10.0.30.0/24"])
    };
    let mut a = load_balancer("a", "10.96.0.1");
    a["metadata"]["labels"] = json!({"color": "blue"});
    let b = load_balancer("b", "10.96.0.2");
    let mut c = load_balancer("c", "10.96.0.3");
    c["metadata"]["namespace"] = json!("y");
    let state = run_with(&[a, b, c], &[], &[blue, tenant], &LbAllocations::default());
    assert_eq!(lb_addresses(&state), ["x/a 10.0.20.1", "y/c 10.0.30.1"]);
    assert_eq!(
        state.issues,
        [LbIssue::NoAddress {
            service: ServiceName::new("x", "b"),
            family: IpFamily::V4
        }]
    );
}

#[test]
fn another_load_balancer_class_gets_no_pool_address() {
    let mut svc = load_balancer("web", "10.96.0.10");
    svc["spec"]["loadBalancerClass"] = json!("example.com/metal");
    let state = run_with(
        &[svc],
        &[],
        &[pool("p", &["10.0.10.0/24"])],
        &LbAllocations::default(),
    );
    assert!(lb_addresses(&state).is_empty());
    assert!(state.issues.is_empty());
}

#[test]
fn external_ips_are_frontends() {
    let mut svc = web("web", "10.96.0.10");
    svc["spec"]["externalIPs"] = json!(["198.51.100.1"]);
    let s = web_slice("web", vec![endpoint("10.0.1.1", "n2", ready())]);
    let state = run(&[svc], &[s]);
    let e = entry(&state, "198.51.100.1", 80);
    assert_eq!(e.frontend.kind, FrontendKind::ExternalIp);
    assert_eq!(backends(e), ["10.0.1.1:8080 Active"]);
}

fn policy_fixture(external: &str, internal: &str) -> LbState {
    let mut svc = load_balancer("web", "10.96.0.10");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    svc["spec"]["externalTrafficPolicy"] = json!(external);
    svc["spec"]["internalTrafficPolicy"] = json!(internal);
    svc["spec"]["externalIPs"] = json!(["198.51.100.1"]);
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}});
    let s = web_slice(
        "web",
        vec![
            endpoint("10.0.1.1", "n1", ready()),
            endpoint("10.0.2.1", "n2", ready()),
        ],
    );
    run(&[svc], &[s])
}

#[test]
fn external_traffic_policy_local_keeps_external_frontends_on_this_node() {
    let state = policy_fixture("Local", "Cluster");
    for (address, port) in [
        ("192.168.1.10", 30080),
        ("0.0.0.0", 30080),
        ("203.0.113.7", 80),
        ("198.51.100.1", 80),
    ] {
        let e = entry(&state, address, port);
        assert!(e.external_traffic_local);
        assert_eq!(backends(e), ["10.0.1.1:8080 Active"], "{address}:{port}");
    }
    assert_eq!(
        backends(entry(&state, "10.96.0.10", 80)),
        ["10.0.1.1:8080 Active", "10.0.2.1:8080 Active"]
    );
}

#[test]
fn internal_traffic_policy_local_keeps_the_cluster_ip_on_this_node() {
    let state = policy_fixture("Cluster", "Local");
    let cluster_ip = entry(&state, "10.96.0.10", 80);
    assert!(cluster_ip.internal_traffic_local);
    assert_eq!(backends(cluster_ip), ["10.0.1.1:8080 Active"]);
    assert_eq!(
        backends(entry(&state, "192.168.1.10", 30080)),
        ["10.0.1.1:8080 Active", "10.0.2.1:8080 Active"]
    );
}

#[test]
fn a_local_policy_without_local_endpoints_leaves_no_backend() {
    let mut svc = web("web", "10.96.0.10");
    svc["spec"]["internalTrafficPolicy"] = json!("Local");
    let s = web_slice("web", vec![endpoint("10.0.2.1", "n2", ready())]);
    let state = run(&[svc], &[s]);
    assert!(entry(&state, "10.96.0.10", 80).backends.is_empty());
}

#[test]
fn client_ip_affinity_with_default_and_explicit_timeouts() {
    let mut a = web("a", "10.96.0.1");
    a["spec"]["sessionAffinity"] = json!("ClientIP");
    let mut b = web("b", "10.96.0.2");
    b["spec"]["sessionAffinity"] = json!("ClientIP");
    b["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    let mut c = web("c", "10.96.0.3");
    c["spec"]["sessionAffinity"] = json!("None");
    c["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    let state = run(&[a, b, c], &[]);
    assert_eq!(
        entry(&state, "10.96.0.1", 80).affinity,
        Some(Duration::from_secs(10800))
    );
    assert_eq!(
        entry(&state, "10.96.0.2", 80).affinity,
        Some(Duration::from_secs(60))
    );
    assert_eq!(entry(&state, "10.96.0.3", 80).affinity, None);
}

#[test]
fn the_algorithm_annotation_selects_maglev() {
    let mut a = web("a", "10.96.0.1");
    a["metadata"]["annotations"] = json!({"service.cilium.io/lb-algorithm": "maglev"});
    let mut b = web("b", "10.96.0.2");
    b["metadata"]["annotations"] = json!({"service.cilium.io/lb-algorithm": "random"});
    let state = run(&[a, b, web("c", "10.96.0.3")], &[]);
    assert_eq!(entry(&state, "10.96.0.1", 80).algorithm, Algorithm::Maglev);
    assert_eq!(entry(&state, "10.96.0.2", 80).algorithm, Algorithm::Random);
    assert_eq!(entry(&state, "10.96.0.3", 80).algorithm, Algorithm::Random);
}

#[test]
fn services_that_are_not_load_balanced_have_no_frontends() {
    let headless = web("headless", "None");
    let external_name = json!({
        "metadata": {"namespace": "x", "name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com"},
    });
    let mut other_proxy = web("other", "10.96.0.5");
    other_proxy["metadata"]["labels"] = json!({"service.kubernetes.io/service-proxy-name": "foo"});
    let state = run(&[headless, external_name, other_proxy], &[]);
    assert!(state.services.is_empty());
}

#[test]
fn ids_are_stable_when_services_come_and_go() {
    let slices = [
        web_slice("b", vec![endpoint("10.0.1.1", "n1", ready())]),
        web_slice("c", vec![endpoint("10.0.1.2", "n1", ready())]),
        web_slice("a", vec![endpoint("10.0.1.3", "n1", ready())]),
    ];
    let first = run(&[web("b", "10.96.0.2"), web("c", "10.96.0.3")], &slices);
    let ids = |s: &LbState| -> Vec<(FrontendKey, u32)> {
        s.services
            .iter()
            .map(|e| (e.frontend.key(), e.id.0))
            .collect()
    };
    let backend_ids = |s: &LbState| -> Vec<(IpAddr, u32)> {
        s.backends()
            .into_iter()
            .map(|(id, k)| (k.address, id.0))
            .collect()
    };
    assert_eq!(
        ids(&first).iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        [1, 2]
    );

    // A Service whose frontend sorts first: the others keep their ids, it gets the next one.
    let services = [
        web("a", "10.96.0.1"),
        web("b", "10.96.0.2"),
        web("c", "10.96.0.3"),
    ];
    let second = run_with(&services, &slices, &[], &first.allocations);
    for (frontend, id) in ids(&first) {
        assert_eq!(second.entry(&frontend).unwrap().id.0, id);
    }
    assert_eq!(entry(&second, "10.96.0.1", 80).id.0, 3);
    for (address, id) in backend_ids(&first) {
        assert!(backend_ids(&second).contains(&(address, id)));
    }

    // Removing one keeps everyone else's ids and frees its own for reuse.
    let third = run_with(
        &[services[0].clone(), services[2].clone()],
        &slices,
        &[],
        &second.allocations,
    );
    assert_eq!(entry(&third, "10.96.0.1", 80).id.0, 3);
    assert_eq!(entry(&third, "10.96.0.3", 80).id.0, 2);
    assert!(!third
        .allocations
        .service_ids
        .contains_key(&key("10.96.0.2", 80, Proto::Tcp)));
    let fourth = run_with(
        &[
            services[0].clone(),
            services[2].clone(),
            web("d", "10.96.0.4"),
        ],
        &slices,
        &[],
        &third.allocations,
    );
    assert_eq!(entry(&fourth, "10.96.0.4", 80).id.0, 1);
}

#[test]
fn frontends_share_backend_ids() {
    let mut svc = web("web", "10.96.0.10");
    svc["spec"]["type"] = json!("NodePort");
    svc["spec"]["ports"][0]["nodePort"] = json!(30080);
    let s = web_slice("web", vec![endpoint("10.0.1.1", "n1", ready())]);
    let state = run(&[svc], &[s]);
    let ids: Vec<u32> = state.services.iter().map(|e| e.backends[0].id.0).collect();
    assert_eq!(ids, [1, 1, 1]);
    assert_eq!(state.backends().len(), 1);
}

#[test]
fn the_older_service_keeps_a_contested_frontend() {
    let mut old = web("old", "10.96.0.1");
    old["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    old["spec"]["externalIPs"] = json!(["198.51.100.1"]);
    let mut new = web("a-new", "10.96.0.2");
    new["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    new["spec"]["externalIPs"] = json!(["198.51.100.1"]);
    let state = run(&[new, old], &[]);
    assert_eq!(entry(&state, "198.51.100.1", 80).name, "old");
    assert_eq!(
        state.issues,
        [LbIssue::FrontendConflict {
            frontend: key("198.51.100.1", 80, Proto::Tcp),
            kept: ServiceName::new("x", "old"),
            dropped: ServiceName::new("x", "a-new"),
        }]
    );
}

#[test]
fn invalid_services_are_errors_naming_the_service_and_field() {
    let with = |path: &[&str], value: Value| {
        let mut svc = web("web", "10.96.0.10");
        svc["spec"]["ports"] = json!([
            {"name": "http", "port": 80},
            {"name": "https", "port": 443},
        ]);
        let mut at = &mut svc;
        for p in &path[..path.len() - 1] {
            at = if let Ok(i) = p.parse::<usize>() {
                &mut at[i]
            } else {
                &mut at[*p]
            };
        }
        at[path[path.len() - 1]] = value;
        error(&[svc], &[])
    };
    assert_eq!(
        with(&["spec", "ports", "1", "port"], json!(0)),
        "Service x/web: spec.ports[1].port: 0 is not a port number (1-65535)"
    );
    assert_eq!(
        with(&["spec", "ports", "1", "protocol"], json!("ICMP")),
        "Service x/web: spec.ports[1].protocol: unsupported protocol \"ICMP\" (expected TCP, UDP or SCTP)"
    );
    assert_eq!(
        with(&["spec", "ports", "0", "nodePort"], json!(70000)),
        "Service x/web: spec.ports[0].nodePort: 70000 is not a port number (1-65535)"
    );
    assert_eq!(
        with(&["spec", "ports", "0", "targetPort"], json!(-1)),
        "Service x/web: spec.ports[0].targetPort: -1 is not a port number (1-65535)"
    );
    assert_eq!(
        with(&["spec", "clusterIP"], json!("10.96.0.300")),
        "Service x/web: spec.clusterIP: \"10.96.0.300\" is not an IP address"
    );
    assert_eq!(
        with(&["spec", "externalIPs"], json!(["198.51.100.1", "nope"])),
        "Service x/web: spec.externalIPs[1]: \"nope\" is not an IP address"
    );
    assert_eq!(
        with(&["spec", "type"], json!("Balanced")),
        "Service x/web: spec.type: unknown type \"Balanced\" (expected ClusterIP, NodePort, \
         LoadBalancer or ExternalName)"
    );
    assert_eq!(
        with(&["spec", "externalTrafficPolicy"], json!("Nearby")),
        "Service x/web: spec.externalTrafficPolicy: unknown policy \"Nearby\" (expected Cluster or Local)"
    );
    assert_eq!(
        with(&["spec", "sessionAffinity"], json!("Cookie")),
        "Service x/web: spec.sessionAffinity: unknown affinity \"Cookie\" (expected None or ClientIP)"
    );
    let mut svc = web("web", "10.96.0.10");
    svc["spec"]["sessionAffinity"] = json!("ClientIP");
    svc["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 86401}});
    assert_eq!(
        error(&[svc], &[]),
        "Service x/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range (1-86400)"
    );
    let mut svc = web("web", "10.96.0.10");
    svc["metadata"]["annotations"] = json!({"service.cilium.io/lb-algorithm": "round-robin"});
    assert_eq!(
        error(&[svc], &[]),
        "Service x/web: metadata.annotations[service.cilium.io/lb-algorithm]: unknown \
         load-balancing algorithm \"round-robin\" (expected random or maglev)"
    );
    let mut svc = load_balancer("web", "10.96.0.10");
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"ip": "x"}]}});
    assert_eq!(
        error(&[svc], &[]),
        "Service x/web: status.loadBalancer.ingress[1].ip: \"x\" is not an IP address"
    );
}

#[test]
fn invalid_slices_are_errors_naming_the_slice_and_field() {
    let bad_address = web_slice(
        "web",
        vec![
            endpoint("10.0.1.1", "n1", ready()),
            endpoint("10.0.1", "n1", ready()),
        ],
    );
    assert_eq!(
        error(&[web("web", "10.96.0.10")], &[bad_address]),
        "EndpointSlice x/web-abc: endpoints[1].addresses[0]: \"10.0.1\" is not an IP address"
    );
    let wrong_family = web_slice("web", vec![endpoint("fd00::1", "n1", ready())]);
    assert_eq!(
        error(&[], &[wrong_family]),
        "EndpointSlice x/web-abc: endpoints[0].addresses[0]: fd00::1 is not an IPv4 address \
         (addressType IPv4)"
    );
    let mut bad_port = web_slice("web", vec![]);
    bad_port["ports"][0]["port"] = json!(0);
    assert_eq!(
        error(&[], &[bad_port]),
        "EndpointSlice x/web-abc: ports[0].port: 0 is not a port number (1-65535)"
    );
    // FQDN slices carry nothing to balance to and are not errors.
    let mut fqdn = web_slice("web", vec![endpoint("example.com", "n1", ready())]);
    fqdn["addressType"] = json!("FQDN");
    let state = run(&[web("web", "10.96.0.10")], &[fqdn]);
    assert!(entry(&state, "10.96.0.10", 80).backends.is_empty());
}

#[test]
fn an_invalid_pool_is_an_error_naming_the_pool_and_field() {
    let err = try_run(
        &[load_balancer("web", "10.96.0.10")],
        &[],
        &[pool("p", &["10.0.10.0/24", "10.0.11.0"])],
        &LbAllocations::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CiliumLoadBalancerIPPool p: spec.blocks[1].cidr: \"10.0.11.0\" is not in CIDR notation \
         (address/prefix)"
    );
}

#[test]
fn maglev_entries_build_tables_over_their_active_backends() {
    let mut svc = web("web", "10.96.0.10");
    svc["metadata"]["annotations"] = json!({"service.cilium.io/lb-algorithm": "maglev"});
    let s = web_slice(
        "web",
        vec![
            endpoint("10.0.1.1", "n1", ready()),
            endpoint("10.0.1.2", "n1", ready()),
            endpoint(
                "10.0.1.3",
                "n1",
                json!({"ready": false, "serving": true, "terminating": true}),
            ),
        ],
    );
    let state = run(&[svc], &[s]);
    let e = entry(&state, "10.96.0.10", 80);
    let table = plexus_lb::maglev_table_for(e, plexus_lb::MAGLEV_TABLE_SIZE);
    let terminating = e
        .backends
        .iter()
        .find(|b| b.state == BackendState::Terminating)
        .unwrap();
    assert!(!table.contains(&terminating.id));
    assert_eq!(table.len(), plexus_lb::MAGLEV_TABLE_SIZE);
}
