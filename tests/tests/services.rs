//! Kube-proxy replacement end to end: Services reached from pods through socket-level load
//! balancing (cgroup hooks) and per-packet tc translation, from the node and from outside
//! (NodePort, LoadBalancer), with affinity, Maglev, terminating backends, refusal without
//! backends, hairpin, and NAT checksums checked with checksum offload off.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_e2e::{ExternalHost, LabGuard, TempFile};
use serde_json::Value;

/// A namespace, `web` pods serving TCP and UDP 8080 (named port `http`), a client pod, and
/// Services over them.
fn topology(replicas: u32, services: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: x}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: x}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: w
        image: workload
        ports: [{{containerPort: 8080, name: http}}, {{containerPort: 8080, protocol: UDP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: x, labels: {{app: client}}}}
spec:
  containers: [{{name: c, image: workload, ports: [{{containerPort: 9090}}]}}]
---
{services}"#
    )
}

const WEB: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  selector: {app: web}
  ports:
  - {name: tcp, port: 80, targetPort: http}
  - {name: udp, port: 80, protocol: UDP, targetPort: 8080}
"#;

fn apply(lab: &LabGuard, yaml: &str) -> String {
    let f = TempFile::yaml("svc.yaml", yaml);
    lab.ok(&["lab", "apply", "-f", f.0.to_str().unwrap()])
}

fn up(prefix: &str, yaml: &str) -> LabGuard {
    let f = TempFile::yaml("topo.yaml", yaml);
    LabGuard::up(prefix, &[&f.0])
}

/// `count` probes from `src` to `dst`; returns them.
fn probes(lab: &LabGuard, src: &str, dst: &str, proto: &str, lb: &str, count: u32) -> Vec<Value> {
    let r = lab.plexus(&[
        "lab",
        "probe",
        src,
        dst,
        "--port",
        "80",
        "--protocol",
        proto,
        "--socket-lb",
        lb,
        "--count",
        &count.to_string(),
        "--timeout-ms",
        // Generous: the suite runs labs in parallel on two cores.
        "5000",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("probe: bad JSON {e}: {} {}", r.stdout, r.stderr));
    v.as_array().expect("array").clone()
}

/// Who answered, how often; panics on a failed probe.
#[track_caller]
fn answers(results: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in results {
        assert_eq!(r["connected"], true, "probe failed: {r}");
        *out.entry(r["reply"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    out
}

fn web_pods(lab: &LabGuard) -> BTreeSet<String> {
    let pods = lab.json(&["lab", "pods"]);
    pods.as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("x/web-"))
        .cloned()
        .collect()
}

/// Turns transmit checksum offload off on a namespace's `eth0`, so wrong NAT checksums would
/// be caught by the receiver instead of hidden by the veth.
fn tx_off(netns: &Path) {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "ethtool", "-K", "eth0", "tx", "off"])
        .output()
        .expect("ethtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP exchange from a namespace (optionally from a fixed source port): the reply line, or
/// what went wrong.
fn tcp_reply(netns: &Path, addr: &str, sport: Option<u16>) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    plexus_netdev::in_netns(netns, move || {
        let mut s = socket2_connect(addr, sport)?;
        // RST on close, whatever happens next: no TIME_WAIT, so the same source port can open a
        // new connection to the same service at once.
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt on our socket with a linger struct of the right size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).map_err(|e| format!("reading: {e}"))?;
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .map(str::to_string)
            .ok_or_else(|| "closed without a reply".to_string())
    })
    .map_err(|e| e.to_string())?
}

/// connect() from an optional fixed source port.
fn socket2_connect(addr: SocketAddr, sport: Option<u16>) -> Result<TcpStream, String> {
    use std::os::fd::FromRawFd;
    let Some(sport) = sport else {
        return TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connecting to {addr}: {e}"));
    };
    let SocketAddr::V4(v4) = addr else {
        return Err("IPv4 only".into());
    };
    let err = |what: &str| format!("{what} (port {sport}): {}", std::io::Error::last_os_error());
    // SAFETY: plain socket calls on a descriptor we own; sockaddr_in built in full; the
    // descriptor is owned by the TcpStream from the moment it exists.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(err("socket"));
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as u16;
        local.sin_port = sport.to_be();
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), 16) != 0 {
            return Err(err("bind"));
        }
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as u16;
        remote.sin_port = v4.port().to_be();
        remote.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        // The same 4-tuple can still be held by the kernel for a moment after the last
        // connection on it was reset (EADDRNOTAVAIL): a local socket matter, not the datapath's,
        // so wait for it rather than fail.
        let mut tries = 0;
        while libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), 16) != 0 {
            let e = std::io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() != Some(libc::EADDRNOTAVAIL) || tries > 50 {
                return Err(format!("connect (port {sport}, try {tries}): {e}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(stream)
    }
}

fn service_ip(lab: &LabGuard, name: &str) -> String {
    let v = lab.json(&["service", "list"]);
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && s["kind"] == "ClusterIp")
        .and_then(|s| s["frontend"].as_str())
        .and_then(|f| f.split(':').next())
        .unwrap_or_else(|| panic!("service {name} not in {v}"))
        .to_string()
}

#[test]
fn clusterip_reaches_every_backend_over_tcp_and_udp_and_follows_scaling() {
    let lab = up("svc", &topology(3, WEB));
    let pods = web_pods(&lab);
    assert_eq!(pods.len(), 3);
    for proto in ["TCP", "UDP"] {
        for lb in ["on", "off"] {
            let got = answers(&probes(&lab, "x/client", "svc/x/web", proto, lb, 100));
            let seen: BTreeSet<String> = got.keys().cloned().collect();
            assert_eq!(seen, pods, "{proto} socket-lb {lb}: {got:?}");
        }
    }
    // Scale down: the gone pod gets nothing; scale up: the new one gets connections at once.
    apply(&lab, &topology(2, WEB));
    let two = web_pods(&lab);
    assert_eq!(two.len(), 2);
    for lb in ["on", "off"] {
        let got = answers(&probes(&lab, "x/client", "svc/x/web", "TCP", lb, 40));
        assert!(got.keys().all(|k| two.contains(k)), "{got:?}");
    }
    apply(&lab, &topology(4, WEB));
    let four = web_pods(&lab);
    assert_eq!(four.len(), 4);
    let got = answers(&probes(&lab, "x/client", "svc/x/web", "TCP", "on", 100));
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), four);
    // An agent crash loses no service.
    let before = lab.json(&["service", "list"]);
    lab.ok(&["lab", "restart-agent", "--kill"]);
    assert_eq!(lab.json(&["service", "list"]), before);
    answers(&probes(&lab, "x/client", "svc/x/web", "UDP", "off", 10));
}

#[test]
fn nodeport_and_loadbalancer_from_the_node_and_from_outside_with_checksums_checked() {
    let services = format!(
        "{WEB}---\n{}",
        r#"apiVersion: v1
kind: Service
metadata: {name: np, namespace: x}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: pool}
spec:
  blocks: [{cidr: 203.0.113.0/28}]
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: x}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#
    );
    let lab = up("svcnp", &topology(2, &services));
    let ext = ExternalHost::attach(&lab, &["198.51.100.2"]);
    plexus_netdev::ip(
        Some(&ext.path()),
        &["route", "add", "203.0.113.0/28", "via", "198.51.100.1"],
    )
    .unwrap();
    tx_off(&ext.path());
    for p in web_pods(&lab) {
        tx_off(&lab.pod_netns(&p));
    }
    tx_off(&lab.pod_netns("x/client"));
    // The agent finds the new device and address within a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab
        .json(&["service", "list"])
        .to_string()
        .contains("198.51.100.1:30080")
    {
        assert!(
            Instant::now() < deadline,
            "NodePort frontend on the new address"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lb_ip = lab
        .json(&["service", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "LoadBalancer")
        .and_then(|s| s["frontend"].as_str().map(str::to_string))
        .expect("a LoadBalancer frontend");
    assert!(lb_ip.starts_with("203.0.113."), "{lb_ip}");
    let lb_addr = lb_ip.trim_end_matches("/TCP").to_string();
    let pods = web_pods(&lab);
    for target in ["198.51.100.1:30080", lb_addr.as_str()] {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            let r = tcp_reply(&ext.path(), target, None)
                .unwrap_or_else(|e| panic!("from outside to {target}: {e}"));
            seen.insert(r);
        }
        assert_eq!(seen, pods, "{target}");
    }
    // From the node's own namespace (socket LB in the node's cgroup).
    for dst in ["198.51.100.1", "10.244.0.1"] {
        let r = lab.plexus(&[
            "lab",
            "probe",
            "node",
            dst,
            "--port",
            "30080",
            "--socket-lb",
            "on",
            "--json",
        ]);
        assert!(
            r.stdout.contains("\"connected\": true") || r.stdout.contains("\"connected\":true"),
            "{dst}: {} {}",
            r.stdout,
            r.stderr
        );
    }
    // Pod → ClusterIP through tc with checksums computed for real.
    answers(&probes(&lab, "x/client", "svc/x/web", "TCP", "off", 20));
    answers(&probes(&lab, "x/client", "svc/x/web", "UDP", "off", 20));
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend() {
    let svc = r#"apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: x}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}
  ports: [{port: 80, targetPort: 8080}]
"#;
    let lab = up("svcaff", &topology(3, svc));
    for lb in ["on", "off"] {
        let got = answers(&probes(&lab, "x/client", "svc/x/sticky", "TCP", lb, 30));
        assert_eq!(got.len(), 1, "socket-lb {lb}: {got:?}");
    }
    assert!(lab.ok(&["service", "list"]).contains("affinity=300s"));
}

#[test]
fn maglev_moves_few_flows_when_a_backend_goes() {
    let svc = r#"apiVersion: v1
kind: Service
metadata:
  name: mg
  namespace: x
  annotations: {service.cilium.io/lb-algorithm: maglev}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
"#;
    let lab = up("svcmg", &topology(5, svc));
    let ext = ExternalHost::attach(&lab, &["198.51.100.2"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab
        .json(&["service", "list"])
        .to_string()
        .contains("198.51.100.1:30090")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(200));
    }
    let flows = |lab: &LabGuard| -> BTreeMap<u16, String> {
        let _ = lab;
        (40000..40120)
            .map(|p| {
                let r = tcp_reply(&ext.path(), "198.51.100.1:30090", Some(p))
                    .unwrap_or_else(|e| panic!("flow from port {p}: {e}"));
                (p, r)
            })
            .collect()
    };
    let before = flows(&lab);
    let backends: BTreeSet<&String> = before.values().collect();
    assert!(backends.len() >= 4, "flows spread: {backends:?}");
    // Repeating the same flows picks the same backends (a hash, not chance).
    assert_eq!(flows(&lab), before);
    apply(&lab, &topology(4, svc));
    let after = flows(&lab);
    let alive = web_pods(&lab);
    let stayed: Vec<u16> = before
        .iter()
        .filter(|(_, b)| alive.contains(*b))
        .map(|(p, _)| *p)
        .collect();
    let kept = stayed.iter().filter(|p| after[p] == before[p]).count();
    // Random selection would keep ~1/4 of them; Maglev keeps nearly all.
    assert!(
        kept * 100 >= stayed.len() * 90,
        "only {kept} of {} flows on surviving backends kept them",
        stayed.len()
    );
}

#[test]
fn a_terminating_backend_keeps_its_connection_and_gets_no_new_ones() {
    let lab = up("svcterm", &topology(2, ""));
    let pods: Vec<String> = web_pods(&lab).into_iter().collect();
    let (a, b) = (lab.pod_ip(&pods[0]), lab.pod_ip(&pods[1]));
    let svc = |a_state: &str| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: manual, namespace: x}}
spec:
  clusterIP: 10.96.100.10
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  namespace: x
  labels: {{kubernetes.io/service-name: manual}}
addressType: IPv4
ports: [{{name: "", port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{a}"]
  conditions: {a_state}
- addresses: ["{b}"]
  conditions: {{ready: true}}
"#
        )
    };
    apply(&lab, &svc("{ready: true}"));
    // An open connection through tc translation to backend A.
    let netns = lab.pod_netns("x/client");
    let mut conn = None;
    for _ in 0..50 {
        let c = plexus_netdev::in_netns(&netns, || {
            let mut s = TcpStream::connect_timeout(
                &"10.96.100.10:80".parse().unwrap(),
                Duration::from_secs(2),
            )
            .ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut buf = [0u8; 128];
            let n = s.read(&mut buf).ok()?;
            Some((s, String::from_utf8_lossy(&buf[..n]).trim().to_string()))
        })
        .unwrap();
        if let Some((s, who)) = c {
            if who == pods[0] {
                conn = Some(s);
                break;
            }
        }
    }
    let mut conn = conn.expect("a connection to backend A");
    apply(
        &lab,
        &svc("{ready: false, serving: true, terminating: true}"),
    );
    assert!(lab.ok(&["service", "list"]).contains("terminating"));
    for lb in ["on", "off"] {
        let got = answers(&probes(&lab, "x/client", "svc/x/manual", "TCP", lb, 30));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            vec![&pods[1]],
            "socket-lb {lb}"
        );
    }
    conn.write_all(b"still there\n").unwrap();
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("still there"),
        "the established connection keeps working"
    );
}

#[test]
fn no_backend_is_refused_at_once_and_counted() {
    let svc = r#"apiVersion: v1
kind: Service
metadata: {name: empty, namespace: x}
spec:
  selector: {app: nothing}
  ports: [{name: t, port: 80, targetPort: 8080}, {name: u, port: 80, protocol: UDP, targetPort: 8080}]
"#;
    let lab = up("svcnone", &topology(1, svc));
    let before = lab.drops(158);
    for (proto, lb) in [("TCP", "on"), ("TCP", "off"), ("UDP", "off")] {
        let r = &probes(&lab, "x/client", "svc/x/empty", proto, lb, 1)[0];
        assert_eq!(r["connected"], false);
        let err = r["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("refused") || err.contains("unreachable"),
            "{proto} {lb}: {err}"
        );
        assert!(r["elapsed_ms"].as_u64().unwrap() < 1000, "{r}");
    }
    assert!(lab.drops(158) >= before + 3);
}

#[test]
fn a_pod_reaches_a_service_that_selects_itself() {
    let svc = r#"apiVersion: v1
kind: Service
metadata: {name: self, namespace: x}
spec:
  selector: {app: client}
  ports: [{port: 80, targetPort: 9090}]
"#;
    let lab = up("svchp", &topology(1, svc));
    tx_off(&lab.pod_netns("x/client"));
    for lb in ["on", "off"] {
        let got = answers(&probes(&lab, "x/client", "svc/x/self", "TCP", lb, 5));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            vec!["x/client"],
            "socket-lb {lb}"
        );
    }
    // Invalid input is refused with the field named, and nothing changes.
    let before = lab.json(&["service", "list"]);
    let f = TempFile::yaml(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: self, namespace: x}\nspec:\n  ports: [{port: 70000}]\n",
    );
    let r = lab.plexus(&["lab", "apply", "-f", f.0.to_str().unwrap()]);
    assert!(!r.ok && r.stderr.contains("port"), "{}", r.stderr);
    assert_eq!(lab.json(&["service", "list"]), before);
    let _ = service_ip(&lab, "self");
}

/// Runs a Python client in a pod's network namespace, in the node's pod cgroup (so the socket
/// hooks apply) or outside it; returns its output.
fn python_in_pod(lab: &LabGuard, pod: &str, in_cgroup: bool, script: &str, arg: &str) -> String {
    let state: Value = serde_json::from_slice(
        &std::fs::read(format!("/run/plexus/lab/{}/state.json", lab.name)).unwrap(),
    )
    .unwrap();
    let cgroup = state["nodes"][0]["cgroup"].as_str().expect("node cgroup");
    let join = if in_cgroup {
        format!("echo $$ > {cgroup}/cgroup.procs && ")
    } else {
        String::new()
    };
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{join}exec nsenter --net={} -- python3 -c \"$0\" \"$1\"",
            lab.pod_netns(pod).display()
        ))
        .arg(script)
        .arg(arg)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn socket_lb_picks_the_backend_at_connect_and_the_application_sees_the_service() {
    let lab = up("svcsock", &topology(1, WEB));
    let vip = service_ip(&lab, "web");
    let backend = lab.pod_ip(web_pods(&lab).iter().next().unwrap());
    // getpeername() (TCP) and recvfrom() on an unconnected UDP socket (sendmsg4/recvmsg4).
    let script = r#"
import socket, sys
vip = sys.argv[1]
t = socket.create_connection((vip, 80), timeout=2)
print("tcp", t.getpeername()[0], t.getsockname()[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(b"probe", (vip, 80))
data, addr = u.recvfrom(100)
print("udp", addr[0], addr[1])
"#;
    for in_cgroup in [true, false] {
        let out = python_in_pod(&lab, "x/client", in_cgroup, script, &vip);
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(lines[0][1], vip, "getpeername shows the service: {out}");
        assert_eq!(
            lines[1][1..],
            [vip.as_str(), "80"],
            "recvfrom shows the service: {out}"
        );
        // Socket LB leaves nothing to translate per packet: the connection to the backend is
        // tracked without a frontend. The tc path records the frontend it translated from.
        let sport: u64 = lines[0][2].parse().unwrap();
        let ct = lab.json(&["bpf", "ct", "list"]);
        let entry = ct
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["sport"] == sport && c["dst"] == backend.as_str() && c["proto"] == "TCP")
            .unwrap_or_else(|| panic!("no conntrack entry to the backend from port {sport}: {ct}"));
        assert_eq!(
            entry["rev_nat"] == 0,
            in_cgroup,
            "in cgroup: {in_cgroup}: {entry}"
        );
    }
}

#[test]
fn policy_applies_to_the_backend_after_translation() {
    let lab = up("svcpol", &topology(2, WEB));
    // Only pods labelled app=frontend may reach the web pods, on their container port.
    apply(
        &lab,
        r#"apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: x, labels: {app: frontend}}
spec:
  containers: [{name: c, image: workload}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-frontend, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080, protocol: TCP}]
"#,
    );
    for lb in ["on", "off"] {
        let denied = &probes(&lab, "x/client", "svc/x/web", "TCP", lb, 1)[0];
        assert_eq!(denied["connected"], false, "socket-lb {lb}: {denied}");
        let allowed = answers(&probes(&lab, "x/frontend", "svc/x/web", "TCP", lb, 10));
        assert!(!allowed.is_empty());
    }
}
