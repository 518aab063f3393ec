//! `plexus-agent`: one per node. Owns IPAM, endpoints and the node's datapath, and serves the
//! local API on a unix socket for the CNI plugin and the CLI.

mod endpoints;
mod inspect;
mod node;
mod objects;
mod reconcile;
mod server;
mod state;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use tracing::info;

use crate::endpoints::Agent;

/// Command line of the agent.
#[derive(Debug, Parser)]
#[command(name = "plexus-agent", version, about = "Plexus node agent")]
pub struct Args {
    /// Node name; keys the pin directory and the state directory.
    #[arg(long)]
    pub node: String,
    /// The node's pod CIDR (IPv4).
    #[arg(long, default_value = "10.244.0.0/24")]
    pub pod_cidr: String,
    /// Unix socket of the local API.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Where IPAM and endpoint state persist.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Root of the BPF pins; the node's pins go in `<bpf-root>/<node>`.
    #[arg(long, default_value = plexus_loader::BPF_ROOT)]
    pub bpf_root: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/run/plexus/{}/agent.sock", args.node)));
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/var/lib/plexus/{}", args.node)));
    let pod_cidr = args
        .pod_cidr
        .parse()
        .with_context(|| format!("--pod-cidr {}", args.pod_cidr))?;
    let agent = Agent::start(
        &args.node,
        pod_cidr,
        &state_dir,
        &args.bpf_root.join(&args.node),
    )
    .context("starting the agent")?;
    let agent = Arc::new(std::sync::Mutex::new(agent));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = server::serve(socket.clone(), agent.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            res = server => res,
            _ = term.recv() => {
                // Leave the datapath in place: pinned maps and links keep traffic flowing
                // until the next agent adopts them.
                info!("SIGTERM: exiting, datapath stays pinned");
                let _ = std::fs::remove_file(&socket);
                Ok(())
            }
            _ = tokio::signal::ctrl_c() => {
                let _ = std::fs::remove_file(&socket);
                Ok(())
            }
        }
    })
}
