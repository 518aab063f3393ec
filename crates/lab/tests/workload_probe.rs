//! The workload server and the probe client, end to end: two network namespaces joined by a
//! veth pair, `plexus-workload` serving in one, probes sent from the other.
//!
//! Needs root (network namespaces, veth); the guard removes both namespaces and the server
//! process even when an assertion fails.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use plexus_lab::probe::{probe, probe_many, ProbeJob, ProbeResult, Protocol};

/// The workload's binary, built by cargo for this test.
const WORKLOAD: &str = env!("CARGO_BIN_EXE_plexus-workload");

/// Distinguishes the labs of tests running in parallel in this process.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Two namespaces, `server` and `client`, on one /24 over a veth pair, with the workload
/// `x/a` serving TCP 80 and UDP 80 in `server`. Dropping it kills the workload and deletes both
/// namespaces.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_path: PathBuf,
    client_path: PathBuf,
    server_ip: Ipv4Addr,
    /// An address on the link that nobody owns.
    absent_ip: Ipv4Addr,
    workload: Option<Child>,
}

impl Lab {
    fn start() -> Self {
        let pid = std::process::id();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let subnet = u8::try_from((pid + n * 7) % 250).expect("below 250") + 1;
        let mut lab = Lab {
            server_ns: format!("plxt-wp-{pid}-{n}-s"),
            client_ns: format!("plxt-wp-{pid}-{n}-c"),
            server_path: PathBuf::new(),
            client_path: PathBuf::new(),
            server_ip: Ipv4Addr::new(10, 250, subnet, 1),
            absent_ip: Ipv4Addr::new(10, 250, subnet, 3),
            workload: None,
        };
        // From here on `lab` is the guard: a failure below still cleans up what exists.
        lab.server_path = plexus_netdev::netns_add(&lab.server_ns).expect("add server netns");
        lab.client_path = plexus_netdev::netns_add(&lab.client_ns).expect("add client netns");
        let server = Some(lab.server_path.as_path());
        let client = Some(lab.client_path.as_path());
        plexus_netdev::ip(
            server,
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &lab.client_ns,
            ],
        )
        .expect("add veth pair");
        let client_addr = format!("10.250.{subnet}.2/24");
        let server_addr = format!("{}/24", lab.server_ip);
        plexus_netdev::ip(server, &["addr", "add", &server_addr, "dev", "eth0"])
            .expect("server address");
        plexus_netdev::ip(client, &["addr", "add", &client_addr, "dev", "eth0"])
            .expect("client address");
        plexus_netdev::ip(server, &["link", "set", "eth0", "up"]).expect("server link up");
        plexus_netdev::ip(client, &["link", "set", "eth0", "up"]).expect("client link up");

        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", lab.server_path.display()))
            .arg("--")
            .args([WORKLOAD, "--name", "x/a", "--tcp", "80", "--udp", "80"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start plexus-workload");
        let stderr = child.stderr.take().expect("piped stderr");
        lab.workload = Some(child);
        wait_for_serving(stderr);
        lab
    }

    fn server(&self) -> IpAddr {
        IpAddr::V4(self.server_ip)
    }

    fn probe(&self, ip: IpAddr, port: u16, protocol: Protocol, timeout: Duration) -> ProbeResult {
        probe(&self.client_path, "y/b", "x/a", ip, port, protocol, timeout)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.workload.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            if let Err(e) = plexus_netdev::netns_del(ns) {
                eprintln!("cleanup: deleting netns {ns}: {e}");
            }
        }
    }
}

/// Waits until the workload says it is serving (it prints that only after binding every port),
/// then keeps draining its stderr so it can never block on a full pipe.
fn wait_for_serving(stderr: std::process::ChildStderr) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            let serving = line.contains("serving");
            seen.push(line);
            if serving {
                let _ = tx.send(Ok(()));
                // Drain until the process exits.
                for _ in lines.by_ref() {}
                return;
            }
        }
        let _ = tx.send(Err(seen.join("\n")));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(stderr)) => panic!("plexus-workload exited before serving:\n{stderr}"),
        Err(_) => panic!("plexus-workload did not report serving within 10s"),
    }
}

/// Asserts that `r` connected and got `x/a` back.
fn assert_reached_x_a(r: &ProbeResult) {
    assert!(r.connected, "{r:?}");
    assert_eq!(r.reply.as_deref(), Some("x/a"), "{r:?}");
    assert_eq!(r.error, None, "{r:?}");
}

#[test]
fn tcp_and_udp_probes_reach_the_workload() {
    let lab = Lab::start();
    let timeout = Duration::from_secs(3);

    let tcp = lab.probe(lab.server(), 80, Protocol::TCP, timeout);
    assert_reached_x_a(&tcp);
    assert_eq!((tcp.from.as_str(), tcp.to.as_str()), ("y/b", "x/a"));
    assert_eq!(tcp.ip, lab.server_ip.to_string());
    assert_eq!((tcp.port, tcp.protocol), (80, Protocol::TCP));

    let udp = lab.probe(lab.server(), 80, Protocol::UDP, timeout);
    assert_reached_x_a(&udp);
    assert_eq!((udp.port, udp.protocol), (80, Protocol::UDP));
}

#[test]
fn closed_ports_and_absent_hosts_fail_within_the_timeout() {
    let lab = Lab::start();
    let timeout = Duration::from_millis(1500);

    // TCP to a closed port: reset at once.
    let tcp = lab.probe(lab.server(), 81, Protocol::TCP, timeout);
    assert!(!tcp.connected, "{tcp:?}");
    assert!(tcp.error.is_some(), "{tcp:?}");
    assert_eq!(tcp.reply, None);
    assert!(tcp.elapsed_ms < 500, "a reset should be quick: {tcp:?}");

    // UDP to a port with no server: no answer (here an ICMP port unreachable) within the timeout.
    let udp = lab.probe(lab.server(), 81, Protocol::UDP, timeout);
    assert!(!udp.connected, "{udp:?}");
    assert!(udp.error.is_some(), "{udp:?}");
    assert!(udp.elapsed_ms <= 1500 + 250, "{udp:?}");

    // UDP to an address nobody answers for: silence, so all tries are spent and the full
    // timeout waited out, but not much more.
    let silent = lab.probe(IpAddr::V4(lab.absent_ip), 80, Protocol::UDP, timeout);
    assert!(!silent.connected, "{silent:?}");
    assert!(silent.error.is_some(), "{silent:?}");
    assert!(
        (1400..=1500 + 250).contains(&silent.elapsed_ms),
        "{silent:?}"
    );

    // TCP to an address nobody answers for: the connect times out.
    let tcp_silent = lab.probe(IpAddr::V4(lab.absent_ip), 80, Protocol::TCP, timeout);
    assert!(!tcp_silent.connected, "{tcp_silent:?}");
    assert!(tcp_silent.elapsed_ms <= 1500 + 250, "{tcp_silent:?}");
}

#[test]
fn tcp_and_udp_echo_round_trips() {
    let lab = Lab::start();
    let target = SocketAddr::new(lab.server(), 80);
    let (tcp_lines, udp_reply) = plexus_netdev::in_netns(&lab.client_path, move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone stream"));
        let mut lines = Vec::new();
        let mut line = String::new();
        r.read_line(&mut line).expect("name line");
        lines.push(std::mem::take(&mut line));
        // The same long-lived connection carries several request/response rounds.
        for round in 0..3 {
            s.write_all(format!("hello {round}\n").as_bytes())
                .expect("send");
            r.read_line(&mut line).expect("echo line");
            lines.push(std::mem::take(&mut line));
        }
        // A larger burst comes back byte for byte.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut s = s.try_clone().expect("clone stream");
            let big = big.clone();
            thread::spawn(move || s.write_all(&big).expect("send burst"))
        };
        let mut back = vec![0u8; big.len()];
        r.read_exact(&mut back).expect("burst echoed");
        writer.join().expect("writer");
        assert!(back == big, "burst echoed unchanged");

        let u = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        u.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("udp timeout");
        u.connect(target).expect("connect udp");
        let mut reply = None;
        for _ in 0..3 {
            u.send(b"echo:ping 42").expect("send udp");
            let mut buf = [0u8; 64];
            if let Ok(n) = u.recv(&mut buf) {
                reply = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        (lines, reply)
    })
    .expect("enter client netns");
    assert_eq!(tcp_lines, ["x/a\n", "hello 0\n", "hello 1\n", "hello 2\n"]);
    assert_eq!(udp_reply.as_deref(), Some("echo:ping 42"));
}

#[test]
fn probe_many_keeps_job_order_under_parallel_load() {
    let lab = Lab::start();
    let jobs: Vec<ProbeJob> = (0..300)
        .map(|i| {
            let (port, protocol) = match i % 3 {
                0 => (80, Protocol::TCP),
                1 => (81, Protocol::TCP),
                _ => (80, Protocol::UDP),
            };
            ProbeJob {
                netns: lab.client_path.clone(),
                from: format!("y/b{i}"),
                to: "x/a".into(),
                ip: lab.server(),
                port,
                protocol,
                timeout: Duration::from_secs(3),
            }
        })
        .collect();
    let results = probe_many(jobs.clone(), 64);
    assert_eq!(results.len(), jobs.len());
    for (i, (job, r)) in jobs.iter().zip(&results).enumerate() {
        assert_eq!(
            (&r.from, r.port, r.protocol),
            (&job.from, job.port, job.protocol),
            "job {i}"
        );
        if job.port == 80 {
            assert_reached_x_a(r);
        } else {
            assert!(!r.connected, "job {i}: {r:?}");
        }
    }
}

#[test]
fn a_port_already_bound_fails_with_a_clear_message() {
    let lab = Lab::start();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", lab.server_path.display()))
        .arg("--")
        .args([WORKLOAD, "--name", "x/b", "--udp", "81", "--tcp", "80"])
        .stdin(Stdio::null())
        .output()
        .expect("run a second plexus-workload");
    assert!(
        !out.status.success(),
        "second workload on TCP 80 should fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TCP port 80"), "stderr: {stderr}");
    assert!(!stderr.contains("serving"), "stderr: {stderr}");
}
