//! Label selectors as Hubble accepts them: Kubernetes selector syntax (`k=v`, `k==v`, `k!=v`,
//! `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated requirements that must all hold),
//! where a key may carry a Cilium source prefix (`k8s:app=web`). A key without a prefix matches
//! labels of any source. Flow labels look like `k8s:app=web` (`source:key=value`).

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    /// Label source the key must have; `None` for any source.
    source: Option<String>,
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// A flow label split into source, key and value, the way Cilium parses `source:key=value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowLabel<'a> {
    source: &'a str,
    key: &'a str,
    value: &'a str,
}

fn parse_flow_label(s: &str) -> FlowLabel<'_> {
    let (source, rest) = if let Some(rest) = s.strip_prefix('$') {
        ("reserved", rest)
    } else if let Some((src, rest)) = s.split_once(':') {
        (src, rest)
    } else if let Some(rest) = s.strip_prefix("reserved.") {
        ("reserved", rest)
    } else {
        ("unspec", s)
    };
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    FlowLabel { source, key, value }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits a selector at the commas that are not inside parentheses.
fn split_requirements(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value list, found {s:?}"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    match values.iter().find(|v| !valid_value(v)) {
        Some(v) => Err(format!("invalid label value {v:?}")),
        None => Ok(values),
    }
}

/// `source:key` or `key` (any source).
fn parse_key(s: &str) -> Result<(Option<String>, String), String> {
    let (source, key) = match s.split_once(':') {
        Some(("any", key)) => (None, key),
        Some((source, key)) => (Some(source.to_string()), key),
        None => (None, s),
    };
    if !valid_key(key) || source.as_deref().is_some_and(|s| !valid_key(s)) {
        return Err(format!("invalid label key {s:?}"));
    }
    Ok((source, key.to_string()))
}

fn parse_requirement(s: &str) -> Result<Requirement, String> {
    let s = s.trim();
    if let Some(key) = s.strip_prefix('!') {
        let (source, key) = parse_key(key.trim())?;
        return Ok(Requirement {
            source,
            key,
            op: Op::DoesNotExist,
        });
    }
    let end = s
        .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '(' | '<' | '>'))
        .unwrap_or(s.len());
    let (source, key) = parse_key(&s[..end])?;
    let rest = s[end..].trim_start();
    let single = |v: &str| {
        let v = v.trim();
        if valid_value(v) {
            Ok(vec![v.to_string()])
        } else {
            Err(format!("invalid label value {v:?}"))
        }
    };
    let op = if rest.is_empty() {
        Op::Exists
    } else if let Some(v) = rest.strip_prefix("==") {
        Op::In(single(v)?)
    } else if let Some(v) = rest.strip_prefix("!=") {
        Op::NotIn(single(v)?)
    } else if let Some(v) = rest.strip_prefix('=') {
        Op::In(single(v)?)
    } else if let Some(v) = rest.strip_prefix("notin") {
        Op::NotIn(parse_set(v)?)
    } else if let Some(v) = rest.strip_prefix("in") {
        Op::In(parse_set(v)?)
    } else {
        return Err(format!("unsupported requirement {s:?}"));
    };
    Ok(Requirement { source, key, op })
}

impl LabelSelector {
    /// Parses a selector; the empty selector selects everything.
    pub fn parse(selector: &str) -> Result<Self, String> {
        if selector.trim().is_empty() {
            return Ok(LabelSelector {
                requirements: Vec::new(),
            });
        }
        let requirements = split_requirements(selector)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` (each `source:key=value`) satisfy every requirement.
    pub fn matches<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        let labels: Vec<FlowLabel<'_>> = labels
            .iter()
            .map(|l| parse_flow_label(l.as_ref()))
            .collect();
        self.requirements.iter().all(|req| {
            let mut values = labels
                .iter()
                .filter(|l| {
                    l.key == req.key && req.source.as_deref().is_none_or(|src| src == l.source)
                })
                .map(|l| l.value);
            match &req.op {
                Op::Exists => values.next().is_some(),
                Op::DoesNotExist => values.next().is_none(),
                Op::In(set) => values.any(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => !values.any(|v| set.iter().any(|s| s == v)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: &[&str] = &[
        "k8s:app=web",
        "k8s:io.kubernetes.pod.namespace=shop",
        "k8s:tier=frontend",
        "reserved:host",
        "container:app=sidecar",
    ];

    fn m(selector: &str) -> bool {
        LabelSelector::parse(selector).unwrap().matches(LABELS)
    }

    #[test]
    fn equality_with_and_without_source() {
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(m("k8s:app=web"));
        assert!(m("any:app=web"));
        assert!(!m("container:app=web"));
        assert!(m("container:app=sidecar"));
        assert!(!m("app=db"));
        assert!(m("io.kubernetes.pod.namespace=shop"));
    }

    #[test]
    fn existence() {
        assert!(m("tier"));
        assert!(m("reserved:host"));
        assert!(!m("k8s:host"));
        assert!(!m("missing"));
        assert!(m("!missing"));
        assert!(!m("!tier"));
        assert!(m("!k8s:host"));
    }

    #[test]
    fn inequality_and_sets() {
        assert!(m("tier!=backend"));
        assert!(!m("tier!=frontend"));
        assert!(m("missing!=x"), "!= holds when the label is absent");
        assert!(m("tier in (backend, frontend)"));
        assert!(!m("tier in (backend)"));
        assert!(m("tier notin (backend,db)"));
        assert!(!m("k8s:app notin (web)"));
    }

    #[test]
    fn comma_separated_requirements_all_hold() {
        assert!(m("k8s:app=web,tier=frontend"));
        assert!(m("app=web, tier in (a, frontend), !missing"));
        assert!(!m("app=web,tier=backend"));
    }

    #[test]
    fn flow_labels_without_source_are_unspec() {
        let sel = LabelSelector::parse("app=web").unwrap();
        assert!(sel.matches(&["app=web"]));
        assert!(!LabelSelector::parse("k8s:app=web")
            .unwrap()
            .matches(&["app=web"]));
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(m(""));
        assert!(LabelSelector::parse("  ").unwrap().matches::<&str>(&[]));
    }

    #[test]
    fn malformed_selectors() {
        for bad in [
            "app=we b",
            "a b",
            "tier in backend",
            "tier in (a",
            "app>1",
            "=web",
            "!",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }
}
