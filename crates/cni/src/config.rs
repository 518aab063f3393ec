//! The plugin's inputs: CNI_* environment variables and the network configuration on stdin.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::CniError;

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 6] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "1.1"];

/// The CNI_* environment.
#[derive(Debug, Clone)]
pub struct Env {
    /// CNI_COMMAND.
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// K8S_POD_NAMESPACE from CNI_ARGS.
    pub pod_namespace: String,
    /// K8S_POD_NAME from CNI_ARGS.
    pub pod_name: String,
}

impl Env {
    /// Reads the environment; which variables are required depends on the command.
    pub fn from_process() -> Result<Self, CniError> {
        let get = |k: &str| std::env::var(k).unwrap_or_default();
        let command = get("CNI_COMMAND");
        if command.is_empty() {
            return Err(CniError::invalid_env("CNI_COMMAND is not set"));
        }
        let env = Env {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            pod_namespace: String::new(),
            pod_name: String::new(),
        };
        let mut env = env;
        for kv in get("CNI_ARGS").split(';') {
            match kv.split_once('=') {
                Some(("K8S_POD_NAMESPACE", v)) => env.pod_namespace = v.to_string(),
                Some(("K8S_POD_NAME", v)) => env.pod_name = v.to_string(),
                _ => {}
            }
        }
        let needs = |vars: &[&str]| -> Result<(), CniError> {
            for v in vars {
                let val = match *v {
                    "CNI_CONTAINERID" => &env.container_id,
                    "CNI_NETNS" => &env.netns,
                    _ => &env.ifname,
                };
                if val.is_empty() {
                    return Err(CniError::invalid_env(format!(
                        "{v} is required for {}",
                        env.command
                    )));
                }
            }
            Ok(())
        };
        match env.command.as_str() {
            "ADD" | "CHECK" => needs(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?,
            "DEL" => needs(&["CNI_CONTAINERID", "CNI_IFNAME"])?,
            _ => {}
        }
        if !env.ifname.is_empty() && (env.ifname.len() > 15 || env.ifname.contains(['/', ' ', ':']))
        {
            return Err(CniError::invalid_env(format!(
                "CNI_IFNAME {:?} is not a valid interface name",
                env.ifname
            )));
        }
        Ok(env)
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, Deserialize)]
pub struct ValidAttachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The network configuration on stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// cniVersion.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// The node agent's API socket.
    #[serde(rename = "agentSocket", default = "default_socket")]
    pub agent_socket: PathBuf,
    /// MTU of the pod interface.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// GC: attachments to keep.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Vec<ValidAttachment>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/plexus/agent.sock")
}

fn default_mtu() -> u32 {
    1500
}

impl NetConf {
    /// Parses and checks the configuration.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin)
            .map_err(|e| CniError::decoding(format!("network configuration: {e}")))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::incompatible_version(format!(
                "cniVersion {:?} is not supported; supported: {}",
                conf.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        if conf.name.is_empty() {
            return Err(CniError::invalid_config(
                "field name: the network name must not be empty",
            ));
        }
        if !(576..=65535).contains(&conf.mtu) {
            return Err(CniError::invalid_config(format!(
                "field mtu: {} is out of range 576-65535",
                conf.mtu
            )));
        }
        Ok(conf)
    }

    /// Whether results use the pre-1.0 format (ips carry a "version").
    pub fn legacy_result(&self) -> bool {
        self.cni_version.starts_with("0.")
    }
}
