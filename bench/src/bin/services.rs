//! `services`: what a Service costs a new connection, and what adding one costs, as the number
//! of Services grows (100 to 50,000, three endpoints each), for Plexus (socket LB, and tc-only
//! translation) against the rules kube-proxy writes (iptables through iptables-legacy and
//! iptables-nft, and its nftables mode), with a "no service" baseline for each.
//!
//! A serial client connects to the last Service programmed, reads the server's name line and
//! closes, for a few seconds per measurement; it reports connections per second and the
//! `connect()` latency. Client and servers are pinned to one CPU.
//!
//! Every namespace, lab and server the run creates is owned by a guard that removes it in `Drop`,
//! so an error, a panic or Ctrl-C (turned into an error between steps) leaves nothing behind. A
//! setup that fails is reported with an error line and the run goes on with the next one.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use plexus_api::{Request, Response};
use plexus_bench::{
    cpu, interrupt,
    kube_proxy::{self, IptablesSync},
    lab::{PlexusLab, TempDir},
    process::{log_file, pinned, spawn_server, wait_listening, which, Servers},
    report::group_thousands,
    rr::{self, ConnectResult},
    service_set::{self, Svc, ENDPOINTS, MAX_SERVICES, SERVICE_PORT, TARGET_PORT},
    services_report::{format_added, format_duration, Row, ServicesReport},
    worker::{self, WorkerCmd},
    BenchError,
};
use plexus_netdev::{in_netns, ip, netns_add, netns_del, netns_path};

/// How long a server gets to start listening.
const SERVER_START: Duration = Duration::from_secs(10);
/// The short run that checks a client reaches what it should before measuring.
const CHECK_SECONDS: f64 = 0.3;
/// Longest an agent API call may take (a batch of thousands of objects).
const API_TIMEOUT: Duration = Duration::from_secs(600);

/// Services benchmark: Plexus vs. kube-proxy's iptables and nftables rules.
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
    /// The clients, run inside the namespaces.
    #[command(flatten)]
    Worker(WorkerCmd),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Numbers of Services to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,50000")]
    sizes: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Setups to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "iptables-legacy,iptables-nft,nftables,plexus"
    )]
    only: Vec<Family>,
    /// How many times one Service is added at each size (each adds one more).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    adds: u32,
    /// Objects per ApplyObjects request when programming Plexus (a Service and its
    /// EndpointSlice are two).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(2..))]
    batch: u32,
    /// Seconds one rule load (iptables-restore, nft -f) may take before it is killed; a sync
    /// that went over is not tried again at larger sizes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// CPU that the client and the servers are pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: u32,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The setup families: each has its own topology and its own "no service" baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Family {
    /// kube-proxy's iptables rules, loaded with iptables-legacy-restore.
    IptablesLegacy,
    /// kube-proxy's iptables rules, loaded with iptables-nft-restore.
    IptablesNft,
    /// kube-proxy's nftables-mode rules, loaded with nft -f.
    Nftables,
    /// A Plexus lab: socket LB and tc-only translation.
    Plexus,
}

impl Family {
    /// The setups (table rows) it measures.
    fn setups(self) -> &'static [&'static str] {
        match self {
            Self::IptablesLegacy => &["iptables-legacy"],
            Self::IptablesNft => &["iptables-nft"],
            Self::Nftables => &["nftables"],
            Self::Plexus => &[PLEXUS_SOCKET_LB, PLEXUS_TC],
        }
    }
}

const PLEXUS_SOCKET_LB: &str = "plexus socket LB";
const PLEXUS_TC: &str = "plexus tc";

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

/// What every setup needs.
struct Ctx {
    /// This binary, run inside namespaces for the client.
    exe: PathBuf,
    /// The workload server (`plexus-workload`), run in each server namespace.
    workload: PathBuf,
    /// The CPU client and servers are pinned to.
    cpu: u32,
    /// Scratch directory of this run (logs, rule files, manifests).
    tmp: PathBuf,
    /// Seconds per measurement.
    seconds: f64,
    /// Objects per ApplyObjects request.
    batch: usize,
    /// How long one rule load may take.
    limit: Duration,
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("services creates network namespaces and loads netfilter rules: run it as root");
    }
    let mut sizes = args.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.first() == Some(&0) || sizes.is_empty() {
        bail!("--sizes: give numbers of Services of at least 1");
    }
    let adds = 2 * args.adds as usize;
    if sizes.last().is_some_and(|&n| n + adds > MAX_SERVICES) {
        bail!("--sizes: at most {} Services", MAX_SERVICES - adds);
    }
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    let mut families = args.only.clone();
    families.sort();
    families.dedup();
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    if args.cpu as usize >= cpus {
        bail!("--cpu {}: this machine has {cpus} CPUs", args.cpu);
    }
    for tool in ["nsenter", "taskset", "ss", "ip"] {
        which(tool)?;
    }
    interrupt::install();

    let exe = std::env::current_exe().context("locating this binary")?;
    let workload = exe.with_file_name("plexus-workload");
    if !workload.exists() {
        bail!(
            "{} not found: build the workspace's binaries (`cargo build --release --bins`)",
            workload.display()
        );
    }
    // Declared first, so dropped last: the setups' guards still use it.
    let tmp = TempDir::create("services")?;
    let ctx = Ctx {
        exe,
        workload,
        cpu: args.cpu,
        tmp: tmp.0.clone(),
        seconds: args.seconds,
        batch: args.batch as usize,
        limit: Duration::from_secs(args.limit.into()),
    };
    let mut notes = Vec::new();
    if let Some(note) = cpu::busy_note(args.cpu, "the run") {
        eprintln!("note: {note}");
        notes.push(note);
    }

    let mut rows = Vec::new();
    for &family in &families {
        interrupt::check()?;
        eprintln!("{}", family.setups().join(" and "));
        let started = Instant::now();
        let mut setup = match start(family, &ctx, &mut notes) {
            Ok(s) => s,
            Err(e) => {
                interrupt::check()?;
                let e = format!("{e:#}");
                eprintln!("error: setting up {}: {e}", family.setups().join(", "));
                for setup in family.setups() {
                    let mut r = Row::new(setup, None);
                    r.error = Some(format!("setting up: {e}"));
                    rows.push(r);
                }
                continue;
            }
        };
        let result = measure_family(setup.as_mut(), &ctx, &sizes, args.adds, &mut rows);
        eprintln!("  tearing down ({:.0} s)", started.elapsed().as_secs_f64());
        drop(setup);
        result?;
    }

    let mut report = ServicesReport::new(args.seconds, args.cpu, ENDPOINTS, rows);
    notes.push(
        "program: the time to load all N Services (iptables: iptables-restore of the whole nat \
         table; nftables: nft -f transactions of 1,000 Services; Plexus: ApplyObjects requests, from the \
         previous size's state)"
            .into(),
    );
    report.notes = notes;
    drop(tmp);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Measures one family at every size, appending its rows. Only an interruption is an error: a
/// failing step ends the family with an error row.
fn measure_family(
    setup: &mut dyn Setup,
    ctx: &Ctx,
    sizes: &[usize],
    adds: u32,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let clients = setup.clients().to_vec();
    let servers = setup.servers().to_vec();
    let fail = |rows: &mut Vec<Row>, services: Option<usize>, setups: &[&str], e: anyhow::Error| {
        interrupt::check()?;
        let e = format!("{e:#}");
        let at = services.map_or("with no service".to_string(), |n| {
            format!("at {n} services")
        });
        for s in setups {
            eprintln!("error: {s} {at}: {e}");
            let mut r = Row::new(s, services);
            r.error = Some(e.clone());
            rows.push(r);
        }
        Ok(())
    };
    let all: Vec<&str> = clients.iter().map(|c| c.setup).collect();

    // No service: straight to the first server's pod IP.
    let direct = SocketAddrV4::new(servers[0].ip, TARGET_PORT);
    for c in &clients {
        let expect = [servers[0].name.clone()];
        match measure(ctx, c, direct, &expect) {
            Ok(conn) => {
                eprintln!("  {:<17} no service  {}", c.setup, summary(&conn));
                let mut r = Row::new(c.setup, None);
                r.conn = Some(conn);
                rows.push(r);
            }
            Err(e) => return fail(rows, None, &[c.setup], e),
        }
    }

    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    for &n in sizes {
        interrupt::check()?;
        let program_s = match setup.program(n) {
            Ok(s) => s,
            Err(e) => return fail(rows, Some(n), &all, e.context("programming the Services")),
        };
        eprintln!(
            "  {n} services programmed in {}",
            format_duration(program_s)
        );
        let target = SocketAddrV4::new(service_set::vip(n - 1), SERVICE_PORT);
        let mut measured = Vec::new();
        for c in &clients {
            match measure(ctx, c, target, &names) {
                Ok(conn) => {
                    eprintln!("  {:<17} {:>6} svc   {}", c.setup, n, summary(&conn));
                    let mut r = Row::new(c.setup, Some(n));
                    r.conn = Some(conn);
                    r.program_s = Some(program_s);
                    measured.push(r);
                }
                Err(e) => fail(rows, Some(n), &[c.setup], e)?,
            }
        }
        let (mut full, mut partial) = (Times::default(), Times::default());
        let mut agent = Vec::new();
        for _ in 0..adds {
            interrupt::check()?;
            match setup.add_one(n) {
                Ok(a) => {
                    full.push(a.full);
                    if let Some(p) = a.partial {
                        partial.push(p);
                    }
                    agent.extend(a.agent);
                }
                Err(e) => {
                    rows.append(&mut measured);
                    return fail(rows, Some(n), &all, e.context("adding one Service"));
                }
            }
        }
        eprintln!(
            "  adding one service at {n}: {}{}",
            full.format(),
            if partial.is_empty() {
                String::new()
            } else {
                format!(", partial sync {}", partial.format())
            }
        );
        for mut r in measured {
            (r.add_one_s, r.add_one_over) = (full.took.clone(), full.over);
            (r.add_partial_s, r.add_partial_over) = (partial.took.clone(), partial.over);
            r.agent_times = agent.clone();
            rows.push(r);
        }
    }
    Ok(())
}

/// The times of the adds at one size.
#[derive(Debug, Default)]
struct Times {
    took: Vec<f64>,
    /// The limit, when one went over it.
    over: Option<f64>,
}

impl Times {
    fn push(&mut self, t: Timed) {
        match t {
            Timed::Took(s) => self.took.push(s),
            // Not tried because a smaller table went over the limit: it would too.
            Timed::Over(limit) | Timed::Skipped(limit) => self.over = Some(limit),
        }
    }

    fn is_empty(&self) -> bool {
        self.took.is_empty() && self.over.is_none()
    }

    fn format(&self) -> String {
        format_added(&self.took, self.over)
    }
}

/// One line of progress.
fn summary(c: &ConnectResult) -> String {
    format!(
        "{:>7} conn/s  connect p50 {:>6.1} us  p99 {:>7.1} us",
        group_thousands(c.rr.tx_per_sec),
        c.rr.p50_us,
        c.rr.p99_us
    )
}

/// Checks that `client` reaches `target` and only the servers named `expect` (all of them)
/// answer, then measures.
fn measure(
    ctx: &Ctx,
    client: &Client,
    target: SocketAddrV4,
    expect: &[String],
) -> anyhow::Result<ConnectResult> {
    let run = |seconds| {
        worker::run_name_client(
            &ctx.exe,
            &client.netns,
            ctx.cpu,
            target,
            seconds,
            client.cgroup.as_deref(),
        )
        .with_context(|| format!("{}: connecting to {target}", client.setup))
    };
    let check = run(CHECK_SECONDS)?;
    check_replies(&check, expect).with_context(|| format!("{}: {target}", client.setup))?;
    interrupt::check()?;
    let r = run(ctx.seconds)?;
    check_replies(&r, expect).with_context(|| format!("{}: {target}", client.setup))?;
    Ok(r)
}

/// Fails unless every answer came from a server in `expect` and each of them answered.
fn check_replies(r: &ConnectResult, expect: &[String]) -> anyhow::Result<()> {
    if let Some(other) = r.replies.keys().find(|k| !expect.contains(k)) {
        bail!("answered by {other:?}, expected one of {expect:?}");
    }
    if let Some(missing) = expect.iter().find(|e| !r.replies.contains_key(*e)) {
        bail!(
            "{missing} never answered in {} connections ({:?})",
            r.rr.transactions,
            r.replies
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Setups

/// Where a client runs: a table row.
#[derive(Debug, Clone)]
struct Client {
    /// The row's setup name.
    setup: &'static str,
    /// Its network namespace.
    netns: PathBuf,
    /// The cgroup it runs in, when it must be in one (socket LB).
    cgroup: Option<PathBuf>,
}

/// One of the three servers.
#[derive(Debug, Clone)]
struct Server {
    /// Its name line (`bench/server-N`).
    name: String,
    /// Its pod IP.
    ip: Ipv4Addr,
    /// Its network namespace.
    netns: PathBuf,
}

/// The time a command took.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Timed {
    /// Seconds.
    Took(f64),
    /// Killed after this many seconds (the `--limit`).
    Over(f64),
    /// Not tried: an earlier one went over this limit.
    Skipped(f64),
}

/// The time an added Service took.
struct Added {
    /// The main way (for iptables, a kube-proxy full sync).
    full: Timed,
    /// For iptables, a kube-proxy partial sync adding another Service.
    partial: Option<Timed>,
    /// What the agent said about its own time.
    agent: Option<String>,
}

/// A family's running setup.
trait Setup {
    /// Where its clients run.
    fn clients(&self) -> &[Client];
    /// Its servers.
    fn servers(&self) -> &[Server];
    /// Makes Services `0..n` of a set of `n` the ones in force (the last points at the servers);
    /// returns the seconds that took.
    fn program(&mut self, n: usize) -> anyhow::Result<f64>;
    /// Adds one more Service (with fake endpoints) the way the setup's control plane would.
    fn add_one(&mut self, n: usize) -> anyhow::Result<Added>;
}

fn start(family: Family, ctx: &Ctx, notes: &mut Vec<String>) -> anyhow::Result<Box<dyn Setup>> {
    Ok(match family {
        Family::Plexus => Box::new(PlexusSetup::start(ctx, notes)?),
        f => Box::new(KubeProxySetup::start(f, ctx)?),
    })
}

/// Starts `plexus-workload --name NAME --tcp 8080` in each server's namespace, pinned, and
/// waits until they listen.
fn start_servers(ctx: &Ctx, servers: &[Server], tag: &str) -> anyhow::Result<Servers> {
    let mut all = Servers::default();
    let port = TARGET_PORT.to_string();
    for (i, s) in servers.iter().enumerate() {
        let log = ctx.tmp.join(format!("server-{tag}-{i}.log"));
        let mut cmd = pinned(
            &s.netns,
            ctx.cpu,
            &ctx.workload,
            &["--name", &s.name, "--tcp", &port],
        );
        cmd.stdout(Stdio::null()).stderr(log_file(&log)?);
        all.children.push(spawn_server(cmd)?);
        if let Some(child) = all.children.last_mut() {
            wait_listening(&s.netns, TARGET_PORT, child, &log, SERVER_START)?;
        }
    }
    Ok(all)
}

/// The name line of server `i`.
fn server_name(i: usize) -> String {
    format!("bench/server-{i}")
}

// ---------------------------------------------------------------------------------------------
// kube-proxy's rules in a node namespace

/// The pod CIDR of the kube-proxy topology (kube-proxy's `--cluster-cidr`).
const CLUSTER_CIDR: &str = "10.250.0.0/16";
/// Services per `nft -f` transaction when loading a whole nftables table.
const NFT_CHUNK: usize = 1000;
/// The node-side address every pod's default route points at (as Calico does).
const GATEWAY: &str = "169.254.1.1";

/// A node namespace with kube-proxy's rules, a client namespace and three server namespaces,
/// each joined to the node by a veth pair and a /32 route (routed, no bridge); the namespaces
/// are deleted when dropped.
struct KubeNode {
    created: Vec<String>,
    node: PathBuf,
}

impl KubeNode {
    /// Creates `plxt-svc-<pid>-<tag>-{node,client,s0,s1,s2}`; returns the client's namespace
    /// and the servers.
    fn create(tag: &str) -> anyhow::Result<(Self, PathBuf, Vec<Server>)> {
        let prefix = format!("plxt-svc-{}-{tag}", std::process::id());
        let node_name = format!("{prefix}-node");
        let mut guard = Self {
            created: Vec::new(),
            node: netns_path(&node_name),
        };
        netns_add(&node_name)?;
        guard.created.push(node_name);
        ip(Some(&guard.node), &["link", "set", "lo", "up"])?;
        in_netns(&guard.node, || {
            fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .context("enabling forwarding in the node namespace")?;

        let mut pods = vec![("client".to_string(), "c0".to_string(), 10)];
        pods.extend((0..ENDPOINTS).map(|i| (format!("s{i}"), format!("s{i}"), 20 + i as u8)));
        let mut servers = Vec::new();
        let mut client = PathBuf::new();
        for (i, (suffix, host_if, last)) in pods.into_iter().enumerate() {
            let name = format!("{prefix}-{suffix}");
            let pod = netns_add(&name)?;
            guard.created.push(name.clone());
            let addr = Ipv4Addr::new(10, 250, 0, last);
            let a = addr.to_string();
            ip(
                Some(&guard.node),
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
                ],
            )?;
            for args in [
                vec!["link", "set", &host_if, "up"],
                vec!["addr", "add", &format!("{GATEWAY}/32"), "dev", &host_if],
                vec!["route", "add", &format!("{a}/32"), "dev", &host_if],
            ] {
                ip(Some(&guard.node), &args)?;
            }
            for args in [
                vec!["link", "set", "lo", "up"],
                vec!["addr", "add", &format!("{a}/32"), "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
                vec!["route", "add", GATEWAY, "dev", "eth0", "scope", "link"],
                vec!["route", "add", "default", "via", GATEWAY, "dev", "eth0"],
            ] {
                ip(Some(&pod), &args)?;
            }
            if i == 0 {
                client = pod;
            } else {
                servers.push(Server {
                    name: server_name(i - 1),
                    ip: addr,
                    netns: pod,
                });
            }
        }
        Ok((guard, client, servers))
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = netns_del(ns) {
                eprintln!("warning: deleting namespace {ns}: {e}");
            }
        }
    }
}

/// kube-proxy's rules for one backend, in a [`KubeNode`].
struct KubeProxySetup {
    family: Family,
    clients: Vec<Client>,
    servers: Vec<Server>,
    /// Services in force.
    current: usize,
    tmp: PathBuf,
    /// How long one load may take.
    limit: Duration,
    /// A full (partial) sync went over the limit: later ones are not tried.
    full_over: bool,
    partial_over: bool,
    /// Dropped before the namespaces go.
    _processes: Servers,
    node: KubeNode,
}

impl KubeProxySetup {
    fn start(family: Family, ctx: &Ctx) -> anyhow::Result<Self> {
        let (tag, tools): (&str, &[&str]) = match family {
            Family::IptablesLegacy => ("leg", &["iptables-legacy-restore"]),
            Family::IptablesNft => ("nft", &["iptables-nft-restore"]),
            _ => ("nfs", &["nft"]),
        };
        for t in tools {
            which(t)?;
        }
        let (node, client_ns, servers) = KubeNode::create(tag)?;
        in_netns(&client_ns, rr::tune_for_connect_rate)??;
        let processes = start_servers(ctx, &servers, tag)?;
        let mut s = Self {
            family,
            clients: vec![Client {
                setup: family.setups()[0],
                netns: client_ns,
                cgroup: None,
            }],
            servers,
            current: 0,
            tmp: ctx.tmp.clone(),
            limit: ctx.limit,
            full_over: false,
            partial_over: false,
            _processes: processes,
            node,
        };
        // The "no service" baseline runs through kube-proxy's hooks with no Service in them.
        s.program(0)
            .context("loading kube-proxy's rules without Services")?;
        Ok(s)
    }

    fn real(&self) -> Vec<Ipv4Addr> {
        self.servers.iter().map(|s| s.ip).collect()
    }

    /// Writes `text` to a file and runs the backend's loader on it in the node namespace;
    /// returns the command's wall time.
    fn load(&self, text: String, noflush: bool) -> anyhow::Result<Timed> {
        let file = self
            .tmp
            .join(format!("{:?}.rules", self.family).to_lowercase());
        fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        let mut args: Vec<String> = Vec::new();
        let program = match self.family {
            Family::IptablesLegacy | Family::IptablesNft => {
                args.extend(["-w".into(), "5".into()]);
                if noflush {
                    args.push("--noflush".into());
                }
                if self.family == Family::IptablesLegacy {
                    "iptables-legacy-restore"
                } else {
                    "iptables-nft-restore"
                }
            }
            _ => {
                args.push("-f".into());
                "nft"
            }
        };
        args.push(file.display().to_string());
        let line = format!("{program} {}", args.join(" "));
        // Run from a thread inside the node namespace, so the timing is the command's alone.
        let limit = self.limit;
        let (elapsed, out) = in_netns(&self.node.node, move || {
            let mut cmd = Command::new(program);
            cmd.args(&args);
            timed_within(cmd, limit)
        })?;
        let out = out.with_context(|| format!("running {line}"))?;
        let Some(out) = out else {
            return Ok(Timed::Over(limit.as_secs_f64()));
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            // A rule error names a line of a file with tens of thousands; keep it short.
            let err: String = err.lines().take(5).collect::<Vec<_>>().join(" | ");
            bail!("`{line}` failed ({}): {err}", out.status);
        }
        Ok(Timed::Took(elapsed.as_secs_f64()))
    }

    /// One iptables sync of kind `sync` adding one Service to a set of `n`; not tried when an
    /// earlier one went `over` the limit (it would only take longer with more Services).
    fn sync(&mut self, sync: IptablesSync, n: usize, over: bool) -> anyhow::Result<Timed> {
        if over {
            return Ok(Timed::Skipped(self.limit.as_secs_f64()));
        }
        let svcs = service_set::services(0, self.current + 1, n, &self.real());
        let t = self.load(kube_proxy::iptables_nat(&svcs, CLUSTER_CIDR, sync), true)?;
        // A killed restore commits nothing.
        if matches!(t, Timed::Took(_)) {
            self.current += 1;
        }
        Ok(t)
    }
}

/// Runs `cmd` to completion and returns how long it took and its output, or no output when it
/// was still running after `limit` and was killed.
fn timed_within(
    mut cmd: Command,
    limit: Duration,
) -> (Duration, std::io::Result<Option<std::process::Output>>) {
    let t0 = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (t0.elapsed(), Err(e)),
    };
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        let expired = finished.recv_timeout(limit).is_err();
        if expired {
            // SAFETY: kill(2) on our own child, not reaped yet (wait_with_output is still
            // waiting for it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        expired
    });
    let out = child.wait_with_output();
    let elapsed = t0.elapsed();
    let _ = done.send(());
    let expired = watchdog.join().unwrap_or(false);
    (elapsed, out.map(|o| (!expired).then_some(o)))
}

impl Setup for KubeProxySetup {
    fn clients(&self) -> &[Client] {
        &self.clients
    }

    fn servers(&self) -> &[Server] {
        &self.servers
    }

    fn program(&mut self, n: usize) -> anyhow::Result<f64> {
        let svcs = service_set::services(0, n, n, &self.real());
        let texts = match self.family {
            // nft 1.0's time for one transaction grows faster than its size (a transaction of
            // 10,000 Services takes ~40 s here): load the table, then the Services in
            // transactions of NFT_CHUNK, as a kube-proxy that saw them arrive would.
            Family::Nftables => std::iter::once(kube_proxy::nft_skeleton())
                .chain(
                    svcs.chunks(NFT_CHUNK)
                        .map(|c| kube_proxy::nft_add_services(c, CLUSTER_CIDR)),
                )
                .collect(),
            _ => vec![kube_proxy::iptables_nat(
                &svcs,
                CLUSTER_CIDR,
                IptablesSync::Initial,
            )],
        };
        let mut total = 0.0;
        for text in texts {
            interrupt::check()?;
            total += match self.load(text, false)? {
                Timed::Took(t) => t,
                Timed::Over(limit) => bail!("a load took more than {limit:.0} s (--limit)"),
                Timed::Skipped(_) => bail!("not loaded"),
            };
        }
        self.current = n;
        Ok(total)
    }

    fn add_one(&mut self, n: usize) -> anyhow::Result<Added> {
        let real = self.real();
        if self.family == Family::Nftables {
            // kube-proxy's nftables mode is incremental: the new chains and one map element.
            let svc = service_set::service(self.current, n, &real);
            let text = kube_proxy::nft_add_services(&[svc], CLUSTER_CIDR);
            let full = self.load(text, true)?;
            if matches!(full, Timed::Took(_)) {
                self.current += 1;
            }
            return Ok(Added {
                full,
                partial: None,
                agent: None,
            });
        }
        // A full sync rewrites every chain; a partial sync (kube-proxy 1.27+ between full
        // syncs) rewrites KUBE-SERVICES and the changed Service's chains. Each adds one.
        let full = self.sync(IptablesSync::Full, n, self.full_over)?;
        let partial = self.sync(IptablesSync::Partial(1), n, self.partial_over)?;
        self.full_over |= matches!(full, Timed::Over(_));
        self.partial_over |= matches!(partial, Timed::Over(_));
        Ok(Added {
            full,
            partial: Some(partial),
            agent: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plexus

/// A lab with a client pod and three server pods.
fn plexus_manifest() -> String {
    let pod = |name: &str, app: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bench\n  \
             labels:\n    app: {app}\nspec:\n  containers:\n  - name: {name}\n    image: \
             plexus/workload\n    ports:\n    - containerPort: 80\n      protocol: TCP\n"
        )
    };
    let mut m = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n");
    m.push_str(&pod("client", "bench-client"));
    for i in 0..ENDPOINTS {
        m.push_str(&pod(&format!("server-{i}"), "bench-server"));
    }
    m
}

/// A Plexus lab; the Services go straight to the node agent's API.
struct PlexusSetup {
    clients: Vec<Client>,
    servers: Vec<Server>,
    socket: PathBuf,
    batch: usize,
    /// The size programmed last (its last Service points at the servers).
    last_n: usize,
    /// Services in force.
    current: usize,
    /// Dropped before the lab goes.
    _processes: Servers,
    _lab: PlexusLab,
}

impl PlexusSetup {
    fn start(ctx: &Ctx, notes: &mut Vec<String>) -> anyhow::Result<Self> {
        let plexus = ctx.exe.with_file_name("plexus");
        if !plexus.exists() {
            bail!(
                "{} not found: build with `cargo build --release --bins`",
                plexus.display()
            );
        }
        let lab = PlexusLab::up(
            &plexus,
            &format!("svc{}", std::process::id()),
            &plexus_manifest(),
            &ctx.tmp,
        )?;
        let node = lab.node()?;
        let (client_ns, _) = lab.pod("bench/client")?;
        let mut servers = Vec::new();
        for i in 0..ENDPOINTS {
            let (netns, ip) = lab.pod(&format!("bench/server-{i}"))?;
            servers.push(Server {
                name: server_name(i),
                ip,
                netns,
            });
        }
        in_netns(&client_ns, rr::tune_for_connect_rate)??;
        let processes = start_servers(ctx, &servers, "plexus")?;
        let mut clients = Vec::new();
        match &node.cgroup {
            Some(cg) => clients.push(Client {
                setup: PLEXUS_SOCKET_LB,
                netns: client_ns.clone(),
                cgroup: Some(cg.clone()),
            }),
            None => {
                let note = format!(
                    "{PLEXUS_SOCKET_LB} not measured: lab {} has no node cgroup in its state",
                    lab.name()
                );
                eprintln!("  error: {note}");
                notes.push(note);
            }
        }
        clients.push(Client {
            setup: PLEXUS_TC,
            netns: client_ns,
            cgroup: None,
        });
        Ok(Self {
            clients,
            servers,
            socket: node.socket,
            batch: ctx.batch,
            last_n: 0,
            current: 0,
            _processes: processes,
            _lab: lab,
        })
    }

    /// One ApplyObjects request; returns its wall time and the answer.
    fn apply(&self, svcs: &[Svc]) -> anyhow::Result<(f64, Response)> {
        let req = Request::ApplyObjects {
            objects: service_set::objects(svcs),
        };
        let t0 = Instant::now();
        let resp = plexus_api::call(&self.socket, &req, API_TIMEOUT)
            .map_err(|e| anyhow!("ApplyObjects of {} Services: {e}", svcs.len()))?;
        Ok((t0.elapsed().as_secs_f64(), resp))
    }
}

impl Setup for PlexusSetup {
    fn clients(&self) -> &[Client] {
        &self.clients
    }

    fn servers(&self) -> &[Server] {
        &self.servers
    }

    fn program(&mut self, n: usize) -> anyhow::Result<f64> {
        let real: Vec<Ipv4Addr> = self.servers.iter().map(|s| s.ip).collect();
        // From the previous size's last Service (it gets fake endpoints now) up to n; the ones
        // added in between come again unchanged.
        let from = self.last_n.saturating_sub(1);
        let svcs = service_set::services(from, n.max(self.current), n, &real);
        let per_request = (self.batch / 2).max(1);
        let mut total = 0.0;
        for chunk in svcs.chunks(per_request) {
            interrupt::check()?;
            total += self.apply(chunk)?.0;
        }
        self.last_n = n;
        self.current = n.max(self.current);
        Ok(total)
    }

    fn add_one(&mut self, n: usize) -> anyhow::Result<Added> {
        let svc = service_set::fake(self.current);
        let (seconds, resp) = self.apply(std::slice::from_ref(&svc))?;
        let _ = n;
        self.current += 1;
        let times = agent_times(&serde_json::to_value(&resp).unwrap_or_default());
        Ok(Added {
            full: Timed::Took(seconds),
            partial: None,
            agent: (!times.is_empty()).then(|| times.join(", ")),
        })
    }
}

/// Every number in an agent answer whose key ends in `_us` or `_ms` (its own timings), as
/// `key=value`.
fn agent_times(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            if v.is_object() {
                out.extend(agent_times(v));
            } else if (k.ends_with("_us") || k.ends_with("_ms")) && v.is_number() {
                out.push(format!("{k}={v}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults() {
        let cli = Cli::try_parse_from(["services", "--sizes", "100,1000"]).unwrap();
        assert!(cli.cmd.is_none());
        assert_eq!(cli.run.sizes, vec![100, 1000]);
        assert_eq!(cli.run.seconds, 3.0);
        assert_eq!(cli.run.only.len(), 4);
        let cli = Cli::try_parse_from(["services", "--only", "plexus,nftables"]).unwrap();
        assert_eq!(cli.run.only, vec![Family::Plexus, Family::Nftables]);
        let cli = Cli::try_parse_from([
            "services",
            "name-client",
            "--ip",
            "10.0.0.1",
            "--port",
            "80",
            "--seconds",
            "0.5",
        ])
        .unwrap();
        assert!(matches!(
            cli.cmd,
            Some(Cmd::Worker(WorkerCmd::NameClient { port: 80, .. }))
        ));
    }

    #[test]
    fn manifest_has_four_pods() {
        let m = plexus_manifest();
        assert_eq!(m.matches("kind: Pod").count(), 4);
        assert!(m.contains("name: server-2"));
    }

    #[test]
    fn agent_timings_found() {
        let v = serde_json::json!({"result": "changed", "lines": ["a"], "apply_us": 420,
            "inner": {"write_ms": 1.5, "n": 3}});
        assert_eq!(agent_times(&v), vec!["apply_us=420", "write_ms=1.5"]);
    }
}
