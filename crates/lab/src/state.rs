//! The lab's record of what it created: nodes, namespaces, pods, and the Services, EndpointSlices
//! and LoadBalancer pools in force, saved as JSON beside the
//! lab's other files so every `plexus lab` command (and `lab down` after a crash) can find them.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::LabError;

/// One node: a network namespace running an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    /// Node name (unique on the machine: it keys the BPF pin directory).
    pub name: String,
    /// Named network namespace of the node.
    pub netns: String,
    /// The node's pod CIDR.
    pub pod_cidr: String,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// PID of the agent.
    pub agent_pid: i32,
    /// The node's cgroup (v2): the agent and every pod process run in it, and socket-level load
    /// balancing is attached to it. `None` in the records of older labs.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// One container port a pod serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortState {
    /// Port name, if any.
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: String,
}

/// One pod: a network namespace wired by the CNI plugin, running the workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodState {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Declared container ports.
    pub ports: Vec<PortState>,
    /// Owning Deployment, if any.
    pub owner: Option<String>,
    /// The node it runs on.
    pub node: String,
    /// Named network namespace of the pod.
    pub netns: String,
    /// CNI container id.
    pub container_id: String,
    /// The pod's IPv4 address.
    pub ip: String,
    /// PID of the workload, if it serves any port.
    pub workload_pid: Option<i32>,
}

impl PodState {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything one lab created.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabState {
    /// Lab name.
    pub name: String,
    /// Nodes.
    pub nodes: Vec<NodeState>,
    /// Namespaces and their labels (including `kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods by `ns/name`.
    pub pods: BTreeMap<String, PodState>,
    /// Deployments (`ns/name`) and their desired replicas.
    pub deployments: BTreeMap<String, u32>,
    /// Counter for unique container ids.
    pub next_container: u64,
    /// Policies in force, by `Kind ns/name`, as written.
    #[serde(default)]
    pub policies: BTreeMap<String, serde_json::Value>,
    /// Services by `ns/name`, as sent to the agent (after address allocation).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// EndpointSlices by `ns/name`, as written.
    #[serde(default)]
    pub endpoint_slices: BTreeMap<String, serde_json::Value>,
    /// `CiliumLoadBalancerIPPool`s by name, as written.
    #[serde(default)]
    pub lb_pools: BTreeMap<String, serde_json::Value>,
}

/// One Service in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceState {
    /// Its cluster IP; `None` for a headless or ExternalName Service.
    pub cluster_ip: Option<String>,
    /// The object as sent to the agent: `spec.clusterIP(s)`, `ipFamilies` and node ports filled
    /// in, as the API server would.
    pub object: serde_json::Value,
}

impl ServiceState {
    /// The node ports the Service holds: `(nodePort, protocol)`.
    pub fn node_ports(&self) -> Vec<(u16, String)> {
        self.object
            .pointer("/spec/ports")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.get("nodePort")?.as_u64()?).ok()?;
                let proto = p.get("protocol").and_then(|v| v.as_str()).unwrap_or("TCP");
                Some((port, proto.to_string()))
            })
            .collect()
    }
}

impl LabState {
    /// Loads the state file.
    pub fn load(path: &Path) -> Result<Self, LabError> {
        let data = fs::read(path).map_err(|e| LabError::io(path, e))?;
        serde_json::from_slice(&data)
            .map_err(|e| LabError::State(format!("{}: {e}", path.display())))
    }

    /// Saves atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), LabError> {
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(|e| LabError::State(e.to_string()))?;
        let mut f = fs::File::create(&tmp).map_err(|e| LabError::io(&tmp, e))?;
        f.write_all(&data).map_err(|e| LabError::io(&tmp, e))?;
        f.sync_all().map_err(|e| LabError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))
    }

    /// Pods sorted by `ns/name`.
    pub fn pod_list(&self) -> Vec<&PodState> {
        self.pods.values().collect()
    }
}
