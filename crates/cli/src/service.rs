//! `plexus service list`: every frontend in force with its backends and their state.

use anyhow::bail;
use plexus_api::{Request, Response};

use crate::{table::Table, Cli};

/// `service` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCmd {
    /// Frontends (ClusterIP, NodePort, LoadBalancer, external IPs) → backends with state.
    List,
}

/// Runs a `service` command.
pub fn run(cli: &Cli, cmd: &ServiceCmd) -> anyhow::Result<()> {
    let ServiceCmd::List = cmd;
    let Response::Services { services } = crate::agent(cli, Request::ServiceList)? else {
        bail!("unexpected answer from agent")
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "FRONTEND", "TYPE", "SERVICE", "BACKENDS"]);
    for s in services {
        let backends = if s.backends.is_empty() {
            "(none: new connections refused)".to_string()
        } else {
            s.backends
                .iter()
                .map(|b| format!("{} ({})", b.address, b.state))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut kind = s.kind.clone();
        if s.algorithm != "random" {
            kind.push_str(&format!(" {}", s.algorithm));
        }
        if let Some(a) = s.affinity_seconds {
            kind.push_str(&format!(" affinity={a}s"));
        }
        let port = if s.port_name.is_empty() {
            String::new()
        } else {
            format!(":{}", s.port_name)
        };
        t.row(vec![
            s.id.to_string(),
            s.frontend,
            kind,
            format!("{}/{}{port}", s.namespace, s.name),
            backends,
        ]);
    }
    print!("{t}");
    Ok(())
}
