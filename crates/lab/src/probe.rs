//! Reachability probes between lab pods, and the `.`/`X` matrices that NetworkPolicy
//! conformance cases are written in.
//!
//! A probe runs inside the source pod's network namespace: a TCP probe succeeds when the
//! connection is accepted, a UDP probe when the destination's answer comes back. It runs on a
//! thread of the caller that entered the namespace, or — so that the cgroup socket hooks of
//! socket-level load balancing see it as they see a pod's process — in a short-lived
//! `plexus-workload probe` process started in the namespace and the node's cgroup.

use std::{
    collections::HashMap,
    fmt, io,
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Payload of a UDP probe datagram.
pub const UDP_PROBE_PAYLOAD: &[u8] = b"probe";

/// How many times a UDP probe sends its datagram within its timeout.
pub const UDP_ATTEMPTS: u32 = 3;

/// Longest reply line a probe reads.
const MAX_REPLY: usize = 4096;

/// The shortest wait a probe uses, so a zero timeout still makes one real attempt.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Stack size for probe-pool workers; they only wait on the probe threads they start.
const WORKER_STACK: usize = 256 * 1024;

/// A transport protocol a probe speaks, spelled as in the Kubernetes API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP: success is an accepted connection.
    TCP,
    /// UDP: success is an answer datagram.
    UDP,
}

/// A protocol name that is neither TCP nor UDP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?}: expected TCP or UDP")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TCP" | "tcp" => Ok(Self::TCP),
            "UDP" | "udp" => Ok(Self::UDP),
            other => Err(UnknownProtocol(other.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TCP => "TCP",
            Self::UDP => "UDP",
        })
    }
}

/// Whether a probe runs where the cgroup socket hooks (socket-level load balancing) apply.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum SocketLb {
    /// On for probes to a Service or from the node, off otherwise.
    #[default]
    Auto,
    /// In a child process in the node's cgroup: the socket hooks translate Service addresses.
    On,
    /// In the calling process, outside the node's cgroup: only the per-packet datapath applies.
    Off,
}

/// A `--socket-lb` value that is not auto, on or off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown socket-lb mode {0:?}: expected auto, on or off")]
pub struct UnknownSocketLb(pub String);

impl FromStr for SocketLb {
    type Err = UnknownSocketLb;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(UnknownSocketLb(other.to_string())),
        }
    }
}

impl fmt::Display for SocketLb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// The outcome of one probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProbeResult {
    /// Source pod, `namespace/pod`.
    pub from: String,
    /// Destination pod (or service), `namespace/name`.
    pub to: String,
    /// Destination address probed.
    pub ip: String,
    /// Destination port.
    pub port: u16,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// TCP: the connection was accepted; UDP: an answer came back.
    pub connected: bool,
    /// The first line the destination sent, trimmed (normally its name), if any arrived.
    pub reply: Option<String>,
    /// Why the probe failed; set exactly when `connected` is false.
    pub error: Option<String>,
    /// Wall time the probe took, in milliseconds.
    pub elapsed_ms: u64,
}

/// One probe to run with [`probe_many`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeJob {
    /// Network namespace of the source pod.
    pub netns: PathBuf,
    /// Source pod, `namespace/pod`.
    pub from: String,
    /// Destination pod (or service), `namespace/name`.
    pub to: String,
    /// Destination address.
    pub ip: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Protocol to speak.
    pub protocol: Protocol,
    /// How long the whole probe may take.
    pub timeout: Duration,
}

/// What a probe found, before it is labelled.
struct Outcome {
    connected: bool,
    reply: Option<String>,
    error: Option<String>,
}

impl Outcome {
    fn failed(error: String) -> Self {
        Self {
            connected: false,
            reply: None,
            error: Some(error),
        }
    }
}

/// Probes `ip:port` over `protocol` from inside the network namespace at `netns`.
///
/// Never panics: any failure, including not being able to enter the namespace, is reported in
/// the result's `error` with `connected` false.
pub fn probe(
    netns: &Path,
    from: &str,
    to: &str,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let target = SocketAddr::new(ip, port);
    // `in_netns` spawns a thread, which panics if the system has none to give; keep the promise
    // of never panicking by turning that into a failed probe.
    let ran = panic::catch_unwind(AssertUnwindSafe(|| {
        plexus_netdev::in_netns(netns, move || run_probe(target, protocol, timeout))
    }));
    let outcome = match ran {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::failed(e.to_string()),
        Err(_) => Outcome::failed("probe thread panicked".to_string()),
    };
    label(outcome, from, to, target, protocol, start)
}

/// Probes `ip:port` from the calling thread's own network namespace (and cgroup): what
/// `plexus-workload probe` runs.
pub fn probe_here(
    from: &str,
    to: &str,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let target = SocketAddr::new(ip, port);
    label(
        run_probe(target, protocol, timeout),
        from,
        to,
        target,
        protocol,
        start,
    )
}

/// Where and how [`probe_in_cgroup`] runs its probe process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeProcess<'a> {
    /// The `plexus-workload` binary.
    pub workload: &'a Path,
    /// Network namespace of the source.
    pub netns: &'a Path,
    /// The cgroup (v2) directory the probe process joins.
    pub cgroup: &'a Path,
}

/// Probes `ip:port` from a short-lived `plexus-workload probe` process that joins `cgroup` and
/// enters `netns` before it starts, so the kernel's cgroup socket hooks apply to its socket as
/// to a pod's. Never panics: a process that cannot start or answers nonsense is a failed probe.
pub fn probe_in_cgroup(
    how: &ProbeProcess<'_>,
    from: &str,
    to: &str,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let target = SocketAddr::new(ip, port);
    let failed = |error: String| label(Outcome::failed(error), from, to, target, protocol, start);
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", how.netns.display()))
        .arg("--")
        .arg(how.workload)
        .arg("probe")
        .args(["--target", &target.to_string()])
        .args(["--protocol", &protocol.to_string()])
        .args(["--timeout-ms", &timeout.as_millis().to_string()])
        .args(["--from", from, "--to", to])
        .stdin(std::process::Stdio::null());
    if let Err(e) = crate::process::join_cgroup_before_exec(&mut cmd, how.cgroup) {
        return failed(e.to_string());
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => return failed(format!("starting the probe process: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(serde_json::from_str::<ProbeResult>)
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => failed(format!("probe process answered {stdout:?}: {e}")),
        None => failed(format!(
            "probe process ({}) printed no result: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// One probe of `target` from wherever the calling thread is.
fn run_probe(target: SocketAddr, protocol: Protocol, timeout: Duration) -> Outcome {
    match protocol {
        Protocol::TCP => probe_tcp(target, timeout),
        Protocol::UDP => probe_udp(target, timeout),
    }
}

/// The result of a probe that started at `start`.
fn label(
    outcome: Outcome,
    from: &str,
    to: &str,
    target: SocketAddr,
    protocol: Protocol,
    start: Instant,
) -> ProbeResult {
    let (ip, port) = (target.ip(), target.port());
    ProbeResult {
        from: from.to_string(),
        to: to.to_string(),
        ip: ip.to_string(),
        port,
        protocol,
        connected: outcome.connected,
        reply: outcome.reply,
        error: outcome.error,
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Time left until `deadline`, never less than [`MIN_WAIT`].
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_WAIT)
}

/// The first line of `bytes`, trimmed; `None` when empty.
fn reply_text(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or("").trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// Connects, then reads the first line the server sends within what is left of `timeout`.
fn probe_tcp(target: SocketAddr, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&target, timeout.max(MIN_WAIT)) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(format!("connecting to {target}: {e}")),
    };
    // Accepted: the probe has succeeded; the reply line is a bonus that names who answered.
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < MAX_REPLY && !got.contains(&b'\n') {
        if Instant::now() >= deadline || stream.set_read_timeout(Some(remaining(deadline))).is_err()
        {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Outcome {
        connected: true,
        reply: reply_text(&got),
        error: None,
    }
}

/// Sends a probe datagram up to [`UDP_ATTEMPTS`] times within `timeout` and waits for an answer.
fn probe_udp(target: SocketAddr, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = match UdpSocket::bind(local) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(format!("binding a UDP socket: {e}")),
    };
    // A connected socket only accepts answers from the target, and reports an ICMP port
    // unreachable as a refused receive instead of waiting out the timeout.
    if let Err(e) = socket.connect(target) {
        return Outcome::failed(format!("connecting UDP socket to {target}: {e}"));
    }
    let slice = timeout / UDP_ATTEMPTS;
    let mut buf = vec![0u8; MAX_REPLY];
    let mut last_error = None;
    for attempt in 1..=UDP_ATTEMPTS {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match socket.send(UDP_PROBE_PAYLOAD) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Outcome::failed(port_unreachable(target));
            }
            // Other send failures can be transient (no neighbour yet); try again.
            Err(e) => last_error = Some(format!("sending to {target}: {e}")),
        }
        let wait_until = if attempt == UDP_ATTEMPTS {
            deadline
        } else {
            (now + slice).min(deadline)
        };
        loop {
            if socket
                .set_read_timeout(Some(remaining(wait_until)))
                .is_err()
            {
                break;
            }
            match socket.recv(&mut buf) {
                Ok(n) => {
                    return Outcome {
                        connected: true,
                        reply: reply_text(&buf[..n]),
                        error: None,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Outcome::failed(port_unreachable(target));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => {
                    last_error = Some(format!("receiving from {target}: {e}"));
                    break;
                }
            }
        }
    }
    let why = last_error.unwrap_or_else(|| "no answer".to_string());
    Outcome::failed(format!(
        "UDP to {target}: {why} after {UDP_ATTEMPTS} tries in {timeout:?}"
    ))
}

/// The error of a UDP probe answered by an ICMP port unreachable.
fn port_unreachable(target: SocketAddr) -> String {
    format!("UDP to {target}: port unreachable (no server there, or rejected)")
}

/// Runs `jobs` on at most `parallelism` threads; results come back in the order of `jobs`.
pub fn probe_many(jobs: Vec<ProbeJob>, parallelism: usize) -> Vec<ProbeResult> {
    let run = |job: &ProbeJob| {
        probe(
            &job.netns,
            &job.from,
            &job.to,
            job.ip,
            job.port,
            job.protocol,
            job.timeout,
        )
    };
    let workers = parallelism.clamp(1, jobs.len().max(1));
    if workers == 1 {
        return jobs.iter().map(run).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<ProbeResult>>> = Mutex::new(vec![None; jobs.len()]);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(job) = jobs.get(i) else { break };
        let result = run(job);
        slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())[i] = Some(result);
    };
    thread::scope(|scope| {
        let mut started = 0;
        for _ in 0..workers {
            // A worker that cannot be started just leaves its share to the others.
            if thread::Builder::new()
                .stack_size(WORKER_STACK)
                .spawn_scoped(scope, work)
                .is_ok()
            {
                started += 1;
            }
        }
        if started == 0 {
            work();
        }
    });
    let slots = slots
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    slots
        .into_iter()
        .zip(&jobs)
        .map(|(slot, job)| {
            slot.unwrap_or_else(|| ProbeResult {
                from: job.from.clone(),
                to: job.to.clone(),
                ip: job.ip.to_string(),
                port: job.port,
                protocol: job.protocol,
                connected: false,
                reply: None,
                error: Some("probe did not run".to_string()),
                elapsed_ms: 0,
            })
        })
        .collect()
}

/// The reachability grid of `results`: `grid[i][j]` is whether `pods[i]` reached `pods[j]`.
///
/// A pair counts as reached when it was probed and every probe of it connected; a pair with no
/// result counts as blocked.
pub fn results_grid(pods: &[String], results: &[ProbeResult]) -> Vec<Vec<bool>> {
    let mut pairs: HashMap<(&str, &str), bool> = HashMap::new();
    for r in results {
        *pairs
            .entry((r.from.as_str(), r.to.as_str()))
            .or_insert(true) &= r.connected;
    }
    pods.iter()
        .map(|from| {
            pods.iter()
                .map(|to| {
                    pairs
                        .get(&(from.as_str(), to.as_str()))
                        .copied()
                        .unwrap_or(false)
                })
                .collect()
        })
        .collect()
}

/// Renders `results` as a conformance-style matrix: a header of destinations, then one row per
/// source with `.` (connected) or `X` (blocked) per destination.
///
/// ```text
///     x/a x/b
/// x/a . X
/// x/b . .
/// ```
pub fn format_matrix(pods: &[String], results: &[ProbeResult]) -> String {
    let grid = results_grid(pods, results);
    let width = pods.iter().map(|p| p.chars().count()).max().unwrap_or(0);
    let mut out = format!("{:width$} {}\n", "", pods.join(" "));
    for (from, row) in pods.iter().zip(&grid) {
        let cells: Vec<&str> = row.iter().map(|&ok| if ok { "." } else { "X" }).collect();
        out.push_str(&format!("{from:width$} {}\n", cells.join(" ")));
    }
    out
}

/// Reads a `.`/`X` matrix: one row per line, `.` for reachable and `X` for blocked.
///
/// Text after `#` is a comment; other tokens (such as the row labels and header that
/// [`format_matrix`] writes) are ignored, and lines with no cells are skipped.
pub fn parse_matrix(text: &str) -> Vec<Vec<bool>> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|token| match token {
                    "." => Some(true),
                    "X" => Some(false),
                    _ => None,
                })
                .collect::<Vec<bool>>()
        })
        .filter(|row| !row.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix of `001-default-deny-ingress.yaml` in the netpol conformance cases.
    const DEFAULT_DENY_INGRESS: &str = "\
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
X X X . . . . . .
";

    fn pods() -> Vec<String> {
        [
            "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect()
    }

    fn result(from: &str, to: &str, connected: bool) -> ProbeResult {
        ProbeResult {
            from: from.into(),
            to: to.into(),
            ip: "10.0.0.1".into(),
            port: 80,
            protocol: Protocol::TCP,
            connected,
            reply: connected.then(|| to.to_string()),
            error: (!connected).then(|| "refused".to_string()),
            elapsed_ms: 1,
        }
    }

    /// Results that realise `grid` over `pods`.
    fn results_for(pods: &[String], grid: &[Vec<bool>]) -> Vec<ProbeResult> {
        let mut out = Vec::new();
        for (from, row) in pods.iter().zip(grid) {
            for (to, &ok) in pods.iter().zip(row) {
                out.push(result(from, to, ok));
            }
        }
        out
    }

    #[test]
    fn parses_a_conformance_matrix() {
        let grid = parse_matrix(DEFAULT_DENY_INGRESS);
        assert_eq!(grid.len(), 9);
        for row in &grid {
            assert_eq!(
                row,
                &[false, false, false, true, true, true, true, true, true]
            );
        }
    }

    #[test]
    fn parse_ignores_comments_blank_lines_and_labels() {
        let text = "# rows = from\n\n   x/a x/b  # header\nx/a X .   # first\n\nx/b . X\n";
        assert_eq!(
            parse_matrix(text),
            vec![vec![false, true], vec![true, false]]
        );
    }

    #[test]
    fn format_writes_header_and_labelled_rows() {
        let pods: Vec<String> = vec!["x/a".into(), "y/bb".into()];
        let results = vec![
            result("x/a", "x/a", true),
            result("x/a", "y/bb", false),
            result("y/bb", "x/a", true),
            result("y/bb", "y/bb", false),
        ];
        assert_eq!(
            format_matrix(&pods, &results),
            "     x/a y/bb\nx/a  . X\ny/bb . X\n"
        );
    }

    #[test]
    fn format_then_parse_round_trips() {
        let pods = pods();
        let grid = parse_matrix(DEFAULT_DENY_INGRESS);
        let results = results_for(&pods, &grid);
        assert_eq!(results_grid(&pods, &results), grid);
        assert_eq!(parse_matrix(&format_matrix(&pods, &results)), grid);
    }

    #[test]
    fn grid_needs_every_probe_of_a_pair_to_connect() {
        let pods: Vec<String> = vec!["x/a".into(), "x/b".into()];
        let results = vec![
            result("x/a", "x/b", true),
            result("x/a", "x/b", false),
            result("x/b", "x/a", true),
            // x/a -> x/a and x/b -> x/b were never probed.
        ];
        assert_eq!(
            results_grid(&pods, &results),
            vec![vec![false, false], vec![true, false]]
        );
    }

    #[test]
    fn socket_lb_parses_and_displays() {
        for mode in [SocketLb::Auto, SocketLb::On, SocketLb::Off] {
            assert_eq!(mode.to_string().parse::<SocketLb>(), Ok(mode));
        }
        assert!("yes".parse::<SocketLb>().is_err());
        assert_eq!(SocketLb::default(), SocketLb::Auto);
    }

    #[test]
    fn probe_process_that_cannot_start_fails_cleanly() {
        let r = probe_in_cgroup(
            &ProbeProcess {
                workload: Path::new("/nonexistent/plexus-workload"),
                netns: Path::new("/run/netns/plexus-no-such-namespace"),
                cgroup: Path::new("/nonexistent-cgroup"),
            },
            "node",
            "svc/x/y",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            80,
            Protocol::TCP,
            Duration::from_millis(100),
        );
        assert!(!r.connected);
        assert_eq!(r.to, "svc/x/y");
        assert!(r.error.is_some(), "{r:?}");
    }

    #[test]
    fn protocol_parses_and_displays() {
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::TCP));
        assert_eq!("tcp".parse::<Protocol>(), Ok(Protocol::TCP));
        assert_eq!("UDP".parse::<Protocol>(), Ok(Protocol::UDP));
        assert_eq!("udp".parse::<Protocol>(), Ok(Protocol::UDP));
        let err = "SCTP"
            .parse::<Protocol>()
            .expect_err("SCTP is not supported");
        assert!(err.to_string().contains("SCTP"), "{err}");
        assert_eq!(Protocol::TCP.to_string(), "TCP");
        assert_eq!(Protocol::UDP.to_string(), "UDP");
    }

    #[test]
    fn result_serializes_with_nulls() {
        let r = result("x/a", "x/b", false);
        let json = serde_json::to_value(&r).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "from": "x/a", "to": "x/b", "ip": "10.0.0.1", "port": 80, "protocol": "TCP",
                "connected": false, "reply": null, "error": "refused", "elapsed_ms": 1
            })
        );
        let back: ProbeResult = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, r);
    }

    #[test]
    fn reply_is_the_trimmed_first_line() {
        assert_eq!(reply_text(b"x/a\n"), Some("x/a".to_string()));
        assert_eq!(reply_text(b"  x/a \r\nmore"), Some("x/a".to_string()));
        assert_eq!(reply_text(b""), None);
        assert_eq!(reply_text(b"\n"), None);
    }

    #[test]
    fn probe_into_a_missing_namespace_fails_cleanly() {
        let r = probe(
            Path::new("/run/netns/plexus-no-such-namespace"),
            "x/a",
            "x/b",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            80,
            Protocol::TCP,
            Duration::from_millis(100),
        );
        assert!(!r.connected);
        assert!(
            r.error
                .as_deref()
                .unwrap_or("")
                .contains("plexus-no-such-namespace"),
            "{r:?}"
        );
    }
}
