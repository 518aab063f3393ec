//! A Plexus lab for a benchmark, driven through the `plexus` CLI and taken down when its guard
//! drops, and the run's scratch directory.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use plexus_netdev::netns_path;

use crate::{process::run_cmd, BenchError};

/// Two pods, `bench/client` and `bench/server`. Each declares port 80 so the lab starts its
/// workload; the benchmarks' servers use other ports.
pub const CLIENT_SERVER_MANIFEST: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: bench
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: bench
  labels:
    app: bench-client
spec:
  containers:
  - name: client
    image: plexus/workload
    ports:
    - containerPort: 80
      protocol: TCP
---
apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: bench
  labels:
    app: bench-server
spec:
  containers:
  - name: server
    image: plexus/workload
    ports:
    - containerPort: 80
      protocol: TCP
";

/// A running Plexus lab; `plexus --lab NAME lab down` when dropped.
pub struct PlexusLab {
    plexus: PathBuf,
    name: String,
}

/// The lab's one node, as the benchmarks need it.
#[derive(Debug, Clone)]
pub struct LabNode {
    /// The node's name (`<lab>-node1`).
    pub name: String,
    /// Path of the node's network namespace, where its agent runs.
    pub netns: PathBuf,
    /// The agent's process id.
    pub agent_pid: i32,
    /// The node's BPF pin directory (`/sys/fs/bpf/plexus/<node>`).
    pub pin_dir: PathBuf,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The cgroup v2 directory whose processes the node's socket programs serve, when the lab
    /// has one (`cgroup` of the node in the lab's state, else `plx-<lab>-node1` under the
    /// unified hierarchy if that exists).
    pub cgroup: Option<PathBuf>,
}

impl PlexusLab {
    /// `plexus --lab NAME lab up -f MANIFEST` with `manifest` written into `tmp`. `name` is
    /// cut to 12 characters (lowercase letters and digits).
    pub fn up(plexus: &Path, name: &str, manifest: &str, tmp: &Path) -> Result<Self, BenchError> {
        let mut name = name.to_string();
        name.truncate(12);
        let path = tmp.join(format!("{name}.yaml"));
        fs::write(&path, manifest)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        // The guard exists before `lab up`, so a half-built lab is taken down too.
        let guard = Self {
            plexus: plexus.to_path_buf(),
            name,
        };
        eprintln!(
            "  plexus lab {} (if this run is killed: plexus --lab {} lab down)",
            guard.name, guard.name
        );
        let mut up = guard.cmd();
        up.args(["lab", "up", "-f"]).arg(&path);
        run_cmd(up)?;
        Ok(guard)
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.plexus);
        c.arg("--lab").arg(&self.name);
        c
    }

    fn error(&self, detail: impl Into<String>) -> BenchError {
        BenchError::Lab {
            lab: self.name.clone(),
            detail: detail.into(),
        }
    }

    /// Network namespace path and IPv4 address of pod `key` (`ns/name`), from
    /// `plexus lab pods --json`.
    pub fn pod(&self, key: &str) -> Result<(PathBuf, Ipv4Addr), BenchError> {
        let mut pods = self.cmd();
        pods.args(["lab", "pods", "--json"]);
        let pods: serde_json::Value = serde_json::from_str(&run_cmd(pods)?)
            .map_err(|e| self.error(format!("reading `plexus lab pods --json`: {e}")))?;
        let p = &pods[key];
        let netns = p["netns"]
            .as_str()
            .ok_or_else(|| self.error(format!("pod {key} has no netns in `lab pods --json`")))?;
        let ip = p["ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                self.error(format!(
                    "pod {key} has no IPv4 address in `lab pods --json`"
                ))
            })?;
        Ok((netns_path(netns), ip))
    }

    /// The lab's node: where its agent runs and where its maps are pinned.
    pub fn node(&self) -> Result<LabNode, BenchError> {
        let bin_dir = self
            .plexus
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let state = plexus_lab::Lab::new(&self.name, bin_dir)
            .and_then(|l| l.state())
            .map_err(|e| self.error(format!("reading its state: {e}")))?;
        let n = state
            .nodes
            .first()
            .ok_or_else(|| self.error("no node in its state"))?;
        Ok(LabNode {
            name: n.name.clone(),
            netns: netns_path(&n.netns),
            agent_pid: n.agent_pid,
            pin_dir: Path::new(plexus_loader::BPF_ROOT).join(&n.name),
            socket: n.socket.clone(),
            cgroup: n.cgroup.clone(),
        })
    }
}

impl Drop for PlexusLab {
    fn drop(&mut self) {
        let mut down = self.cmd();
        down.args(["lab", "down"]);
        if let Err(e) = run_cmd(down) {
            eprintln!(
                "warning: {e} (retry with `{} --lab {} lab down`)",
                self.plexus.display(),
                self.name
            );
        }
    }
}

/// This run's scratch directory (`$TMPDIR/plexus-<tag>-<pid>`), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it afresh.
    pub fn create(tag: &str) -> Result<Self, BenchError> {
        let dir = std::env::temp_dir().join(format!("plexus-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
