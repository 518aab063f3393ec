//! `plexus-agent`: one per node. Owns IPAM, endpoints and the node's datapath, and serves the
//! local API on a unix socket for the CNI plugin and the CLI.

mod capture;
mod endpoints;
mod inspect;
mod journal;
mod node;
mod objects;
mod reconcile;
mod server;
mod services;
mod state;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use plexus_agent::{metrics, observer};
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
    /// Datapath monitoring: off, drops, aggregated (per connection: first packets, TCP flag
    /// changes, close, and every drop) or all.
    #[arg(long, default_value = "aggregated")]
    pub monitor: String,
    /// Flows kept in the observer's ring.
    #[arg(long, default_value_t = 4096)]
    pub flow_buffer: usize,
    /// Hubble-compatible Observer API on TCP (empty to disable).
    #[arg(long, default_value = "0.0.0.0:4244")]
    pub hubble_listen: String,
    /// Hubble-compatible Observer API on a unix socket (default: `hubble.sock` beside the API
    /// socket).
    #[arg(long)]
    pub hubble_socket: Option<PathBuf>,
    /// Agent metrics (Prometheus) address (empty to disable).
    #[arg(long, default_value = "0.0.0.0:9962")]
    pub metrics_listen: String,
    /// cgroup (v2 directory) of the node's pods: socket-level load balancing is attached to it.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Flow metrics (Prometheus) address (empty to disable).
    #[arg(long, default_value = "0.0.0.0:9965")]
    pub flow_metrics_listen: String,
}

/// The monitor level for `--monitor`.
fn monitor_level(s: &str) -> anyhow::Result<u32> {
    use plexus_abi::event::*;
    Ok(match s {
        "off" => MONITOR_OFF,
        "drops" => MONITOR_DROPS,
        "aggregated" => MONITOR_AGGREGATED,
        "all" => MONITOR_ALL,
        other => anyhow::bail!("--monitor {other:?}: want off, drops, aggregated or all"),
    })
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
    let level = monitor_level(&args.monitor)?;
    let mut agent = Agent::start(
        &args.node,
        pod_cidr,
        &state_dir,
        &args.bpf_root.join(&args.node),
        args.cgroup.as_deref(),
    )
    .context("starting the agent")?;
    agent.scan_devices();
    let obs = observer::ObserverHandle {
        ring: Arc::new(plexus_hubble::FlowRing::new(
            args.node.clone(),
            args.flow_buffer,
        )),
        directory: Arc::new(std::sync::RwLock::new(observer::Directory {
            node: args.node.clone(),
            ..Default::default()
        })),
        captures: tokio::sync::broadcast::channel(4096).0,
        metrics: Arc::new(metrics::Metrics::default()),
    };
    let maps = agent.datapath.maps()?;
    // A capture left on by a crashed agent stays off until someone asks again.
    maps.set_monitor(plexus_abi::MonitorConfig { level, capture: 0 })?;
    let events = maps.events()?;
    agent.observer = Some(obs.clone());
    agent.refresh_directory();
    let agent = Arc::new(std::sync::Mutex::new(agent));
    let hubble_socket = args
        .hubble_socket
        .clone()
        .unwrap_or_else(|| socket.with_file_name("hubble.sock"));
    let parse_addr = |s: &str| -> anyhow::Result<Option<std::net::SocketAddr>> {
        if s.is_empty() {
            Ok(None)
        } else {
            Ok(Some(s.parse().with_context(|| format!("address {s:?}"))?))
        }
    };
    let hubble_tcp = parse_addr(&args.hubble_listen)?;
    let metrics_addr = parse_addr(&args.metrics_listen)?;
    let flow_metrics_addr = parse_addr(&args.flow_metrics_listen)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        tokio::spawn(observer::run(events, obs.clone()));
        // Events the datapath could not queue reach the ring's followers as lost events.
        let (a, ring) = (agent.clone(), obs.ring.clone());
        tokio::spawn(async move {
            let mut seen = a.lock().map(|a| a.events_lost()).unwrap_or(0);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = a.lock().map(|a| a.events_lost()).unwrap_or(seen);
                if now > seen {
                    ring.record_lost(
                        plexus_hubble::flow::LostEventSource::PerfEventRingBuffer,
                        now - seen,
                    );
                    seen = now;
                }
            }
        });
        // External devices and node addresses come and go: follow them.
        let a = agent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                if let Ok(mut a) = a.lock() {
                    a.scan_devices();
                }
            }
        });
        let ring = obs.ring.clone();
        let _ = std::fs::remove_file(&hubble_socket);
        let hubble_path = hubble_socket.clone();
        tokio::spawn(async move {
            if let Err(e) = plexus_hubble::serve(ring, hubble_tcp, Some(hubble_path)).await {
                tracing::warn!(error = %e, "hubble API stopped");
            }
        });
        if let Some(addr) = metrics_addr {
            let a = agent.clone();
            let render: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || a.lock().map(|a| a.render_metrics()).unwrap_or_default());
            tokio::spawn(metrics::serve(addr, render));
        }
        if let Some(addr) = flow_metrics_addr {
            let (m, a) = (obs.metrics.clone(), agent.clone());
            let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
                if let Ok(a) = a.lock() {
                    m.set_lost("PERF_EVENT_RING_BUFFER", a.events_lost());
                }
                m.render()
            });
            tokio::spawn(metrics::serve(addr, render));
        }
        let server = server::serve(socket.clone(), agent.clone(), obs.clone());
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
