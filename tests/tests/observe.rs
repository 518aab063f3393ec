//! Observability end to end: flows with Kubernetes names, identities and verdicts from the
//! datapath's events; `plexus observe` filters, following and output formats; drop reasons from
//! policy; Prometheus metrics that count the traffic sent; and packet capture by pod name into a
//! pcap file that tshark reads back.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use plexus_e2e::{bin, pods_yaml, LabGuard, TempFile};
use serde_json::Value;

fn flows(lab: &LabGuard, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["observe", "-o", "json", "--last", "500"];
    a.extend_from_slice(args);
    lab.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad flow JSON {e}: {l}")))
        .collect()
}

/// Flows matching `args`, once at least `n` are there: the observer drains the datapath's ring
/// on a short timer (20 ms), so flows of traffic just sent may take that long to appear.
fn flows_at_least(lab: &LabGuard, args: &[&str], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = flows(lab, args);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pod(f: &Value, side: &str) -> String {
    format!(
        "{}/{}",
        f[side]["namespace"].as_str().unwrap_or(""),
        f[side]["pod_name"].as_str().unwrap_or("")
    )
}

fn metric(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.split(',').all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn scrape(lab: &LabGuard, port: u16) -> String {
    let ns = format!("/run/netns/plx-{}-node1", lab.name);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    plexus_netdev::in_netns(std::path::Path::new(&ns), move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("metrics listen");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// Every line of a Prometheus text exposition is a comment or `name{labels} value`.
fn assert_prometheus(text: &str) {
    let body = text.split("\r\n\r\n").nth(1).expect("HTTP body");
    assert!(!body.trim().is_empty());
    for l in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = l
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {l}"));
        assert!(value.parse::<f64>().is_ok(), "value of {l}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "name of {l}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "labels of {l}");
        }
    }
}

#[test]
fn flows_carry_names_identities_and_verdicts_and_filters_narrow_them() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x", "y"], &["a", "b"]));
    let lab = LabGuard::up("obs", &[&m.0]);
    assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
    assert_eq!(lab.probe("y/a", "x/b", 80, "UDP")["connected"], true);
    flows_at_least(&lab, &["--from-pod", "y/a", "--protocol", "udp"], 1);
    let all = flows(&lab, &[]);
    let ab: Vec<&Value> = all
        .iter()
        .filter(|f| pod(f, "source") == "x/a" && pod(f, "destination") == "x/b")
        .collect();
    assert!(!ab.is_empty(), "no x/a -> x/b flow in {all:?}");
    let f = ab[0];
    assert_eq!(f["verdict"], "FORWARDED");
    assert!(f["source"]["identity"].as_u64().unwrap() >= 256);
    assert!(f["source"]["labels"].to_string().contains("k8s:pod=a"));
    assert_eq!(f["destination"]["namespace"], "x");
    assert_eq!(f["l4"]["destination_port"], 80);
    assert!(f["node_name"].as_str().unwrap().ends_with("-node1"));
    assert_eq!(f["trace_observation_point"], "TO_ENDPOINT");
    // Replies are marked.
    assert!(all
        .iter()
        .any(|f| f["is_reply"] == true && pod(f, "source") == "x/b"));

    // Filters narrow.
    let only = |args: &[&str], ok: &dyn Fn(&Value) -> bool| {
        let got = flows(&lab, args);
        assert!(!got.is_empty(), "{args:?} matched nothing");
        assert!(
            got.iter().all(ok),
            "{args:?} let through a flow it should not: {got:?}"
        );
        assert!(got.len() < all.len(), "{args:?} did not narrow");
        got.len()
    };
    only(&["--from-pod", "x/a"], &|f| pod(f, "source") == "x/a");
    only(&["--to-pod", "x/b"], &|f| pod(f, "destination") == "x/b");
    only(&["--pod", "y/a"], &|f| {
        pod(f, "source") == "y/a" || pod(f, "destination") == "y/a"
    });
    only(&["--namespace", "y"], &|f| {
        f["source"]["namespace"] == "y" || f["destination"]["namespace"] == "y"
    });
    only(&["--from-namespace", "y"], &|f| {
        f["source"]["namespace"] == "y"
    });
    only(&["--protocol", "udp"], &|f| f["l4"]["summary"] == "UDP");
    only(&["--protocol", "tcp", "--to-port", "80"], &|f| {
        f["l4"]["destination_port"] == 80 && f["l4"]["summary"].as_str().unwrap().starts_with("TCP")
    });
    let a_ip = lab.pod_ip("x/a");
    only(&["--from-ip", &a_ip], &|f| {
        f["IP"]["source"] == a_ip.as_str()
    });
    let ns_y = "k8s:io.kubernetes.pod.namespace=y";
    only(&["--label", ns_y], &|f| {
        f["source"]["labels"].to_string().contains(ns_y)
            || f["destination"]["labels"].to_string().contains(ns_y)
    });
    only(&["--from-label", "pod=a"], &|f| {
        f["source"]["labels"].to_string().contains("k8s:pod=a")
    });
    let id_num = f["source"]["identity"].as_u64().unwrap();
    let id = id_num.to_string();
    only(&["--from-identity", &id], &|f| {
        f["source"]["identity"] == id_num
    });
    only(&["--not", "--from-pod", "x/a"], &|f| {
        pod(f, "source") != "x/a"
    });
    // No policy here: every flow is a trace, and none is a drop.
    assert_eq!(flows(&lab, &["--type", "trace"]).len(), all.len());
    assert!(flows(&lab, &["--type", "drop"]).is_empty());
    // The compact line reads like Hubble's.
    let line = lab.ok(&[
        "observe",
        "--from-pod",
        "x/a",
        "--to-pod",
        "x/b",
        "--last",
        "1",
    ]);
    assert!(
        line.contains("x/a:")
            && line.contains("-> x/b:80 (ID:")
            && line.contains("FORWARDED")
            && line.contains("TCP Flags:"),
        "{line}"
    );
    let table = lab.ok(&["observe", "--last", "3", "-o", "table"]);
    assert!(
        table.starts_with("TIME") && table.lines().count() == 4,
        "{table}"
    );
}

#[test]
fn drops_carry_the_reason_and_the_policy_and_are_counted() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b", "c"]));
    let lab = LabGuard::up("obsdrop", &[&m.0]);
    let p = TempFile::yaml(
        "p.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-from-a, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: a}}}]\n",
    );
    lab.ok(&["lab", "apply", "-f", p.0.to_str().unwrap()]);
    let before = scrape(&lab, 9965);
    let before_drops = metric(&before, "hubble_drop_total", "reason=\"POLICY_DENIED\"");
    // Five denied connection attempts; a short timeout means one SYN each.
    for _ in 0..5 {
        let r = lab.plexus(&[
            "lab",
            "probe",
            "x/c",
            "x/b",
            "--port",
            "80",
            "--timeout-ms",
            "300",
            "--json",
        ]);
        assert!(r.stdout.contains("\"connected\":false"), "{}", r.stdout);
    }
    assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
    let drops = flows_at_least(&lab, &["--verdict", "DROPPED"], 5);
    assert_eq!(drops.len(), 5, "{drops:?}");
    for d in &drops {
        assert_eq!(d["drop_reason_desc"], "POLICY_DENIED");
        assert_eq!(pod(d, "source"), "x/c");
        assert_eq!(d["traffic_direction"], "INGRESS");
    }
    let line = lab.ok(&["observe", "--verdict", "DROPPED", "--last", "1"]);
    assert!(line.contains("Policy denied DROPPED"), "{line}");
    // Allowed connections name the rule that allowed them.
    let verdicts = flows(&lab, &["--type", "policy-verdict", "--from-pod", "x/a"]);
    assert!(
        verdicts
            .iter()
            .any(|v| v["policies"].to_string().contains("b-from-a")
                && v["policies"].to_string().contains("spec.ingress[0]")),
        "{verdicts:?}"
    );

    let after = scrape(&lab, 9965);
    assert_prometheus(&after);
    assert_eq!(
        metric(&after, "hubble_drop_total", "reason=\"POLICY_DENIED\"") - before_drops,
        5,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "hubble_flows_processed_total",
            "verdict=\"FORWARDED\""
        ) > 0
    );
    assert!(after.contains("hubble_lost_events_total"));
    let agent = scrape(&lab, 9962);
    assert_prometheus(&agent);
    assert_eq!(
        metric(&agent, "plexus_endpoint", "endpoint_state=\"ready\""),
        3,
        "{agent}"
    );
    assert!(
        metric(
            &agent,
            "plexus_datapath_drop_total",
            "reason=\"POLICY_DENIED\""
        ) >= 5,
        "{agent}"
    );
    assert!(
        agent.contains("plexus_policy_regeneration_time_seconds")
            && agent.contains("plexus_bpf_map_pressure{map_name=\"PLEXUS_POLICY\"}")
    );
}

#[test]
fn follow_streams_new_flows() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b"]));
    let lab = LabGuard::up("obsfol", &[&m.0]);
    let mut child = Command::new(bin("plexus"))
        .args([
            "--lab",
            &lab.name,
            "observe",
            "--follow",
            "--to-pod",
            "x/b",
            "--to-port",
            "80",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let f: Value = serde_json::from_str(&line).expect("a followed flow");
    assert_eq!(pod(&f, "destination"), "x/b");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn capture_by_pod_name_writes_a_pcap_tshark_reads() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b", "c"]));
    let lab = LabGuard::up("obscap", &[&m.0]);
    let out = TempFile::yaml("cap.pcap", "");
    let mut cap = Command::new(bin("plexus"))
        .args([
            "--lab",
            &lab.name,
            "capture",
            "--pod",
            "x/b",
            "--port",
            "80",
            "--count",
            "6",
            "--timeout",
            "8",
            "-w",
        ])
        .arg(&out.0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // Traffic the capture must not see: other pods, other ports.
    assert_eq!(lab.probe("x/a", "x/c", 80, "TCP")["connected"], true);
    assert_eq!(lab.probe("x/a", "x/b", 81, "TCP")["connected"], false);
    // The known exchange: one TCP connection a -> b:80 (handshake, reply, close).
    assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
    let st = cap.wait().unwrap();
    assert!(st.success());
    let t = Command::new("tshark")
        .args([
            "-r",
            out.0.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.flags.str",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&t.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 6, "exactly the 6 packets asked for: {text}");
    let (a, b) = (lab.pod_ip("x/a"), lab.pod_ip("x/b"));
    for r in &rows {
        let pair = (r[0], r[1]);
        assert!(
            pair == (a.as_str(), b.as_str()) || pair == (b.as_str(), a.as_str()),
            "{text}"
        );
        assert!(r[2] == "80" || r[3] == "80", "{text}");
    }
    assert!(
        rows[0][4].contains('S') && !rows[0][4].contains('A'),
        "the capture starts at the SYN: {text}"
    );
    assert!(
        rows[1][4].contains('S') && rows[1][4].contains('A'),
        "then the SYN-ACK: {text}"
    );
}
