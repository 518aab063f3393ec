//! An agent restart (graceful or a crash) never interrupts traffic: a TCP stream between two
//! pods keeps flowing with no reset and no stall, and the new agent adopts the pinned datapath.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use plexus_e2e::{pods_yaml, LabGuard, TempFile};
use serde_json::Value;

#[test]
fn iperf_stream_survives_agent_crash_and_restart() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b"]));
    let lab = LabGuard::up("rst", &[&m.0]);
    let server_ns = lab.pod_netns("x/b");
    let client_ns = lab.pod_netns("x/a");
    let ip_b = lab.pod_ip("x/b");
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", server_ns.display()))
        .args(["iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    thread::sleep(Duration::from_millis(300));
    let client = Command::new("nsenter")
        .arg(format!("--net={}", client_ns.display()))
        .args([
            "iperf3", "-c", &ip_b, "-p", "5201", "-t", "6", "-i", "0.2", "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3 client");
    thread::sleep(Duration::from_millis(1500));
    let crash = lab.plexus(&["lab", "restart-agent", "--kill"]);
    thread::sleep(Duration::from_millis(1500));
    let graceful = lab.plexus(&["lab", "restart-agent"]);
    let out = client.wait_with_output().expect("iperf3 client output");
    let _ = server.kill();
    let _ = server.wait();
    assert!(crash.ok, "restart after crash: {}", crash.stderr);
    assert!(graceful.ok, "graceful restart: {}", graceful.stderr);
    assert!(
        out.status.success(),
        "iperf3 failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    assert!(v.get("error").is_none(), "iperf3 error: {}", v["error"]);
    let intervals = v["intervals"].as_array().expect("intervals");
    assert!(
        intervals.len() >= 28,
        "expected ~30 intervals of 0.2 s, got {}",
        intervals.len()
    );
    for (i, iv) in intervals.iter().enumerate() {
        let bytes = iv["sum"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            bytes > 0,
            "interval {i} ({}s) moved no data: the stream stalled",
            iv["sum"]["start"]
        );
    }
    // The restarted agent still has its endpoints and the datapath still forwards.
    assert_eq!(lab.json(&["status"])["endpoints"], 2);
    assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
}
