//! Single-node pod networking through the lab: every pod reaches every other pod over TCP and
//! UDP through the eBPF datapath, the node reaches the pods, a re-created pod gets a working
//! address, and the CLI shows endpoints, programs and counters.

use plexus_e2e::{pods_yaml, LabGuard, TempFile};

fn all_connected(grid: &[Vec<bool>]) -> bool {
    grid.iter().all(|r| r.iter().all(|c| *c))
}

#[test]
fn every_pod_reaches_every_pod_over_tcp_and_udp() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x", "y"], &["a", "b", "c"]));
    let lab = LabGuard::up("conn", &[&m.0]);
    for proto in ["TCP", "UDP"] {
        let (pods, grid) = lab.matrix(80, proto);
        assert_eq!(pods.len(), 6, "{pods:?}");
        assert!(
            all_connected(&grid),
            "{proto} matrix has a blocked pair: {grid:?}"
        );
    }
    // The text grid reads like the conformance cases: header of destinations, `.` per cell.
    let text = lab.ok(&["lab", "matrix", "--port", "80", "--protocol", "TCP"]);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 7, "{text}");
    assert!(rows[1].starts_with("x/a"), "{text}");
    assert_eq!(rows[1].matches('.').count(), 6, "{text}");
    // Replies name the answering pod.
    let p = lab.probe("x/a", "y/c", 80, "TCP");
    assert_eq!(p["connected"], true);
    assert_eq!(p["reply"], "y/c");
    let p = lab.probe("y/b", "x/a", 80, "UDP");
    assert_eq!(p["reply"], "x/a");
    // A port nobody serves is refused.
    let p = lab.probe("x/a", "x/b", 81, "TCP");
    assert_eq!(p["connected"], false);
}

#[test]
fn forwarding_is_done_by_the_datapath_and_counted() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b"]));
    let lab = LabGuard::up("fwd", &[&m.0]);
    let before = lab.json(&["bpf", "endpoint", "list"]);
    let ip_b = lab.pod_ip("x/b");
    for _ in 0..5 {
        assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
    }
    let after = lab.json(&["bpf", "endpoint", "list"]);
    let count = |v: &serde_json::Value, ip: &str, field: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["ip"] == ip)
            .map(|e| e[field].as_u64().unwrap())
            .unwrap_or(0)
    };
    // 5 connections of at least 3 packets each were delivered to b by a redirect.
    assert!(
        count(&after, &ip_b, "rx_packets") >= count(&before, &ip_b, "rx_packets") + 15,
        "{after}"
    );
    assert!(
        count(&after, &ip_b, "tx_packets") >= count(&before, &ip_b, "tx_packets") + 10,
        "{after}"
    );
    // Conntrack saw the connections, with replies.
    let ct = lab.json(&["bpf", "ct", "list"]);
    assert!(
        ct.as_array()
            .unwrap()
            .iter()
            .any(|c| c["dst"] == ip_b.as_str()
                && c["dport"] == 80
                && c["rx_packets"].as_u64().unwrap() > 0),
        "{ct}"
    );
    // No bridge and no iptables in the node: pod-to-pod must be our redirect.
    let status = lab.json(&["status"]);
    assert_eq!(status["endpoints"], 2);
    assert_eq!(
        status["programs"].as_array().unwrap().len(),
        4,
        "ingress+egress on each veth: {status}"
    );
    let eps = lab.ok(&["endpoint", "list"]);
    assert!(
        eps.contains("x/a") && eps.contains("ready") && eps.contains(&ip_b),
        "{eps}"
    );
}

#[test]
fn recreated_pod_gets_a_new_working_address() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b"]));
    let lab = LabGuard::up("recr", &[&m.0]);
    let old_ip = lab.pod_ip("x/b");
    let b = TempFile::yaml(
        "b.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  namespace: x\n  labels:\n    pod: b\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\n",
    );
    let out = lab.ok(&["lab", "delete", "-f", b.0.to_str().unwrap()]);
    assert!(out.contains("pod/x/b deleted"), "{out}");
    assert_eq!(lab.probe("x/a", &old_ip, 80, "TCP")["connected"], false);
    lab.ok(&["lab", "apply", "-f", b.0.to_str().unwrap()]);
    let new_ip = lab.pod_ip("x/b");
    assert_ne!(
        new_ip, old_ip,
        "a released address is not handed out again right away"
    );
    let p = lab.probe("x/a", "x/b", 80, "TCP");
    assert_eq!(p["connected"], true, "{p}");
    assert_eq!(p["reply"], "x/b");
    let p = lab.probe("x/b", "x/a", 80, "TCP");
    assert_eq!(p["connected"], true, "{p}");
}

#[test]
fn node_reaches_pods_and_pods_reach_node() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a"]));
    let lab = LabGuard::up("node", &[&m.0]);
    let ip = lab.pod_ip("x/a");
    let st = lab.json(&["lab", "pods"]);
    let node_netns = format!("/run/netns/plx-{}-node1", lab.name);
    let out = std::process::Command::new("nsenter")
        .args([
            &format!("--net={node_netns}"),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &ip,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node -> pod ping: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The pod reaches the node's router address (10.244.0.1).
    let out = std::process::Command::new("nsenter")
        .args([
            &format!("--net={}", lab.pod_netns("x/a").display()),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "10.244.0.1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pod -> node ping failed: {st}");
}
