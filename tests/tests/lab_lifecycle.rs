//! Lab lifecycle: `down` leaves nothing behind (also after a crash), bad manifests are refused
//! with the file, object and field named and change nothing, Deployments expand to pods.

use std::process::Command;

use plexus_e2e::{bin, pods_yaml, unique, LabGuard, TempFile};

#[test]
fn down_leaves_no_namespace_pin_or_process() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b"]));
    let lab = LabGuard::up("down", &[&m.0]);
    let name = lab.name.clone();
    assert!(!LabGuard::leftovers(&name).is_empty());
    let pids = pids_of(&name);
    assert!(pids.len() >= 3, "agent and two workloads: {pids:?}");
    let out = lab.ok(&["lab", "down"]);
    assert!(out.contains("is down"), "{out}");
    assert_eq!(LabGuard::leftovers(&name), Vec::<String>::new());
    for p in pids {
        assert!(!plexus_e2e::alive(p), "process {p} survived lab down");
    }
}

#[test]
fn down_after_a_crash_cleans_up() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a"]));
    let lab = LabGuard::up("crash", &[&m.0]);
    let name = lab.name.clone();
    // Simulate a crash that lost the lab's record: only names remain to go by.
    std::fs::remove_file(format!("/run/plexus/lab/{name}/state.json")).unwrap();
    let pids = pids_of(&name);
    let r = lab.plexus(&["lab", "down"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(LabGuard::leftovers(&name), Vec::<String>::new());
    for p in pids {
        assert!(!plexus_e2e::alive(p), "process {p} survived");
    }
}

#[test]
fn bad_manifests_are_refused_and_change_nothing() {
    let m = TempFile::yaml("pods.yaml", &pods_yaml(&["x"], &["a", "b"]));
    let lab = LabGuard::up("bad", &[&m.0]);
    let before = lab.json(&["lab", "pods"]);
    let cases = [
        (
            "unknown-kind.yaml",
            "apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: f\n",
            vec!["unknown-kind.yaml", "Frobnicator"],
        ),
        (
            "bad-port.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n  namespace: x\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: eighty\n",
            vec!["bad-port.yaml", "x/c", "containerPort"],
        ),
        (
            "unknown-field.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n  namespace: x\nspec:\n  containers:\n  - name: c\n    portz:\n    - containerPort: 80\n",
            vec!["unknown-field.yaml", "x/c", "portz"],
        ),
        (
            "no-namespace.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n  namespace: nowhere\nspec:\n  containers:\n  - name: c\n",
            vec!["no-namespace.yaml", "nowhere", "metadata.namespace"],
        ),
    ];
    for (file, text, wants) in cases {
        // A good pod alongside the bad object must not be created either.
        let good = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: d\n  namespace: x\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\n---\n";
        let f = TempFile::yaml(file, &format!("{good}{text}"));
        let r = lab.plexus(&["lab", "apply", "-f", f.0.to_str().unwrap()]);
        assert!(!r.ok, "{file} was accepted");
        for w in wants {
            assert!(
                r.stderr.contains(w),
                "{file}: error does not name {w:?}: {}",
                r.stderr
            );
        }
        assert_eq!(lab.json(&["lab", "pods"]), before, "{file} changed the lab");
    }
    assert_eq!(lab.probe("x/a", "x/b", 80, "TCP")["connected"], true);
    // `up` refuses bad input before creating anything.
    let bad = TempFile::yaml("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: BAD_NAME\nspec:\n  containers:\n  - name: c\n");
    let name = unique("badup");
    let r = Command::new(bin("plexus"))
        .args(["--lab", &name, "lab", "up", "-f", bad.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("BAD_NAME"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(LabGuard::leftovers(&name), Vec::<String>::new());
}

#[test]
fn deployments_become_pods_and_scale() {
    let deploy = |replicas: u32| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: front\n  namespace: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: front\n  template:\n    metadata:\n      labels:\n        app: front\n    spec:\n      containers:\n      - name: c\n        ports:\n        - containerPort: 8080\n"
        )
    };
    let m = TempFile::yaml("d.yaml", &deploy(3));
    let lab = LabGuard::up("dep", &[&m.0]);
    let pods = lab.json(&["lab", "pods"]);
    let names: Vec<String> = pods.as_object().unwrap().keys().cloned().collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in &names {
        assert!(n.starts_with("web/front-"), "{n}");
        assert_eq!(pods[n]["labels"]["app"], "front");
        assert!(pods[n]["labels"]["pod-template-hash"].is_string());
    }
    let (_, grid) = lab.matrix(8080, "TCP");
    assert!(grid.iter().flatten().all(|c| *c), "{grid:?}");
    let m1 = TempFile::yaml("d.yaml", &deploy(1));
    lab.ok(&["lab", "apply", "-f", m1.0.to_str().unwrap()]);
    assert_eq!(lab.json(&["lab", "pods"]).as_object().unwrap().len(), 1);
    assert_eq!(
        lab.json(&["status"])["endpoints"],
        1,
        "scaled-down pods leave the agent too"
    );
}

/// PIDs of processes in the lab's namespaces.
fn pids_of(lab: &str) -> Vec<i32> {
    plexus_netdev::netns_list(&format!("plx-{lab}-"))
        .iter()
        .flat_map(|ns| plexus_netdev::netns_pids(&plexus_netdev::netns_path(ns)))
        .collect()
}
