//! `plexus lab ...`: run a cluster of network namespaces on this machine.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Subcommand;
use plexus_lab::{
    probe::{format_matrix, results_grid, Protocol},
    Lab,
};
use serde_json::json;

use crate::table::Table;

/// Lab commands.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Create the lab from Kubernetes manifests (Namespace, Pod, Deployment).
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
    /// Probe DST (`ns/pod` or an IP) from pod SRC (`ns/pod`).
    Probe {
        /// Source pod, `ns/pod`.
        src: String,
        /// Destination: `ns/pod` or an IP address.
        dst: String,
        /// Destination port.
        #[arg(long)]
        port: u16,
        /// TCP or UDP.
        #[arg(long, default_value = "TCP")]
        protocol: Protocol,
        /// Give up after this long.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
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
            }
        }
        LabCmd::Down => {
            let r = lab.down()?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "lab {} is down: stopped {} processes, deleted {} network namespaces, removed {} pin directories",
                    lab.name(),
                    r.processes,
                    r.namespaces,
                    r.pins
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
        } => {
            let r = lab.probe(
                src,
                dst,
                *port,
                *protocol,
                Duration::from_millis(*timeout_ms),
            )?;
            if as_json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
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
                println!(
                    "{} -> {} ({}:{} {}): {verdict}{reply}{err}",
                    r.from, r.to, r.ip, r.port, r.protocol
                );
            }
            if !r.connected {
                std::process::exit(2);
            }
        }
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
