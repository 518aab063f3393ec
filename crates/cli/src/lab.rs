//! `plexus lab ...`: run a cluster of network namespaces on this machine.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Subcommand;
use plexus_lab::{
    cluster::ProbeOptions,
    probe::{format_matrix, results_grid, ProbeResult, Protocol, SocketLb},
    Lab,
};
use serde_json::json;

use crate::table::Table;

/// Lab commands.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Create the lab from Kubernetes manifests (Namespace, Pod, Deployment, policies, Service,
    /// EndpointSlice, CiliumLoadBalancerIPPool).
    Up {
        /// Manifest files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Create or replace objects in the running lab.
    Apply {
        /// Manifest files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete the objects named in the manifests.
    Delete {
        /// Manifest files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove everything the lab created (also after a crash).
    Down,
    /// The lab's pods.
    Pods,
    /// Restart the node agents (the datapath keeps forwarding meanwhile).
    RestartAgent {
        /// Kill with SIGKILL, as a crash would, instead of SIGTERM.
        #[arg(long)]
        kill: bool,
    },
    /// Probe DST (`svc/<ns>/<name>`, `ns/pod` or an IP) from SRC (`ns/pod`, or `node`).
    Probe {
        /// Source: a pod, `ns/pod`, or `node` (the node's network namespace).
        src: String,
        /// Destination: `svc/<ns>/<name>` (the Service's cluster IP), `ns/pod` or an IP address.
        dst: String,
        /// Destination port (for a Service: the Service port).
        #[arg(long)]
        port: u16,
        /// TCP or UDP.
        #[arg(long, default_value = "TCP")]
        protocol: Protocol,
        /// Give up after this long.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Run the probe in the node's cgroup, where socket-level load balancing applies (`on`),
        /// or in-process, where only the per-packet datapath does (`off`); `auto` is on for a
        /// Service destination or the node as source.
        #[arg(long, default_value = "auto")]
        socket_lb: SocketLb,
        /// Run N probes one after the other (with --json: an array of results).
        #[arg(long)]
        count: Option<u32>,
    },
    /// The lab's Services: type, cluster IP, ports.
    Services,
    /// Probe every ordered pair of pods and print the reachability grid.
    Matrix {
        /// Destination port.
        #[arg(long)]
        port: u16,
        /// TCP or UDP.
        #[arg(long, default_value = "TCP")]
        protocol: Protocol,
        /// Pods to include, `ns/pod,...` (default: all, sorted).
        #[arg(long, value_delimiter = ',')]
        pods: Option<Vec<String>>,
        /// Per-probe timeout.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

/// The lab named `name`, using the helper binaries installed beside this one.
pub fn open(name: &str) -> anyhow::Result<Lab> {
    let exe = std::env::current_exe().context("locating the plexus binary")?;
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    Ok(Lab::new(name, bin_dir)?)
}

/// Runs a lab command.
pub fn run(name: &str, cmd: &LabCmd, as_json: bool) -> anyhow::Result<()> {
    let lab = open(name)?;
    match cmd {
        LabCmd::Up { files } => {
            let c = lab.up(files)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("lab {} is up: {} pods", lab.name(), c.created.len());
                pods(&lab, false)?;
            }
        }
        LabCmd::Apply { files } => {
            let c = lab.apply(files)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                for p in &c.created {
                    println!("pod/{p} created");
                }
                for p in &c.relabelled {
                    println!("pod/{p} configured");
                }
                for p in &c.deleted {
                    println!("pod/{p} deleted");
                }
                for n in &c.namespaces {
                    println!("namespace/{n} configured");
                }
                for p in &c.policies {
                    println!("{p} configured");
                }
                for o in &c.services {
                    println!("{o} configured");
                }
            }
        }
        LabCmd::Delete { files } => {
            let c = lab.delete(files)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                for p in &c.deleted {
                    println!("pod/{p} deleted");
                }
                for n in &c.namespaces {
                    println!("namespace/{n} deleted");
                }
                for p in &c.policies {
                    println!("{p} deleted");
                }
                for o in &c.services {
                    println!("{o} deleted");
                }
            }
        }
        LabCmd::Down => {
            let r = lab.down()?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "lab {} is down: stopped {} processes, deleted {} network namespaces, removed {} pin directories and {} cgroups",
                    lab.name(),
                    r.processes,
                    r.namespaces,
                    r.pins,
                    r.cgroups
                );
            }
        }
        LabCmd::Pods => pods(&lab, as_json)?,
        LabCmd::RestartAgent { kill } => {
            let pids = lab.restart_agents(*kill)?;
            println!("agents restarted: pids {pids:?}");
        }
        LabCmd::Probe {
            src,
            dst,
            port,
            protocol,
            timeout_ms,
            socket_lb,
            count,
        } => {
            let opts = ProbeOptions {
                port: *port,
                protocol: *protocol,
                timeout: Duration::from_millis(*timeout_ms),
                socket_lb: *socket_lb,
                count: count.unwrap_or(1),
            };
            let results = lab.probes(src, dst, &opts)?;
            if as_json {
                match (count, results.first()) {
                    (None, Some(r)) => println!("{}", serde_json::to_string(r)?),
                    _ => println!("{}", serde_json::to_string(&results)?),
                }
            } else {
                for r in &results {
                    println!("{}", probe_line(r));
                }
            }
            if results.iter().any(|r| !r.connected) {
                std::process::exit(2);
            }
        }
        LabCmd::Services => services(&lab, as_json)?,
        LabCmd::Matrix {
            port,
            protocol,
            pods,
            timeout_ms,
        } => {
            let (names, results) = lab.matrix(
                pods.clone(),
                *port,
                *protocol,
                Duration::from_millis(*timeout_ms),
            )?;
            if as_json {
                let grid = results_grid(&names, &results);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "port": port, "protocol": protocol, "pods": names, "matrix": grid, "results": results,
                    }))?
                );
            } else {
                print!("{}", format_matrix(&names, &results));
            }
        }
    }
    Ok(())
}

fn pods(lab: &Lab, as_json: bool) -> anyhow::Result<()> {
    let st = lab.state()?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&st.pods)?);
        return Ok(());
    }
    let mut t = Table::new(&["POD", "IP", "NODE", "PORTS", "LABELS"]);
    for p in st.pods.values() {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|x| format!("{}/{}", x.port, x.protocol))
            .collect();
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            p.key(),
            p.ip.clone(),
            p.node.clone(),
            ports.join(","),
            labels.join(","),
        ]);
    }
    print!("{t}");
    Ok(())
}

/// One probe result as a line of text.
fn probe_line(r: &ProbeResult) -> String {
    let verdict = if r.connected {
        "connected"
    } else {
        "NOT connected"
    };
    let reply = r
        .reply
        .as_deref()
        .map(|s| format!(", reply from {s}"))
        .unwrap_or_default();
    let err = r
        .error
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    format!(
        "{} -> {} ({}:{} {}): {verdict}{reply}{err}",
        r.from, r.to, r.ip, r.port, r.protocol
    )
}

fn services(lab: &Lab, as_json: bool) -> anyhow::Result<()> {
    let st = lab.state()?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&st.services)?);
        return Ok(());
    }
    let mut t = Table::new(&["SERVICE", "TYPE", "CLUSTER-IP", "PORTS", "SELECTOR"]);
    for (key, s) in &st.services {
        let spec = &s.object["spec"];
        let ports: Vec<String> = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let node_port = p["nodePort"]
                    .as_u64()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default();
                format!(
                    "{}{node_port}/{}",
                    p["port"],
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        let selector: Vec<String> = spec["selector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        t.row(vec![
            key.clone(),
            spec["type"].as_str().unwrap_or("ClusterIP").to_string(),
            s.cluster_ip.clone().unwrap_or_else(|| "None".into()),
            ports.join(","),
            selector.join(","),
        ]);
    }
    print!("{t}");
    Ok(())
}
