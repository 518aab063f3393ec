//! Policy changes without gaps: while 200 policy updates are applied, each of which keeps
//! x/a → x/b allowed and x/c → x/b denied, continuous TCP and UDP traffic sees zero failures on
//! the allowed path and zero successes on the denied one.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use plexus_e2e::{pods_yaml, LabGuard, TempFile};

/// Counts of a prober.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: u64,
    failed: u64,
}

/// Probes `ip:80` over TCP (new connection each time) or UDP from inside `netns` until `stop`.
fn prober(
    netns: std::path::PathBuf,
    ip: String,
    udp: bool,
    timeout: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Tally> {
    thread::spawn(move || {
        plexus_netdev::in_netns(&netns, move || {
            let addr: SocketAddr = format!("{ip}:80").parse().expect("addr");
            let mut t = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let ok = if udp {
                    std::net::UdpSocket::bind("0.0.0.0:0")
                        .and_then(|s| {
                            s.set_read_timeout(Some(timeout))?;
                            s.send_to(b"gap", addr)?;
                            let mut buf = [0u8; 64];
                            s.recv_from(&mut buf).map(|_| ())
                        })
                        .is_ok()
                } else {
                    std::net::TcpStream::connect_timeout(&addr, timeout).is_ok()
                };
                if ok {
                    t.ok += 1;
                } else {
                    t.failed += 1;
                }
                thread::sleep(Duration::from_millis(5));
            }
            t
        })
        .expect("enter netns")
    })
}

/// Policy variants: all allow x/a → x/b on TCP and UDP 80, and nothing from x/c.
fn variant(i: usize) -> String {
    let head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: gap, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress]\n  ingress:\n";
    let rules = match i % 4 {
        0 => "  - from: [{podSelector: {matchLabels: {pod: a}}}]\n    ports: [{port: 80}, {port: 80, protocol: UDP}]\n",
        1 => "  - from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, z]}]}}]\n    ports: [{port: 79, endPort: 81}, {port: 80, protocol: UDP}]\n",
        2 => "  - from: [{podSelector: {matchLabels: {pod: a}}}]\n    ports: [{port: 80}]\n  - from: [{podSelector: {matchLabels: {pod: a}}}]\n    ports: [{port: 80, protocol: UDP}]\n  - from: [{podSelector: {matchLabels: {pod: nobody}}}]\n",
        _ => "  - from: [{podSelector: {matchLabels: {pod: a}}}]\n",
    };
    format!("{head}{rules}")
}

#[test]
fn two_hundred_updates_open_no_gap_either_way() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b", "c"]));
    let lab = LabGuard::up("gap", &[&m.0]);
    let files: Vec<TempFile> = (0..4)
        .map(|i| TempFile::yaml("gap.yaml", &variant(i)))
        .collect();
    lab.ok(&["lab", "apply", "-f", files[0].0.to_str().unwrap()]);
    let b = lab.pod_ip("x/b");
    let (a_ns, c_ns) = (lab.pod_netns("x/a"), lab.pod_netns("x/c"));
    assert!(lab.probe("x/a", "x/b", 80, "TCP")["connected"] == true);
    assert!(lab.probe("x/c", "x/b", 80, "TCP")["connected"] == false);

    let stop = Arc::new(AtomicBool::new(false));
    let allowed = [
        prober(
            a_ns.clone(),
            b.clone(),
            false,
            Duration::from_secs(1),
            stop.clone(),
        ),
        prober(a_ns, b.clone(), true, Duration::from_secs(1), stop.clone()),
    ];
    let denied = [
        prober(
            c_ns.clone(),
            b.clone(),
            false,
            Duration::from_millis(60),
            stop.clone(),
        ),
        prober(c_ns, b, true, Duration::from_millis(60), stop.clone()),
    ];
    let started = Instant::now();
    for i in 1..=200 {
        lab.ok(&["lab", "apply", "-f", files[i % 4].0.to_str().unwrap()]);
    }
    let took = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let allowed: Vec<Tally> = allowed
        .into_iter()
        .map(|h| h.join().expect("prober"))
        .collect();
    let denied: Vec<Tally> = denied
        .into_iter()
        .map(|h| h.join().expect("prober"))
        .collect();
    eprintln!(
        "200 updates in {took:?}; allowed TCP {:?} UDP {:?}; denied TCP {:?} UDP {:?}",
        allowed[0], allowed[1], denied[0], denied[1]
    );
    for (t, what) in allowed.iter().zip(["TCP", "UDP"]) {
        assert!(t.ok >= 50, "too few {what} probes to mean anything: {t:?}");
        assert_eq!(
            t.failed, 0,
            "allowed {what} traffic failed during updates: {t:?}"
        );
    }
    for (t, what) in denied.iter().zip(["TCP", "UDP"]) {
        assert!(t.failed >= 15, "too few denied {what} probes: {t:?}");
        assert_eq!(
            t.ok, 0,
            "denied {what} traffic got through during updates: {t:?}"
        );
    }
}
