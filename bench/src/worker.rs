//! The request/response server and client a benchmark binary runs as (its hidden `rr-server`
//! and `rr-client` subcommands) inside a pod's network namespace, pinned to one CPU, and how
//! the benchmark starts them.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
    process::Command,
    time::Duration,
};

use clap::Subcommand;
use serde::de::DeserializeOwned;

use crate::{
    process::{output_within, pinned, spawn_ready_server, Servers},
    rr::{self, ConnectResult, RrResult},
    BenchError,
};

/// Extra time a client command gets beyond its measurement before it is killed.
pub const CLIENT_GRACE: Duration = Duration::from_secs(30);

/// The hidden subcommands; flatten into a benchmark's own subcommands.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum WorkerCmd {
    /// Serve the request/response benchmark on PORT (run inside the server namespace).
    #[command(hide = true)]
    RrServer {
        /// TCP port to listen on.
        #[arg(long)]
        port: u16,
    },
    /// Run the request/response client and print its result as JSON.
    #[command(hide = true)]
    RrClient {
        /// Server address.
        #[arg(long)]
        ip: Ipv4Addr,
        /// Server port.
        #[arg(long)]
        port: u16,
        /// How long to run.
        #[arg(long)]
        seconds: f64,
        /// Open a new connection for every transaction (a connect-rate test).
        #[arg(long)]
        connect_per_tx: bool,
    },
    /// Run the connect-latency client (connect, read the server's name line, close) and print
    /// its result as JSON.
    #[command(hide = true)]
    NameClient {
        /// Server address.
        #[arg(long)]
        ip: Ipv4Addr,
        /// Server port.
        #[arg(long)]
        port: u16,
        /// How long to run.
        #[arg(long)]
        seconds: f64,
    },
}

impl WorkerCmd {
    /// Runs the subcommand in this process; the server never returns.
    pub fn run(self) -> Result<(), BenchError> {
        let stdout = |what: &str, e| BenchError::io(format!("writing {what} to stdout"), e);
        match self {
            WorkerCmd::RrServer { port } => {
                let listener = rr::bind(port)?;
                // The benchmark waits for this line before measuring.
                let mut out = std::io::stdout();
                writeln!(out, "ready").map_err(|e| stdout("ready", e))?;
                out.flush().map_err(|e| stdout("ready", e))?;
                rr::serve(&listener)
            }
            WorkerCmd::RrClient {
                ip,
                port,
                seconds,
                connect_per_tx,
            } => {
                let server = SocketAddr::V4(SocketAddrV4::new(ip, port));
                let duration = Duration::from_secs_f64(seconds);
                let r = if connect_per_tx {
                    rr::run_connect_client(server, duration)?
                } else {
                    rr::run_client(server, duration)?
                };
                let json = serde_json::to_string(&r).unwrap_or_default();
                println!("{json}");
                Ok(())
            }
            WorkerCmd::NameClient { ip, port, seconds } => {
                let server = SocketAddr::V4(SocketAddrV4::new(ip, port));
                let r = rr::run_name_client(server, Duration::from_secs_f64(seconds))?;
                let json = serde_json::to_string(&r).unwrap_or_default();
                println!("{json}");
                Ok(())
            }
        }
    }
}

/// Starts `exe rr-server --port PORT` in `netns` pinned to `cpu` and waits until it listens;
/// its standard error goes to `log`.
pub fn start_rr_server(
    exe: &Path,
    netns: &Path,
    cpu: u32,
    port: u16,
    log: &Path,
) -> Result<Servers, BenchError> {
    let port = port.to_string();
    spawn_ready_server(
        pinned(netns, cpu, exe, &["rr-server", "--port", &port]),
        log,
    )
}

/// Runs `exe rr-client` in `netns` pinned to `cpu` against `server` for `seconds` and returns
/// its result; with `connect_per_tx`, every transaction opens its own connection.
pub fn run_rr_client(
    exe: &Path,
    netns: &Path,
    cpu: u32,
    server: SocketAddrV4,
    seconds: f64,
    connect_per_tx: bool,
) -> Result<RrResult, BenchError> {
    let ip = server.ip().to_string();
    let port = server.port().to_string();
    let secs = seconds.to_string();
    let mut args = vec![
        "rr-client",
        "--ip",
        &ip,
        "--port",
        &port,
        "--seconds",
        &secs,
    ];
    if connect_per_tx {
        args.push("--connect-per-tx");
    }
    run_json(pinned(netns, cpu, exe, &args), seconds)
}

/// Runs `exe name-client` in `netns` pinned to `cpu` against `server` for `seconds` and
/// returns its result. With `cgroup`, the client runs in that cgroup (v2 directory) from its
/// start, so the socket programs attached there see its connections.
pub fn run_name_client(
    exe: &Path,
    netns: &Path,
    cpu: u32,
    server: SocketAddrV4,
    seconds: f64,
    cgroup: Option<&Path>,
) -> Result<ConnectResult, BenchError> {
    let ip = server.ip().to_string();
    let port = server.port().to_string();
    let secs = seconds.to_string();
    let args = [
        "name-client",
        "--ip",
        &ip,
        "--port",
        &port,
        "--seconds",
        &secs,
    ];
    let mut cmd = pinned(netns, cpu, exe, &args);
    if let Some(cg) = cgroup {
        plexus_lab::join_cgroup_before_exec(&mut cmd, cg)
            .map_err(|e| BenchError::Missing(e.to_string()))?;
    }
    run_json(cmd, seconds)
}

/// Runs a client that measures for `seconds` and prints its result as one JSON line.
fn run_json<T: DeserializeOwned>(cmd: Command, seconds: f64) -> Result<T, BenchError> {
    let line = crate::process::command_line(&cmd);
    let out = output_within(cmd, Duration::from_secs_f64(seconds) + CLIENT_GRACE)?;
    if !out.success {
        // Ctrl-C reaches the client too: say so rather than that it failed.
        crate::interrupt::check()?;
        return Err(BenchError::command(
            line,
            format!("failed ({}): {}", out.status, out.stderr.trim()),
        ));
    }
    serde_json::from_str(out.stdout.trim()).map_err(|e| {
        BenchError::command(
            line,
            format!("unreadable output {:?}: {e}", out.stdout.trim()),
        )
    })
}
