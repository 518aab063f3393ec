//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy in the kernel, field by field: deny
//! beats allow (and is counted as POLICY_DENY), entities (world, host, cluster), CIDR with
//! except (the ipcache's longest prefix), port ranges and the ANY protocol, cluster-wide
//! policies, multiple `specs`, L7 rules applied at L4, bad input refused, traces naming the
//! deciding rule, shared identities, and scaling that touches no other endpoint's entries.

use plexus_e2e::{tcp_from, udp_from, ExternalHost, LabGuard, TempFile};
use serde_json::Value;

/// Namespaces x and y with pods a, b, c, each serving TCP and UDP on 80, 81 and 82.
fn topology() -> TempFile {
    let mut y = String::new();
    for ns in ["x", "y"] {
        y.push_str(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    ns: {ns}\n---\n"));
        for p in ["a", "b", "c"] {
            y.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {p}\n  namespace: {ns}\n  labels:\n    pod: {p}\nspec:\n  containers:\n  - name: c\n    ports:\n"
            ));
            for port in [80, 81, 82] {
                for proto in ["TCP", "UDP"] {
                    y.push_str(&format!(
                        "    - containerPort: {port}\n      protocol: {proto}\n"
                    ));
                }
            }
            y.push_str("---\n");
        }
    }
    TempFile::yaml("topology.yaml", &y)
}

fn apply(lab: &LabGuard, yaml: &str) -> String {
    let f = TempFile::yaml("policy.yaml", yaml);
    lab.ok(&["lab", "apply", "-f", f.0.to_str().unwrap()])
}

fn connected(lab: &LabGuard, from: &str, to: &str, port: u16, proto: &str) -> bool {
    lab.probe(from, to, port, proto)["connected"] == true
}

#[test]
fn deny_beats_allow_and_is_counted_as_policy_deny() {
    let t = topology();
    let lab = LabGuard::up("cdeny", &[&t.0]);
    apply(
        &lab,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a-open-but-not-to-b, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEntities: [cluster]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#,
    );
    let before_deny = lab.drops(181);
    assert!(
        !connected(&lab, "x/b", "x/a", 80, "TCP"),
        "the deny on TCP/80 beats the allow-all"
    );
    assert!(
        connected(&lab, "x/b", "x/a", 81, "TCP"),
        "other ports stay allowed"
    );
    assert!(
        connected(&lab, "x/b", "x/a", 80, "UDP"),
        "the deny is TCP only"
    );
    assert!(
        connected(&lab, "x/c", "x/a", 80, "TCP"),
        "other pods stay allowed"
    );
    assert!(
        connected(&lab, "y/b", "x/a", 80, "TCP"),
        "the namespaced selector means x/b only"
    );
    assert!(
        lab.drops(181) > before_deny,
        "explicit denies count as POLICY_DENY (181)"
    );

    // Default deny with no allow counts as POLICY_DENIED (133). `ingress: [{}]` is Cilium's
    // deny-all (an empty list would not select the endpoint for ingress at all).
    apply(&lab, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c-closed, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: c}}\n  ingress: [{}]\n");
    let before = lab.drops(133);
    assert!(!connected(&lab, "x/a", "x/c", 80, "TCP"));
    assert!(lab.drops(133) > before);

    let trace = lab.json(&[
        "policy",
        "trace",
        "x/b",
        "x/a",
        "--port",
        "80",
        "--protocol",
        "TCP",
    ]);
    assert_eq!(trace["verdict"], "denied", "{trace}");
    assert_eq!(trace["drop_reason"], "POLICY_DENY");
    let rules = trace["steps"].to_string();
    assert!(
        rules.contains("CiliumNetworkPolicy x/a-open-but-not-to-b spec.ingressDeny[0]"),
        "{trace}"
    );
    let trace = lab.json(&[
        "policy",
        "trace",
        "x/c",
        "x/a",
        "--port",
        "80",
        "--protocol",
        "TCP",
    ]);
    assert_eq!(trace["verdict"], "allowed");
    assert!(
        trace["steps"].to_string().contains("spec.ingress[0]"),
        "{trace}"
    );
    let trace = lab.json(&[
        "policy",
        "trace",
        "x/a",
        "x/c",
        "--port",
        "80",
        "--protocol",
        "TCP",
    ]);
    assert_eq!(trace["drop_reason"], "POLICY_DENIED");
    assert!(
        trace["steps"].to_string().contains("no rule allows"),
        "{trace}"
    );
}

#[test]
fn entities_world_host_and_cluster() {
    let t = topology();
    let lab = LabGuard::up("cent", &[&t.0]);
    let ext = ExternalHost::attach(&lab, &["198.51.100.10"]);
    let a_ip = lab.pod_ip("x/a");
    let node_ns = std::path::PathBuf::from(format!("/run/netns/plx-{}-node1", lab.name));
    assert!(
        tcp_from(&ext.path(), &a_ip, 80, 1000),
        "no policy: the world reaches x/a"
    );
    apply(&lab, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: cluster-only, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEntities: [cluster]\n");
    assert!(
        connected(&lab, "y/b", "x/a", 80, "TCP"),
        "cluster includes pods of every namespace"
    );
    assert!(
        !tcp_from(&ext.path(), &a_ip, 80, 700),
        "the world is not the cluster"
    );
    assert!(tcp_from(&node_ns, &a_ip, 80, 1000), "the host is");

    apply(&lab, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: cluster-only, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEntities: [world]\n");
    assert!(tcp_from(&ext.path(), &a_ip, 80, 1000), "world allowed");
    assert!(
        udp_from(&ext.path(), &a_ip, 80, 1000),
        "world allowed over UDP"
    );
    assert!(
        !connected(&lab, "y/b", "x/a", 80, "TCP"),
        "pods are not the world"
    );
    assert!(
        tcp_from(&node_ns, &a_ip, 80, 1000),
        "the node may always reach its pods"
    );

    apply(&lab, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: no-host, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingressDeny:\n  - fromEntities: [host]\n");
    assert!(
        !tcp_from(&node_ns, &a_ip, 80, 700),
        "an explicit deny of the host wins"
    );

    // Egress to the world.
    apply(&lab, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b-out, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: b}}\n  egress:\n  - toEntities: [world]\n");
    assert!(
        connected(&lab, "x/b", "198.51.100.10", 80, "TCP"),
        "x/b reaches the world"
    );
    assert!(!connected(&lab, "x/b", "x/c", 80, "TCP"), "but not pods");
}

#[test]
fn cidr_with_except_uses_the_longest_prefix() {
    let t = topology();
    let lab = LabGuard::up("ccidr", &[&t.0]);
    let _ext = ExternalHost::attach(&lab, &["198.51.100.10", "198.51.100.20"]);
    apply(
        &lab,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out-to-range, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  egress:
  - toCIDRSet:
    - cidr: 198.51.100.0/24
      except: [198.51.100.16/28]
"#,
    );
    assert!(
        connected(&lab, "x/a", "198.51.100.10", 80, "TCP"),
        "inside the range"
    );
    assert!(
        !connected(&lab, "x/a", "198.51.100.20", 80, "TCP"),
        "inside the except"
    );
    assert!(
        !connected(&lab, "x/a", "x/b", 80, "TCP"),
        "pods are never matched by a CIDR"
    );
    let ipc = lab.json(&["bpf", "ipcache", "list"]).to_string();
    assert!(
        ipc.contains("198.51.100.0/24") && ipc.contains("198.51.100.16/28"),
        "{ipc}"
    );
    // The same semantics through a NetworkPolicy ipBlock.
    apply(
        &lab,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-out, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.0/28]}
"#,
    );
    assert!(!connected(&lab, "x/b", "198.51.100.10", 80, "TCP"));
    assert!(connected(&lab, "x/b", "198.51.100.20", 80, "TCP"));
}

#[test]
fn port_ranges_and_the_any_protocol() {
    let t = topology();
    let lab = LabGuard::up("cport", &[&t.0]);
    apply(
        &lab,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: range, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{}]
    toPorts: [{ports: [{port: "80", endPort: 81, protocol: ANY}]}]
"#,
    );
    for (port, proto, want) in [
        (80, "TCP", true),
        (81, "TCP", true),
        (81, "UDP", true),
        (82, "TCP", false),
        (82, "UDP", false),
    ] {
        assert_eq!(
            connected(&lab, "x/b", "x/a", port, proto),
            want,
            "{proto}/{port}"
        );
    }
    assert!(
        !connected(&lab, "y/b", "x/a", 80, "TCP"),
        "fromEndpoints {{}} in a CNP is its namespace only"
    );
    // A NetworkPolicy endPort range.
    apply(&lab, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: r2, namespace: y}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 81, endPort: 82}\n");
    assert!(!connected(&lab, "x/a", "y/a", 80, "TCP"));
    assert!(connected(&lab, "x/a", "y/a", 81, "TCP"));
    assert!(connected(&lab, "x/a", "y/a", 82, "TCP"));
    assert!(
        !connected(&lab, "x/a", "y/a", 82, "UDP"),
        "protocol defaults to TCP"
    );
}

#[test]
fn clusterwide_policies_and_multiple_specs() {
    let t = topology();
    let lab = LabGuard::up("cccnp", &[&t.0]);
    let ccnp = TempFile::yaml(
        "ccnp.yaml",
        r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: a-pods}
specs:
- endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": y}}]
- endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: c}}]
    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
"#,
    );
    lab.ok(&["lab", "apply", "-f", ccnp.0.to_str().unwrap()]);
    // Both x/a and y/a are selected: cluster-wide.
    assert!(
        connected(&lab, "y/b", "x/a", 80, "TCP"),
        "specs[0]: from namespace y"
    );
    assert!(!connected(&lab, "x/b", "x/a", 80, "TCP"));
    assert!(
        connected(&lab, "x/c", "x/a", 81, "TCP"),
        "specs[1]: from pod c of any namespace, TCP/81"
    );
    assert!(!connected(&lab, "x/c", "x/a", 80, "TCP"));
    assert!(
        connected(&lab, "x/c", "y/a", 81, "TCP"),
        "y/a is selected too"
    );
    assert!(
        connected(&lab, "x/b", "x/c", 80, "TCP"),
        "unselected pods stay open"
    );
    let get = lab.json(&["policy", "get"]);
    let p = &get.as_array().unwrap()[0];
    assert_eq!(p["kind"], "CiliumClusterwideNetworkPolicy");
    assert!(p["namespace"].is_null());
    let rules: Vec<&str> = p["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["specs[0].ingress[0]", "specs[1].ingress[0]"]);
    assert!(
        p["rules"][0]["endpoints"].to_string().contains("x/a")
            && p["rules"][0]["endpoints"].to_string().contains("y/a")
    );
    // Deleting it (with the file it was applied from) opens everything again.
    lab.ok(&["lab", "delete", "-f", ccnp.0.to_str().unwrap()]);
    assert!(connected(&lab, "x/b", "x/a", 80, "TCP"));
}

#[test]
fn l7_rules_are_applied_at_l4_and_said_so() {
    let t = topology();
    let lab = LabGuard::up("cl7", &[&t.0]);
    let out = apply(
        &lab,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: http-get, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/api/.*"}]
"#,
    );
    assert!(out.contains("CiliumNetworkPolicy x/http-get"), "{out}");
    let get = lab.ok(&["policy", "get"]);
    assert!(get.contains("L7 rules enforced at L4 for now"), "{get}");
    assert!(connected(&lab, "x/b", "x/a", 80, "TCP"), "L4 part allows");
    assert!(!connected(&lab, "x/c", "x/a", 80, "TCP"));
    let v = lab.ok(&["policy", "validate", "-f", TempFile::yaml("p.yaml", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: h, namespace: x}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {http: [{method: GET}]}}]\n").0.to_str().unwrap()]);
    assert!(v.contains("L7"), "{v}");
}

#[test]
fn invalid_policies_are_refused_and_change_nothing() {
    let t = topology();
    let lab = LabGuard::up("cbad", &[&t.0]);
    apply(&lab, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-b, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n");
    let before = lab.json(&["policy", "get"]);
    let cases = [
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad, namespace: x}\nspec:\n  endpointSelector: {}\n  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/33}]\n", "spec.egress[0].toCIDRSet[0].cidr"),
        ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad, namespace: x}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoint: [{}]\n", "fromEndpoint"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-b, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 70000}]\n", "spec.ingress[0].ports[0]"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-b, namespace: x}\nspec:\n  podSelector: {matchExpressions: [{key: pod, operator: Near, values: [a]}]}\n", "spec.podSelector.matchExpressions[0].operator"),
    ];
    for (yaml, field) in cases {
        let f = TempFile::yaml("bad.yaml", yaml);
        let r = lab.plexus(&["lab", "apply", "-f", f.0.to_str().unwrap()]);
        assert!(!r.ok, "accepted: {yaml}");
        assert!(
            r.stderr.contains(field),
            "error does not name {field}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("bad.yaml"),
            "error does not name the file: {}",
            r.stderr
        );
        let v = lab.plexus(&["policy", "validate", "-f", f.0.to_str().unwrap()]);
        assert!(!v.ok && v.stderr.contains(field), "validate: {}", v.stderr);
        assert_eq!(
            lab.json(&["policy", "get"]),
            before,
            "a refused policy changed what is in force"
        );
    }
    assert!(connected(&lab, "x/b", "x/a", 80, "TCP"));
    assert!(!connected(&lab, "x/c", "x/a", 80, "TCP"));
}

#[test]
fn identities_are_shared_by_label_set_and_listed() {
    let t = topology();
    let lab = LabGuard::up("cid", &[&t.0]);
    let d = TempFile::yaml(
        "d.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: x}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: c\n        ports: [{containerPort: 80}]\n",
    );
    lab.ok(&["lab", "apply", "-f", d.0.to_str().unwrap()]);
    let ids = lab.json(&["identity", "list"]);
    let ids = ids.as_array().unwrap();
    let web: Vec<&Value> = ids
        .iter()
        .filter(|i| i["labels"].to_string().contains("k8s:app=web"))
        .collect();
    assert_eq!(
        web.len(),
        1,
        "three replicas (different pod-template-hash pods) share one identity: {ids:?}"
    );
    assert_eq!(web[0]["endpoints"].as_array().unwrap().len(), 3);
    assert!(!web[0]["labels"].to_string().contains("pod-template-hash"));
    assert!(web[0]["id"].as_u64().unwrap() >= 256);
    let xa: Vec<&Value> = ids
        .iter()
        .filter(|i| i["endpoints"].to_string().contains("\"x/a\""))
        .collect();
    let ya: Vec<&Value> = ids
        .iter()
        .filter(|i| i["endpoints"].to_string().contains("\"y/a\""))
        .collect();
    assert_ne!(
        xa[0]["id"], ya[0]["id"],
        "the namespace is part of the identity"
    );
    assert!(xa[0]["labels"]
        .to_string()
        .contains("k8s:io.cilium.k8s.namespace.labels.ns=x"));
    assert!(ids
        .iter()
        .any(|i| i["id"] == 2 && i["labels"].to_string().contains("reserved:world")));
}

#[test]
fn scaling_changes_no_other_endpoints_policy_entries() {
    let t = topology();
    let lab = LabGuard::up("cscale", &[&t.0]);
    let deploy = |n: u32| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: x}}\nspec:\n  replicas: {n}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: c\n        ports: [{{containerPort: 80, name: http}}]\n")
    };
    lab.ok(&[
        "lab",
        "apply",
        "-f",
        TempFile::yaml("d.yaml", &deploy(2)).0.to_str().unwrap(),
    ]);
    apply(&lab, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: to-web, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress, Ingress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: http}]\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n");
    let others = ["x/a", "x/b", "y/a"];
    let snapshot = || -> Vec<Value> {
        others
            .iter()
            .map(|p| lab.json(&["bpf", "policy", "get", p]))
            .collect()
    };
    let before = snapshot();
    assert!(!before[0].as_array().unwrap().is_empty(), "x/a has entries");
    lab.ok(&[
        "lab",
        "apply",
        "-f",
        TempFile::yaml("d.yaml", &deploy(4)).0.to_str().unwrap(),
    ]);
    assert_eq!(
        snapshot(),
        before,
        "scaling up touched other endpoints' entries"
    );
    let web: Vec<String> = lab
        .json(&["lab", "pods"])
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("x/web-"))
        .cloned()
        .collect();
    assert_eq!(web.len(), 4);
    for w in &web {
        assert!(connected(&lab, "x/a", w, 80, "TCP"), "x/a -> {w}");
    }
    assert!(!connected(&lab, "x/a", "x/b", 80, "TCP"));
    // Re-creating a pod with a new IP: same identity, nobody else's entries change.
    let b = TempFile::yaml("b.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: y, labels: {pod: b}}\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: 80}]\n");
    lab.ok(&["lab", "delete", "-f", b.0.to_str().unwrap()]);
    lab.ok(&["lab", "apply", "-f", b.0.to_str().unwrap()]);
    assert_eq!(
        snapshot(),
        before,
        "re-creating y/b touched other endpoints' entries"
    );
}
