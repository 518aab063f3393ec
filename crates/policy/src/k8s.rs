//! Kubernetes `NetworkPolicy` (`networking.k8s.io/v1`) parsed into the rule model with exact
//! Kubernetes semantics, plus the API server's validation rules (label keys and values, port
//! names, CIDRs, port ranges) that the Cilium parser shares.

use std::{collections::BTreeSet, net::IpAddr};

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use plexus_identity::{Prefix, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, SOURCE_K8S};
use serde_json::Value;

use crate::{
    error::Object, Direction, Enforcement, Operator, Origin, ParsedPolicy, Peer, PolicyError,
    PolicyId, PortProto, PortSpec, Proto, Requirement, Rule, Selector,
};

/// The kind this module parses.
pub const KIND: &str = "NetworkPolicy";
/// The namespace of a namespaced object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Parses and validates a `networking.k8s.io/v1` `NetworkPolicy` (as JSON) into the rule model.
///
/// Unknown fields are errors. Selected pods are put into default deny for each direction in force
/// (`Enforcement`), and each `spec.ingress[i]` / `spec.egress[i]` of a direction in force becomes
/// one allow `Rule`.
pub fn parse_network_policy(value: &Value) -> Result<ParsedPolicy, PolicyError> {
    let obj = Object::describe(KIND, value, true);
    let policy: NetworkPolicy = obj.deserialize(value)?;
    check_unknown_fields(&obj, value, &policy)?;
    let name = policy
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PolicyError::MissingField {
            at: obj.at("metadata.name"),
        })?;
    let namespace = namespace_of(&policy.metadata);
    let id = PolicyId {
        kind: KIND.to_string(),
        namespace: Some(namespace.clone()),
        name,
    };
    let translator = Translator { obj, id, namespace };
    translator.policy(&policy.spec.unwrap_or_default())
}

/// The namespace of a namespaced object (`default` when it names none).
pub(crate) fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// The identity label key holding a pod's namespace (`k8s:io.kubernetes.pod.namespace`).
pub(crate) fn namespace_key() -> String {
    format!("{SOURCE_K8S}:{NAMESPACE_LABEL}")
}

// ---- unknown fields -------------------------------------------------------------------------

/// k8s-openapi ignores unknown fields: find them as the keys of the input that do not survive a
/// round trip through the typed value (keys holding null, `{}` or `[]` excepted).
fn check_unknown_fields(
    obj: &Object,
    input: &Value,
    typed: &NetworkPolicy,
) -> Result<(), PolicyError> {
    let round_trip = serde_json::to_value(typed).map_err(|e| PolicyError::Malformed {
        at: obj.at(""),
        message: e.to_string(),
    })?;
    match first_unknown(input, &round_trip, "") {
        Some(path) => Err(PolicyError::UnknownField {
            at: obj.at(path),
            expected: None,
        }),
        None => Ok(()),
    }
}

fn first_unknown(input: &Value, typed: &Value, path: &str) -> Option<String> {
    match (input, typed) {
        (Value::Object(fields), Value::Object(known)) => fields
            .iter()
            .filter(|(_, v)| !is_vacuous(v))
            .find_map(|(key, v)| {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    None => Some(here),
                    Some(t) => first_unknown(v, t, &here),
                }
            }),
        (Value::Array(items), Value::Array(known)) => items
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(i, (v, t))| first_unknown(v, t, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn is_vacuous(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

// ---- translation ----------------------------------------------------------------------------

/// Translates one NetworkPolicy's spec.
struct Translator {
    obj: Object,
    id: PolicyId,
    namespace: String,
}

impl Translator {
    fn policy(&self, spec: &NetworkPolicySpec) -> Result<ParsedPolicy, PolicyError> {
        let subject = self.subject(spec)?;
        let directions = self.directions(spec)?;
        let enforcements = directions
            .iter()
            .map(|&direction| Enforcement {
                origin: self.origin("spec.policyTypes"),
                subject: subject.clone(),
                direction,
            })
            .collect();
        let mut rules = Vec::new();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let path = format!("spec.ingress[{i}]");
            let rule = self.rule(
                &path,
                &subject,
                Direction::Ingress,
                "from",
                r.from.as_deref(),
                r.ports.as_deref(),
            )?;
            rules.extend(directions.contains(&Direction::Ingress).then_some(rule));
        }
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let path = format!("spec.egress[{i}]");
            let rule = self.rule(
                &path,
                &subject,
                Direction::Egress,
                "to",
                r.to.as_deref(),
                r.ports.as_deref(),
            )?;
            rules.extend(directions.contains(&Direction::Egress).then_some(rule));
        }
        Ok(ParsedPolicy {
            id: self.id.clone(),
            enforcements,
            rules,
        })
    }

    fn origin(&self, rule: &str) -> Origin {
        Origin {
            policy: self.id.clone(),
            rule: rule.to_string(),
        }
    }

    /// The pods of the policy's namespace that `spec.podSelector` selects.
    fn subject(&self, spec: &NetworkPolicySpec) -> Result<Selector, PolicyError> {
        let mut reqs = match &spec.pod_selector {
            Some(sel) => selector_requirements(&self.obj, "spec.podSelector", sel, &pod_key)?,
            None => Vec::new(),
        };
        reqs.push(Requirement::eq(namespace_key(), self.namespace.clone()));
        Ok(Selector::new(reqs))
    }

    /// The directions in force: `policyTypes`, or by default Ingress, plus Egress when
    /// `spec.egress` is present.
    fn directions(&self, spec: &NetworkPolicySpec) -> Result<Vec<Direction>, PolicyError> {
        let types = spec.policy_types.as_deref().unwrap_or_default();
        if types.is_empty() {
            let mut dirs = vec![Direction::Ingress];
            dirs.extend(spec.egress.is_some().then_some(Direction::Egress));
            return Ok(dirs);
        }
        let mut dirs = types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                "Ingress" => Ok(Direction::Ingress),
                "Egress" => Ok(Direction::Egress),
                _ => Err(PolicyError::InvalidPolicyType {
                    at: self.obj.at(format!("spec.policyTypes[{i}]")),
                    value: t.clone(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }

    /// One `spec.ingress[i]` or `spec.egress[i]` entry; `peer_field` is `from` or `to`.
    fn rule(
        &self,
        path: &str,
        subject: &Selector,
        direction: Direction,
        peer_field: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> Result<Rule, PolicyError> {
        Ok(Rule {
            origin: self.origin(path),
            subject: subject.clone(),
            direction,
            action: crate::Action::Allow,
            peers: self.peers(&format!("{path}.{peer_field}"), peers.unwrap_or_default())?,
            ports: self.ports(&format!("{path}.ports"), ports.unwrap_or_default())?,
            has_l7: false,
        })
    }

    /// An absent or empty peer list matches every peer.
    fn peers(
        &self,
        path: &str,
        peers: &[NetworkPolicyPeer],
    ) -> Result<Option<Vec<Peer>>, PolicyError> {
        if peers.is_empty() {
            return Ok(None);
        }
        let peers = peers
            .iter()
            .enumerate()
            .map(|(i, p)| self.peer(&format!("{path}[{i}]"), p))
            .collect::<Result<_, _>>()?;
        Ok(Some(peers))
    }

    fn peer(&self, path: &str, peer: &NetworkPolicyPeer) -> Result<Peer, PolicyError> {
        let invalid = |reason| PolicyError::InvalidPeer {
            at: self.obj.at(path),
            reason,
        };
        match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (Some(block), None, None) => self.ip_block(&format!("{path}.ipBlock"), block),
            (Some(_), _, _) => Err(invalid(
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            )),
            (None, None, None) => Err(invalid(
                "a peer needs podSelector, namespaceSelector or ipBlock",
            )),
            (None, pods, namespaces) => self.endpoints(path, pods.as_ref(), namespaces.as_ref()),
        }
    }

    /// Pods matching `podSelector` (all when absent) in the namespaces matching
    /// `namespaceSelector` (the policy's own when absent).
    fn endpoints(
        &self,
        path: &str,
        pods: Option<&LabelSelector>,
        namespaces: Option<&LabelSelector>,
    ) -> Result<Peer, PolicyError> {
        let mut reqs = Vec::new();
        if let Some(sel) = pods {
            let p = format!("{path}.podSelector");
            reqs.extend(selector_requirements(&self.obj, &p, sel, &pod_key)?);
        }
        match namespaces {
            Some(sel) => {
                let p = format!("{path}.namespaceSelector");
                reqs.extend(selector_requirements(
                    &self.obj,
                    &p,
                    sel,
                    &namespace_label_key,
                )?);
                reqs.push(Requirement::exists(namespace_key()));
            }
            None => reqs.push(Requirement::eq(namespace_key(), self.namespace.clone())),
        }
        Ok(Peer::Endpoints(Selector::new(reqs)))
    }

    fn ip_block(&self, path: &str, block: &IPBlock) -> Result<Peer, PolicyError> {
        let cidr = cidr(&self.obj, &format!("{path}.cidr"), &block.cidr)?;
        let except = block
            .except
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| {
                let at = format!("{path}.except[{i}]");
                let except = self::cidr(&self.obj, &at, e)?;
                check_except(&self.obj, &at, &cidr, &except, true)?;
                Ok(except)
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(Peer::Cidr { cidr, except })
    }

    /// An absent or empty port list means every port of every protocol.
    fn ports(
        &self,
        path: &str,
        ports: &[NetworkPolicyPort],
    ) -> Result<Vec<PortProto>, PolicyError> {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| self.port(&format!("{path}[{i}]"), p))
            .collect()
    }

    fn port(&self, path: &str, port: &NetworkPolicyPort) -> Result<PortProto, PolicyError> {
        let proto = match port.protocol.as_deref() {
            None => Proto::TCP,
            Some(p @ ("TCP" | "UDP" | "SCTP")) => Proto::parse(p).unwrap_or(Proto::TCP),
            Some(p) => {
                return Err(PolicyError::UnknownProtocol {
                    at: self.obj.at(format!("{path}.protocol")),
                    protocol: p.to_string(),
                    allowed: "TCP, UDP or SCTP",
                })
            }
        };
        let end_port = port.end_port.map(i64::from);
        let no_end_port = || match end_port {
            Some(_) => Err(PolicyError::EndPortWithoutPort {
                at: self.obj.at(format!("{path}.endPort")),
            }),
            None => Ok(()),
        };
        let spec = match &port.port {
            None => no_end_port().map(|()| PortSpec::Any)?,
            Some(IntOrString::Int(n)) => port_range(&self.obj, path, i64::from(*n), end_port)?,
            Some(IntOrString::String(name)) => {
                no_end_port()?;
                port_name(&self.obj, &format!("{path}.port"), name)?
            }
        };
        Ok(PortProto { port: spec, proto })
    }
}

// ---- label selectors ------------------------------------------------------------------------

/// Maps a selector's label key to an identity label key, or says why the key is invalid.
pub(crate) type KeyMap<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// A pod label key `app` as the identity label key `k8s:app`.
fn pod_key(key: &str) -> Result<String, String> {
    check_label_key(key)?;
    Ok(format!("{SOURCE_K8S}:{key}"))
}

/// A namespace label key `team` as the identity label key its pods carry,
/// `k8s:io.cilium.k8s.namespace.labels.team`.
fn namespace_label_key(key: &str) -> Result<String, String> {
    check_label_key(key)?;
    Ok(format!("{SOURCE_K8S}:{NAMESPACE_LABELS_PREFIX}{key}"))
}

/// The requirements of a label selector at `path`, keys mapped by `key`.
pub(crate) fn selector_requirements(
    obj: &Object,
    path: &str,
    sel: &LabelSelector,
    key: KeyMap<'_>,
) -> Result<Vec<Requirement>, PolicyError> {
    let mut reqs = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        let at = || obj.at(format!("{path}.matchLabels.{k}"));
        let mapped = key(k).map_err(|reason| PolicyError::InvalidLabelKey {
            at: at(),
            key: k.clone(),
            reason,
        })?;
        check_label_value(v).map_err(|reason| PolicyError::InvalidLabelValue {
            at: at(),
            value: v.clone(),
            reason,
        })?;
        reqs.push(Requirement::eq(mapped, v.clone()));
    }
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        reqs.push(expression(
            obj,
            &format!("{path}.matchExpressions[{i}]"),
            e,
            key,
        )?);
    }
    Ok(reqs)
}

fn expression(
    obj: &Object,
    path: &str,
    e: &LabelSelectorRequirement,
    key: KeyMap<'_>,
) -> Result<Requirement, PolicyError> {
    let mapped = key(&e.key).map_err(|reason| PolicyError::InvalidLabelKey {
        at: obj.at(format!("{path}.key")),
        key: e.key.clone(),
        reason,
    })?;
    let op = parse_operator(&e.operator).ok_or_else(|| PolicyError::InvalidOperator {
        at: obj.at(format!("{path}.operator")),
        operator: e.operator.clone(),
    })?;
    let values = e.values.as_deref().unwrap_or_default();
    check_operator_values(op, values).map_err(|reason| PolicyError::InvalidOperatorValues {
        at: obj.at(format!("{path}.values")),
        operator: e.operator.clone(),
        reason,
    })?;
    for (i, v) in values.iter().enumerate() {
        check_label_value(v).map_err(|reason| PolicyError::InvalidLabelValue {
            at: obj.at(format!("{path}.values[{i}]")),
            value: v.clone(),
            reason,
        })?;
    }
    Ok(Requirement {
        key: mapped,
        op,
        values: values.iter().cloned().collect::<BTreeSet<_>>(),
    })
}

fn parse_operator(op: &str) -> Option<Operator> {
    Some(match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        _ => return None,
    })
}

fn check_operator_values(op: Operator, values: &[String]) -> Result<(), &'static str> {
    match op {
        Operator::In | Operator::NotIn if values.is_empty() => Err("needs at least one value"),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            Err("must not have values")
        }
        _ => Ok(()),
    }
}

// ---- validation rules of the Kubernetes API -------------------------------------------------

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
pub(crate) fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|r| format!("prefix {prefix:?} {r}"))?;
    }
    if name.is_empty() {
        return Err("the name part must not be empty".to_string());
    }
    check_label_text(name).map_err(|r| format!("name {name:?} {r}"))
}

/// Checks a label value: empty, or at most 63 characters of the label alphabet.
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_label_text(value).map_err(str::to_string)
}

fn check_label_text(s: &str) -> Result<(), &'static str> {
    let alphabet = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if s.len() > 63 {
        Err("must be at most 63 characters")
    } else if !alphabet || !s.starts_with(alnum) || !s.ends_with(alnum) {
        Err("must be alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric")
    } else {
        Ok(())
    }
}

fn check_dns_subdomain(s: &str) -> Result<(), &'static str> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || s.len() > 253 {
        Err("must be 1 to 253 characters")
    } else if !s.split('.').all(label_ok) {
        Err("must be a lowercase DNS subdomain such as example.com")
    } else {
        Ok(())
    }
}

/// Checks an IANA service name (a port name): at most 15 characters, lowercase letters, digits
/// and '-', at least one letter, no '-' at either end and no "--".
pub(crate) fn check_port_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        Err("must be 1 to 15 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Err("must be lowercase letters, digits and '-'")
    } else if !name.chars().any(|c| c.is_ascii_lowercase()) {
        Err("must contain at least one letter")
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        Err("must not begin or end with '-' or contain \"--\"")
    } else {
        Ok(())
    }
}

/// A named port at `path`, validated.
pub(crate) fn port_name(obj: &Object, path: &str, name: &str) -> Result<PortSpec, PolicyError> {
    check_port_name(name).map_err(|reason| PolicyError::InvalidPortName {
        at: obj.at(path),
        name: name.to_string(),
        reason: reason.to_string(),
    })?;
    Ok(PortSpec::Named(name.to_string()))
}

/// `port`..=`end_port` of the port entry at `path` (errors name `path.port` / `path.endPort`).
pub(crate) fn port_range(
    obj: &Object,
    path: &str,
    port: i64,
    end_port: Option<i64>,
) -> Result<PortSpec, PolicyError> {
    let number = |p: i64, field: &str| {
        u16::try_from(p)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| PolicyError::PortOutOfRange {
                at: obj.at(format!("{path}.{field}")),
                port: p,
            })
    };
    let lo = number(port, "port")?;
    let hi = match end_port {
        None => lo,
        Some(end) => number(end, "endPort")?,
    };
    if hi < lo {
        return Err(PolicyError::EndPortBeforePort {
            at: obj.at(format!("{path}.endPort")),
            port: lo,
            end_port: hi,
        });
    }
    Ok(PortSpec::Range(lo, hi))
}

/// A CIDR at `path`; host bits must be zero.
pub(crate) fn cidr(obj: &Object, path: &str, text: &str) -> Result<Prefix, PolicyError> {
    parse_cidr(text).map_err(|reason| PolicyError::InvalidCidr {
        at: obj.at(path),
        value: text.to_string(),
        reason,
    })
}

fn parse_cidr(text: &str) -> Result<Prefix, String> {
    if let Ok(p) = text.parse::<Prefix>() {
        return Ok(p);
    }
    let (addr, len) = text
        .split_once('/')
        .ok_or("want address/length, e.g. 10.0.0.0/8")?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|&l| l <= width)
        .ok_or_else(|| format!("the prefix length must be 0 to {width}"))?;
    Err(format!(
        "host bits are set (did you mean {}/{len}?)",
        network(addr, len)
    ))
}

/// `addr` with its host bits cleared.
fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Checks that `except` (at `path`) lies inside `cidr`, strictly so when `strict`.
pub(crate) fn check_except(
    obj: &Object,
    path: &str,
    cidr: &Prefix,
    except: &Prefix,
    strict: bool,
) -> Result<(), PolicyError> {
    if cidr.contains(except) && (!strict || except.len > cidr.len) {
        return Ok(());
    }
    Err(PolicyError::ExceptOutsideCidr {
        at: obj.at(path),
        except: *except,
        cidr: *cidr,
        strict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Entity};

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test YAML parses")
    }

    fn parse(text: &str) -> ParsedPolicy {
        parse_network_policy(&yaml(text)).expect("policy parses")
    }

    fn error(text: &str) -> String {
        parse_network_policy(&yaml(text))
            .expect_err("policy is rejected")
            .to_string()
    }

    /// Asserts an error message names the object and the field path.
    fn assert_error(text: &str, path: &str, what: &str) {
        let msg = error(text);
        let at = format!("NetworkPolicy x/p: {path}: ");
        assert!(msg.starts_with(&at), "{msg:?} should start with {at:?}");
        assert!(msg.contains(what), "{msg:?} should contain {what:?}");
    }

    fn ns() -> Requirement {
        Requirement::eq("k8s:io.kubernetes.pod.namespace", "x")
    }

    fn sel(reqs: Vec<Requirement>) -> Selector {
        Selector::new(reqs)
    }

    const HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n";

    fn with_spec(spec: &str) -> String {
        format!("{HEAD}spec:\n{spec}")
    }

    #[test]
    fn default_deny_ingress_with_empty_pod_selector() {
        let p = parse(&with_spec("  podSelector: {}\n"));
        assert_eq!(p.id.to_string(), "NetworkPolicy x/p");
        assert_eq!(p.enforcements.len(), 1);
        let e = &p.enforcements[0];
        assert_eq!(e.direction, Direction::Ingress);
        assert_eq!(e.origin.rule, "spec.policyTypes");
        assert_eq!(e.subject, sel(vec![ns()]));
        assert!(p.rules.is_empty());
        assert!(!p.has_l7());
    }

    #[test]
    fn namespace_defaults_to_default() {
        let p = parse("kind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n");
        assert_eq!(p.id.namespace.as_deref(), Some("default"));
        assert_eq!(
            p.enforcements[0].subject,
            sel(vec![Requirement::eq(
                "k8s:io.kubernetes.pod.namespace",
                "default"
            )])
        );
    }

    #[test]
    fn policy_types_default_adds_egress_when_present_even_empty() {
        let p = parse(&with_spec("  podSelector: {}\n  egress: []\n"));
        let dirs: Vec<_> = p.enforcements.iter().map(|e| e.direction).collect();
        assert_eq!(dirs, [Direction::Ingress, Direction::Egress]);
        assert!(p.rules.is_empty(), "egress: [] allows nothing");
    }

    #[test]
    fn explicit_policy_types_decide_and_ignore_other_rules() {
        let p = parse(&with_spec(
            "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n  egress: [{}]\n",
        ));
        let dirs: Vec<_> = p.enforcements.iter().map(|e| e.direction).collect();
        assert_eq!(dirs, [Direction::Egress]);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].direction, Direction::Egress);
        assert_eq!(p.rules[0].origin.rule, "spec.egress[0]");
    }

    #[test]
    fn empty_ingress_list_denies_and_empty_rule_allows_all() {
        let deny = parse(&with_spec("  podSelector: {}\n  ingress: []\n"));
        assert_eq!(deny.enforcements.len(), 1);
        assert!(deny.rules.is_empty());

        let allow = parse(&with_spec("  podSelector: {}\n  ingress: [{}]\n"));
        assert_eq!(allow.rules.len(), 1);
        let r = &allow.rules[0];
        assert_eq!(r.origin.rule, "spec.ingress[0]");
        assert_eq!(r.action, Action::Allow);
        assert_eq!(r.direction, Direction::Ingress);
        assert_eq!(r.peers, None);
        assert!(r.ports.is_empty());
        assert!(!r.has_l7);
    }

    #[test]
    fn empty_from_list_means_all_peers() {
        let p = parse(&with_spec("  podSelector: {}\n  ingress:\n  - from: []\n"));
        assert_eq!(p.rules[0].peers, None);
    }

    #[test]
    fn pod_selector_subject_and_peer_in_policy_namespace() {
        let p = parse(&with_spec(
            "  podSelector:\n    matchLabels: {app: web}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {app: db}\n",
        ));
        let r = &p.rules[0];
        assert_eq!(
            r.subject,
            sel(vec![Requirement::eq("k8s:app", "web"), ns()])
        );
        assert_eq!(
            r.peers,
            Some(vec![Peer::Endpoints(sel(vec![
                Requirement::eq("k8s:app", "db"),
                ns()
            ]))])
        );
    }

    #[test]
    fn namespace_selector_alone_matches_pods_of_matching_namespaces() {
        let p = parse(&with_spec(
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {team: a}\n    - namespaceSelector: {}\n",
        ));
        let exists = Requirement::exists("k8s:io.kubernetes.pod.namespace");
        assert_eq!(
            p.rules[0].peers,
            Some(vec![
                Peer::Endpoints(sel(vec![
                    Requirement::eq("k8s:io.cilium.k8s.namespace.labels.team", "a"),
                    exists.clone()
                ])),
                Peer::Endpoints(sel(vec![exists])),
            ])
        );
    }

    #[test]
    fn pod_and_namespace_selector_combined() {
        let p = parse(&with_spec(
            "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {pod: b}\n      namespaceSelector:\n        matchExpressions:\n        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}\n",
        ));
        let not_x = Requirement {
            key: "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name".into(),
            op: Operator::NotIn,
            values: ["x".to_string()].into(),
        };
        assert_eq!(
            p.rules[0].peers,
            Some(vec![Peer::Endpoints(sel(vec![
                Requirement::eq("k8s:pod", "b"),
                not_x,
                Requirement::exists("k8s:io.kubernetes.pod.namespace"),
            ]))])
        );
    }

    #[test]
    fn match_expressions_all_operators() {
        let p = parse(&with_spec(
            "  podSelector:\n    matchExpressions:\n    - {key: a, operator: In, values: ['1', '2']}\n    - {key: b, operator: NotIn, values: ['3']}\n    - {key: c, operator: Exists}\n    - {key: d, operator: DoesNotExist, values: []}\n",
        ));
        let ops: Vec<_> = p.enforcements[0]
            .subject
            .requirements
            .iter()
            .map(|r| (r.key.as_str(), r.op, r.values.len()))
            .collect();
        assert_eq!(
            ops,
            [
                ("k8s:a", Operator::In, 2),
                ("k8s:b", Operator::NotIn, 1),
                ("k8s:c", Operator::Exists, 0),
                ("k8s:d", Operator::DoesNotExist, 0),
                ("k8s:io.kubernetes.pod.namespace", Operator::In, 1),
            ]
        );
    }

    #[test]
    fn ip_block_with_except() {
        let p = parse(&with_spec(
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [10.1.0.0/16]\n    - ipBlock: {cidr: '2001:db8::/32'}\n",
        ));
        let r = &p.rules[0];
        assert_eq!(r.direction, Direction::Egress);
        assert_eq!(
            r.peers,
            Some(vec![
                Peer::Cidr {
                    cidr: "10.0.0.0/8".parse().expect("cidr"),
                    except: vec!["10.1.0.0/16".parse().expect("cidr")],
                },
                Peer::Cidr {
                    cidr: "2001:db8::/32".parse().expect("cidr"),
                    except: vec![],
                },
            ])
        );
        assert!(!r
            .peers
            .iter()
            .flatten()
            .any(|p| *p == Peer::Entity(Entity::World)));
    }

    #[test]
    fn ports_protocol_default_numeric_named_and_ranges() {
        let p = parse(&with_spec(
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - {protocol: UDP, port: 53}\n    - {port: 8000, endPort: 8080}\n    - {port: serve-80-tcp}\n    - {protocol: SCTP}\n",
        ));
        assert_eq!(
            p.rules[0].ports,
            [
                PortProto {
                    port: PortSpec::Range(80, 80),
                    proto: Proto::TCP
                },
                PortProto {
                    port: PortSpec::Range(53, 53),
                    proto: Proto::UDP
                },
                PortProto {
                    port: PortSpec::Range(8000, 8080),
                    proto: Proto::TCP
                },
                PortProto {
                    port: PortSpec::Named("serve-80-tcp".into()),
                    proto: Proto::TCP
                },
                PortProto {
                    port: PortSpec::Any,
                    proto: Proto::SCTP
                },
            ]
        );
    }

    #[test]
    fn vacuous_unknown_looking_fields_are_tolerated() {
        parse(&format!(
            "{HEAD}status: {{}}\nspec:\n  podSelector: {{matchLabels: {{}}}}\n  ingress: [{{from: [], ports: null}}]\n"
        ));
    }

    #[test]
    fn metadata_fields_from_the_api_server_are_accepted() {
        parse(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n  uid: 0b6f\n  resourceVersion: '12'\n  generation: 1\n  creationTimestamp: '2024-01-01T00:00:00Z'\n  labels: {a: b}\n  annotations: {c: d}\n  managedFields:\n  - manager: kubectl\n    operation: Update\n    fieldsType: FieldsV1\n    fieldsV1: {f:spec: {}}\nspec: {}\n",
        );
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - fromm: [{podSelector: {}}]\n"),
            "spec.ingress[0].fromm",
            "unknown field",
        );
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, exept: [10.0.0.0/9]}\n"),
            "spec.ingress[0].from[0].ipBlock.exept",
            "unknown field",
        );
        assert_error(&format!("{HEAD}sepc: {{a: 1}}\n"), "sepc", "unknown field");
    }

    #[test]
    fn type_errors_name_the_path() {
        assert_error(
            &with_spec("  podSelector: {}\n  egress:\n  - ports:\n    - port: true\n"),
            "spec.egress[0].ports[0].port",
            "invalid type",
        );
    }

    #[test]
    fn missing_name_is_an_error() {
        let msg = error("kind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {}\n");
        assert!(msg.starts_with("document: metadata.name: "), "{msg}");
    }

    #[test]
    fn cidr_errors() {
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/33}\n"),
            "spec.ingress[0].from[1].ipBlock.cidr",
            "not a valid CIDR",
        );
        assert_error(
            &with_spec(
                "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.1/8}\n",
            ),
            "spec.ingress[0].from[0].ipBlock.cidr",
            "did you mean 10.0.0.0/8",
        );
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}\n"),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "is not strictly inside cidr 10.0.0.0/8",
        );
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}\n"),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strictly inside",
        );
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: ['2001:db8::/64']}\n"),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "not strictly inside",
        );
    }

    #[test]
    fn peer_shape_errors() {
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n"),
            "spec.ingress[0].from[0]",
            "cannot be combined",
        );
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - {}\n"),
            "spec.ingress[0].from[0]",
            "a peer needs",
        );
    }

    #[test]
    fn port_errors() {
        let port = |entry: &str| {
            with_spec(&format!(
                "  podSelector: {{}}\n  egress:\n  - ports:\n    - {entry}\n"
            ))
        };
        assert_error(
            &port("{port: 0}"),
            "spec.egress[0].ports[0].port",
            "out of range",
        );
        assert_error(
            &port("{port: 70000}"),
            "spec.egress[0].ports[0].port",
            "out of range",
        );
        assert_error(
            &port("{port: 90, endPort: 80}"),
            "spec.egress[0].ports[0].endPort",
            "endPort 80 is less than port 90",
        );
        assert_error(
            &port("{port: 90, endPort: 70000}"),
            "spec.egress[0].ports[0].endPort",
            "out of range",
        );
        assert_error(
            &port("{port: http, endPort: 90}"),
            "spec.egress[0].ports[0].endPort",
            "numeric port",
        );
        assert_error(
            &port("{endPort: 90}"),
            "spec.egress[0].ports[0].endPort",
            "numeric port",
        );
        assert_error(
            &port("{protocol: ICMP}"),
            "spec.egress[0].ports[0].protocol",
            "unknown protocol",
        );
        assert_error(
            &port("{protocol: tcp}"),
            "spec.egress[0].ports[0].protocol",
            "unknown protocol",
        );
        for bad in [
            "'80'",
            "Http",
            "-web",
            "a--b",
            "very-long-port-name",
            "web_1",
        ] {
            assert_error(
                &port(&format!("{{port: {bad}}}")),
                "spec.egress[0].ports[0].port",
                "not a valid port name",
            );
        }
    }

    #[test]
    fn selector_errors() {
        assert_error(
            &with_spec("  podSelector:\n    matchExpressions:\n    - {key: a, operator: Equals, values: [b]}\n"),
            "spec.podSelector.matchExpressions[0].operator",
            "invalid label selector operator \"Equals\"",
        );
        assert_error(
            &with_spec("  podSelector:\n    matchExpressions:\n    - {key: a, operator: In}\n"),
            "spec.podSelector.matchExpressions[0].values",
            "needs at least one value",
        );
        assert_error(
            &with_spec("  podSelector:\n    matchExpressions:\n    - {key: a, operator: Exists, values: [b]}\n"),
            "spec.podSelector.matchExpressions[0].values",
            "must not have values",
        );
        assert_error(
            &with_spec("  podSelector:\n    matchExpressions:\n    - {key: a, operator: In, values: ['b c']}\n"),
            "spec.podSelector.matchExpressions[0].values[0]",
            "not a valid label value",
        );
        assert_error(
            &with_spec("  podSelector:\n    matchLabels: {'Bad.Prefix/app': web}\n"),
            "spec.podSelector.matchLabels.Bad.Prefix/app",
            "not a valid label key",
        );
        assert_error(
            &with_spec("  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {team: -a}\n"),
            "spec.ingress[0].from[0].namespaceSelector.matchLabels.team",
            "not a valid label value",
        );
    }

    #[test]
    fn policy_type_errors() {
        assert_error(
            &with_spec("  podSelector: {}\n  policyTypes: [Ingress, egress]\n"),
            "spec.policyTypes[1]",
            "invalid policyTypes entry \"egress\"",
        );
    }

    fn conformance_policies() -> Vec<(String, Value)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/conformance/netpol/cases"
        );
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("conformance cases directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("case file reads");
            let case: Value = serde_yaml::from_str(&text).expect("case file is YAML");
            let steps = case["steps"].as_array().cloned().unwrap_or_default();
            for object in steps
                .iter()
                .flat_map(|s| s["apply"].as_array().cloned().unwrap_or_default())
            {
                if object["kind"] == "NetworkPolicy" {
                    out.push((file.display().to_string(), object));
                }
            }
        }
        out
    }

    #[test]
    fn every_conformance_network_policy_parses() {
        let policies = conformance_policies();
        assert!(
            policies.len() >= 16,
            "found only {} policies",
            policies.len()
        );
        for (file, object) in policies {
            if let Err(e) = parse_network_policy(&object) {
                panic!("{file}: {e}");
            }
        }
    }
}
