//! `plexus-cni`: the CNI plugin (spec 1.1: ADD, DEL, CHECK, STATUS, GC, VERSION) that container
//! runtimes exec. It asks the node agent for an address, creates the pod's veth pair, configures
//! the pod side, and hands the host side to the agent, which programs the datapath.

mod cmd;
mod config;
mod error;

use std::io::Read;

use crate::{config::Env, error::CniError};

fn main() {
    let mut stdin = Vec::new();
    let out = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&stdin),
        Err(e) => Err(CniError::decoding(format!("reading stdin: {e}"))),
    };
    match out {
        Ok(Some(json)) => println!("{json}"),
        Ok(None) => {}
        Err(e) => {
            println!("{}", e.to_json());
            std::process::exit(1);
        }
    }
}

fn run(stdin: &[u8]) -> Result<Option<String>, CniError> {
    let env = Env::from_process()?;
    match env.command.as_str() {
        "VERSION" => Ok(Some(cmd::version(stdin))),
        "ADD" => cmd::add(&env, &config::NetConf::parse(stdin)?).map(Some),
        "DEL" => cmd::del(&env, &config::NetConf::parse(stdin)?).map(|()| None),
        "CHECK" => cmd::check(&env, &config::NetConf::parse(stdin)?).map(|()| None),
        "STATUS" => cmd::status(&config::NetConf::parse(stdin)?).map(|()| None),
        "GC" => cmd::gc(&config::NetConf::parse(stdin)?).map(|()| None),
        other => Err(CniError::invalid_env(format!(
            "CNI_COMMAND: unknown command {other:?}"
        ))),
    }
}
