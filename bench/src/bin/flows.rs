//! `flows`: what flow observability costs, in one run.
//!
//! 1. Observer throughput: events per second the agent's observer turns into enriched Hubble
//!    flows on one core — the agent's own per-event path (`observer::process`: `to_flow`
//!    against the directory, the flow metrics, the flow ring of 4096) over a synthetic trace of
//!    TCP connections, drops and policy verdicts between 200 endpoints.
//! 2. The latency cost of monitoring: pod-to-pod request/response in a Plexus lab with the
//!    datapath's monitor level switched at runtime (off, aggregated, all) through the pinned
//!    config map, round after round, over one long-lived connection (RR) and with a new
//!    connection per transaction (CRR); medians with ratios to monitoring off.
//!
//! The lab, the servers and the scratch directory are owned by guards that clean up in `Drop`,
//! so an error, a panic or Ctrl-C (turned into an error between measurements) leaves nothing
//! behind.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use plexus_abi::{
    event::{MONITOR_AGGREGATED, MONITOR_ALL, MONITOR_OFF},
    MonitorConfig,
};
use plexus_agent::{
    metrics::Metrics,
    observer::{self, ObserverHandle},
};
use plexus_bench::{
    cpu,
    flows_report::{
        FlowsReport, MonitorSample, MonitorSummary, MonitoringResult, ObserverResult, PathTiming,
        RrTest,
    },
    interrupt,
    lab::{LabNode, PlexusLab, TempDir, CLIENT_SERVER_MANIFEST},
    process::{which, Servers},
    report::group_thousands,
    rr::{self, RrResult},
    synthetic::Node,
    worker::{self, WorkerCmd},
};
use plexus_hubble::FlowRing;
use plexus_loader::PinnedMaps;

/// Port of the request/response server inside the server pod.
const RR_PORT: u16 = 7000;
/// Capacity of the flow ring, as the agent's default `--flow-buffer`.
const FLOW_RING: usize = 4096;
/// Time after each measurement for the agent to drain the events ring before its counters are
/// read.
const DRAIN: Duration = Duration::from_millis(200);
/// Port of the agent's flow metrics inside the node namespace (its `--flow-metrics-listen`).
const FLOW_METRICS_PORT: u16 = 9965;
/// Seed of the synthetic trace.
const SEED: u64 = 0x5eed;

/// Observer throughput and the latency cost of monitoring.
#[derive(Debug, Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the benchmark (the default).
    Run(RunArgs),
    /// The request/response server and client, run inside the pods.
    #[command(flatten)]
    Worker(WorkerCmd),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Parts to run: observer throughput, RR (one connection) and CRR (a connection per
    /// transaction) with monitoring off, aggregated and all.
    #[arg(long, value_delimiter = ',', default_value = "observer,rr,crr")]
    only: Vec<Part>,
    /// Events in the observer's synthetic trace.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Local endpoints in the observer's directory.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    endpoints: u64,
    /// Timed runs over the trace (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Rounds of RR/CRR; each round measures every monitor level once, in a rotating order.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per RR/CRR measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: u32,
    /// CPU the observer thread, and the RR client and server, are pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: u32,
    /// Pin the lab's agent (all its threads) to this CPU, to keep its event processing off the
    /// measured CPU; by default the scheduler places it.
    #[arg(long)]
    agent_cpu: Option<u32>,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Part {
    /// Observer throughput on one core.
    Observer,
    /// Request/response over one connection, per monitor level.
    Rr,
    /// A new connection per transaction, per monitor level.
    Crr,
}

/// The monitor levels compared, in table order.
const LEVELS: [(u32, &str); 3] = [
    (MONITOR_OFF, "off"),
    (MONITOR_AGGREGATED, "aggregated"),
    (MONITOR_ALL, "all"),
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        None => run(&cli.run),
        Some(Cmd::Run(args)) => run(&args),
        Some(Cmd::Worker(w)) => Ok(w.run()?),
    }
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut parts = args.only.clone();
    parts.sort();
    parts.dedup();
    let tests: Vec<RrTest> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Rr => Some(RrTest::Rr),
            Part::Crr => Some(RrTest::Crr),
            Part::Observer => None,
        })
        .collect();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    for (flag, cpu) in [("--cpu", Some(args.cpu)), ("--agent-cpu", args.agent_cpu)] {
        if let Some(c) = cpu.filter(|c| *c as usize >= cpus) {
            bail!("{flag} {c}: this machine has {cpus} CPUs");
        }
    }
    interrupt::install();

    // Check what the lab part needs before spending time on the observer part.
    let exe = std::env::current_exe().context("locating this binary")?;
    let plexus = exe.with_file_name("plexus");
    if !tests.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the RR/CRR part brings up a Plexus lab: run as root (or --only observer)");
        }
        for tool in ["nsenter", "taskset", "ip"] {
            which(tool)?;
        }
        if !plexus.exists() {
            bail!(
                "{} not found: the lab needs the plexus binaries beside this one \
                 (build with `cargo build --release --bins`)",
                plexus.display()
            );
        }
    }

    let mut notes = Vec::new();
    let busy = |what: &str, notes: &mut Vec<String>| {
        if let Some(note) = cpu::busy_note(args.cpu, what) {
            eprintln!("note: {note}");
            notes.push(note);
        }
    };

    let observer = if parts.contains(&Part::Observer) {
        busy("the observer part", &mut notes);
        interrupt::check()?;
        Some(observer_throughput(args)?)
    } else {
        None
    };

    let monitoring = if tests.is_empty() {
        None
    } else {
        // Declared first, so dropped last: the lab's guard still uses it.
        let tmp = TempDir::create("flows")?;
        eprintln!("setting up the Plexus lab");
        let lab = MonitorLab::start(&plexus, &exe, args, tmp.path(), &tests, &mut notes)
            .context("setting up the Plexus lab")?;
        busy("the RR/CRR part", &mut notes);
        let result = measure_monitoring(&lab, args, &tests);
        // Tear down before printing (also after an error), so the table is the last thing on
        // the terminal.
        eprintln!("tearing down");
        drop(lab);
        drop(tmp);
        Some(result?)
    };

    let report = FlowsReport {
        observer,
        monitoring,
        notes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Observer throughput

fn observer_throughput(args: &RunArgs) -> anyhow::Result<ObserverResult> {
    let node = Node::new(args.endpoints as usize);
    let t = Instant::now();
    let (events, mix) = node.events(args.events as usize, SEED);
    let directory = node.directory();
    eprintln!(
        "observer: {} synthetic events built in {:.1} s; timing {} runs on CPU {}",
        group_thousands(events.len() as f64),
        t.elapsed().as_secs_f64(),
        args.runs,
        args.cpu
    );
    let (cpu, runs) = (args.cpu, args.runs);
    let events = Arc::new(events);
    // A thread of its own, so only it is pinned (children started later are not).
    let timed = {
        let events = Arc::clone(&events);
        thread::spawn(move || -> anyhow::Result<[Vec<f64>; 3]> {
            pin_to_cpu(0, cpu).context("pinning the observer thread")?;
            time_observer(&events, directory, runs)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the observer thread panicked"))??
    };
    let [process, with_metrics, to_flow] = timed;
    Ok(ObserverResult {
        events: events.len(),
        endpoints: node.endpoints(),
        mix,
        runs,
        cpu,
        paths: vec![
            PathTiming::from_runs("agent path (to_flow + metrics + ring)", process),
            PathTiming::from_runs("to_flow + metrics", with_metrics),
            PathTiming::from_runs("to_flow only", to_flow),
        ],
    })
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
fn pin_to_cpu(tid: i32, cpu: u32) -> anyhow::Result<()> {
    if cpu as usize >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} is beyond CPU_SETSIZE");
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set and CPU_SET stays within it (checked
    // above); sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning thread {tid} to CPU {cpu}"));
    }
    Ok(())
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later inherit it).
fn pin_process(pid: i32, cpu: u32) -> anyhow::Result<()> {
    let dir = format!("/proc/{pid}/task");
    for t in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let tid = t?.file_name().to_string_lossy().parse::<i32>()?;
        pin_to_cpu(tid, cpu)?;
    }
    Ok(())
}

/// Nanoseconds per event of each run: the agent's path, `to_flow` and the metrics without the
/// ring, and `to_flow` alone.
fn time_observer(
    events: &[plexus_abi::Event],
    directory: observer::Directory,
    runs: u32,
) -> anyhow::Result<[Vec<f64>; 3]> {
    let obs = ObserverHandle {
        ring: Arc::new(FlowRing::new(plexus_bench::synthetic::NODE, FLOW_RING)),
        directory: Arc::new(RwLock::new(directory)),
        captures: tokio::sync::broadcast::channel(4096).0,
        metrics: Arc::new(Metrics::default()),
    };
    // Any plausible monotonic-to-Unix offset: only its arithmetic is timed.
    let offset: i128 = 1_700_000_000_000_000_000;
    // Warm up: fill the ring, the metrics' label set, the allocator's caches.
    for ev in events.iter().take(200_000) {
        observer::process(ev, &obs, offset);
    }
    let per_event = |d: Duration| d.as_nanos() as f64 / events.len() as f64;
    let (mut process, mut with_metrics, mut to_flow) = (Vec::new(), Vec::new(), Vec::new());
    // The metrics of the second path are separate, so the agent path's stay as the agent's.
    let metrics = Metrics::default();
    for run in 1..=runs {
        interrupt::check()?;
        let t = Instant::now();
        for ev in events {
            observer::process(ev, &obs, offset);
        }
        let p = per_event(t.elapsed());

        let dir = obs
            .directory
            .read()
            .map_err(|_| anyhow::anyhow!("directory lock poisoned"))?;
        let t = Instant::now();
        for ev in events {
            let flow = observer::to_flow(ev, &dir, offset);
            metrics.observe(&flow);
            std::hint::black_box(flow);
        }
        let m = per_event(t.elapsed());
        let t = Instant::now();
        for ev in events {
            std::hint::black_box(observer::to_flow(ev, &dir, offset));
        }
        let f = per_event(t.elapsed());
        drop(dir);
        eprintln!(
            "observer run {run}/{runs}: agent path {p:>5.0} ns/event ({} events/s), \
             to_flow + metrics {m:>5.0} ns, to_flow only {f:>5.0} ns",
            group_thousands(1e9 / p),
        );
        process.push(p);
        with_metrics.push(m);
        to_flow.push(f);
    }
    if obs.ring.len() != FLOW_RING.min(events.len()) {
        bail!(
            "the flow ring holds {} flows, expected {}",
            obs.ring.len(),
            FLOW_RING.min(events.len())
        );
    }
    Ok([process, with_metrics, to_flow])
}

// ---------------------------------------------------------------------------------------------
// 2. The latency cost of monitoring

/// A lab with pods `bench/client` and `bench/server`, the RR server running in the server pod.
/// Field order matters: the server is stopped before the lab goes down.
struct MonitorLab {
    _server: Servers,
    lab: PlexusLab,
    node: LabNode,
    maps: PinnedMaps,
    exe: PathBuf,
    cpu: u32,
    client_ns: PathBuf,
    server: SocketAddrV4,
}

impl MonitorLab {
    fn start(
        plexus: &Path,
        exe: &Path,
        args: &RunArgs,
        tmp: &Path,
        tests: &[RrTest],
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Self> {
        let lab = PlexusLab::up(
            plexus,
            &format!("flows{}", std::process::id()),
            CLIENT_SERVER_MANIFEST,
            tmp,
        )?;
        let (client_ns, _) = lab.pod("bench/client")?;
        let (server_ns, server_ip) = lab.pod("bench/server")?;
        let node = lab.node()?;
        if let Some(c) = args.agent_cpu {
            pin_process(node.agent_pid, c).context("pinning the agent")?;
            notes.push(format!("the agent was pinned to CPU {c}"));
        }
        let cpu = args.cpu;
        let maps = PinnedMaps::open(&node.pin_dir)
            .with_context(|| format!("opening the maps pinned in {}", node.pin_dir.display()))?;
        let level = maps.monitor().context("reading the monitor config")?.level;
        if level != MONITOR_AGGREGATED {
            notes.push(format!(
                "the agent started with monitor level {level}, not aggregated ({MONITOR_AGGREGATED})"
            ));
        }
        if tests.contains(&RrTest::Crr) {
            plexus_netdev::in_netns(&client_ns, rr::tune_for_connect_rate)??;
        }
        let server =
            worker::start_rr_server(exe, &server_ns, cpu, RR_PORT, &tmp.join("rr-server.log"))?;
        let lab = Self {
            _server: server,
            lab,
            node,
            maps,
            exe: exe.to_path_buf(),
            cpu,
            client_ns,
            server: SocketAddrV4::new(server_ip, RR_PORT),
        };
        // A broken setup must fail here, not report zeros later.
        for &test in tests {
            let r = lab.client(test, 0.3).with_context(|| {
                format!(
                    "{}: the client cannot reach the server at {}",
                    test.label(),
                    lab.server
                )
            })?;
            eprintln!(
                "  {}: client reaches {} ({} transactions in 0.3 s)",
                test.label(),
                lab.server,
                r.transactions
            );
        }
        if lab.counters().flows.is_none() {
            notes.push(format!(
                "the agent's flow metrics (port {FLOW_METRICS_PORT} in the node namespace) could \
                 not be read: no events/s"
            ));
        }
        Ok(lab)
    }

    fn client(&self, test: RrTest, seconds: f64) -> anyhow::Result<RrResult> {
        Ok(worker::run_rr_client(
            &self.exe,
            &self.client_ns,
            self.cpu,
            self.server,
            seconds,
            test == RrTest::Crr,
        )?)
    }

    fn set_level(&self, level: u32) -> anyhow::Result<()> {
        self.maps
            .set_monitor(MonitorConfig { level, capture: 0 })
            .with_context(|| format!("setting monitor level {level} in lab {}", self.lab.name()))
    }

    fn counters(&self) -> Counters {
        Counters {
            at: Instant::now(),
            flows: flows_processed(&self.node.netns),
            agent_cpu_ns: process_cpu_ns(self.node.agent_pid),
            lost: self.maps.events_lost().ok(),
        }
    }

    /// One measurement of `test` at monitor `level`.
    fn measure(
        &self,
        test: RrTest,
        level: u32,
        round: u32,
        seconds: u32,
    ) -> anyhow::Result<MonitorSample> {
        self.set_level(level)?;
        let before = self.counters();
        let rr = self.client(test, f64::from(seconds))?;
        thread::sleep(DRAIN);
        let after = self.counters();
        let secs = after.at.duration_since(before.at).as_secs_f64();
        let delta = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        Ok(MonitorSample {
            round,
            rr,
            events_per_sec: delta(after.flows, before.flows).map(|n| n as f64 / secs),
            agent_cpu: delta(after.agent_cpu_ns, before.agent_cpu_ns)
                .map(|ns| ns as f64 / 1e9 / secs),
            lost: delta(after.lost, before.lost),
        })
    }
}

/// The agent's counters at one moment.
struct Counters {
    at: Instant,
    /// Flows its observer processed (`hubble_flows_processed_total`, all labels).
    flows: Option<u64>,
    /// CPU time of all its threads.
    agent_cpu_ns: Option<u64>,
    /// Events the datapath lost.
    lost: Option<u64>,
}

fn measure_monitoring(
    lab: &MonitorLab,
    args: &RunArgs,
    tests: &[RrTest],
) -> anyhow::Result<MonitoringResult> {
    let mut samples: Vec<Vec<MonitorSample>> = vec![Vec::new(); tests.len() * LEVELS.len()];
    for round in 1..=args.rounds {
        for (t, &test) in tests.iter().enumerate() {
            for i in 0..LEVELS.len() {
                interrupt::check()?;
                // Rotate the order each round so no level always runs first (or right after
                // another one).
                let idx = (i + round as usize - 1) % LEVELS.len();
                let (level, name) = LEVELS[idx];
                let s = lab
                    .measure(test, level, round, args.seconds)
                    .with_context(|| {
                        format!("round {round}: {} with monitor {name}", test.label())
                    })?;
                eprintln!(
                    "round {round}/{}  {:<3} {:<10} {:>7} tx/s  p50 {:>6.1} us  p99 {:>6.1} us  {:>8} events/s  agent {:>5.1}% CPU  lost {}",
                    args.rounds,
                    test.label(),
                    name,
                    group_thousands(s.rr.tx_per_sec),
                    s.rr.p50_us,
                    s.rr.p99_us,
                    s.events_per_sec.map_or("-".into(), group_thousands),
                    s.agent_cpu.map_or(f64::NAN, |c| c * 100.0),
                    s.lost.map_or("-".into(), |l| l.to_string()),
                );
                samples[t * LEVELS.len() + idx].push(s);
            }
        }
    }
    // Leave the lab as the agent set it.
    lab.set_level(MONITOR_AGGREGATED)?;
    let rows = samples
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            MonitorSummary::from_samples(tests[i / LEVELS.len()], LEVELS[i % LEVELS.len()].1, v)
        })
        .collect();
    Ok(MonitoringResult::new(
        args.rounds,
        f64::from(args.seconds),
        args.cpu,
        rows,
    ))
}

/// The sum of `hubble_flows_processed_total` from the agent's flow metrics, read inside the
/// node namespace where the agent listens.
fn flows_processed(node_netns: &Path) -> Option<u64> {
    let body = plexus_netdev::in_netns(node_netns, || -> std::io::Result<String> {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, FLOW_METRICS_PORT);
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })
    .ok()?
    .ok()?;
    sum_counter(&body, "hubble_flows_processed_total")
}

/// The sum over all label sets of counter `name` in Prometheus text; `None` when the text has
/// no HTTP 200 status line.
fn sum_counter(text: &str, name: &str) -> Option<u64> {
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// CPU time of every thread of process `pid`, nanoseconds (`/proc/PID/task/*/schedstat`).
fn process_cpu_ns(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        // A thread may exit between listing and reading.
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_sum_over_labels() {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n\
# TYPE hubble_flows_processed_total counter
hubble_flows_processed_total{type=\"Trace\",subtype=\"to-endpoint\",verdict=\"FORWARDED\"} 120
hubble_flows_processed_total{type=\"Drop\",subtype=\"\",verdict=\"DROPPED\"} 3
hubble_flows_processed_totals{x=\"y\"} 1000
hubble_tcp_flags_total{flag=\"SYN\",family=\"IPv4\"} 7
";
        assert_eq!(sum_counter(text, "hubble_flows_processed_total"), Some(123));
        assert_eq!(sum_counter(text, "nothing_total"), Some(0));
        assert_eq!(sum_counter("HTTP/1.1 404 Not Found\r\n", "x"), None);
    }

    #[test]
    fn cli_defaults_and_worker() {
        let cli =
            Cli::try_parse_from(["flows", "--rounds", "1", "--only", "crr,observer"]).unwrap();
        assert!(cli.cmd.is_none());
        assert_eq!(cli.run.rounds, 1);
        assert_eq!(cli.run.seconds, 5);
        assert_eq!(cli.run.events, 1_000_000);
        assert_eq!(cli.run.only, vec![Part::Crr, Part::Observer]);
        let cli = Cli::try_parse_from([
            "flows",
            "rr-client",
            "--ip",
            "10.0.0.1",
            "--port",
            "7",
            "--seconds",
            "0.5",
            "--connect-per-tx",
        ])
        .unwrap();
        assert!(matches!(
            cli.cmd,
            Some(Cmd::Worker(WorkerCmd::RrClient {
                connect_per_tx: true,
                ..
            }))
        ));
    }

    #[test]
    fn own_cpu_time_grows() {
        let pid = std::process::id() as i32;
        let a = process_cpu_ns(pid).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu_ns(pid).unwrap() > a);
    }
}
