//! The entry point for any policy document: dispatches on apiVersion and kind to the
//! NetworkPolicy or Cilium parser.

use serde_json::Value;

use crate::{
    cilium::{self, CCNP_KIND, CNP_KIND},
    error::Object,
    k8s, ParsedPolicy, PolicyError,
};

/// The API version of Kubernetes' NetworkPolicy.
const NETWORKING_V1: &str = "networking.k8s.io/v1";

/// Whether `apiVersion`/`kind` name a policy kind that `parse_policy` understands.
pub fn is_policy_kind(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        (NETWORKING_V1, k8s::KIND) | (cilium::API_VERSION, CNP_KIND | CCNP_KIND)
    )
}

/// Parses and validates a policy document (as JSON): a `networking.k8s.io/v1` `NetworkPolicy`,
/// or a `cilium.io/v2` `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`.
pub fn parse_policy(value: &Value) -> Result<ParsedPolicy, PolicyError> {
    let doc = Object::document();
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| PolicyError::MissingField { at: doc.at(name) })
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    match (api_version, kind) {
        (NETWORKING_V1, k8s::KIND) => k8s::parse_network_policy(value),
        (cilium::API_VERSION, CNP_KIND) => cilium::parse_cilium_network_policy(value),
        (cilium::API_VERSION, CCNP_KIND) => cilium::parse_cilium_clusterwide_network_policy(value),
        _ => Err(PolicyError::UnknownKind {
            at: doc.at("kind"),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ParsedPolicy, PolicyError> {
        parse_policy(&serde_yaml::from_str(text).expect("test YAML parses"))
    }

    #[test]
    fn dispatches_on_kind() {
        let np = parse("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\nspec: {}\n")
            .expect("parses");
        assert_eq!(np.id.to_string(), "NetworkPolicy x/a");
        let cnp = parse("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b}\nspec: {endpointSelector: {}}\n")
            .expect("parses");
        assert_eq!(cnp.id.to_string(), "CiliumNetworkPolicy default/b");
        let ccnp = parse("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec: {endpointSelector: {}}\n")
            .expect("parses");
        assert_eq!(ccnp.id.to_string(), "CiliumClusterwideNetworkPolicy c");
    }

    #[test]
    fn rejects_other_kinds_naming_them() {
        let msg = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
            .expect_err("not a policy")
            .to_string();
        assert!(msg.starts_with("document: kind: "), "{msg}");
        assert!(msg.contains("\"ConfigMap\""), "{msg}");
        let msg = parse("apiVersion: cilium.io/v2alpha1\nkind: CiliumNetworkPolicy\n")
            .expect_err("wrong version")
            .to_string();
        assert!(msg.contains("cilium.io/v2alpha1"), "{msg}");
        let msg = parse("metadata: {name: a}\n")
            .expect_err("no kind")
            .to_string();
        assert_eq!(msg, "document: apiVersion: required field is missing");
    }

    #[test]
    fn knows_the_policy_kinds() {
        assert!(is_policy_kind("networking.k8s.io/v1", "NetworkPolicy"));
        assert!(is_policy_kind("cilium.io/v2", "CiliumNetworkPolicy"));
        assert!(is_policy_kind(
            "cilium.io/v2",
            "CiliumClusterwideNetworkPolicy"
        ));
        assert!(!is_policy_kind("cilium.io/v2", "NetworkPolicy"));
        assert!(!is_policy_kind("v1", "Pod"));
    }
}
