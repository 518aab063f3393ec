//! Identity labels: the security-relevant labels of an endpoint, each with its source prefix.

use std::collections::BTreeMap;

/// Labels keyed by `source:key` (e.g. `k8s:app`), as Cilium writes them.
pub type Labels = BTreeMap<String, String>;

/// Source prefix of labels from Kubernetes.
pub const SOURCE_K8S: &str = "k8s";
/// Source prefix of reserved identities' labels.
pub const SOURCE_RESERVED: &str = "reserved";
/// Source prefix of CIDR identities' labels.
pub const SOURCE_CIDR: &str = "cidr";
/// Label carrying the pod's namespace.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Prefix under which the namespace's own labels are copied onto its pods.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

/// Pod labels that carry no identity meaning (they differ between replicas or revisions).
const EXCLUDED: [&str; 6] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
];

/// Whether a pod label key is security-relevant.
pub fn is_identity_label(key: &str) -> bool {
    !EXCLUDED.contains(&key) && !key.starts_with("annotation.")
}

/// The identity labels of a pod: its own labels (minus the excluded ones), its namespace, and its
/// namespace's labels.
pub fn endpoint_labels(namespace: &str, pod_labels: &Labels, namespace_labels: &Labels) -> Labels {
    let mut out = Labels::new();
    for (k, v) in pod_labels {
        if is_identity_label(k) {
            out.insert(format!("{SOURCE_K8S}:{k}"), v.clone());
        }
    }
    out.insert(
        format!("{SOURCE_K8S}:{NAMESPACE_LABEL}"),
        namespace.to_string(),
    );
    for (k, v) in namespace_labels {
        out.insert(
            format!("{SOURCE_K8S}:{NAMESPACE_LABELS_PREFIX}{k}"),
            v.clone(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_get_source_and_namespace_labels() {
        let pod: Labels = [
            ("app".into(), "web".into()),
            ("pod-template-hash".into(), "abc".into()),
        ]
        .into();
        let ns: Labels = [
            ("kubernetes.io/metadata.name".into(), "x".into()),
            ("team".into(), "t".into()),
        ]
        .into();
        let l = endpoint_labels("x", &pod, &ns);
        assert_eq!(l.get("k8s:app").map(String::as_str), Some("web"));
        assert!(!l.contains_key("k8s:pod-template-hash"));
        assert_eq!(
            l.get("k8s:io.kubernetes.pod.namespace").map(String::as_str),
            Some("x")
        );
        assert_eq!(
            l.get("k8s:io.cilium.k8s.namespace.labels.team")
                .map(String::as_str),
            Some("t")
        );
        assert_eq!(
            l.get("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name")
                .map(String::as_str),
            Some("x")
        );
    }
}
