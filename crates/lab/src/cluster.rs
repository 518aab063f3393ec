//! The lab's operations: `up`, `apply`, `delete`, `down`, `probe` and `matrix`.
//!
//! Every change is computed in full from the manifests before anything is touched, so bad input
//! leaves the running lab exactly as it was.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    net::IpAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use plexus_api::{call, ObjectRef, Request, Response};
use plexus_netdev::{netns_add, netns_del, netns_list, netns_path, netns_pids};
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    manifest::{self, Loaded, Object},
    probe::{self, ProbeJob, ProbeProcess, ProbeResult, Protocol, SocketLb},
    process, services,
    state::{LabState, NodeState, PodState, PortState, ServiceState},
    LabError,
};

/// Where labs keep their files.
pub const LAB_ROOT: &str = "/run/plexus/lab";
/// Root of BPF pins (one directory per node).
pub const BPF_ROOT: &str = "/sys/fs/bpf/plexus";
/// The single node's pod CIDR.
pub const POD_CIDR: &str = "10.244.0.0/24";

/// A lab on this machine, by name.
pub struct Lab {
    name: String,
    root: PathBuf,
    bin_dir: PathBuf,
}

/// A pod as the manifests want it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DesiredPod {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    ports: Vec<PortState>,
    owner: Option<String>,
}

impl DesiredPod {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What `apply` or `delete` changed.
#[derive(Debug, Default, Serialize)]
pub struct Changes {
    /// Namespaces created or relabelled.
    pub namespaces: Vec<String>,
    /// Pods created.
    pub created: Vec<String>,
    /// Pods deleted.
    pub deleted: Vec<String>,
    /// Pods whose labels changed.
    pub relabelled: Vec<String>,
    /// Policies applied or deleted (`Kind ns/name`).
    pub policies: Vec<String>,
    /// Services, EndpointSlices and LoadBalancer pools applied or deleted (`Kind ns/name`, or
    /// `Kind name` for a pool).
    pub services: Vec<String>,
}

/// What `down` removed.
#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    /// Processes stopped.
    pub processes: usize,
    /// Network namespaces deleted.
    pub namespaces: usize,
    /// Pin directories removed.
    pub pins: usize,
    /// Cgroup directories removed.
    pub cgroups: usize,
}

impl Lab {
    /// A handle on lab `name`, whose helper binaries (`plexus-agent`, `plexus-cni`,
    /// `plexus-workload`) are in `bin_dir`.
    pub fn new(name: &str, bin_dir: PathBuf) -> Result<Self, LabError> {
        if name.is_empty()
            || name.len() > 20
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(LabError::Invalid(format!(
                "lab name {name:?}: use 1-20 lowercase letters and digits"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            root: PathBuf::from(LAB_ROOT).join(name),
            bin_dir,
        })
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Prefix of every network namespace this lab creates.
    fn netns_prefix(&self) -> String {
        format!("plx-{}-", self.name)
    }

    fn node_name(&self) -> String {
        format!("{}-node1", self.name)
    }

    /// Whether the lab is up.
    pub fn is_up(&self) -> bool {
        self.state_path().exists()
    }

    /// The lab's state.
    pub fn state(&self) -> Result<LabState, LabError> {
        if !self.is_up() {
            return Err(LabError::NotUp(self.name.clone()));
        }
        LabState::load(&self.state_path())
    }

    /// Serialises lab commands on this lab (an exclusive lock held until dropped).
    fn lock(&self) -> Result<fs::File, LabError> {
        let dir = Path::new(LAB_ROOT);
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        let path = dir.join(format!("{}.lock", self.name));
        let f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LabError::io(&path, e))?;
        // SAFETY: flock on an fd we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(LabError::io(&path, std::io::Error::last_os_error()));
        }
        Ok(f)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Creates the lab: one node with its agent, then everything in the manifests.
    pub fn up(&self, paths: &[PathBuf]) -> Result<Changes, LabError> {
        let _lock = self.lock()?;
        if self.is_up() {
            return Err(LabError::AlreadyUp(self.name.clone()));
        }
        let objects = manifest::load_paths(paths)?;
        for bin in ["plexus-agent", "plexus-cni", "plexus-workload"] {
            if !self.bin(bin).exists() {
                return Err(LabError::Invalid(format!(
                    "{} not found (build with `cargo build`)",
                    self.bin(bin).display()
                )));
            }
        }
        // Validate against an empty lab before creating anything.
        let mut st = LabState {
            name: self.name.clone(),
            ..Default::default()
        };
        st.namespaces
            .insert("default".into(), ns_labels("default", &BTreeMap::new()));
        plan(&st, &objects)?;

        fs::create_dir_all(self.root.join("logs")).map_err(|e| LabError::io(&self.root, e))?;
        let res = self.start_node(&mut st).and_then(|()| {
            st.save(&self.state_path())?;
            self.apply_objects(&mut st, &objects)
        });
        if let Err(e) = res {
            // Leave nothing half-built behind.
            let _ = self.teardown();
            return Err(e);
        }
        res
    }

    fn start_node(&self, st: &mut LabState) -> Result<(), LabError> {
        let netns_name = format!("{}node1", self.netns_prefix());
        // The node's pods (and agent) run in a cgroup of their own, named like the node's
        // namespace: socket-level load balancing attaches there, never to a shared cgroup.
        let cgroup = process::cgroup2_mount()?.join(&netns_name);
        fs::create_dir_all(&cgroup).map_err(|e| LabError::io(&cgroup, e))?;
        let node_ns = netns_add(&netns_name)?;
        // Pod-to-pod never needs forwarding (the datapath redirects), but traffic between pods
        // and hosts beyond the node is routed by the node's stack.
        plexus_netdev::in_netns(&node_ns, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .map_err(|e| LabError::io(Path::new("/proc/sys/net/ipv4/ip_forward"), e))?;
        let dir = self.root.join("node1");
        fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
        let mut node = NodeState {
            name: self.node_name(),
            netns: netns_name,
            pod_cidr: POD_CIDR.into(),
            socket: dir.join("agent.sock"),
            state_dir: dir.join("state"),
            agent_pid: 0,
            cgroup: Some(cgroup),
        };
        node.agent_pid = self.spawn_agent(&node)?;
        st.nodes.push(node);
        Ok(())
    }

    /// Starts a node's agent and waits until it answers.
    fn spawn_agent(&self, node: &NodeState) -> Result<i32, LabError> {
        let mut args = vec![
            "--node".to_string(),
            node.name.clone(),
            "--pod-cidr".into(),
            node.pod_cidr.clone(),
            "--socket".into(),
            node.socket.display().to_string(),
            "--state-dir".into(),
            node.state_dir.display().to_string(),
        ];
        if let Some(cgroup) = &node.cgroup {
            args.extend(["--cgroup".to_string(), cgroup.display().to_string()]);
        }
        let log = self.root.join("logs").join("agent-node1.log");
        let pid = process::spawn_in_netns(
            &netns_path(&node.netns),
            &self.bin("plexus-agent"),
            &args,
            &log,
            node.cgroup.as_deref(),
        )?;
        wait_agent(&node.name, &node.socket, pid, &log)?;
        Ok(pid)
    }

    /// Restarts the node agents: gracefully (SIGTERM), or as a crash (SIGKILL) when `kill`.
    /// The datapath stays pinned throughout; the new agent adopts it.
    pub fn restart_agents(&self, kill: bool) -> Result<Vec<i32>, LabError> {
        let _lock = self.lock()?;
        let mut st = self.state()?;
        let mut pids = Vec::new();
        for i in 0..st.nodes.len() {
            let old = st.nodes[i].agent_pid;
            if kill {
                // SAFETY: kill(2) on the agent we started.
                unsafe { libc::kill(old, libc::SIGKILL) };
            }
            process::stop(old, Duration::from_secs(5));
            let pid = self.spawn_agent(&st.nodes[i])?;
            st.nodes[i].agent_pid = pid;
            st.save(&self.state_path())?;
            pids.push(pid);
        }
        Ok(pids)
    }

    /// Applies manifests to the running lab (create or replace).
    pub fn apply(&self, paths: &[PathBuf]) -> Result<Changes, LabError> {
        let _lock = self.lock()?;
        let mut st = self.state()?;
        let objects = manifest::load_paths(paths)?;
        self.apply_objects(&mut st, &objects)
    }

    fn apply_objects(&self, st: &mut LabState, objects: &[Loaded]) -> Result<Changes, LabError> {
        let p = plan(st, objects)?;
        let node = self.node(st)?.clone();
        // The agent checks the policies and services too; it refuses before anything changes.
        let lb_objects = p.lb_objects();
        if !p.policies.is_empty() || !lb_objects.is_empty() {
            agent_call(
                &node,
                &Request::ValidateObjects {
                    objects: p
                        .policies
                        .values()
                        .cloned()
                        .chain(lb_objects.iter().cloned())
                        .collect(),
                },
            )?;
        }
        let mut changes = Changes::default();
        // Namespaces and pods reach the agent before their pods are wired, so a new pod starts
        // with its real identity and policy.
        let mut objs: Vec<serde_json::Value> = p
            .namespaces
            .iter()
            .map(|(ns, labels)| namespace_json(ns, labels))
            .collect();
        objs.extend(p.pods.iter().map(pod_json));
        if !objs.is_empty() {
            agent_call(&node, &Request::ApplyObjects { objects: objs })?;
        }
        for (ns, labels) in p.namespaces {
            st.namespaces.insert(ns.clone(), labels);
            changes.namespaces.push(ns);
        }
        for (key, replicas) in p.deployments {
            st.deployments.insert(key, replicas);
        }
        for key in p.delete {
            self.delete_pod(st, &key, true)?;
            changes.deleted.push(key);
        }
        for want in p.pods {
            let key = want.key();
            match st.pods.get_mut(&key) {
                Some(have) if have.ports == want.ports => {
                    if have.labels != want.labels || have.owner != want.owner {
                        have.labels = want.labels.clone();
                        have.owner = want.owner.clone();
                        changes.relabelled.push(key);
                    }
                }
                Some(_) => {
                    // New ports mean a new workload: re-create the pod, as a new Pod object would be.
                    self.delete_pod(st, &key, false)?;
                    self.create_pod(st, &want)?;
                    changes.created.push(key);
                }
                None => {
                    self.create_pod(st, &want)?;
                    changes.created.push(key);
                }
            }
            st.save(&self.state_path())?;
        }
        if !p.policies.is_empty() {
            agent_call(
                &node,
                &Request::ApplyObjects {
                    objects: p.policies.values().cloned().collect(),
                },
            )?;
            for (k, v) in p.policies {
                changes.policies.push(k.clone());
                st.policies.insert(k, v);
            }
        }
        // Services, their slices and pools once their pods exist (the agent derives the slices
        // of selector Services from the pods it knows).
        if !lb_objects.is_empty() {
            agent_call(
                &node,
                &Request::ApplyObjects {
                    objects: lb_objects,
                },
            )?;
            for (k, v) in p.services {
                changes.services.push(format!("Service {k}"));
                st.services.insert(k, v);
            }
            for (k, v) in p.slices {
                changes.services.push(format!("EndpointSlice {k}"));
                st.endpoint_slices.insert(k, v);
            }
            for (k, v) in p.pools {
                changes
                    .services
                    .push(format!("{} {k}", manifest::LB_POOL_KIND));
                st.lb_pools.insert(k, v);
            }
        }
        st.save(&self.state_path())?;
        Ok(changes)
    }

    /// Deletes the objects named in the manifests.
    pub fn delete(&self, paths: &[PathBuf]) -> Result<Changes, LabError> {
        let _lock = self.lock()?;
        let mut st = self.state()?;
        let objects = manifest::load_paths(paths)?;
        // Resolve everything first: an unknown object aborts before any change.
        let mut pods: BTreeSet<String> = BTreeSet::new();
        let mut namespaces = Vec::new();
        let mut deployments = Vec::new();
        let mut policies: Vec<(String, ObjectRef)> = Vec::new();
        // Services, EndpointSlices and pools: (state key, reference).
        let mut lb: Vec<(String, ObjectRef)> = Vec::new();
        let mut tags: BTreeSet<String> = BTreeSet::new();
        for l in &objects {
            let ns = l.object.namespace().unwrap_or_default();
            let name = l.object.name();
            match &l.object {
                Object::Namespace(_) => {
                    if !st.namespaces.contains_key(&name) {
                        return Err(LabError::Invalid(format!(
                            "{}: Namespace {name} not found",
                            l.source
                        )));
                    }
                    pods.extend(
                        st.pods
                            .values()
                            .filter(|p| p.namespace == name)
                            .map(PodState::key),
                    );
                    namespaces.push(name);
                }
                Object::Pod(_) => {
                    let key = format!("{ns}/{name}");
                    if !st.pods.contains_key(&key) {
                        return Err(LabError::Invalid(format!(
                            "{}: Pod {key} not found",
                            l.source
                        )));
                    }
                    pods.insert(key);
                }
                Object::Policy(_) => {
                    let key = l.object.to_string();
                    if !st.policies.contains_key(&key) {
                        return Err(LabError::Invalid(format!("{}: {key} not found", l.source)));
                    }
                    let namespace = l.object.namespace();
                    policies.push((
                        key,
                        ObjectRef {
                            kind: l.object.kind().to_string(),
                            namespace,
                            name: name.clone(),
                        },
                    ));
                }
                Object::Service(_) | Object::EndpointSlice(_) | Object::LbPool(_) => {
                    let kind = l.object.kind();
                    let (key, found) = match &l.object {
                        Object::Service(_) => {
                            let key = format!("{ns}/{name}");
                            let found = st.services.contains_key(&key);
                            (key, found)
                        }
                        Object::EndpointSlice(_) => {
                            let key = format!("{ns}/{name}");
                            let found = st.endpoint_slices.contains_key(&key);
                            (key, found)
                        }
                        _ => (name.clone(), st.lb_pools.contains_key(&name)),
                    };
                    if !found {
                        return Err(LabError::Invalid(format!(
                            "{}: {kind} {key} not found",
                            l.source
                        )));
                    }
                    tags.insert(format!("{kind} {key}"));
                    lb.push((
                        format!("{kind} {key}"),
                        ObjectRef {
                            kind: kind.to_string(),
                            namespace: l.object.namespace(),
                            name: name.clone(),
                        },
                    ));
                }
                Object::Deployment(_) => {
                    let key = format!("{ns}/{name}");
                    if !st.deployments.contains_key(&key) {
                        return Err(LabError::Invalid(format!(
                            "{}: Deployment {key} not found",
                            l.source
                        )));
                    }
                    pods.extend(
                        st.pods
                            .values()
                            .filter(|p| p.namespace == ns && p.owner.as_deref() == Some(&name))
                            .map(PodState::key),
                    );
                    deployments.push(key);
                }
            }
        }
        // A deleted namespace takes its Services and EndpointSlices with it.
        for ns in &namespaces {
            let prefix = format!("{ns}/");
            for (kind, keys) in [
                ("Service", st.services.keys().collect::<Vec<_>>()),
                ("EndpointSlice", st.endpoint_slices.keys().collect()),
            ] {
                for key in keys.into_iter().filter(|k| k.starts_with(&prefix)) {
                    let tag = format!("{kind} {key}");
                    if !tags.insert(tag.clone()) {
                        continue;
                    }
                    lb.push((
                        tag,
                        ObjectRef {
                            kind: kind.to_string(),
                            namespace: Some(ns.clone()),
                            name: key[prefix.len()..].to_string(),
                        },
                    ));
                }
            }
        }
        let mut changes = Changes::default();
        let node = self.node(&st)?.clone();
        if !lb.is_empty() {
            agent_call(
                &node,
                &Request::DeleteObjects {
                    refs: lb.iter().map(|(_, r)| r.clone()).collect(),
                },
            )?;
            for (tag, r) in lb {
                let key = match &r.namespace {
                    Some(ns) => format!("{ns}/{}", r.name),
                    None => r.name.clone(),
                };
                match r.kind.as_str() {
                    "Service" => {
                        st.services.remove(&key);
                    }
                    "EndpointSlice" => {
                        st.endpoint_slices.remove(&key);
                    }
                    _ => {
                        st.lb_pools.remove(&key);
                    }
                }
                changes.services.push(tag);
            }
            st.save(&self.state_path())?;
        }
        if !policies.is_empty() {
            agent_call(
                &node,
                &Request::DeleteObjects {
                    refs: policies.iter().map(|(_, r)| r.clone()).collect(),
                },
            )?;
            for (k, _) in policies {
                st.policies.remove(&k);
                changes.policies.push(k);
            }
        }
        for key in pods {
            self.delete_pod(&mut st, &key, true)?;
            st.save(&self.state_path())?;
            changes.deleted.push(key);
        }
        for d in deployments {
            st.deployments.remove(&d);
        }
        if !namespaces.is_empty() {
            let refs = namespaces
                .iter()
                .map(|n| ObjectRef {
                    kind: "Namespace".into(),
                    namespace: None,
                    name: n.clone(),
                })
                .collect();
            agent_call(&node, &Request::DeleteObjects { refs })?;
        }
        for ns in namespaces {
            st.namespaces.remove(&ns);
            st.deployments
                .retain(|k, _| !k.starts_with(&format!("{ns}/")));
            changes.namespaces.push(ns);
        }
        st.save(&self.state_path())?;
        Ok(changes)
    }

    fn node<'a>(&self, st: &'a LabState) -> Result<&'a NodeState, LabError> {
        st.nodes
            .first()
            .ok_or_else(|| LabError::State("lab has no node".into()))
    }

    fn cni_conf(&self, node: &NodeState) -> String {
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "plexus",
            "type": "plexus-cni",
            "agentSocket": node.socket,
        })
        .to_string()
    }

    fn cni(
        &self,
        node: &NodeState,
        command: &'static str,
        pod: &PodState,
    ) -> Result<String, LabError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns_path(&node.netns).display()))
            .arg("--")
            .arg(self.bin("plexus-cni"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", netns_path(&pod.netns))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.bin_dir)
            .env(
                "CNI_ARGS",
                format!(
                    "K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                    pod.namespace, pod.name
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let err = |detail: String| LabError::Cni {
            command,
            pod: pod.key(),
            detail,
        };
        let mut child = cmd.spawn().map_err(|e| err(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.cni_conf(node).as_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(err(format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(stdout)
    }

    fn create_pod(&self, st: &mut LabState, want: &DesiredPod) -> Result<(), LabError> {
        let node = self.node(st)?.clone();
        st.next_container += 1;
        let mut pod = PodState {
            namespace: want.namespace.clone(),
            name: want.name.clone(),
            labels: want.labels.clone(),
            ports: want.ports.clone(),
            owner: want.owner.clone(),
            node: node.name.clone(),
            netns: format!(
                "{}{}-{}-{}",
                self.netns_prefix(),
                st.next_container,
                want.namespace,
                want.name
            ),
            container_id: format!("plexus-{}-{:08}", self.name, st.next_container),
            ip: String::new(),
            workload_pid: None,
        };
        let netns = netns_add(&pod.netns)?;
        // Record the pod before wiring it, so `down` finds it even if what follows fails.
        st.pods.insert(pod.key(), pod.clone());
        st.save(&self.state_path())?;
        let result = self.cni(&node, "ADD", &pod)?;
        pod.ip = cni_ipv4(&result).ok_or_else(|| LabError::Cni {
            command: "ADD",
            pod: pod.key(),
            detail: format!("no IPv4 address in result {result}"),
        })?;
        if !pod.ports.is_empty() {
            let mut args = vec!["--name".to_string(), pod.key()];
            for p in &pod.ports {
                match p.protocol.as_str() {
                    "UDP" => args.extend(["--udp".to_string(), p.port.to_string()]),
                    "TCP" => args.extend(["--tcp".to_string(), p.port.to_string()]),
                    // SCTP has no server in the workload yet.
                    _ => {}
                }
            }
            let log = self
                .root
                .join("logs")
                .join(format!("workload-{}-{}.log", pod.namespace, pod.name));
            pod.workload_pid = Some(process::spawn_in_netns(
                &netns,
                &self.bin("plexus-workload"),
                &args,
                &log,
                node.cgroup.as_deref(),
            )?);
            wait_listening(&netns, &pod)?;
        }
        info!(pod = %pod.key(), ip = %pod.ip, "pod up");
        st.pods.insert(pod.key(), pod);
        Ok(())
    }

    /// Tears a pod down; `forget` also removes its object from the agent (not when it is about to
    /// be re-created from an object just applied).
    fn delete_pod(&self, st: &mut LabState, key: &str, forget: bool) -> Result<(), LabError> {
        let Some(pod) = st.pods.get(key).cloned() else {
            return Ok(());
        };
        if let Some(pid) = pod.workload_pid {
            process::stop(pid, Duration::from_secs(2));
        }
        let node = self.node(st)?.clone();
        self.cni(&node, "DEL", &pod)?;
        for pid in netns_pids(&netns_path(&pod.netns)) {
            process::stop(pid, Duration::from_secs(1));
        }
        netns_del(&pod.netns)?;
        if forget {
            let pod_ref = ObjectRef {
                kind: "Pod".into(),
                namespace: Some(pod.namespace.clone()),
                name: pod.name.clone(),
            };
            agent_call(
                &node,
                &Request::DeleteObjects {
                    refs: vec![pod_ref],
                },
            )?;
        }
        st.pods.remove(key);
        Ok(())
    }

    /// Removes everything the lab created: processes, namespaces (and with them every veth),
    /// pins and files. Works from the state file or, after a crash, by name prefix alone.
    pub fn down(&self) -> Result<DownReport, LabError> {
        let _lock = self.lock()?;
        self.teardown()
    }

    fn teardown(&self) -> Result<DownReport, LabError> {
        let mut report = DownReport::default();
        let st = LabState::load(&self.state_path()).ok();
        let mut pids: BTreeSet<i32> = BTreeSet::new();
        if let Some(st) = &st {
            pids.extend(st.pods.values().filter_map(|p| p.workload_pid));
            pids.extend(st.nodes.iter().map(|n| n.agent_pid));
        }
        let namespaces = netns_list(&self.netns_prefix());
        for ns in &namespaces {
            pids.extend(netns_pids(&netns_path(ns)));
        }
        let cgroups = self.cgroups(st.as_ref());
        let in_cgroups: BTreeSet<i32> = cgroups
            .iter()
            .flat_map(|c| process::cgroup_pids(c))
            .collect();
        pids.extend(&in_cgroups);
        for pid in pids.into_iter().filter(|p| process::alive(*p)) {
            // Only stop processes that are ours: in one of our namespaces or cgroups, or
            // recorded by us and still running one of our binaries.
            if is_lab_process(pid, &self.bin_dir)
                || in_cgroups.contains(&pid)
                || namespaces
                    .iter()
                    .any(|ns| netns_pids(&netns_path(ns)).contains(&pid))
            {
                process::stop(pid, Duration::from_secs(2));
                report.processes += 1;
            }
        }
        for ns in &namespaces {
            if let Err(e) = netns_del(ns) {
                warn!(netns = %ns, error = %e, "deleting namespace");
            } else {
                report.namespaces += 1;
            }
        }
        for cgroup in &cgroups {
            match process::remove_cgroup(cgroup) {
                Ok(true) => report.cgroups += 1,
                Ok(false) => {}
                Err(e) => warn!(cgroup = %cgroup.display(), error = %e, "removing cgroup"),
            }
        }
        let pins = Path::new(BPF_ROOT).join(self.node_name());
        if pins.exists() {
            fs::remove_dir_all(&pins).map_err(|e| LabError::io(&pins, e))?;
            report.pins += 1;
        }
        // The shared root goes too once no node of any lab or agent is left in it.
        let _ = fs::remove_dir(BPF_ROOT);
        if self.root.exists() {
            fs::remove_dir_all(&self.root).map_err(|e| LabError::io(&self.root, e))?;
        }
        let _ = fs::remove_file(Path::new(LAB_ROOT).join(format!("{}.lock", self.name)));
        Ok(report)
    }

    /// The lab's cgroups: those its record names, and (after a crash) every directory of the
    /// cgroup2 mount named with the lab's prefix.
    fn cgroups(&self, st: Option<&LabState>) -> Vec<PathBuf> {
        let mut found: BTreeSet<PathBuf> = st
            .into_iter()
            .flat_map(|st| st.nodes.iter().filter_map(|n| n.cgroup.clone()))
            .collect();
        if let Ok(mount) = process::cgroup2_mount() {
            let prefix = self.netns_prefix();
            for entry in fs::read_dir(&mount).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix)
                    && entry.file_type().is_ok_and(|t| t.is_dir())
                {
                    found.insert(entry.path());
                }
            }
        }
        found.into_iter().collect()
    }

    /// Resolves a probe destination: `svc/<ns>/<name>` (the Service's cluster IP), `ns/pod` or
    /// an IP address. Returns the name to report and the address.
    fn destination(&self, st: &LabState, dst: &str) -> Result<(String, IpAddr), LabError> {
        if let Some(key) = dst.strip_prefix(SERVICE_PREFIX) {
            let svc = st.services.get(key).ok_or_else(|| {
                LabError::Invalid(format!(
                    "Service {key:?} not found (Services are named svc/<namespace>/<name>)"
                ))
            })?;
            let ip = svc
                .cluster_ip
                .as_deref()
                .ok_or_else(|| {
                    LabError::Invalid(format!(
                        "Service {key} has no cluster IP (headless or ExternalName)"
                    ))
                })?
                .parse()
                .map_err(|_| LabError::State(format!("Service {key}: bad cluster IP")))?;
            return Ok((dst.to_string(), ip));
        }
        if let Ok(ip) = dst.parse::<IpAddr>() {
            let name = st
                .pods
                .values()
                .find(|p| p.ip == dst)
                .map_or_else(|| dst.to_string(), PodState::key);
            return Ok((name, ip));
        }
        let pod = pod(st, dst)?;
        let ip = pod
            .ip
            .parse()
            .map_err(|_| LabError::State(format!("pod {dst} has no address")))?;
        Ok((pod.key(), ip))
    }

    /// Runs `opts.count` (at least one) probes of `dst` (`svc/ns/name`, `ns/pod` or an IP) from
    /// `src` (`ns/pod`, or `node` for the node's network namespace), one after the other. With socket-level load balancing on, each runs in its own process in the
    /// node's cgroup, so each connection is balanced anew.
    pub fn probes(
        &self,
        src: &str,
        dst: &str,
        opts: &ProbeOptions,
    ) -> Result<Vec<ProbeResult>, LabError> {
        let st = self.state()?;
        let node = self.node(&st)?;
        let (from, netns) = if src == NODE_SOURCE {
            (NODE_SOURCE.to_string(), netns_path(&node.netns))
        } else {
            let from = pod(&st, src)?;
            (from.key(), netns_path(&from.netns))
        };
        let (to, ip) = self.destination(&st, dst)?;
        let socket_lb = match opts.socket_lb {
            SocketLb::On => true,
            SocketLb::Off => false,
            SocketLb::Auto => dst.starts_with(SERVICE_PREFIX) || src == NODE_SOURCE,
        };
        let workload = self.bin("plexus-workload");
        let cgroup = match (socket_lb, &node.cgroup) {
            (false, _) => None,
            (true, Some(c)) => Some(c.clone()),
            (true, None) => {
                return Err(LabError::Invalid(format!(
                    "lab {:?} has no node cgroup (it was created by an older plexus); \
                     recreate it, or probe with --socket-lb off",
                    self.name
                )))
            }
        };
        Ok((0..opts.count.max(1))
            .map(|_| match &cgroup {
                Some(cgroup) => probe::probe_in_cgroup(
                    &ProbeProcess {
                        workload: &workload,
                        netns: &netns,
                        cgroup,
                    },
                    &from,
                    &to,
                    ip,
                    opts.port,
                    opts.protocol,
                    opts.timeout,
                ),
                None => probe::probe(
                    &netns,
                    &from,
                    &to,
                    ip,
                    opts.port,
                    opts.protocol,
                    opts.timeout,
                ),
            })
            .collect())
    }

    /// Probes every ordered pair of `pods` (all pods when `None`), in parallel.
    pub fn matrix(
        &self,
        pods: Option<Vec<String>>,
        port: u16,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<(Vec<String>, Vec<ProbeResult>), LabError> {
        let st = self.state()?;
        let names = match pods {
            Some(list) => list,
            None => st.pods.keys().cloned().collect(),
        };
        let mut resolved = Vec::new();
        for n in &names {
            let p = pod(&st, n)?;
            let ip: IpAddr =
                p.ip.parse()
                    .map_err(|_| LabError::State(format!("pod {n} has no address")))?;
            resolved.push((p.key(), netns_path(&p.netns), ip));
        }
        let mut jobs = Vec::new();
        for (from, netns, _) in &resolved {
            for (to, _, ip) in &resolved {
                jobs.push(ProbeJob {
                    netns: netns.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    ip: *ip,
                    port,
                    protocol,
                    timeout,
                });
            }
        }
        Ok((names, probe::probe_many(jobs, 32)))
    }
}

/// The probe source that means the node's own network namespace.
pub const NODE_SOURCE: &str = "node";

/// The prefix of a probe destination that names a Service: `svc/<ns>/<name>`.
pub const SERVICE_PREFIX: &str = "svc/";

/// How [`Lab::probes`] probes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// Destination port (the Service port for a Service).
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// How long each probe may take.
    pub timeout: Duration,
    /// Whether the probes run where the cgroup socket hooks apply.
    pub socket_lb: SocketLb,
    /// How many probes to run, one after the other (at least one runs).
    pub count: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            port: 80,
            protocol: Protocol::TCP,
            timeout: Duration::from_secs(1),
            socket_lb: SocketLb::Auto,
            count: 1,
        }
    }
}

/// Looks a pod up by `ns/name`.
pub fn pod<'a>(st: &'a LabState, key: &str) -> Result<&'a PodState, LabError> {
    st.pods.get(key).ok_or_else(|| {
        LabError::Invalid(format!(
            "pod {key:?} not found (pods are named ns/name; see `plexus endpoint list`)"
        ))
    })
}

/// The plan for an apply: fully validated against the current state.
#[derive(Debug, Default)]
struct Plan {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    deployments: BTreeMap<String, u32>,
    pods: Vec<DesiredPod>,
    delete: Vec<String>,
    /// Policies by `Kind ns/name`, as written.
    policies: BTreeMap<String, serde_json::Value>,
    /// Services by `ns/name`, allocated and defaulted.
    services: Vec<(String, ServiceState)>,
    /// EndpointSlices by `ns/name`, as written.
    slices: BTreeMap<String, serde_json::Value>,
    /// LoadBalancer pools by name, as written.
    pools: BTreeMap<String, serde_json::Value>,
}

impl Plan {
    /// The Service-side objects (Services, EndpointSlices, pools) for the agent.
    fn lb_objects(&self) -> Vec<serde_json::Value> {
        self.services
            .iter()
            .map(|(_, s)| s.object.clone())
            .chain(self.slices.values().cloned())
            .chain(self.pools.values().cloned())
            .collect()
    }
}

fn ns_labels(name: &str, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.insert("kubernetes.io/metadata.name".into(), name.to_string());
    l
}

/// Computes what applying `objects` to `st` means, without touching anything.
fn plan(st: &LabState, objects: &[Loaded]) -> Result<Plan, LabError> {
    let mut p = Plan::default();
    for l in objects {
        if let Object::Namespace(ns) = &l.object {
            p.namespaces
                .insert(l.object.name(), manifest::namespace_labels(ns));
        }
    }
    let ns_exists = |ns: &str| st.namespaces.contains_key(ns) || p.namespaces.contains_key(ns);
    let missing_ns = |l: &Loaded, ns: &str| {
        LabError::Invalid(format!(
            "{}: {} {ns}/{}: field metadata.namespace: namespace {ns:?} does not exist",
            l.source,
            l.object.kind(),
            l.object.name()
        ))
    };
    let mut seen = BTreeSet::new();
    let mut applied_services = Vec::new();
    for l in objects {
        let (ns, name) = (l.object.namespace().unwrap_or_default(), l.object.name());
        let key = format!("{ns}/{name}");
        let pods = match &l.object {
            Object::Namespace(_) => continue,
            Object::Service(svc) => {
                if !ns_exists(&ns) {
                    return Err(missing_ns(l, &ns));
                }
                if applied_services
                    .iter()
                    .any(|a: &services::Applied<'_>| a.key == key)
                {
                    return Err(LabError::Invalid(format!(
                        "{}: Service {key} is defined twice",
                        l.source
                    )));
                }
                applied_services.push(services::Applied {
                    key,
                    service: svc,
                    source: &l.source,
                });
                continue;
            }
            Object::EndpointSlice(slice) => {
                if !ns_exists(&ns) {
                    return Err(missing_ns(l, &ns));
                }
                let mut slice = slice.clone();
                slice.metadata.namespace = Some(ns.clone());
                let value = serde_json::to_value(&slice)
                    .map_err(|e| LabError::Invalid(format!("{}: {key}: {e}", l.source)))?;
                p.slices.insert(key, value);
                continue;
            }
            Object::LbPool(pool) => {
                p.pools.insert(name, pool.value.clone());
                continue;
            }
            Object::Policy(pol) => {
                if l.object.namespace().is_some() && !ns_exists(&ns) {
                    return Err(LabError::Invalid(format!(
                        "{}: {} {ns}/{name}: field metadata.namespace: namespace {ns:?} does not exist",
                        l.source,
                        l.object.kind()
                    )));
                }
                p.policies.insert(l.object.to_string(), pol.value.clone());
                continue;
            }
            Object::Pod(pod) => vec![(pod.clone(), None)],
            Object::Deployment(d) => {
                let key = format!("{ns}/{name}");
                let pods = manifest::expand_deployment(d);
                p.deployments.insert(key, pods.len() as u32);
                let want: BTreeSet<String> = pods
                    .iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                // Replicas of an older template or beyond the new count go away.
                p.delete.extend(
                    st.pods
                        .values()
                        .filter(|q| {
                            q.namespace == ns
                                && q.owner.as_deref() == Some(&name)
                                && !want.contains(&q.name)
                        })
                        .map(PodState::key),
                );
                pods.into_iter().map(|q| (q, Some(name.clone()))).collect()
            }
        };
        if !ns_exists(&ns) {
            return Err(LabError::Invalid(format!(
                "{}: {} {ns}/{name}: field metadata.namespace: namespace {ns:?} does not exist",
                l.source,
                l.object.kind()
            )));
        }
        for (pod, owner) in pods {
            let pname = pod.metadata.name.clone().unwrap_or_default();
            let key = format!("{ns}/{pname}");
            if !seen.insert(key.clone()) {
                return Err(LabError::Invalid(format!(
                    "{}: Pod {key} is defined twice",
                    l.source
                )));
            }
            let ports = manifest::pod_ports(&pod)
                .into_iter()
                .map(|pp| PortState {
                    name: pp.name,
                    port: pp.port,
                    protocol: pp.protocol,
                })
                .collect();
            p.pods.push(DesiredPod {
                namespace: ns.clone(),
                name: pname,
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                ports,
                owner,
            });
        }
    }
    p.services = services::allocate(&st.services, &applied_services)?;
    Ok(p)
}

/// The pod's IPv4 address from a CNI result.
fn cni_ipv4(result: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    let addr = v
        .get("ips")?
        .as_array()?
        .first()?
        .get("address")?
        .as_str()?;
    Some(addr.split('/').next()?.to_string())
}

fn is_lab_process(pid: i32, bin_dir: &Path) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    exe.parent() == Some(bin_dir)
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Waits until the agent answers on its socket (or dies).
fn wait_agent(node: &str, socket: &Path, pid: i32, log: &Path) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if call(socket, &Request::Health, Duration::from_secs(2)).is_ok() {
            return Ok(());
        }
        if !process::alive(pid) {
            return Err(LabError::Agent {
                node: node.into(),
                detail: format!("agent exited:\n{}", log_tail(log)),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(LabError::Agent {
        node: node.into(),
        detail: format!("no answer within 20s:\n{}", log_tail(log)),
    })
}

/// Waits until the workload accepts on its first TCP port (UDP needs no handshake).
fn wait_listening(netns: &Path, pod: &PodState) -> Result<(), LabError> {
    let Some(port) = pod
        .ports
        .iter()
        .find(|p| p.protocol == "TCP")
        .map(|p| p.port)
    else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let ok = plexus_netdev::in_netns(netns, move || {
            std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
        })?;
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(LabError::Invalid(format!(
        "pod {}: workload not listening on TCP {port} after 5s",
        pod.key()
    )))
}

/// Sends a request to a node's agent; an agent error becomes a lab error naming the node.
fn agent_call(node: &NodeState, req: &Request) -> Result<Response, LabError> {
    call(&node.socket, req, Duration::from_secs(60))
        .map_err(|e| LabError::Invalid(format!("agent of node {}: {e}", node.name)))
}

/// A Namespace object for the agent.
fn namespace_json(name: &str, labels: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A Pod object for the agent: what identity and named ports need.
fn pod_json(p: &DesiredPod) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = p
        .ports
        .iter()
        .map(|pp| serde_json::json!({"name": pp.name, "containerPort": pp.port, "protocol": pp.protocol}))
        .collect();
    // The owning Deployment rides along as an owner reference, for flows' workload names.
    let owners: Vec<serde_json::Value> = p
        .owner
        .iter()
        .map(|o| serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": o, "uid": o}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels, "ownerReferences": owners},
        "spec": {"containers": [{"name": "workload", "ports": ports}]},
    })
}
