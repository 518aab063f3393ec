//! `plexus`: the operator's command line: agent status, endpoints, BPF maps, and the lab.

mod bpf;
mod capture;
mod lab;
mod observe;
mod policy;
mod service;
mod table;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use plexus_api::{call, Request, Response};

/// The Plexus command line.
#[derive(Debug, Parser)]
#[command(
    name = "plexus",
    version,
    about = "eBPF networking, security and observability"
)]
pub struct Cli {
    /// Agent API socket (default: the lab's node, else /run/plexus/agent.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Lab whose node to talk to.
    #[arg(long, global = true, default_value = "plexus")]
    lab: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Agent health, programs attached and map fill.
    Status,
    /// Endpoints known to the agent.
    Endpoint {
        #[command(subcommand)]
        cmd: EndpointCmd,
    },
    /// Raw BPF maps of the node.
    Bpf {
        /// Node whose pins to read (default: the lab's node).
        #[arg(long, global = true)]
        node: Option<String>,
        #[command(subcommand)]
        cmd: bpf::BpfCmd,
    },
    /// Network policy in force: get, validate, trace.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Services (kube-proxy replacement): frontends and their backends.
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCmd,
    },
    /// Security identities.
    Identity {
        #[command(subcommand)]
        cmd: IdentityCmd,
    },
    /// Flows with Kubernetes names, filtered like `hubble observe`.
    Observe(Box<observe::ObserveArgs>),
    /// Capture packets of pods, by name or label, into a pcap file.
    Capture(capture::CaptureArgs),
    /// The local lab: a cluster of network namespaces on this machine.
    Lab {
        #[command(subcommand)]
        cmd: lab::LabCmd,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityCmd {
    /// List identities: id, labels, endpoints.
    List,
}

#[derive(Debug, Subcommand)]
enum EndpointCmd {
    /// List endpoints: id, pod, IPv4, interface, state.
    List,
}

fn main() {
    // Die quietly on a closed pipe (`plexus ... | head`), as command-line tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Status => status(&cli),
        Cmd::Endpoint {
            cmd: EndpointCmd::List,
        } => endpoint_list(&cli),
        Cmd::Bpf { node, cmd } => bpf::run(&cli, &bpf_dir(&cli, node.as_deref())?, cmd),
        Cmd::Policy { cmd } => policy::run(&cli, cmd),
        Cmd::Service { cmd } => service::run(&cli, cmd),
        Cmd::Capture(a) => capture::run(&cli, a),
        Cmd::Observe(a) => observe::run(&cli, a),
        Cmd::Identity {
            cmd: IdentityCmd::List,
        } => policy::identity_list(&cli),
        Cmd::Lab { cmd } => lab::run(&cli.lab, cmd, cli.json),
    }
}

/// The agent socket to use.
pub fn socket(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    let lab = lab::open(&cli.lab)?;
    if lab.is_up() {
        let st = lab.state()?;
        if let Some(n) = st.nodes.first() {
            return Ok(n.socket.clone());
        }
    }
    Ok(PathBuf::from("/run/plexus/agent.sock"))
}

/// The pin directory of the node to inspect.
fn bpf_dir(cli: &Cli, node: Option<&str>) -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(plexus_loader::BPF_ROOT);
    if let Some(n) = node {
        return Ok(root.join(n));
    }
    let lab = lab::open(&cli.lab)?;
    if lab.is_up() {
        if let Some(n) = lab.state()?.nodes.first() {
            return Ok(root.join(&n.name));
        }
    }
    let nodes: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    match nodes.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no node pinned under {}; is an agent running?",
            root.display()
        ),
        _ => bail!(
            "several nodes under {}; pick one with --node",
            root.display()
        ),
    }
}

pub fn agent(cli: &Cli, req: Request) -> anyhow::Result<Response> {
    let sock = socket(cli)?;
    call(&sock, &req, Duration::from_secs(10))
        .with_context(|| format!("asking the agent at {}", sock.display()))
}

fn status(cli: &Cli) -> anyhow::Result<()> {
    let Response::Status(s) = agent(cli, Request::Status)? else {
        bail!("unexpected answer from agent")
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("Agent:      ok (node {}, up {}s)", s.node, s.uptime_secs);
    println!("Pod CIDR:   {}", s.pod_cidr);
    println!("BPF pins:   {}", s.bpf_dir);
    println!("Endpoints:  {}", s.endpoints);
    println!("Programs:   {} attached", s.programs.len());
    let mut t = table::Table::new(&["INTERFACE", "HOOK", "PROGRAM"]);
    for (i, d, p) in &s.programs {
        t.row(vec![i.clone(), format!("tc/{d}"), p.clone()]);
    }
    print!("{}", t.indent(2));
    println!("Maps:");
    let mut t = table::Table::new(&["MAP", "ENTRIES", "CAPACITY", "FILL"]);
    for (m, n, cap) in &s.maps {
        t.row(vec![
            m.clone(),
            n.to_string(),
            cap.to_string(),
            format!("{:.1}%", *n as f64 * 100.0 / *cap as f64),
        ]);
    }
    print!("{}", t.indent(2));
    if !s.drops.is_empty() {
        println!("Drops:");
        let mut t = table::Table::new(&["REASON", "CODE", "PACKETS"]);
        for (code, name, n) in &s.drops {
            t.row(vec![name.clone(), code.to_string(), n.to_string()]);
        }
        print!("{}", t.indent(2));
    }
    Ok(())
}

fn endpoint_list(cli: &Cli) -> anyhow::Result<()> {
    let Response::Endpoints { endpoints: eps } = agent(cli, Request::EndpointList)? else {
        bail!("unexpected answer from agent")
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&eps)?);
        return Ok(());
    }
    let mut t = table::Table::new(&["ID", "POD", "IPV4", "INTERFACE", "STATE"]);
    let mut eps = eps;
    eps.sort_by_key(|e| e.id);
    for e in eps {
        t.row(vec![
            e.id.to_string(),
            format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name),
            e.spec.ipv4.clone(),
            e.spec.host_ifname.clone(),
            e.state.to_string(),
        ]);
    }
    print!("{t}");
    Ok(())
}
