//! Support for the end-to-end suites: locating the built binaries, running the `plexus` CLI, and
//! guards that tear down labs and namespaces when a test ends, also when it fails.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

/// Directory of the workspace's built binaries (`target/debug`), found from the test binary.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in ["plexus", "plexus-agent", "plexus-cni", "plexus-workload"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: run `cargo build --bins` first",
            dir.join(b).display()
        );
    }
    dir
}

/// Path of one built binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A name unique to this process and call, made of lowercase letters and digits.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Output of a command, as text.
pub struct Run {
    /// Exit status success.
    pub ok: bool,
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A lab for one test: torn down (`plexus lab down`) when dropped.
pub struct LabGuard {
    /// The lab's name.
    pub name: String,
}

impl LabGuard {
    /// Brings a fresh lab up from manifest files (panics with the CLI's output on failure).
    pub fn up(prefix: &str, files: &[&Path]) -> Self {
        let g = LabGuard {
            name: unique(prefix),
        };
        let mut args = vec!["lab", "up"];
        let f: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        for p in &f {
            args.push("-f");
            args.push(p);
        }
        g.ok(&args);
        g
    }

    /// Runs `plexus --lab NAME ARGS...`.
    pub fn plexus(&self, args: &[&str]) -> Run {
        Command::new(bin("plexus"))
            .arg("--lab")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("running plexus")
            .into()
    }

    /// Runs the CLI and panics unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.plexus(args);
        assert!(
            r.ok,
            "plexus {args:?} failed ({:?}):\n{}\n{}",
            r.code, r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs the CLI with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("plexus {a:?}: bad JSON {e}: {out}"))
    }

    /// The reachability grid for `port`/`protocol` over all pods: (pods, rows of bools).
    pub fn matrix(&self, port: u16, protocol: &str) -> (Vec<String>, Vec<Vec<bool>>) {
        let v = self.json(&[
            "lab",
            "matrix",
            "--port",
            &port.to_string(),
            "--protocol",
            protocol,
        ]);
        let pods = v["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect();
        let grid = v["matrix"]
            .as_array()
            .expect("matrix")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|c| c.as_bool().unwrap_or(false))
                    .collect()
            })
            .collect();
        (pods, grid)
    }

    /// One probe, as JSON.
    pub fn probe(&self, src: &str, dst: &str, port: u16, protocol: &str) -> Value {
        let r = self.plexus(&[
            "lab",
            "probe",
            src,
            dst,
            "--port",
            &port.to_string(),
            "--protocol",
            protocol,
            "--json",
        ]);
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("probe: bad JSON {e}: {} {}", r.stdout, r.stderr))
    }

    /// Packets the node's datapath dropped with reason `code` so far.
    pub fn drops(&self, code: u64) -> u64 {
        let v = self.json(&["bpf", "drops", "list"]);
        v.as_array()
            .expect("drops list")
            .iter()
            .find(|d| d["code"] == code)
            .map_or(0, |d| d["packets"].as_u64().unwrap_or(0))
    }

    /// Named network namespace of a pod.
    pub fn pod_netns(&self, pod: &str) -> PathBuf {
        let pods = self.json(&["lab", "pods"]);
        let ns = pods[pod]["netns"]
            .as_str()
            .unwrap_or_else(|| panic!("pod {pod} not in lab"));
        plexus_netdev::netns_path(ns)
    }

    /// A pod's IPv4 address.
    pub fn pod_ip(&self, pod: &str) -> String {
        let pods = self.json(&["lab", "pods"]);
        pods[pod]["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("pod {pod} not in lab"))
            .to_string()
    }

    /// Leftovers of this lab on the machine: namespaces, pins, processes.
    pub fn leftovers(name: &str) -> Vec<String> {
        let mut left: Vec<String> = plexus_netdev::netns_list(&format!("plx-{name}-"));
        let pins = PathBuf::from(format!("/sys/fs/bpf/plexus/{name}-node1"));
        if pins.exists() {
            left.push(pins.display().to_string());
        }
        if Path::new(&format!("/run/plexus/lab/{name}")).exists() {
            left.push(format!("/run/plexus/lab/{name}"));
        }
        left
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(bin("plexus"))
            .args(["--lab", &self.name, "lab", "down"])
            .output();
    }
}

/// Writes `text` to a fresh temporary file and returns its path (removed when the guard drops).
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A temporary YAML file.
    pub fn yaml(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("plexus-e2e-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write temp file");
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(d) = self.0.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Manifests of `n` namespaces × `m` pods each, every pod serving TCP and UDP on port 80.
pub fn pods_yaml(namespaces: &[&str], pods: &[&str]) -> String {
    let mut y = String::new();
    for ns in namespaces {
        y.push_str(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    ns: {ns}\n---\n"));
        for p in pods {
            y.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {p}\n  namespace: {ns}\n  labels:\n    pod: {p}\nspec:\n  containers:\n  - name: c\n    image: plexus/workload\n    ports:\n    - containerPort: 80\n      protocol: TCP\n    - containerPort: 80\n      protocol: UDP\n---\n"
            ));
        }
    }
    y
}

/// A bare node for CNI tests: a network namespace running an agent, with no lab around it.
/// Dropping it stops the agent and removes the namespaces, pins and files it made.
pub struct NodeGuard {
    /// Node name.
    pub name: String,
    /// Named network namespace.
    pub netns: String,
    /// Agent socket.
    pub socket: PathBuf,
    /// Scratch directory (state, logs, CNI configs).
    pub dir: PathBuf,
    agent: Option<std::process::Child>,
    pods: Vec<String>,
}

impl NodeGuard {
    /// Starts a node and waits for its agent.
    pub fn start(prefix: &str) -> Self {
        let name = unique(prefix);
        let netns = format!("plxt-{name}");
        plexus_netdev::netns_add(&netns).expect("node netns");
        let dir = std::env::temp_dir().join(format!("plexus-node-{name}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut g = NodeGuard {
            name: name.clone(),
            netns,
            socket: dir.join("agent.sock"),
            dir,
            agent: None,
            pods: Vec::new(),
        };
        g.start_agent();
        g
    }

    /// (Re)starts the agent.
    pub fn start_agent(&mut self) {
        let log = std::fs::File::create(self.dir.join("agent.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!(
                "--net={}",
                plexus_netdev::netns_path(&self.netns).display()
            ))
            .arg("--")
            .arg(bin("plexus-agent"))
            .args([
                "--node",
                &self.name,
                "--pod-cidr",
                "10.245.0.0/24",
                "--socket",
            ])
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("agent");
        self.agent = Some(child);
        for _ in 0..200 {
            if plexus_api::call(
                &self.socket,
                &plexus_api::Request::Health,
                std::time::Duration::from_secs(1),
            )
            .is_ok()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "agent did not start: {}",
            std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
        );
    }

    /// Stops the agent (SIGKILL).
    pub fn stop_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new pod network namespace (removed with the node); returns its path.
    pub fn pod_netns(&mut self) -> PathBuf {
        let n = format!("plxt-{}-p{}", self.name, self.pods.len());
        self.pods.push(n.clone());
        plexus_netdev::netns_add(&n).expect("pod netns")
    }

    /// The CNI network configuration pointing at this node's agent.
    pub fn conf(&self, version: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"plexus","type":"plexus-cni","agentSocket":"{}"}}"#,
            self.socket.display()
        )
    }

    /// Runs the CNI plugin in the node's namespace with `env` and `stdin`; returns (success,
    /// parsed stdout or Null).
    pub fn cni(&self, env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
        use std::io::Write;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net={}",
            plexus_netdev::netns_path(&self.netns).display()
        ))
        .arg("--")
        .arg(bin("plexus-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("plexus-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("plexus-cni output");
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("CNI output not JSON ({e}): {text}"))
        };
        (out.status.success(), v)
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.stop_agent();
        for p in &self.pods {
            let _ = plexus_netdev::netns_del(p);
        }
        let _ = plexus_netdev::netns_del(&self.netns);
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/plexus/{}", self.name));
        let _ = std::fs::remove_dir("/sys/fs/bpf/plexus");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process is still running (a zombie awaiting its reaper does not count).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A host outside the cluster, for world and CIDR policy: a network namespace wired to a lab
/// node by a veth (node side 198.51.100.1/24), holding `addrs`, and running the workload on
/// TCP and UDP port 80 (it answers `ext`). Removed on drop.
pub struct ExternalHost {
    /// Its named network namespace.
    pub netns: String,
    node_netns: PathBuf,
    node_if: String,
    child: Option<std::process::Child>,
}

impl ExternalHost {
    /// Wires an external host to the lab's node with the given `/24` addresses in 198.51.100.0/24.
    pub fn attach(lab: &LabGuard, addrs: &[&str]) -> Self {
        let netns = format!("plxt-{}-ext", lab.name);
        let node_netns = plexus_netdev::netns_path(&format!("plx-{}-node1", lab.name));
        let ext = plexus_netdev::netns_add(&netns).expect("ext netns");
        let node_if = "plxext0".to_string();
        let mut g = ExternalHost {
            netns: netns.clone(),
            node_netns: node_netns.clone(),
            node_if: node_if.clone(),
            child: None,
        };
        let ip = |ns: Option<&Path>, args: &[&str]| {
            plexus_netdev::ip(ns, args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
        };
        ip(
            Some(&node_netns),
            &[
                "link",
                "add",
                &node_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ext.to_str().unwrap(),
            ],
        );
        ip(
            Some(&node_netns),
            &["addr", "add", "198.51.100.1/24", "dev", &node_if],
        );
        ip(Some(&node_netns), &["link", "set", &node_if, "up"]);
        for a in addrs {
            ip(
                Some(&ext),
                &["addr", "add", &format!("{a}/24"), "dev", "eth0"],
            );
        }
        ip(Some(&ext), &["link", "set", "eth0", "up"]);
        ip(
            Some(&ext),
            &["route", "add", "10.244.0.0/16", "via", "198.51.100.1"],
        );
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ext.display()))
            .arg("--")
            .arg(bin("plexus-workload"))
            .args(["--name", "ext", "--tcp", "80", "--udp", "80"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("external workload");
        g.child = Some(child);
        std::thread::sleep(std::time::Duration::from_millis(300));
        g
    }

    /// Path of its namespace.
    pub fn path(&self) -> PathBuf {
        plexus_netdev::netns_path(&self.netns)
    }
}

impl Drop for ExternalHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = plexus_netdev::ip(Some(&self.node_netns), &["link", "del", &self.node_if]);
        let _ = plexus_netdev::netns_del(&self.netns);
    }
}

/// A TCP connection from inside a network namespace: whether it is accepted within `ms`.
pub fn tcp_from(netns: &Path, ip: &str, port: u16, ms: u64) -> bool {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("address");
    plexus_netdev::in_netns(netns, move || {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(ms)).is_ok()
    })
    .unwrap_or(false)
}

/// A UDP exchange from inside a network namespace: whether an answer comes back within `ms`.
pub fn udp_from(netns: &Path, ip: &str, port: u16, ms: u64) -> bool {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("address");
    plexus_netdev::in_netns(netns, move || {
        let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(ms)));
        if s.send_to(b"probe", addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        s.recv_from(&mut buf).is_ok()
    })
    .unwrap_or(false)
}
