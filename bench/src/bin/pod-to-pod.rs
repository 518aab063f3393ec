//! `pod-to-pod`: TCP throughput (iperf3) and 1-byte request/response rate and latency between
//! two pods on one node, for Plexus, Debian's reference `bridge` CNI plugin and a bare veth pair
//! (the ceiling), measured in one run, round after round, with client and server pinned to one
//! CPU, and reported as medians with ratios to the bare veth.
//!
//! Every namespace, lab and server the run creates is owned by a guard that removes it in `Drop`,
//! so an error, a panic or Ctrl-C (turned into an error between measurements) leaves nothing
//! behind.

use std::{
    any::Any,
    fs,
    io::Write,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use plexus_bench::{
    cpu, interrupt, iperf,
    lab::{PlexusLab, TempDir, CLIENT_SERVER_MANIFEST},
    process::{log_file, output_within, pinned, spawn_server, wait_listening, which, Servers},
    report::{group_thousands, Report, Sample, SetupSummary},
    rr::RrResult,
    worker::{self, WorkerCmd, CLIENT_GRACE},
};
use plexus_netdev::{ip, netns_add, netns_del, netns_path};

/// Port of the request/response server inside the server namespace.
const RR_PORT: u16 = 7000;
/// Port of the iperf3 server inside the server namespace.
const IPERF_PORT: u16 = 5201;
/// The reference CNI plugins (Debian's containernetworking-plugins).
const CNI_DIR: &str = "/usr/lib/cni";
/// How long a server gets to start listening.
const SERVER_START: Duration = Duration::from_secs(10);

/// Pod-to-pod benchmark: Plexus vs. the bridge CNI vs. a bare veth pair.
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
    /// The request/response server and client, run inside the namespaces.
    #[command(flatten)]
    Worker(WorkerCmd),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Rounds; each round measures every setup once, in a rotating order.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per measurement (iperf3 and request/response each).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: u32,
    /// Setups to run.
    #[arg(long, value_delimiter = ',', default_value = "veth,bridge,plexus")]
    only: Vec<SetupKind>,
    /// CPU that client and server are both pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: u32,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The setups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum SetupKind {
    /// A veth pair between two namespaces, nothing else: the ceiling.
    Veth,
    /// containernetworking-plugins `bridge` + `host-local` in a node namespace.
    Bridge,
    /// Two pods in a Plexus lab.
    Plexus,
}

impl SetupKind {
    fn label(self) -> &'static str {
        match self {
            Self::Veth => "bare veth",
            Self::Bridge => "bridge CNI",
            Self::Plexus => "plexus",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        None => run(&cli.run),
        Some(Cmd::Run(args)) => run(&args),
        Some(Cmd::Worker(w)) => Ok(w.run()?),
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// What every setup needs to start its servers and clients.
struct Ctx {
    /// This binary, run inside namespaces for the RR server and client.
    exe: PathBuf,
    /// The CPU everything measured is pinned to.
    cpu: u32,
    /// Scratch directory of this run (logs, manifest, IPAM state).
    tmp: PathBuf,
    /// The `plexus` CLI, when the Plexus setup runs.
    plexus: Option<PathBuf>,
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("pod-to-pod creates network namespaces: run it as root");
    }
    let mut kinds = args.only.clone();
    kinds.sort();
    kinds.dedup();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    if args.cpu as usize >= cpus {
        bail!("--cpu {}: this machine has {cpus} CPUs", args.cpu);
    }
    for tool in ["nsenter", "taskset", "iperf3", "ss", "ip"] {
        which(tool)?;
    }
    interrupt::install();

    let exe = std::env::current_exe().context("locating this binary")?;
    let plexus = if kinds.contains(&SetupKind::Plexus) {
        let p = exe.with_file_name("plexus");
        if !p.exists() {
            bail!(
                "{} not found: the Plexus setup needs the plexus binaries beside this one \
                 (build with `cargo build --release --bins`, or leave it out with --only veth,bridge)",
                p.display()
            );
        }
        Some(p)
    } else {
        None
    };
    if kinds.contains(&SetupKind::Bridge) {
        for plugin in ["bridge", "host-local"] {
            let p = Path::new(CNI_DIR).join(plugin);
            if !p.exists() {
                bail!(
                    "{} not found (install Debian's containernetworking-plugins)",
                    p.display()
                );
            }
        }
    }

    // Declared first, so dropped last: the setups' guards still use it.
    let tmp = TempDir::create("bench")?;
    let ctx = Ctx {
        exe,
        cpu: args.cpu,
        tmp: tmp.0.clone(),
        plexus,
    };
    let mut notes = Vec::new();
    if let Some(note) = cpu::busy_note(args.cpu, "the run") {
        eprintln!("note: {note}");
        notes.push(note);
    }
    let mut setups: Vec<Setup> = Vec::new();
    for &kind in &kinds {
        interrupt::check()?;
        eprintln!("setting up {}", kind.label());
        let s = Setup::start(kind, &ctx, &mut notes)
            .with_context(|| format!("setting up {}", kind.label()))?;
        setups.push(s);
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); setups.len()];
    for round in 1..=args.rounds {
        for i in 0..setups.len() {
            interrupt::check()?;
            // Rotate the order each round so no setup always runs first (or right after
            // another one).
            let idx = (i + round as usize - 1) % setups.len();
            let s = &setups[idx];
            let sample = s
                .measure(&ctx, round, args.seconds)
                .with_context(|| format!("round {round}: measuring {}", s.kind.label()))?;
            eprintln!(
                "round {round}/{}  {:<11} {:>7.2} Gbit/s  {:>7} tx/s  p50 {:>6.1} us  p99 {:>6.1} us",
                args.rounds,
                s.kind.label(),
                sample.tcp_gbps,
                group_thousands(sample.rr.tx_per_sec),
                sample.rr.p50_us,
                sample.rr.p99_us
            );
            samples[idx].push(sample);
        }
    }

    let summaries = setups
        .iter()
        .zip(samples)
        .map(|(s, v)| SetupSummary::from_samples(s.kind.label(), v))
        .collect();
    let mut report = Report::new(
        args.rounds,
        f64::from(args.seconds),
        args.cpu,
        SetupKind::Veth.label(),
        summaries,
    );
    report.notes = notes;
    // Tear down before printing, so the table is the last thing on the terminal.
    eprintln!("tearing down");
    drop(setups);
    drop(tmp);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One setup: its topology, its servers, and how to measure it

/// Where the client runs and where the server is.
#[derive(Debug, Clone)]
struct Pair {
    client_ns: PathBuf,
    server_ns: PathBuf,
    server_ip: Ipv4Addr,
}

/// A running setup. Field order matters: the servers are stopped before the topology goes.
struct Setup {
    kind: SetupKind,
    pair: Pair,
    _servers: Servers,
    /// What the setup created (a [`VethPair`], [`BridgeCni`] or [`PlexusLab`]), held only to be
    /// torn down when dropped.
    _topology: Box<dyn Any>,
}

impl Setup {
    /// Builds the topology, starts the servers and checks the client reaches them.
    fn start(kind: SetupKind, ctx: &Ctx, notes: &mut Vec<String>) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let (topology, pair): (Box<dyn Any>, Pair) = match kind {
            SetupKind::Veth => {
                let (t, p) = VethPair::create(pid)?;
                (Box::new(t), p)
            }
            SetupKind::Bridge => {
                let (t, p) = BridgeCni::create(pid, &ctx.tmp, notes)?;
                (Box::new(t), p)
            }
            SetupKind::Plexus => {
                let plexus = ctx.plexus.as_ref().context("plexus binary")?;
                let lab = PlexusLab::up(
                    plexus,
                    &format!("bench{pid}"),
                    CLIENT_SERVER_MANIFEST,
                    &ctx.tmp,
                )?;
                let (client_ns, _) = lab.pod("bench/client")?;
                let (server_ns, server_ip) = lab.pod("bench/server")?;
                let pair = Pair {
                    client_ns,
                    server_ns,
                    server_ip,
                };
                (Box::new(lab), pair)
            }
        };
        let servers = start_servers(ctx, kind, &pair.server_ns)?;
        let setup = Self {
            kind,
            pair,
            _servers: servers,
            _topology: topology,
        };
        // A broken setup must fail here, not report zeros later.
        let r = setup.rr(ctx, 0.3).with_context(|| {
            format!(
                "{}: the client cannot reach the server at {}",
                kind.label(),
                setup.pair.server_ip
            )
        })?;
        eprintln!(
            "  {}: client reaches {} ({} transactions in 0.3 s)",
            kind.label(),
            setup.pair.server_ip,
            r.transactions
        );
        Ok(setup)
    }

    /// One round: iperf3, then request/response.
    fn measure(&self, ctx: &Ctx, round: u32, seconds: u32) -> anyhow::Result<Sample> {
        let tcp_gbps = self.iperf(ctx, seconds)? / 1e9;
        interrupt::check()?;
        let rr = self.rr(ctx, f64::from(seconds))?;
        Ok(Sample {
            round,
            tcp_gbps,
            rr,
        })
    }

    /// TCP throughput in bit/s.
    fn iperf(&self, ctx: &Ctx, seconds: u32) -> anyhow::Result<f64> {
        let ip = self.pair.server_ip.to_string();
        let secs = seconds.to_string();
        let port = IPERF_PORT.to_string();
        let cmd = pinned(
            &self.pair.client_ns,
            ctx.cpu,
            Path::new("iperf3"),
            &[
                "-c",
                &ip,
                "-p",
                &port,
                "-t",
                &secs,
                "-J",
                "--connect-timeout",
                "3000",
            ],
        );
        let out = output_within(cmd, Duration::from_secs(seconds.into()) + CLIENT_GRACE)?;
        // iperf3 -J reports its errors inside the JSON, also when it exits non-zero.
        iperf::received_bits_per_second(&out.stdout).map_err(|e| {
            anyhow!(
                "{e}{}",
                if out.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(" ({})", out.stderr.trim())
                }
            )
        })
    }

    /// One request/response run of `seconds`.
    fn rr(&self, ctx: &Ctx, seconds: f64) -> anyhow::Result<RrResult> {
        Ok(worker::run_rr_client(
            &ctx.exe,
            &self.pair.client_ns,
            ctx.cpu,
            SocketAddrV4::new(self.pair.server_ip, RR_PORT),
            seconds,
            false,
        )?)
    }
}

// ---------------------------------------------------------------------------------------------
// Servers

/// The RR server and iperf3 server of one setup.
fn start_servers(ctx: &Ctx, kind: SetupKind, netns: &Path) -> anyhow::Result<Servers> {
    let tag = format!("{kind:?}").to_lowercase();
    // The RR server says `ready` once it listens.
    let log = ctx.tmp.join(format!("rr-server-{tag}.log"));
    let mut servers = worker::start_rr_server(&ctx.exe, netns, ctx.cpu, RR_PORT, &log)
        .context("the request/response server did not start")?;

    let port = IPERF_PORT.to_string();
    let mut cmd = pinned(netns, ctx.cpu, Path::new("iperf3"), &["-s", "-p", &port]);
    let log = ctx.tmp.join(format!("iperf3-server-{tag}.log"));
    cmd.stdout(log_file(&log)?).stderr(log_file(&log)?);
    let child = spawn_server(cmd)?;
    servers.children.push(child);
    if let Some(child) = servers.children.last_mut() {
        wait_listening(netns, IPERF_PORT, child, &log, SERVER_START)
            .context("iperf3 server did not start listening")?;
    }
    Ok(servers)
}

// ---------------------------------------------------------------------------------------------
// (c) bare veth

/// Two namespaces joined by a veth pair, nothing else.
struct VethPair {
    namespaces: [String; 2],
}

impl VethPair {
    fn create(pid: u32) -> anyhow::Result<(Self, Pair)> {
        let guard = Self {
            namespaces: [format!("plxt-veth-{pid}-a"), format!("plxt-veth-{pid}-b")],
        };
        let [a, b] = &guard.namespaces;
        let (pa, pb) = (netns_add(a)?, netns_add(b)?);
        ip(
            Some(&pa),
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b,
            ],
        )?;
        for (ns, addr) in [(&pa, "10.252.0.1/24"), (&pb, "10.252.0.2/24")] {
            ip(Some(ns), &["addr", "add", addr, "dev", "eth0"])?;
            ip(Some(ns), &["link", "set", "eth0", "up"])?;
        }
        Ok((
            guard,
            Pair {
                client_ns: pa,
                server_ns: pb,
                server_ip: Ipv4Addr::new(10, 252, 0, 2),
            },
        ))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            if let Err(e) = netns_del(ns) {
                eprintln!("warning: deleting namespace {ns}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) the reference bridge CNI

/// A node namespace with a Linux bridge and two pod namespaces attached by the `bridge` CNI
/// plugin, addresses from `host-local`.
struct BridgeCni {
    node: String,
    /// Pod namespaces with their CNI container ids; only those ADDed are DELeted.
    pods: Vec<String>,
    added: Vec<String>,
    config: String,
}

impl BridgeCni {
    fn create(pid: u32, tmp: &Path, notes: &mut Vec<String>) -> anyhow::Result<(Self, Pair)> {
        let data_dir = tmp.join("host-local");
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "benchbr",
            "type": "bridge",
            "bridge": "plxbr0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": "10.251.0.0/24",
                "dataDir": data_dir,
            },
        })
        .to_string();
        let mut guard = Self {
            node: format!("plxt-br-{pid}-node"),
            pods: vec![format!("plxt-br-{pid}-p1"), format!("plxt-br-{pid}-p2")],
            added: Vec::new(),
            config,
        };
        let node = netns_add(&guard.node)?;
        for p in &guard.pods {
            netns_add(p)?;
        }

        // br_netfilter's switches are per network namespace; report the node's, leave it.
        let nf = plexus_netdev::in_netns(&node, || {
            fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        })?;
        if let Ok(v) = nf {
            let note = format!(
                "bridge CNI: br_netfilter is loaded; net.bridge.bridge-nf-call-iptables = {} in \
                 the node namespace (its default, as on a Kubernetes node; the namespace has no \
                 iptables rules, so nothing is dropped)",
                v.trim()
            );
            eprintln!("  note: {note}");
            notes.push(note);
        }

        let mut ips = Vec::new();
        for p in guard.pods.clone() {
            let out = guard.cni("ADD", &p)?;
            guard.added.push(p.clone());
            ips.push(result_ipv4(&out).with_context(|| format!("CNI ADD result for {p}"))?);
        }
        let pair = Pair {
            client_ns: netns_path(&guard.pods[0]),
            server_ns: netns_path(&guard.pods[1]),
            server_ip: ips[1],
        };
        Ok((guard, pair))
    }

    /// Runs the bridge plugin inside the node namespace, so the bridge is created there.
    fn cni(&self, command: &str, pod: &str) -> anyhow::Result<String> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns_path(&self.node).display()))
            .arg("--")
            .arg(Path::new(CNI_DIR).join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", netns_path(pod))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the bridge CNI plugin")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(self.config.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "CNI {command} for {pod} failed: {} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }
}

/// The first IPv4 address of a CNI result (`ips[].address`, `10.251.0.2/24`).
fn result_ipv4(result: &str) -> anyhow::Result<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(result).context("unreadable CNI result")?;
    v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .find_map(|a| a.split('/').next()?.parse().ok())
        .ok_or_else(|| anyhow!("no IPv4 address in CNI result {result}"))
}

impl Drop for BridgeCni {
    fn drop(&mut self) {
        for p in self.added.clone() {
            if let Err(e) = self.cni("DEL", &p) {
                eprintln!("warning: {e:#}");
            }
        }
        for ns in self.pods.iter().chain([&self.node]) {
            if let Err(e) = netns_del(ns) {
                eprintln!("warning: deleting namespace {ns}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_result_address() {
        let r = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"plxbr0"}],
            "ips":[{"interface":2,"address":"10.251.0.3/24","gateway":"10.251.0.1"}]}"#;
        assert_eq!(result_ipv4(r).unwrap(), Ipv4Addr::new(10, 251, 0, 3));
        assert!(result_ipv4(r#"{"ips":[]}"#).is_err());
    }

    #[test]
    fn cli_defaults_to_run() {
        let cli =
            Cli::try_parse_from(["pod-to-pod", "--rounds", "2", "--only", "plexus,veth"]).unwrap();
        assert!(cli.cmd.is_none());
        assert_eq!(cli.run.rounds, 2);
        assert_eq!(cli.run.seconds, 5);
        assert_eq!(cli.run.only, vec![SetupKind::Plexus, SetupKind::Veth]);
        let cli = Cli::try_parse_from([
            "pod-to-pod",
            "rr-client",
            "--ip",
            "10.0.0.1",
            "--port",
            "7",
            "--seconds",
            "0.5",
        ])
        .unwrap();
        assert!(matches!(
            cli.cmd,
            Some(Cmd::Worker(WorkerCmd::RrClient {
                port: 7,
                connect_per_tx: false,
                ..
            }))
        ));
    }
}
