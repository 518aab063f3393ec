//! Label selectors over identity labels (`source:key` → value), with Kubernetes semantics.
//!
//! Keys carry their source: `k8s:app`, `k8s:io.kubernetes.pod.namespace`, `reserved:host`. A key
//! with source `any:` matches a label of that key from any source; policies' bare keys are
//! normalised to `any:` by the parsers, as Cilium does.

use std::{collections::BTreeSet, fmt};

use plexus_identity::Labels;
use serde::{Deserialize, Serialize};

/// A set-based requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One requirement (`matchLabels` entries become `In` with one value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    /// `source:key`.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// Values (In/NotIn only).
    pub values: BTreeSet<String>,
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Selector {
    /// All must hold.
    pub requirements: Vec<Requirement>,
}

/// The value of `key` in `labels`, honouring the `any:` source.
fn lookup<'a>(labels: &'a Labels, key: &str) -> Option<&'a String> {
    match key.strip_prefix("any:") {
        Some(bare) => labels
            .iter()
            .find(|(k, _)| k.split_once(':').map(|(_, kk)| kk) == Some(bare))
            .map(|(_, v)| v),
        None => labels.get(key),
    }
}

impl Requirement {
    /// `key` has exactly `value`.
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Requirement {
            key: key.into(),
            op: Operator::In,
            values: [value.into()].into(),
        }
    }

    /// `key` is present.
    pub fn exists(key: impl Into<String>) -> Self {
        Requirement {
            key: key.into(),
            op: Operator::Exists,
            values: BTreeSet::new(),
        }
    }

    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = lookup(labels, &self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

impl Selector {
    /// The selector that matches everything.
    pub fn all() -> Self {
        Selector::default()
    }

    /// A selector from requirements.
    pub fn new(requirements: Vec<Requirement>) -> Self {
        let mut requirements = requirements;
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }

    /// This selector and `other` together.
    pub fn and(&self, other: &Selector) -> Selector {
        Selector::new(
            self.requirements
                .iter()
                .chain(&other.requirements)
                .cloned()
                .collect(),
        )
    }

    /// Adds one requirement.
    pub fn with(&self, r: Requirement) -> Selector {
        let mut v = self.requirements.clone();
        v.push(r);
        Selector::new(v)
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether some requirement names this key (with or without `any:`).
    pub fn mentions(&self, key: &str) -> bool {
        let bare = key.split_once(':').map_or(key, |(_, k)| k);
        self.requirements
            .iter()
            .any(|r| r.key.split_once(':').map_or(r.key.as_str(), |(_, k)| k) == bare)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| {
                let vals: Vec<&str> = r.values.iter().map(String::as_str).collect();
                match r.op {
                    Operator::In if vals.len() == 1 => format!("{}={}", r.key, vals[0]),
                    Operator::In => format!("{} in ({})", r.key, vals.join(",")),
                    Operator::NotIn => format!("{} notin ({})", r.key, vals.join(",")),
                    Operator::Exists => r.key.clone(),
                    Operator::DoesNotExist => format!("!{}", r.key),
                }
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubernetes_semantics() {
        let l = labels(&[("k8s:app", "web"), ("k8s:io.kubernetes.pod.namespace", "x")]);
        assert!(Selector::all().matches(&l));
        assert!(Selector::new(vec![Requirement::eq("k8s:app", "web")]).matches(&l));
        assert!(!Selector::new(vec![Requirement::eq("k8s:app", "db")]).matches(&l));
        assert!(Selector::new(vec![Requirement::eq("any:app", "web")]).matches(&l));
        let notin = Requirement {
            key: "k8s:tier".into(),
            op: Operator::NotIn,
            values: ["a".into()].into(),
        };
        assert!(notin.matches(&l), "NotIn matches an absent label");
        let notin_app = Requirement {
            key: "k8s:app".into(),
            op: Operator::NotIn,
            values: ["web".into()].into(),
        };
        assert!(!notin_app.matches(&l));
        assert!(Requirement {
            key: "k8s:tier".into(),
            op: Operator::DoesNotExist,
            values: BTreeSet::new()
        }
        .matches(&l));
        assert!(Requirement::exists("any:io.kubernetes.pod.namespace").matches(&l));
        assert!(!Requirement::exists("k8s:tier").matches(&l));
    }

    #[test]
    fn and_dedups_and_displays() {
        let a = Selector::new(vec![Requirement::eq("k8s:app", "web")]);
        let b = a.and(&a).with(Requirement::exists("k8s:x"));
        assert_eq!(b.requirements.len(), 2);
        assert_eq!(b.to_string(), "k8s:app=web, k8s:x");
        assert!(b.mentions("any:app"));
    }
}
