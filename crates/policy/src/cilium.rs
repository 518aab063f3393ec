//! Cilium's `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy` (`cilium.io/v2`): strict
//! serde types for the fields Plexus implements, and their translation into the rule model with
//! Cilium's semantics (namespace scoping of selectors, per-rule default deny, deny rules,
//! entities, CIDRs, L4 ports with L7 rules carried along but enforced at L4).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use plexus_identity::{Prefix, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use serde::{de, Deserialize, Deserializer};
use serde_json::Value;

use crate::{
    error::Object,
    k8s::{
        check_except, check_label_key, cidr, namespace_key, namespace_of, port_name, port_range,
        selector_requirements,
    },
    Action, Direction, Enforcement, Entity, Origin, ParsedPolicy, Peer, PolicyError, PolicyId,
    PortProto, PortSpec, Proto, Requirement, Rule, Selector,
};

/// The API version of both kinds.
pub const API_VERSION: &str = "cilium.io/v2";
/// The namespaced kind.
pub const CNP_KIND: &str = "CiliumNetworkPolicy";
/// The cluster-wide kind.
pub const CCNP_KIND: &str = "CiliumClusterwideNetworkPolicy";

// ---- serde types ----------------------------------------------------------------------------

/// A `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy` (the same shape).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumPolicy {
    /// `cilium.io/v2`.
    pub api_version: Option<String>,
    /// The kind.
    pub kind: Option<String>,
    /// Name, namespace, labels, annotations, and what the API server adds.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// One rule.
    pub spec: Option<CiliumRule>,
    /// More rules (together with `spec` when both are present).
    pub specs: Option<Vec<CiliumRule>>,
    /// Written by Cilium; ignored.
    pub status: Option<Value>,
}

/// One rule: the endpoints it selects and what they may send and receive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumRule {
    /// The endpoints the rule applies to.
    pub endpoint_selector: Option<EndpointSelector>,
    /// Host policies (not supported yet).
    pub node_selector: Option<Value>,
    /// Allowed ingress.
    pub ingress: Option<Vec<IngressRule>>,
    /// Denied ingress.
    pub ingress_deny: Option<Vec<IngressRule>>,
    /// Allowed egress.
    pub egress: Option<Vec<EgressRule>>,
    /// Denied egress.
    pub egress_deny: Option<Vec<EgressRule>>,
    /// Free text.
    pub description: Option<String>,
    /// Labels of the rule.
    pub labels: Option<Vec<RuleLabel>>,
    /// Whether the rule puts its endpoints into default deny (per direction, default true).
    pub enable_default_deny: Option<DefaultDeny>,
}

/// A label of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleLabel {
    /// Key.
    pub key: String,
    /// Value.
    pub value: Option<String>,
    /// Source.
    pub source: Option<String>,
}

/// `enableDefaultDeny`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefaultDeny {
    /// For ingress.
    pub ingress: Option<bool>,
    /// For egress.
    pub egress: Option<bool>,
}

/// A label selector over identity labels (keys may carry a source: `k8s:app`, `any:app`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSelector {
    /// key → value requirements.
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements.
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

/// One set-based requirement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: String,
    /// Values (In and NotIn only).
    pub values: Option<Vec<String>>,
}

/// An ingress or ingressDeny rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressRule {
    /// Source endpoints.
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    /// Source entities.
    pub from_entities: Option<Vec<String>>,
    /// Source CIDRs (a bare address is a host prefix).
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    /// Source CIDRs with exceptions.
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    /// Destination ports of the selected endpoints.
    pub to_ports: Option<Vec<PortRule>>,
    /// Not supported yet.
    pub from_requires: Option<Value>,
    /// Not supported yet.
    pub from_nodes: Option<Value>,
    /// Not supported yet.
    pub from_groups: Option<Value>,
    /// Not supported yet.
    pub icmps: Option<Value>,
    /// Not supported yet.
    pub authentication: Option<Value>,
}

/// An egress or egressDeny rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination endpoints.
    pub to_endpoints: Option<Vec<EndpointSelector>>,
    /// Destination entities.
    pub to_entities: Option<Vec<String>>,
    /// Destination CIDRs (a bare address is a host prefix).
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    /// Destination CIDRs with exceptions.
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    /// Destination ports.
    pub to_ports: Option<Vec<PortRule>>,
    /// Not supported yet.
    #[serde(rename = "toFQDNs")]
    pub to_fqdns: Option<Value>,
    /// Not supported yet.
    pub to_services: Option<Value>,
    /// Not supported yet.
    pub to_groups: Option<Value>,
    /// Not supported yet.
    pub to_requires: Option<Value>,
    /// Not supported yet.
    pub to_nodes: Option<Value>,
    /// Not supported yet.
    pub icmps: Option<Value>,
    /// Not supported yet.
    pub authentication: Option<Value>,
}

/// A CIDR with exceptions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CidrRule {
    /// The range.
    pub cidr: Option<String>,
    /// Sub-ranges left out.
    pub except: Option<Vec<String>>,
    /// Not supported yet.
    pub cidr_group_ref: Option<Value>,
    /// Not supported yet.
    pub cidr_group_selector: Option<Value>,
}

/// Ports, and L7 rules on them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRule {
    /// The ports.
    pub ports: Option<Vec<PortProtocol>>,
    /// L7 rules (`http`, `dns`, `kafka`, ...), kept opaque: enforced at L4 only for now.
    pub rules: Option<Value>,
    /// Not supported yet.
    pub server_names: Option<Value>,
    /// Not supported yet.
    #[serde(rename = "terminatingTLS")]
    pub terminating_tls: Option<Value>,
    /// Not supported yet.
    #[serde(rename = "originatingTLS")]
    pub originating_tls: Option<Value>,
    /// Not supported yet.
    pub listener: Option<Value>,
}

/// One port entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortProtocol {
    /// A number, a port name, or "0"/absent for every port.
    pub port: Option<PortText>,
    /// End of a range starting at `port` (0 means none).
    pub end_port: Option<i32>,
    /// TCP, UDP, SCTP or ANY (the default).
    pub protocol: Option<String>,
}

/// A port as Cilium writes it: a string, though a YAML integer is accepted too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortText(pub String);

impl<'de> Deserialize<'de> for PortText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PortText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number or name as a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

// ---- entry points ---------------------------------------------------------------------------

/// Parses and validates a `CiliumNetworkPolicy` (as JSON) into the rule model.
pub fn parse_cilium_network_policy(value: &Value) -> Result<ParsedPolicy, PolicyError> {
    parse(value, CNP_KIND)
}

/// Parses and validates a `CiliumClusterwideNetworkPolicy` (as JSON) into the rule model.
pub fn parse_cilium_clusterwide_network_policy(value: &Value) -> Result<ParsedPolicy, PolicyError> {
    parse(value, CCNP_KIND)
}

fn parse(value: &Value, kind: &str) -> Result<ParsedPolicy, PolicyError> {
    let namespaced = kind == CNP_KIND;
    let obj = Object::describe(kind, value, namespaced);
    let policy: CiliumPolicy = obj.deserialize(value)?;
    check_type(&obj, &policy, kind)?;
    let name = policy
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PolicyError::MissingField {
            at: obj.at("metadata.name"),
        })?;
    let namespace = namespaced.then(|| namespace_of(&policy.metadata));
    let id = PolicyId {
        kind: kind.to_string(),
        namespace: namespace.clone(),
        name,
    };
    Translator { obj, id, namespace }.policy(&policy)
}

/// `apiVersion` and `kind`, when given, must be the ones asked for.
fn check_type(obj: &Object, policy: &CiliumPolicy, kind: &str) -> Result<(), PolicyError> {
    let mismatch = |field: &str, got: &str, want: &str| PolicyError::Malformed {
        at: obj.at(field),
        message: format!("expected {want:?}, found {got:?}"),
    };
    match (&policy.api_version, &policy.kind) {
        (Some(v), _) if v != API_VERSION => Err(mismatch("apiVersion", v, API_VERSION)),
        (_, Some(k)) if k != kind => Err(mismatch("kind", k, kind)),
        _ => Ok(()),
    }
}

// ---- translation ----------------------------------------------------------------------------

/// The L3 (peer) fields of an ingress or egress rule, with their names.
struct PeerFields<'a> {
    /// `from` or `to`.
    prefix: &'static str,
    endpoints: &'a [EndpointSelector],
    entities: &'a [String],
    cidrs: &'a [String],
    cidr_sets: &'a [CidrRule],
}

/// What ingress and egress rules have in common.
trait DirectionalRule {
    /// The peer fields.
    fn peer_fields(&self) -> PeerFields<'_>;
    /// `toPorts`.
    fn to_ports(&self) -> &[PortRule];
    /// The fields Plexus does not implement, by name.
    fn unsupported(&self) -> Vec<(&'static str, Option<&Value>)>;
}

impl DirectionalRule for IngressRule {
    fn peer_fields(&self) -> PeerFields<'_> {
        PeerFields {
            prefix: "from",
            endpoints: self.from_endpoints.as_deref().unwrap_or_default(),
            entities: self.from_entities.as_deref().unwrap_or_default(),
            cidrs: self.from_cidr.as_deref().unwrap_or_default(),
            cidr_sets: self.from_cidr_set.as_deref().unwrap_or_default(),
        }
    }
    fn to_ports(&self) -> &[PortRule] {
        self.to_ports.as_deref().unwrap_or_default()
    }
    fn unsupported(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("fromRequires", self.from_requires.as_ref()),
            ("fromNodes", self.from_nodes.as_ref()),
            ("fromGroups", self.from_groups.as_ref()),
            ("icmps", self.icmps.as_ref()),
            ("authentication", self.authentication.as_ref()),
        ]
    }
}

impl DirectionalRule for EgressRule {
    fn peer_fields(&self) -> PeerFields<'_> {
        PeerFields {
            prefix: "to",
            endpoints: self.to_endpoints.as_deref().unwrap_or_default(),
            entities: self.to_entities.as_deref().unwrap_or_default(),
            cidrs: self.to_cidr.as_deref().unwrap_or_default(),
            cidr_sets: self.to_cidr_set.as_deref().unwrap_or_default(),
        }
    }
    fn to_ports(&self) -> &[PortRule] {
        self.to_ports.as_deref().unwrap_or_default()
    }
    fn unsupported(&self) -> Vec<(&'static str, Option<&Value>)> {
        vec![
            ("toFQDNs", self.to_fqdns.as_ref()),
            ("toServices", self.to_services.as_ref()),
            ("toGroups", self.to_groups.as_ref()),
            ("toRequires", self.to_requires.as_ref()),
            ("toNodes", self.to_nodes.as_ref()),
            ("icmps", self.icmps.as_ref()),
            ("authentication", self.authentication.as_ref()),
        ]
    }
}

/// The rule a section entry belongs to: its subject, and whether that selects `reserved:init`.
struct Subject {
    selector: Selector,
    selects_init: bool,
}

/// Translates one Cilium policy.
struct Translator {
    obj: Object,
    id: PolicyId,
    /// The policy's namespace (None for a cluster-wide policy).
    namespace: Option<String>,
}

impl Translator {
    fn policy(&self, policy: &CiliumPolicy) -> Result<ParsedPolicy, PolicyError> {
        let mut rules: Vec<(String, &CiliumRule)> = Vec::new();
        rules.extend(policy.spec.iter().map(|r| ("spec".to_string(), r)));
        for (i, r) in policy.specs.iter().flatten().enumerate() {
            rules.push((format!("specs[{i}]"), r));
        }
        if rules.is_empty() {
            return Err(PolicyError::NoRules {
                at: self.obj.at("spec"),
            });
        }
        let mut out = ParsedPolicy {
            id: self.id.clone(),
            enforcements: Vec::new(),
            rules: Vec::new(),
        };
        for (path, rule) in rules {
            self.rule(&path, rule, &mut out)?;
        }
        Ok(out)
    }

    fn origin(&self, rule: &str) -> Origin {
        Origin {
            policy: self.id.clone(),
            rule: rule.to_string(),
        }
    }

    /// One element of `spec`/`specs`: its enforcements and its rules, added to `out`.
    fn rule(
        &self,
        path: &str,
        rule: &CiliumRule,
        out: &mut ParsedPolicy,
    ) -> Result<(), PolicyError> {
        self.reject_unsupported(path, [("nodeSelector", rule.node_selector.as_ref())])?;
        let selector =
            rule.endpoint_selector
                .as_ref()
                .ok_or_else(|| PolicyError::NoEndpointSelector {
                    at: self.obj.at(format!("{path}.endpointSelector")),
                })?;
        let subject = self.subject(&format!("{path}.endpointSelector"), selector)?;
        let (ingress, egress) = (Direction::Ingress, Direction::Egress);
        let (allow, deny) = (Action::Allow, Action::Deny);
        let at = |field: &str| format!("{path}.{field}");
        let rules = &mut out.rules;
        rules.extend(self.section(&at("ingress"), &rule.ingress, &subject, ingress, allow)?);
        rules.extend(self.section(
            &at("ingressDeny"),
            &rule.ingress_deny,
            &subject,
            ingress,
            deny,
        )?);
        rules.extend(self.section(&at("egress"), &rule.egress, &subject, egress, allow)?);
        rules.extend(self.section(&at("egressDeny"), &rule.egress_deny, &subject, egress, deny)?);
        out.enforcements
            .extend(self.enforcements(path, rule, &subject.selector));
        Ok(())
    }

    /// Default deny, as Cilium decides it: a direction with at least one allow or deny rule,
    /// unless `enableDefaultDeny` turns it off.
    fn enforcements(&self, path: &str, rule: &CiliumRule, subject: &Selector) -> Vec<Enforcement> {
        let switch = rule.enable_default_deny.as_ref();
        let ingress = (has_entries(&rule.ingress) || has_entries(&rule.ingress_deny))
            && switch.and_then(|d| d.ingress).unwrap_or(true);
        let egress = (has_entries(&rule.egress) || has_entries(&rule.egress_deny))
            && switch.and_then(|d| d.egress).unwrap_or(true);
        [(ingress, Direction::Ingress), (egress, Direction::Egress)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, direction)| Enforcement {
                origin: self.origin(path),
                subject: subject.clone(),
                direction,
            })
            .collect()
    }

    /// The endpoint selector; a namespaced policy only selects endpoints of its own namespace
    /// (a namespace the selector names in matchLabels is replaced, as Cilium does).
    fn subject(&self, path: &str, sel: &EndpointSelector) -> Result<Subject, PolicyError> {
        let requirements = self.selector(path, sel)?;
        let selects_init = requirements.iter().any(|r| r.key == "reserved:init");
        let selector = match &self.namespace {
            None => Selector::new(requirements),
            Some(ns) => {
                let ns_key = namespace_key();
                let overridden = sel
                    .match_labels
                    .as_ref()
                    .and_then(|labels| labels.get(&ns_key))
                    .map(|v| Requirement::eq(ns_key.clone(), v.clone()));
                let mut kept: Vec<_> = requirements
                    .into_iter()
                    .filter(|r| Some(r) != overridden.as_ref())
                    .collect();
                kept.push(Requirement::eq(ns_key, ns.clone()));
                Selector::new(kept)
            }
        };
        Ok(Subject {
            selector,
            selects_init,
        })
    }

    /// A selector's requirements, keys normalised to `source:key`.
    fn selector(
        &self,
        path: &str,
        sel: &EndpointSelector,
    ) -> Result<Vec<Requirement>, PolicyError> {
        selector_requirements(&self.obj, path, &sel.into(), &cilium_key)
    }

    /// The entries of one of `ingress`, `ingressDeny`, `egress`, `egressDeny` at `path`.
    fn section<R: DirectionalRule>(
        &self,
        path: &str,
        entries: &Option<Vec<R>>,
        subject: &Subject,
        direction: Direction,
        action: Action,
    ) -> Result<Vec<Rule>, PolicyError> {
        let mut rules = Vec::new();
        for (i, entry) in entries.iter().flatten().enumerate() {
            let p = format!("{path}[{i}]");
            rules.extend(self.entry(&p, entry, subject, direction, action)?);
        }
        Ok(rules)
    }

    /// One ingress/egress entry. As in Cilium, an entry with no peer fields applies to every
    /// peer on its `toPorts`, and allows (or denies) nothing when it has no ports either.
    fn entry<R: DirectionalRule>(
        &self,
        path: &str,
        entry: &R,
        subject: &Subject,
        direction: Direction,
        action: Action,
    ) -> Result<Option<Rule>, PolicyError> {
        self.reject_unsupported(path, entry.unsupported())?;
        let peers = self.peers(path, &entry.peer_fields(), subject.selects_init)?;
        let port_rules = entry.to_ports();
        let (ports, has_l7) = self.port_rules(&format!("{path}.toPorts"), port_rules, action)?;
        let selects_nothing = (peers.is_none() && port_rules.is_empty())
            || (!port_rules.is_empty() && ports.is_empty());
        if selects_nothing {
            return Ok(None);
        }
        Ok(Some(Rule {
            origin: self.origin(path),
            subject: subject.selector.clone(),
            direction,
            action,
            peers,
            ports,
            has_l7,
        }))
    }

    fn reject_unsupported<'a>(
        &self,
        path: &str,
        fields: impl IntoIterator<Item = (&'static str, Option<&'a Value>)>,
    ) -> Result<(), PolicyError> {
        for (field, value) in fields {
            if value.is_some_and(is_given) {
                return Err(PolicyError::Unsupported {
                    at: self.obj.at(format!("{path}.{field}")),
                    field: field.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The union of the peer fields; None (every peer) when there are none.
    fn peers(
        &self,
        path: &str,
        f: &PeerFields<'_>,
        init: bool,
    ) -> Result<Option<Vec<Peer>>, PolicyError> {
        let at = |field: &str, i: usize| format!("{path}.{}{field}[{i}]", f.prefix);
        let mut peers = Vec::new();
        for (i, sel) in f.endpoints.iter().enumerate() {
            let requirements = self.selector(&at("Endpoints", i), sel)?;
            peers.push(Peer::Endpoints(self.scope_peer(requirements, init)));
        }
        for (i, name) in f.entities.iter().enumerate() {
            peers.push(Peer::Entity(self.entity(&at("Entities", i), name)?));
        }
        for (i, text) in f.cidrs.iter().enumerate() {
            let cidr = self.cidr_or_address(&at("CIDR", i), text)?;
            peers.push(Peer::Cidr {
                cidr,
                except: Vec::new(),
            });
        }
        for (i, set) in f.cidr_sets.iter().enumerate() {
            peers.push(self.cidr_set(&at("CIDRSet", i), set)?);
        }
        Ok((!peers.is_empty()).then_some(peers))
    }

    /// Cilium's scoping of a peer endpoint selector: selectors with `reserved:` keys or naming
    /// the namespace are kept; otherwise a namespaced policy restricts them to its namespace
    /// (unless they select on namespace labels), and a cluster-wide one to pods (endpoints with
    /// a namespace), unless the rule's subject selects initializing endpoints.
    fn scope_peer(&self, requirements: Vec<Requirement>, subject_selects_init: bool) -> Selector {
        let selector = Selector::new(requirements);
        let has_key =
            |pred: &dyn Fn(&str) -> bool| selector.requirements.iter().any(|r| pred(&r.key));
        let reserved = has_key(&|k| k.starts_with("reserved:"));
        let names_namespace =
            has_key(&|k| matches!(source_and_name(k), ("k8s" | "any", NAMESPACE_LABEL)));
        let namespace_labels = has_key(&|k| {
            let (source, name) = source_and_name(k);
            matches!(source, "k8s" | "any") && name.starts_with(NAMESPACE_LABELS_PREFIX)
        });
        if reserved || names_namespace {
            return selector;
        }
        match &self.namespace {
            None if subject_selects_init => selector,
            None => selector.with(Requirement::exists(namespace_key())),
            Some(_) if namespace_labels => selector,
            Some(ns) => selector.with(Requirement::eq(namespace_key(), ns.clone())),
        }
    }

    fn entity(&self, path: &str, name: &str) -> Result<Entity, PolicyError> {
        match name {
            "world-ipv4" => Ok(Entity::WorldIpv4),
            "world-ipv6" => Ok(Entity::WorldIpv6),
            _ => Entity::parse(name).ok_or_else(|| PolicyError::UnknownEntity {
                at: self.obj.at(path),
                entity: name.to_string(),
            }),
        }
    }

    /// A `fromCIDR`/`toCIDR` entry: a CIDR, or a bare address meaning its host prefix.
    fn cidr_or_address(&self, path: &str, text: &str) -> Result<Prefix, PolicyError> {
        match text.parse() {
            Ok(addr) if !text.contains('/') => Ok(Prefix::host(addr)),
            _ => cidr(&self.obj, path, text),
        }
    }

    fn cidr_set(&self, path: &str, set: &CidrRule) -> Result<Peer, PolicyError> {
        self.reject_unsupported(
            path,
            [
                ("cidrGroupRef", set.cidr_group_ref.as_ref()),
                ("cidrGroupSelector", set.cidr_group_selector.as_ref()),
            ],
        )?;
        let text = set
            .cidr
            .as_deref()
            .ok_or_else(|| PolicyError::MissingField {
                at: self.obj.at(format!("{path}.cidr")),
            })?;
        let range = cidr(&self.obj, &format!("{path}.cidr"), text)?;
        let mut except = Vec::new();
        for (i, e) in set.except.iter().flatten().enumerate() {
            let p = format!("{path}.except[{i}]");
            let e = cidr(&self.obj, &p, e)?;
            check_except(&self.obj, &p, &range, &e, false)?;
            except.push(e);
        }
        Ok(Peer::Cidr {
            cidr: range,
            except,
        })
    }

    /// `toPorts` at `path`: the ports, and whether any entry carries L7 rules.
    fn port_rules(
        &self,
        path: &str,
        rules: &[PortRule],
        action: Action,
    ) -> Result<(Vec<PortProto>, bool), PolicyError> {
        let mut ports = Vec::new();
        let mut has_l7 = false;
        for (i, rule) in rules.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.reject_unsupported(
                &p,
                [
                    ("serverNames", rule.server_names.as_ref()),
                    ("terminatingTLS", rule.terminating_tls.as_ref()),
                    ("originatingTLS", rule.originating_tls.as_ref()),
                    ("listener", rule.listener.as_ref()),
                ],
            )?;
            let l7 = rule.rules.as_ref().is_some_and(has_l7_rules);
            if l7 && action == Action::Deny {
                return Err(PolicyError::L7InDeny {
                    at: self.obj.at(format!("{p}.rules")),
                });
            }
            for (j, port) in rule.ports.iter().flatten().enumerate() {
                let pp = format!("{p}.ports[{j}]");
                let port = self.port(&pp, port)?;
                if l7 && port.port == PortSpec::Any {
                    return Err(PolicyError::L7WithoutPort {
                        at: self.obj.at(format!("{pp}.port")),
                    });
                }
                ports.push(port);
            }
            has_l7 |= l7;
        }
        Ok((ports, has_l7))
    }

    fn port(&self, path: &str, port: &PortProtocol) -> Result<PortProto, PolicyError> {
        let proto = match port.protocol.as_deref() {
            None => Proto::ANY,
            Some(p) => Proto::parse(p).ok_or_else(|| PolicyError::UnknownProtocol {
                at: self.obj.at(format!("{path}.protocol")),
                protocol: p.to_string(),
                allowed: "TCP, UDP, SCTP or ANY",
            })?,
        };
        let end_port = port.end_port.filter(|&e| e != 0).map(i64::from);
        let text = port.port.as_ref().map_or("", |p| p.0.as_str());
        let numeric = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let number = text.parse::<i64>().unwrap_or(i64::MAX);
        let spec = if text.is_empty() || (numeric && number == 0) {
            self.no_end_port(path, end_port)?;
            PortSpec::Any
        } else if numeric {
            port_range(&self.obj, path, number, end_port)?
        } else {
            self.no_end_port(path, end_port)?;
            port_name(
                &self.obj,
                &format!("{path}.port"),
                &text.to_ascii_lowercase(),
            )?
        };
        Ok(PortProto { port: spec, proto })
    }

    fn no_end_port(&self, path: &str, end_port: Option<i64>) -> Result<(), PolicyError> {
        match end_port {
            Some(_) => Err(PolicyError::EndPortWithoutPort {
                at: self.obj.at(format!("{path}.endPort")),
            }),
            None => Ok(()),
        }
    }
}

/// Whether an optional list has at least one entry.
fn has_entries<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_some_and(|l| !l.is_empty())
}

/// Whether an optional field holds something: not null and not `[]` (`{}` counts, as an empty
/// selector selects everything).
fn is_given(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// Whether `rules` holds L7 rules (any protocol key set, even to an empty list).
fn has_l7_rules(rules: &Value) -> bool {
    match rules {
        Value::Object(m) => m.values().any(|v| !v.is_null()),
        other => !other.is_null(),
    }
}

/// Splits `source:key` (a bare key has source `any`; `$name` means `reserved:name`).
fn source_and_name(key: &str) -> (&str, &str) {
    if let Some(name) = key.strip_prefix('$') {
        return ("reserved", name);
    }
    key.split_once(':').unwrap_or(("any", key))
}

/// A Cilium selector key normalised to `source:key`, validated.
fn cilium_key(key: &str) -> Result<String, String> {
    let (source, name) = source_and_name(key);
    if source.is_empty() {
        return Err("the source before ':' must not be empty".to_string());
    }
    if name.is_empty() {
        return Err("the key after the source must not be empty".to_string());
    }
    if matches!(source, "k8s" | "any") {
        check_label_key(name.strip_prefix(NAMESPACE_LABELS_PREFIX).unwrap_or(name))?;
    }
    Ok(format!("{source}:{name}"))
}

impl From<&EndpointSelector> for LabelSelector {
    fn from(sel: &EndpointSelector) -> Self {
        LabelSelector {
            match_labels: sel.match_labels.clone(),
            match_expressions: sel.match_expressions.as_ref().map(|list| {
                list.iter()
                    .map(|e| LabelSelectorRequirement {
                        key: e.key.clone(),
                        operator: e.operator.clone(),
                        values: e.values.clone(),
                    })
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Operator;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML parses")
    }

    fn cnp(spec: &str) -> String {
        format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: x}}\n{spec}")
    }

    fn ccnp(spec: &str) -> String {
        format!("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: p}}\n{spec}")
    }

    fn parse_cnp(spec: &str) -> ParsedPolicy {
        parse_cilium_network_policy(&yaml(&cnp(spec))).expect("policy parses")
    }

    fn parse_ccnp(spec: &str) -> ParsedPolicy {
        parse_cilium_clusterwide_network_policy(&yaml(&ccnp(spec))).expect("policy parses")
    }

    /// Asserts a CNP is rejected with a message naming the object and the field path.
    fn assert_error(spec: &str, path: &str, what: &str) {
        let msg = parse_cilium_network_policy(&yaml(&cnp(spec)))
            .expect_err("policy is rejected")
            .to_string();
        let at = format!("CiliumNetworkPolicy x/p: {path}: ");
        assert!(msg.starts_with(&at), "{msg:?} should start with {at:?}");
        assert!(msg.contains(what), "{msg:?} should contain {what:?}");
    }

    fn ns(name: &str) -> Requirement {
        Requirement::eq("k8s:io.kubernetes.pod.namespace", name)
    }

    fn sel(reqs: Vec<Requirement>) -> Selector {
        Selector::new(reqs)
    }

    fn endpoints(reqs: Vec<Requirement>) -> Peer {
        Peer::Endpoints(sel(reqs))
    }

    #[test]
    fn subject_keys_are_normalised_and_scoped_to_the_namespace() {
        let p = parse_cnp(
            "spec:\n  endpointSelector:\n    matchLabels: {app: web, 'k8s:tier': db, 'any:role': x}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {app: client}\n",
        );
        assert_eq!(p.id.to_string(), "CiliumNetworkPolicy x/p");
        let subject = sel(vec![
            Requirement::eq("any:app", "web"),
            Requirement::eq("k8s:tier", "db"),
            Requirement::eq("any:role", "x"),
            ns("x"),
        ]);
        assert_eq!(p.enforcements.len(), 1);
        assert_eq!(p.enforcements[0].origin.rule, "spec");
        assert_eq!(p.enforcements[0].direction, Direction::Ingress);
        assert_eq!(p.enforcements[0].subject, subject);
        let r = &p.rules[0];
        assert_eq!(r.origin.rule, "spec.ingress[0]");
        assert_eq!(r.subject, subject);
        assert_eq!(r.action, Action::Allow);
        assert_eq!(
            r.peers,
            Some(vec![endpoints(vec![
                Requirement::eq("any:app", "client"),
                ns("x")
            ])])
        );
        assert!(r.ports.is_empty());
        assert!(!p.has_l7());
    }

    #[test]
    fn subject_namespace_match_label_is_replaced() {
        let p = parse_cnp(
            "spec:\n  endpointSelector:\n    matchLabels: {'k8s:io.kubernetes.pod.namespace': other}\n  egress: [{toEntities: [world]}]\n",
        );
        assert_eq!(p.enforcements[0].subject, sel(vec![ns("x")]));
    }

    #[test]
    fn peer_selectors_naming_a_namespace_or_namespace_labels_are_not_scoped() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - {}\n    - matchLabels: {'k8s:io.kubernetes.pod.namespace': y, app: a}\n    - matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]\n    - matchLabels: {'io.cilium.k8s.namespace.labels.team': t}\n    - matchLabels: {'reserved:host': ''}\n",
        );
        assert_eq!(
            p.rules[0].peers,
            Some(vec![
                endpoints(vec![ns("x")]),
                endpoints(vec![ns("y"), Requirement::eq("any:app", "a")]),
                endpoints(vec![Requirement::exists("any:io.kubernetes.pod.namespace")]),
                endpoints(vec![Requirement::eq(
                    "any:io.cilium.k8s.namespace.labels.team",
                    "t"
                )]),
                endpoints(vec![Requirement::eq("reserved:host", "")]),
            ])
        );
    }

    #[test]
    fn clusterwide_policy_has_no_namespace_scope() {
        let p = parse_ccnp(
            "spec:\n  endpointSelector:\n    matchLabels: {app: web}\n  ingress:\n  - fromEndpoints:\n    - {}\n    - matchLabels: {'k8s:app': db}\n",
        );
        assert_eq!(p.id.namespace, None);
        assert_eq!(p.id.to_string(), "CiliumClusterwideNetworkPolicy p");
        assert_eq!(
            p.enforcements[0].subject,
            sel(vec![Requirement::eq("any:app", "web")])
        );
        let pods = Requirement::exists("k8s:io.kubernetes.pod.namespace");
        assert_eq!(
            p.rules[0].peers,
            Some(vec![
                endpoints(vec![pods.clone()]),
                endpoints(vec![Requirement::eq("k8s:app", "db"), pods]),
            ])
        );
    }

    #[test]
    fn clusterwide_policy_for_init_endpoints_keeps_empty_peer_selector() {
        let p = parse_ccnp(
            "spec:\n  endpointSelector:\n    matchLabels: {'reserved:init': ''}\n  egress:\n  - toEndpoints: [{}]\n",
        );
        assert_eq!(p.rules[0].peers, Some(vec![endpoints(vec![])]));
    }

    #[test]
    fn spec_and_specs_together_with_deny_rules() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  egress: [{toEntities: [cluster]}]\nspecs:\n- endpointSelector: {}\n  description: d\n  labels: [{key: k, value: v, source: s}]\n  ingressDeny:\n  - fromEntities: [world]\n- endpointSelector: {}\n  egressDeny:\n  - toCIDR: [10.0.0.1]\n",
        );
        let origins: Vec<_> = p
            .rules
            .iter()
            .map(|r| (r.origin.rule.as_str(), r.action))
            .collect();
        assert_eq!(
            origins,
            [
                ("spec.egress[0]", Action::Allow),
                ("specs[0].ingressDeny[0]", Action::Deny),
                ("specs[1].egressDeny[0]", Action::Deny),
            ]
        );
        let enforced: Vec<_> = p
            .enforcements
            .iter()
            .map(|e| (e.origin.rule.as_str(), e.direction))
            .collect();
        assert_eq!(
            enforced,
            [
                ("spec", Direction::Egress),
                ("specs[0]", Direction::Ingress),
                ("specs[1]", Direction::Egress),
            ]
        );
        assert_eq!(
            p.rules[2].peers,
            Some(vec![Peer::Cidr {
                cidr: "10.0.0.1/32".parse().expect("cidr"),
                except: vec![],
            }])
        );
    }

    #[test]
    fn enable_default_deny_false_and_empty_sections() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  enableDefaultDeny: {ingress: false}\n  ingress: [{fromEntities: [host]}]\n  egress: []\n",
        );
        assert!(p.enforcements.is_empty(), "{:?}", p.enforcements);
        assert_eq!(p.rules.len(), 1);
    }

    #[test]
    fn empty_entry_enforces_but_allows_nothing() {
        let p = parse_cnp("spec:\n  endpointSelector: {}\n  ingress: [{}]\n");
        assert_eq!(p.enforcements.len(), 1);
        assert!(p.rules.is_empty());
    }

    #[test]
    fn ports_only_entry_applies_to_every_peer() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - {port: '80', protocol: TCP}\n      - {port: '8000', endPort: 8080}\n      - {port: 53, protocol: UDP}\n      - {port: '0', protocol: SCTP}\n      - {protocol: ANY}\n      - {port: HTTP-alt}\n",
        );
        let r = &p.rules[0];
        assert_eq!(r.peers, None);
        assert_eq!(
            r.ports,
            [
                PortProto {
                    port: PortSpec::Range(80, 80),
                    proto: Proto::TCP
                },
                PortProto {
                    port: PortSpec::Range(8000, 8080),
                    proto: Proto::ANY
                },
                PortProto {
                    port: PortSpec::Range(53, 53),
                    proto: Proto::UDP
                },
                PortProto {
                    port: PortSpec::Any,
                    proto: Proto::SCTP
                },
                PortProto {
                    port: PortSpec::Any,
                    proto: Proto::ANY
                },
                PortProto {
                    port: PortSpec::Named("http-alt".into()),
                    proto: Proto::ANY
                },
            ]
        );
    }

    #[test]
    fn port_rules_without_ports_allow_nothing() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEntities: [all]\n    toPorts: [{ports: []}]\n",
        );
        assert!(p.rules.is_empty());
        assert_eq!(p.enforcements.len(), 1);
    }

    #[test]
    fn entities_and_cidrs() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  egress:\n  - toEntities: [host, remote-node, world, world-ipv4, world-ipv6, cluster, all, kube-apiserver, health, init, unmanaged, ingress]\n  - toCIDR: [10.0.0.0/8, '2001:db8::1']\n    toCIDRSet:\n    - {cidr: 192.168.0.0/16, except: [192.168.1.0/24, 192.168.2.0/24]}\n    - {cidr: 172.16.0.0/12, except: [172.16.0.0/12]}\n",
        );
        let entities: Vec<_> = p.rules[0]
            .peers
            .iter()
            .flatten()
            .map(|peer| match peer {
                Peer::Entity(e) => *e,
                other => panic!("not an entity: {other:?}"),
            })
            .collect();
        use Entity::*;
        assert_eq!(
            entities,
            [
                Host,
                RemoteNode,
                World,
                WorldIpv4,
                WorldIpv6,
                Cluster,
                All,
                KubeApiserver,
                Health,
                Init,
                Unmanaged,
                Ingress
            ]
        );
        let cidr = |s: &str| s.parse::<Prefix>().expect("cidr");
        assert_eq!(
            p.rules[1].peers,
            Some(vec![
                Peer::Cidr {
                    cidr: cidr("10.0.0.0/8"),
                    except: vec![]
                },
                Peer::Cidr {
                    cidr: cidr("2001:db8::1/128"),
                    except: vec![]
                },
                Peer::Cidr {
                    cidr: cidr("192.168.0.0/16"),
                    except: vec![cidr("192.168.1.0/24"), cidr("192.168.2.0/24")],
                },
                Peer::Cidr {
                    cidr: cidr("172.16.0.0/12"),
                    except: vec![cidr("172.16.0.0/12")]
                },
            ])
        );
    }

    #[test]
    fn peers_are_the_union_of_the_fields() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  egress:\n  - toEndpoints: [{matchLabels: {app: a}}]\n    toEntities: [world]\n    toCIDR: [1.1.1.1/32]\n    toPorts: [{ports: [{port: '443', protocol: TCP}]}]\n",
        );
        assert_eq!(p.rules[0].peers.as_ref().map(Vec::len), Some(3));
        assert_eq!(p.rules[0].ports.len(), 1);
    }

    #[test]
    fn l7_rules_set_has_l7() {
        let p = parse_cnp(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n    toPorts:\n    - ports: [{port: '80', protocol: TCP}]\n      rules:\n        http: [{method: GET, path: /}]\n  egress:\n  - toPorts:\n    - ports: [{port: '53', protocol: ANY}]\n      rules: {dns: [{matchPattern: '*'}]}\n  - toPorts: [{ports: [{port: '81'}], rules: {}}]\n",
        );
        let l7: Vec<_> = p.rules.iter().map(|r| r.has_l7).collect();
        assert_eq!(l7, [true, true, false]);
        assert!(p.has_l7());
    }

    #[test]
    fn match_expressions_in_cilium_selectors() {
        let p = parse_cnp(
            "spec:\n  endpointSelector:\n    matchExpressions:\n    - {key: 'k8s:app', operator: NotIn, values: [a, b]}\n    - {key: tier, operator: DoesNotExist}\n  ingress: [{fromEntities: [cluster]}]\n",
        );
        let reqs = &p.enforcements[0].subject.requirements;
        assert!(reqs.contains(&Requirement {
            key: "k8s:app".into(),
            op: Operator::NotIn,
            values: ["a".to_string(), "b".to_string()].into(),
        }));
        assert!(reqs.contains(&Requirement {
            key: "any:tier".into(),
            op: Operator::DoesNotExist,
            values: Default::default(),
        }));
    }

    #[test]
    fn accepts_api_server_metadata_and_status() {
        parse_cnp_text(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n  uid: u\n  resourceVersion: '1'\n  generation: 2\n  creationTimestamp: '2024-01-01T00:00:00Z'\n  labels: {a: b}\n  annotations: {c: d}\n  managedFields: [{manager: kubectl, operation: Update}]\nspec: {endpointSelector: {}}\nstatus: {conditions: []}\n",
        );
    }

    fn parse_cnp_text(text: &str) -> ParsedPolicy {
        parse_cilium_network_policy(&yaml(text)).expect("policy parses")
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoint: [{}]\n",
            "spec.ingress[0].fromEndpoint",
            "unknown field (expected one of",
        );
        assert_error(
            "spec:\n  endpointSelector: {matchLabel: {a: b}}\n",
            "spec.endpointSelector.matchLabel",
            "unknown field",
        );
        assert_error(
            "specs:\n- endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: '80', proto: TCP}]}]\n",
            "specs[0].egress[0].toPorts[0].ports[0].proto",
            "unknown field",
        );
    }

    #[test]
    fn type_errors_name_the_path() {
        assert_error(
            "spec:\n  endpointSelector: {}\n  egress: [{toEntities: world}]\n",
            "spec.egress[0].toEntities",
            "invalid type",
        );
    }

    #[test]
    fn structure_errors() {
        assert_error("", "spec", "neither spec nor specs");
        assert_error(
            "specs:\n- ingress: []\n",
            "specs[0].endpointSelector",
            "no endpointSelector",
        );
        assert_error(
            "spec:\n  nodeSelector: {}\n  endpointSelector: {}\n",
            "spec.nodeSelector",
            "field nodeSelector is not supported yet",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  egress: [{toServices: []}]\n  ingress: [{fromRequires: [{}]}]\n",
            "spec.ingress[0].fromRequires",
            "field fromRequires is not supported yet",
        );
        assert_error(
            "spec:\n  nodeSelector: {matchLabels: {a: b}}\n",
            "spec.nodeSelector",
            "field nodeSelector is not supported yet",
        );
        let msg = parse_cilium_network_policy(&yaml(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {namespace: x}\nspec: {endpointSelector: {}}\n",
        ))
        .expect_err("no name")
        .to_string();
        assert!(msg.starts_with("document: metadata.name: "), "{msg}");
        let msg =
            parse_cilium_clusterwide_network_policy(&yaml(&cnp("spec: {endpointSelector: {}}\n")))
                .expect_err("wrong kind")
                .to_string();
        assert!(
            msg.starts_with("CiliumClusterwideNetworkPolicy p: kind: "),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        for (entry, field) in [
            ("toFQDNs: [{matchName: a.com}]", "toFQDNs"),
            ("toServices: [{k8sService: {serviceName: s}}]", "toServices"),
            ("toGroups: [{aws: {}}]", "toGroups"),
            ("toRequires: [{}]", "toRequires"),
            ("icmps: [{fields: [{type: 8}]}]", "icmps"),
            ("authentication: {mode: required}", "authentication"),
        ] {
            assert_error(
                &format!("spec:\n  endpointSelector: {{}}\n  egress:\n  - {entry}\n"),
                &format!("spec.egress[0].{field}"),
                &format!("field {field} is not supported yet"),
            );
        }
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromRequires: [{}]\n",
            "spec.ingress[0].fromRequires",
            "not supported yet",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromCIDRSet: [{cidrGroupRef: g}]\n",
            "spec.ingress[0].fromCIDRSet[0].cidrGroupRef",
            "not supported yet",
        );
    }

    #[test]
    fn value_errors() {
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - matchExpressions: [{key: a, operator: in, values: [b]}]\n",
            "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator",
            "invalid label selector operator",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - matchExpressions: [{key: a, operator: NotIn}]\n",
            "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values",
            "needs at least one value",
        );
        assert_error(
            "spec:\n  endpointSelector: {matchLabels: {':app': web}}\n",
            "spec.endpointSelector.matchLabels.:app",
            "not a valid label key",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  egress: [{toEntities: [world, everything]}]\n",
            "spec.egress[0].toEntities[1]",
            "unknown entity \"everything\"",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  egress: [{toCIDR: [10.0.0.0/40]}]\n",
            "spec.egress[0].toCIDR[0]",
            "not a valid CIDR",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/8]}]}]\n",
            "spec.egress[0].toCIDRSet[0].except[0]",
            "is not inside cidr 10.0.0.0/8",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  egress: [{toCIDRSet: [{except: [11.0.0.0/8]}]}]\n",
            "spec.egress[0].toCIDRSet[0].cidr",
            "required field is missing",
        );
    }

    #[test]
    fn port_errors() {
        let port = |entry: &str| {
            format!(
                "spec:\n  endpointSelector: {{}}\n  egress:\n  - toPorts: [{{ports: [{entry}]}}]\n"
            )
        };
        let at = "spec.egress[0].toPorts[0].ports[0]";
        assert_error(
            &port("{port: '70000'}"),
            &format!("{at}.port"),
            "out of range",
        );
        assert_error(
            &port("{port: '90', endPort: 80}"),
            &format!("{at}.endPort"),
            "less than port 90",
        );
        assert_error(
            &port("{port: dns, endPort: 80}"),
            &format!("{at}.endPort"),
            "numeric port",
        );
        assert_error(
            &port("{port: '0', endPort: 80}"),
            &format!("{at}.endPort"),
            "numeric port",
        );
        assert_error(
            &port("{port: '80', protocol: ICMP}"),
            &format!("{at}.protocol"),
            "unknown protocol",
        );
        assert_error(
            &port("{port: 'a_b'}"),
            &format!("{at}.port"),
            "not a valid port name",
        );
    }

    #[test]
    fn l7_errors() {
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingressDeny:\n  - toPorts: [{ports: [{port: '80'}], rules: {http: [{}]}}]\n",
            "spec.ingressDeny[0].toPorts[0].rules",
            "L7 rules are not allowed in deny rules",
        );
        assert_error(
            "spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: '0', protocol: TCP}], rules: {http: [{}]}}]\n",
            "spec.ingress[0].toPorts[0].ports[0].port",
            "L7 rules need a port",
        );
    }
}
