//! `plexus-workload`: the server every lab pod runs in its network namespace; it answers on its
//! TCP and UDP ports with the pod's name and echoes what it is sent.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use plexus_lab::workload::{Workload, WorkloadSpec};

/// Serve a lab pod's ports: answer each TCP connection and UDP datagram with the pod's name.
#[derive(Debug, Parser)]
#[command(name = "plexus-workload", version)]
struct Args {
    /// The pod's name, `namespace/pod`.
    #[arg(long, value_name = "NS/POD")]
    name: String,
    /// A TCP port to serve (repeatable, or comma-separated).
    #[arg(long = "tcp", value_name = "PORT", value_delimiter = ',')]
    tcp: Vec<u16>,
    /// A UDP port to serve (repeatable, or comma-separated).
    #[arg(long = "udp", value_name = "PORT", value_delimiter = ',')]
    udp: Vec<u16>,
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

/// Binds every port, says so, and serves until killed.
fn run(args: Args) -> anyhow::Result<()> {
    let spec = WorkloadSpec {
        name: args.name,
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
