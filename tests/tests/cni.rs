//! The CNI plugin driven the way runtimes drive it: `CNI_*` environment and the network
//! configuration on stdin, checked against the CNI 1.1 spec's results and error codes.

use plexus_e2e::NodeGuard;
use serde_json::Value;

fn env<'a>(cmd: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1"),
    ]
}

fn ping(netns: &std::path::Path, ip: &str) -> bool {
    std::process::Command::new("nsenter")
        .args([
            &format!("--net={}", netns.display()),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            ip,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn add_returns_a_spec_result_and_wires_the_pod() {
    let mut node = NodeGuard::start("cniadd");
    let ns1 = node.pod_netns();
    let ns2 = node.pod_netns();
    let (ns1s, ns2s) = (ns1.display().to_string(), ns2.display().to_string());
    let (ok, r) = node.cni(&env("ADD", "c1", &ns1s), &node.conf("1.1.0"));
    assert!(ok, "{r}");
    assert_eq!(r["cniVersion"], "1.1.0");
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2);
    assert!(ifs[0]["name"].as_str().unwrap().starts_with("lxc"));
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], ns1s.as_str());
    let ip = &r["ips"][0];
    assert_eq!(
        ip["interface"], 1,
        "the address is on the sandbox interface"
    );
    assert_eq!(ip["gateway"], "10.245.0.1");
    let addr1 = ip["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(addr1.starts_with("10.245.0."), "{addr1}");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r["routes"][0]["gw"], "10.245.0.1");
    assert!(
        ip.get("version").is_none(),
        "1.x results carry no ip version"
    );

    // A legacy 0.4.0 configuration gets the 0.4 result shape.
    let (ok, r2) = node.cni(&env("ADD", "c2", &ns2s), &node.conf("0.4.0"));
    assert!(ok, "{r2}");
    assert_eq!(r2["ips"][0]["version"], "4");
    let addr2 = r2["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(addr1, addr2);
    assert!(ping(&ns1, &addr2), "pod 1 cannot reach pod 2");

    // CHECK agrees with what ADD did.
    let (ok, c) = node.cni(&env("CHECK", "c1", &ns1s), &node.conf("1.1.0"));
    assert!(ok, "{c}");
    // CHECK notices a pod whose address went missing.
    plexus_netdev::ip(Some(&ns1), &["addr", "flush", "dev", "eth0"]).unwrap();
    let (ok, c) = node.cni(&env("CHECK", "c1", &ns1s), &node.conf("1.1.0"));
    assert!(!ok);
    assert!(c["code"].as_u64().unwrap() >= 100, "{c}");
}

#[test]
fn del_is_idempotent_and_safe_on_half_created_pods() {
    let mut node = NodeGuard::start("cnidel");
    let ns = node.pod_netns();
    let nss = ns.display().to_string();
    let (ok, r) = node.cni(&env("ADD", "c1", &nss), &node.conf("1.1.0"));
    assert!(ok, "{r}");
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (ok, r) = node.cni(&env("DEL", "c1", &nss), &node.conf("1.1.0"));
        assert!(ok, "DEL: {r}");
        assert_eq!(r, Value::Null, "DEL prints nothing on success");
    }
    let node_ns = plexus_netdev::netns_path(&node.netns);
    assert!(
        plexus_netdev::link(Some(&node_ns), &host)
            .unwrap()
            .is_none(),
        "host veth removed"
    );
    // DEL of a container never added, with its netns already gone.
    let (ok, r) = node.cni(
        &env("DEL", "never", "/run/netns/does-not-exist"),
        &node.conf("1.1.0"),
    );
    assert!(ok, "{r}");
    // Half-created: the address was leased but the plugin died before wiring the veth.
    let lease = plexus_api::call(
        &node.socket,
        &plexus_api::Request::IpamAllocate(plexus_api::Attachment {
            container_id: "half".into(),
            ifname: "eth0".into(),
        }),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(lease, plexus_api::Response::Lease(_)));
    let (ok, r) = node.cni(&env("DEL", "half", &nss), &node.conf("1.1.0"));
    assert!(ok, "{r}");
    let st = std::fs::read_to_string(node.dir.join("state/state.json")).unwrap();
    assert!(
        !st.contains("half/eth0"),
        "the half-created pod's address was released: {st}"
    );
}

#[test]
fn version_status_gc_and_error_codes() {
    let mut node = NodeGuard::start("cniver");
    let (ok, v) = node.cni(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert!(ok);
    let sv: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(
        sv.contains(&"1.1.0") && sv.contains(&"1.0.0") && sv.contains(&"0.4.0"),
        "{v}"
    );

    let (ok, s) = node.cni(&[("CNI_COMMAND", "STATUS")], &node.conf("1.1.0"));
    assert!(ok, "{s}");

    // GC removes attachments not in the valid list.
    let keep = node.pod_netns().display().to_string();
    let drop_ns = node.pod_netns().display().to_string();
    assert!(node.cni(&env("ADD", "keep", &keep), &node.conf("1.1.0")).0);
    assert!(
        node.cni(&env("ADD", "gone", &drop_ns), &node.conf("1.1.0"))
            .0
    );
    let gc = format!(
        r#"{{"cniVersion":"1.1.0","name":"plexus","type":"plexus-cni","agentSocket":"{}","cni.dev/valid-attachments":[{{"containerID":"keep","ifname":"eth0"}}]}}"#,
        node.socket.display()
    );
    let (ok, r) = node.cni(&[("CNI_COMMAND", "GC")], &gc);
    assert!(ok, "{r}");
    assert!(
        node.cni(&env("CHECK", "keep", &keep), &node.conf("1.1.0"))
            .0
    );
    assert!(
        !node
            .cni(&env("CHECK", "gone", &drop_ns), &node.conf("1.1.0"))
            .0
    );

    // Spec error codes.
    let (ok, e) = node.cni(&[("CNI_COMMAND", "ADD")], &node.conf("1.1.0"));
    assert!(!ok);
    assert_eq!(e["code"], 4, "missing CNI_CONTAINERID: {e}");
    let (ok, e) = node.cni(&env("ADD", "c9", &keep), "{not json");
    assert!(!ok);
    assert_eq!(e["code"], 6, "{e}");
    let (ok, e) = node.cni(&env("ADD", "c9", &keep), &node.conf("9.9.9"));
    assert!(!ok);
    assert_eq!(e["code"], 1, "{e}");
    assert!(e["msg"].is_string() && e["details"].as_str().unwrap().contains("9.9.9"));
    let (ok, e) = node.cni(&env("ADD", "c9", "/run/netns/nope"), &node.conf("1.1.0"));
    assert!(!ok);
    assert_eq!(e["code"], 4, "{e}");

    // With the agent down: STATUS says unavailable (50), ADD says try again later (11).
    node.stop_agent();
    let (ok, e) = node.cni(&[("CNI_COMMAND", "STATUS")], &node.conf("1.1.0"));
    assert!(!ok);
    assert_eq!(e["code"], 50, "{e}");
    let (ok, e) = node.cni(&env("ADD", "c9", &keep), &node.conf("1.1.0"));
    assert!(!ok);
    assert_eq!(e["code"], 11, "{e}");
}
