//! Policy parsing errors: each names the object, the path of the offending field inside it, and
//! what is wrong with it.

use std::fmt;

use plexus_identity::Prefix;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{k8s::DEFAULT_NAMESPACE, PolicyId};

/// Where a problem is: which object, and the path of the field inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The object, e.g. `NetworkPolicy x/allow-web`, or `document` when its name is unknown.
    pub object: String,
    /// The field path, e.g. `spec.ingress[0].from[1].ipBlock.cidr` (empty for the whole object).
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.object)
        } else {
            write!(f, "{}: {}", self.object, self.path)
        }
    }
}

/// A policy object that cannot be parsed or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The document does not have the shape of its kind (a field of the wrong type, say).
    #[error("{at}: {message}")]
    Malformed {
        /// Where.
        at: Location,
        /// What the deserializer expected.
        message: String,
    },
    /// A field that the kind does not have (a typo, or a field of another API version).
    #[error("{at}: unknown field{}", expected_suffix(.expected))]
    UnknownField {
        /// Where (the path ends with the unknown field).
        at: Location,
        /// The fields allowed there, when known.
        expected: Option<String>,
    },
    /// The document is not one of the policy kinds.
    #[error(
        "{at}: apiVersion {api_version:?} kind {kind:?} is not a policy (expected \
         networking.k8s.io/v1 NetworkPolicy, or cilium.io/v2 CiliumNetworkPolicy or \
         CiliumClusterwideNetworkPolicy)"
    )]
    UnknownKind {
        /// Where.
        at: Location,
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// A required field is absent or empty.
    #[error("{at}: required field is missing")]
    MissingField {
        /// Where (the path names the missing field).
        at: Location,
    },
    /// A Cilium policy with neither `spec` nor `specs`.
    #[error("{at}: neither spec nor specs is set; a Cilium policy needs at least one rule")]
    NoRules {
        /// Where.
        at: Location,
    },
    /// A Cilium policy rule without `endpointSelector`.
    #[error("{at}: the rule has no endpointSelector to select the endpoints it applies to")]
    NoEndpointSelector {
        /// Where (the path names the missing selector).
        at: Location,
    },
    /// A field that exists in the API but that Plexus does not implement yet.
    #[error("{at}: field {field} is not supported yet")]
    Unsupported {
        /// Where (the path ends with the field).
        at: Location,
        /// The field's name.
        field: String,
    },
    /// Not a CIDR.
    #[error("{at}: {value:?} is not a valid CIDR: {reason}")]
    InvalidCidr {
        /// Where.
        at: Location,
        /// The text given.
        value: String,
        /// Why.
        reason: String,
    },
    /// An `except` range that is not inside its `cidr`.
    #[error("{at}: except {except} is not {} cidr {cidr}", within(.strict))]
    ExceptOutsideCidr {
        /// Where (the path names the except entry).
        at: Location,
        /// The except range.
        except: Prefix,
        /// The range it should be inside.
        cidr: Prefix,
        /// Whether it must be strictly smaller (Kubernetes) or may be equal (Cilium).
        strict: bool,
    },
    /// A port number outside 1-65535.
    #[error("{at}: port {port} is out of range 1-65535")]
    PortOutOfRange {
        /// Where.
        at: Location,
        /// The number given.
        port: i64,
    },
    /// A port name that is not an IANA service name.
    #[error("{at}: {name:?} is not a valid port name: {reason}")]
    InvalidPortName {
        /// Where.
        at: Location,
        /// The name given.
        name: String,
        /// Why.
        reason: String,
    },
    /// A range whose end is before its start.
    #[error("{at}: endPort {end_port} is less than port {port}")]
    EndPortBeforePort {
        /// Where (the path names endPort).
        at: Location,
        /// The start.
        port: u16,
        /// The end.
        end_port: u16,
    },
    /// `endPort` with a named port, or without a port.
    #[error("{at}: endPort needs a numeric port (not a named port, and not all ports)")]
    EndPortWithoutPort {
        /// Where (the path names endPort).
        at: Location,
    },
    /// A protocol the API does not allow.
    #[error("{at}: unknown protocol {protocol:?} (expected {allowed})")]
    UnknownProtocol {
        /// Where.
        at: Location,
        /// The protocol given.
        protocol: String,
        /// The protocols allowed there.
        allowed: &'static str,
    },
    /// A name that is not one of Cilium's entities.
    #[error(
        "{at}: unknown entity {entity:?} (expected one of host, remote-node, world, world-ipv4, \
         world-ipv6, cluster, all, kube-apiserver, health, init, unmanaged, ingress)"
    )]
    UnknownEntity {
        /// Where.
        at: Location,
        /// The entity given.
        entity: String,
    },
    /// A label selector operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "{at}: invalid label selector operator {operator:?} (expected In, NotIn, Exists or \
         DoesNotExist)"
    )]
    InvalidOperator {
        /// Where (the path names the operator).
        at: Location,
        /// The operator given.
        operator: String,
    },
    /// Values that do not fit the operator.
    #[error("{at}: operator {operator} {reason}")]
    InvalidOperatorValues {
        /// Where (the path names the values).
        at: Location,
        /// The operator.
        operator: String,
        /// Why.
        reason: &'static str,
    },
    /// A label key that is not valid.
    #[error("{at}: {key:?} is not a valid label key: {reason}")]
    InvalidLabelKey {
        /// Where.
        at: Location,
        /// The key given.
        key: String,
        /// Why.
        reason: String,
    },
    /// A label value that is not valid.
    #[error("{at}: {value:?} is not a valid label value: {reason}")]
    InvalidLabelValue {
        /// Where.
        at: Location,
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A `policyTypes` entry other than Ingress and Egress.
    #[error("{at}: invalid policyTypes entry {value:?} (expected Ingress or Egress)")]
    InvalidPolicyType {
        /// Where.
        at: Location,
        /// The entry given.
        value: String,
    },
    /// A NetworkPolicy peer that selects nothing or mixes ipBlock with selectors.
    #[error("{at}: {reason}")]
    InvalidPeer {
        /// Where (the path names the peer).
        at: Location,
        /// Why.
        reason: &'static str,
    },
    /// L7 rules in a deny rule (Cilium forbids them).
    #[error("{at}: L7 rules are not allowed in deny rules")]
    L7InDeny {
        /// Where (the path names the rules).
        at: Location,
    },
    /// L7 rules on all ports (Cilium needs a port to redirect to the proxy).
    #[error("{at}: L7 rules need a port (they cannot apply to port 0 or all ports)")]
    L7WithoutPort {
        /// Where (the path names the port).
        at: Location,
    },
}

fn expected_suffix(expected: &Option<String>) -> String {
    expected
        .as_ref()
        .map_or_else(String::new, |e| format!(" ({e})"))
}

fn within(strict: &bool) -> &'static str {
    if *strict {
        "strictly inside"
    } else {
        "inside"
    }
}

/// The object being parsed, named as errors name it.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    label: String,
}

impl Object {
    /// Names a document of `kind` from its raw metadata, before it is known to be well formed.
    pub(crate) fn describe(kind: &str, value: &Value, namespaced: bool) -> Self {
        let meta = value.get("metadata");
        let text = |field: &str| {
            meta.and_then(|m| m.get(field))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let label = match text("name") {
            None => "document".to_string(),
            Some(name) => PolicyId {
                kind: kind.to_string(),
                namespace: namespaced
                    .then(|| text("namespace").unwrap_or(DEFAULT_NAMESPACE).to_string()),
                name: name.to_string(),
            }
            .to_string(),
        };
        Object { label }
    }

    /// An object known only as `document`.
    pub(crate) fn document() -> Self {
        Object {
            label: "document".to_string(),
        }
    }

    /// The location of a field of this object.
    pub(crate) fn at(&self, path: impl Into<String>) -> Location {
        Location {
            object: self.label.clone(),
            path: path.into(),
        }
    }

    /// Deserializes the document, reporting the path of the first field that does not fit.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self, value: &Value) -> Result<T, PolicyError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let at = self.at(if path == "." { String::new() } else { path });
            let message = e.inner().to_string();
            match message.strip_prefix("unknown field ") {
                Some(rest) => PolicyError::UnknownField {
                    at,
                    expected: rest.split_once(", ").map(|(_, known)| known.to_string()),
                },
                None => PolicyError::Malformed { at, message },
            }
        })
    }
}
