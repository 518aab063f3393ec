//! `plexus policy ...` and `plexus identity list`: what policy is in force, why traffic is
//! allowed or dropped, and which identities exist.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use plexus_api::{Request, Response};

use crate::{table::Table, Cli};

/// Policy commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Policies in force, each rule with its origin (kind, namespace, name, rule path).
    Get,
    /// Check policy manifests without applying them (errors name the object and the field).
    Validate {
        /// Manifest files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// The verdict for traffic from SRC to DST, and the rule or rules that decide it.
    Trace {
        /// Source: `ns/pod` or an IP.
        src: String,
        /// Destination: `ns/pod` or an IP.
        dst: String,
        /// Destination port.
        #[arg(long)]
        port: u16,
        /// TCP, UDP or SCTP.
        #[arg(long, default_value = "TCP")]
        protocol: String,
    },
}

/// Runs a policy command.
pub fn run(cli: &Cli, cmd: &PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Validate { files } => {
            let objects = plexus_lab::manifest::load_paths(files)?;
            for o in &objects {
                let note = match &o.object {
                    plexus_lab::manifest::Object::Policy(p) if p.parsed.has_l7() => {
                        " (has L7 rules: enforced at L4 for now)"
                    }
                    _ => "",
                };
                println!("{} valid{note}", o.object);
            }
            Ok(())
        }
        PolicyCmd::Get => {
            let Response::Policies { policies } = crate::agent(cli, Request::PolicyGet)? else {
                bail!("unexpected answer from agent")
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&policies)?);
                return Ok(());
            }
            if policies.is_empty() {
                println!("no policy in force: all traffic is allowed");
            }
            for p in policies {
                let id = match &p.namespace {
                    Some(ns) => format!("{} {ns}/{}", p.kind, p.name),
                    None => format!("{} {}", p.kind, p.name),
                };
                println!("{id}");
                for e in &p.enforces {
                    println!("  {e}");
                }
                let mut t = Table::new(&["RULE", "WHAT", "APPLIES TO"]);
                for r in &p.rules {
                    let l7 = if r.l7_at_l4 {
                        " [L7 rules enforced at L4 for now]"
                    } else {
                        ""
                    };
                    t.row(vec![
                        r.rule.clone(),
                        format!("{}{l7}", r.summary),
                        r.endpoints.join(", "),
                    ]);
                }
                print!("{}", t.indent(2));
            }
            Ok(())
        }
        PolicyCmd::Trace {
            src,
            dst,
            port,
            protocol,
        } => {
            let req = Request::PolicyTrace {
                from: src.clone(),
                to: dst.clone(),
                port: *port,
                protocol: protocol.clone(),
            };
            let Response::Trace(t) = crate::agent(cli, req)? else {
                bail!("unexpected answer from agent")
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
                return Ok(());
            }
            println!("{} -> {} {protocol}/{port}", t.from, t.to);
            for s in &t.steps {
                println!("  {}: {}", s.stage, s.verdict);
                for r in &s.rules {
                    println!("    {r}");
                }
            }
            match &t.drop_reason {
                Some(r) => println!("Verdict: DENIED ({r})"),
                None => println!("Verdict: ALLOWED"),
            }
            Ok(())
        }
    }
}

/// `plexus identity list`.
pub fn identity_list(cli: &Cli) -> anyhow::Result<()> {
    let Response::Identities { identities } = crate::agent(cli, Request::IdentityList)? else {
        bail!("unexpected answer from agent")
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&identities)?);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "LABELS", "ENDPOINTS"]);
    for i in identities {
        t.row(vec![
            i.id.to_string(),
            i.labels.join(" "),
            i.endpoints.join(", "),
        ]);
    }
    print!("{t}");
    Ok(())
}
