//! `plexus-workload`: the server every lab pod runs in its network namespace; it answers on its
//! TCP and UDP ports with the pod's name and echoes what it is sent. `plexus-workload probe`
//! runs one reachability probe from wherever it was started (the lab starts it in a pod's or
//! the node's namespace and the node's cgroup) and prints the result as one JSON line.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use plexus_lab::{
    probe::{probe_here, Protocol},
    workload::{Workload, WorkloadSpec},
};

/// Serve a lab pod's ports: answer each TCP connection and UDP datagram with the pod's name.
#[derive(Debug, Parser)]
#[command(
    name = "plexus-workload",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// Instead of serving, run one probe.
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The pod's name, `namespace/pod`.
    #[arg(long, value_name = "NS/POD", required = true)]
    name: Option<String>,
    /// A TCP port to serve (repeatable, or comma-separated).
    #[arg(long = "tcp", value_name = "PORT", value_delimiter = ',')]
    tcp: Vec<u16>,
    /// A UDP port to serve (repeatable, or comma-separated).
    #[arg(long = "udp", value_name = "PORT", value_delimiter = ',')]
    udp: Vec<u16>,
}

/// One-shot modes.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Probe TARGET once from here and print the result as one JSON line (exit 0 either way).
    Probe {
        /// Address and port to probe, `IP:PORT`.
        #[arg(long, value_name = "IP:PORT")]
        target: SocketAddr,
        /// TCP or UDP.
        #[arg(long, default_value = "TCP")]
        protocol: Protocol,
        /// Give up after this long.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Source name for the result (`ns/pod`, or `node`).
        #[arg(long, default_value = "")]
        from: String,
        /// Destination name for the result (default: the target address).
        #[arg(long)]
        to: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause, whatever RUST_BACKTRACE says.
            eprintln!("plexus-workload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every port, says so, and serves until killed; or runs the probe asked for.
fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Cmd::Probe {
        target,
        protocol,
        timeout_ms,
        from,
        to,
    }) = args.cmd
    {
        let to = to.unwrap_or_else(|| target.ip().to_string());
        let result = probe_here(
            &from,
            &to,
            target.ip(),
            target.port(),
            protocol,
            Duration::from_millis(timeout_ms),
        );
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let spec = WorkloadSpec {
        name: args.name.context("--name is required")?,
        tcp: args.tcp,
        udp: args.udp,
    };
    let workload = Workload::bind(&spec).with_context(|| format!("pod {}", spec.name))?;
    // Printed only once every port is bound, so a launcher can wait for this line.
    eprintln!(
        "plexus-workload {}: serving tcp {:?} udp {:?}",
        spec.name, spec.tcp, spec.udp
    );
    workload.run().with_context(|| format!("pod {}", spec.name))
}
