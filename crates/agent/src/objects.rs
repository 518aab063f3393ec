//! The Kubernetes objects the agent enforces: namespaces, pods (labels and named ports) and
//! policies. Applies are all-or-nothing: every object is parsed and validated before any is
//! stored, so bad input changes nothing already in force.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use plexus_api::ObjectRef;
use plexus_identity::Labels;
use plexus_policy::{parse_policy, NamedPort, ParsedPolicy, PolicyId, Proto};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A pod as policy needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodObject {
    /// Pod labels.
    pub labels: Labels,
    /// Named container ports.
    pub named_ports: Vec<NamedPort>,
    /// The owning workload (kind, name), from the first owner reference.
    #[serde(default)]
    pub workload: Option<(String, String)>,
}

/// Every object in force, as applied (policies kept as their JSON, re-parsed on load).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Objects {
    /// Namespace name → labels (with `kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, Labels>,
    /// `ns/name` → pod.
    pub pods: BTreeMap<String, PodObject>,
    /// Policy key (`Kind/ns/name`) → the object.
    pub policies: BTreeMap<String, Value>,
}

/// One parsed object, ready to store.
pub enum Parsed {
    /// A namespace and its labels.
    Namespace(String, Labels),
    /// A pod (`ns/name`).
    Pod(String, PodObject),
    /// A policy, with its JSON.
    Policy(Box<ParsedPolicy>, Value),
}

fn meta(v: &Value, field: &str) -> Option<String> {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn describe(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("object");
    match (meta(v, "namespace"), meta(v, "name")) {
        (Some(ns), Some(n)) => format!("{kind} {ns}/{n}"),
        (None, Some(n)) => format!("{kind} {n}"),
        _ => kind.to_string(),
    }
}

/// Parses and validates one object.
pub fn parse(v: &Value) -> anyhow::Result<Parsed> {
    let api = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    if plexus_policy::is_policy_kind(api, kind) {
        let p = parse_policy(v)?;
        return Ok(Parsed::Policy(Box::new(p), v.clone()));
    }
    match (api, kind) {
        ("v1", "Namespace") => {
            let ns: k8s_openapi::api::core::v1::Namespace =
                serde_json::from_value(v.clone()).with_context(|| describe(v))?;
            let name = ns
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("Namespace: field metadata.name is required"))?;
            let mut labels: Labels = ns.metadata.labels.clone().unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), name.clone());
            Ok(Parsed::Namespace(name, labels))
        }
        ("v1", "Pod") => {
            let pod: k8s_openapi::api::core::v1::Pod =
                serde_json::from_value(v.clone()).with_context(|| describe(v))?;
            let name = pod
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("Pod: field metadata.name is required"))?;
            let ns = pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let mut named_ports = Vec::new();
            for (ci, c) in pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .enumerate()
            {
                for (pi, p) in c.ports.iter().flatten().enumerate() {
                    let proto = Proto::parse(p.protocol.as_deref().unwrap_or("TCP")).ok_or_else(|| {
                        anyhow!("Pod {ns}/{name}: field spec.containers[{ci}].ports[{pi}].protocol: unknown protocol")
                    })?;
                    let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0).ok_or_else(|| {
                        anyhow!("Pod {ns}/{name}: field spec.containers[{ci}].ports[{pi}].containerPort: {} is out of range 1-65535", p.container_port)
                    })?;
                    if let Some(n) = &p.name {
                        named_ports.push(NamedPort {
                            name: n.clone(),
                            port,
                            proto,
                        });
                    }
                }
            }
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let workload = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .next()
                .map(|o| (o.kind.clone(), o.name.clone()));
            Ok(Parsed::Pod(
                format!("{ns}/{name}"),
                PodObject {
                    labels,
                    named_ports,
                    workload,
                },
            ))
        }
        _ => bail!(
            "{}: unsupported kind {kind:?} (apiVersion {api:?})",
            describe(v)
        ),
    }
}

/// The key a policy is stored under.
pub fn policy_key(id: &PolicyId) -> String {
    format!(
        "{}/{}/{}",
        id.kind,
        id.namespace.as_deref().unwrap_or(""),
        id.name
    )
}

impl Objects {
    /// Stores parsed objects; returns one line per object saying what happened.
    pub fn apply(&mut self, parsed: Vec<Parsed>) -> Vec<String> {
        let mut lines = Vec::new();
        for p in parsed {
            let (what, changed) = match p {
                Parsed::Namespace(name, labels) => {
                    let old = self.namespaces.insert(name.clone(), labels.clone());
                    (format!("Namespace {name}"), state(old.as_ref(), &labels))
                }
                Parsed::Pod(key, pod) => {
                    let old = self.pods.insert(key.clone(), pod.clone());
                    (format!("Pod {key}"), state(old.as_ref(), &pod))
                }
                Parsed::Policy(pp, v) => {
                    let old = self.policies.insert(policy_key(&pp.id), v.clone());
                    let l7 = if pp.has_l7() {
                        " (L7 rules enforced at L4 for now)"
                    } else {
                        ""
                    };
                    (
                        format!("{}", pp.id),
                        format!("{}{l7}", state(old.as_ref(), &v)),
                    )
                }
            };
            lines.push(format!("{what} {changed}"));
        }
        lines
    }

    /// Deletes objects; absent ones are reported, not an error.
    pub fn delete(&mut self, refs: &[ObjectRef]) -> Vec<String> {
        refs.iter()
            .map(|r| {
                let gone = match r.kind.as_str() {
                    "Namespace" => self.namespaces.remove(&r.name).is_some(),
                    "Pod" => self
                        .pods
                        .remove(&format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or("default"),
                            r.name
                        ))
                        .is_some(),
                    kind => {
                        let id = PolicyId {
                            kind: kind.to_string(),
                            namespace: r.namespace.clone(),
                            name: r.name.clone(),
                        };
                        self.policies.remove(&policy_key(&id)).is_some()
                    }
                };
                format!("{r} {}", if gone { "deleted" } else { "not found" })
            })
            .collect()
    }

    /// The Pod object of an endpoint, if one was applied.
    pub fn pod_of(&self, spec: &plexus_api::EndpointSpec) -> Option<&PodObject> {
        self.pods.get(&spec.pod_key())
    }

    /// Every stored policy, parsed (a stored policy always parses: it did when applied).
    pub fn parsed_policies(&self) -> Vec<ParsedPolicy> {
        self.policies
            .values()
            .filter_map(|v| parse_policy(v).ok())
            .collect()
    }
}

fn state<T: PartialEq>(old: Option<&T>, new: &T) -> String {
    match old {
        None => "created".into(),
        Some(o) if o == new => "unchanged".into(),
        Some(_) => "configured".into(),
    }
}
