//! The CNI plugin driven by a real container runtime: podman (CNI backend, runc) runs a container
//! from a local busybox root filesystem on a Plexus network; the container gets its address from
//! the node agent and reaches a lab pod, and `--rm` releases it again through CNI DEL.

use std::{path::PathBuf, process::Command};

use plexus_e2e::{bin_dir, pods_yaml, unique, LabGuard, TempFile};

/// Scratch files for podman (storage, network configs, root filesystem) and the cgroups it makes;
/// all removed on drop.
struct PodmanScratch {
    dir: PathBuf,
    cgroup_parent: String,
}

impl Drop for PodmanScratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        // runc with cgroupfs leaves the parent cgroup in every hierarchy.
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let p = c.path().join(self.cgroup_parent.trim_start_matches('/'));
                if p.exists() {
                    let _ = Command::new("find")
                        .arg(&p)
                        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                        .output();
                }
            }
        }
    }
}

#[test]
fn podman_container_gets_a_plexus_address_and_reaches_a_pod() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a"]));
    let lab = LabGuard::up("podman", &[&m.0]);
    let target_ip = lab.pod_ip("x/a");
    let socket = format!("/run/plexus/lab/{}/node1/agent.sock", lab.name);
    let s = PodmanScratch {
        dir: std::env::temp_dir().join(unique("plexus-podman-")),
        cgroup_parent: format!("/{}", unique("plexustest")),
    };
    for d in ["rootfs/bin", "net", "root", "runroot"] {
        std::fs::create_dir_all(s.dir.join(d)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", s.dir.join("rootfs/bin/busybox"))
        .expect("busybox-static installed");
    std::fs::write(
        s.dir.join("net/plexusnet.conflist"),
        format!(r#"{{"cniVersion":"1.0.0","name":"plexusnet","plugins":[{{"type":"plexus-cni","agentSocket":"{socket}"}}]}}"#),
    )
    .unwrap();
    std::fs::write(
        s.dir.join("containers.conf"),
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            bin_dir().display(),
            s.dir.join("net").display()
        ),
    )
    .unwrap();
    let script =
        format!("/bin/busybox ip -4 addr show eth0; echo hi | /bin/busybox nc -w 3 {target_ip} 80");
    // podman runs in the node's namespace, as a kubelet's runtime would on the node.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/plx-{}-node1", lab.name))
        .arg("podman")
        .env("CONTAINERS_CONF", s.dir.join("containers.conf"))
        .arg("--root")
        .arg(s.dir.join("root"))
        .arg("--runroot")
        .arg(s.dir.join("runroot"))
        .args(["--storage-driver", "vfs", "--network-config-dir"])
        .arg(s.dir.join("net"))
        .args([
            "--runtime",
            "/usr/sbin/runc",
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args([
            "--cgroup-parent",
            &s.cgroup_parent,
            "--network",
            "plexusnet",
            "--rootfs",
        ])
        .arg(s.dir.join("rootfs"))
        .args(["/bin/busybox", "sh", "-c", &script])
        .output()
        .expect("podman");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "podman failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("inet 10.244.0."),
        "container has no Plexus address: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "x/a"),
        "container did not reach pod x/a: {stdout}"
    );
    // `--rm` ran CNI DEL: only the lab's own pod is left in the agent.
    assert_eq!(lab.json(&["status"])["endpoints"], 1);
}
