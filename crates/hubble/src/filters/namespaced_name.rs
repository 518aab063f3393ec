//! The `namespace/name-prefix` syntax shared by the pod and service filters.
//!
//! `ns/prefix` matches names starting with `prefix` in namespace `ns`; `ns/` every name in `ns`;
//! `/prefix` the prefix in any namespace; a bare `prefix` means namespace `default`.

use super::{Check, FilterError};
use crate::flow::Flow;

/// One parsed entry: an optional namespace and a name prefix (both empty means "any").
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameFilter {
    namespace: String,
    prefix: String,
}

/// Splits `ns/prefix` the way Hubble does.
fn parse(entry: &str) -> (String, String) {
    let mut parts = entry.split('/');
    let ns = parts.next().unwrap_or_default();
    match parts.next() {
        Some(name) => (ns.to_string(), name.to_string()),
        None if ns.is_empty() => (String::new(), String::new()),
        None => ("default".to_string(), ns.to_string()),
    }
}

/// A check that the `(namespace, name)` picked from a flow matches one of `entries`.
pub(super) fn by_namespaced_name(
    field: &'static str,
    entries: &[String],
    pick: fn(&Flow) -> (&str, &str),
) -> Result<Check, FilterError> {
    let filters = entries
        .iter()
        .map(|e| {
            if e.is_empty() {
                return Err(FilterError::invalid(field, e, "name must not be empty"));
            }
            let (namespace, prefix) = parse(e);
            Ok(NameFilter { namespace, prefix })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(move |flow| {
        let (ns, name) = pick(flow);
        if ns.is_empty() && name.is_empty() {
            return false;
        }
        filters.iter().any(|f| {
            (f.prefix.is_empty() || name.starts_with(&f.prefix))
                && (f.namespace.is_empty() || f.namespace == ns)
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_like_hubble() {
        let p = |s| {
            let (a, b) = parse(s);
            (a, b)
        };
        assert_eq!(
            p("kube-system/coredns-"),
            ("kube-system".into(), "coredns-".into())
        );
        assert_eq!(p("kube-system/"), ("kube-system".into(), String::new()));
        assert_eq!(p("/xwing"), (String::new(), "xwing".into()));
        assert_eq!(p("xwing"), ("default".into(), "xwing".into()));
    }
}
