//! Wildcard patterns of the FQDN and node-name filters, compiled to one anchored regex.
//!
//! A pattern is a lower-case DNS name in which `*` stands for any run of name characters
//! (dots included). Node-name patterns may name a cluster: `cluster/node`, `cluster/` or `node`
//! (any cluster).

use regex::Regex;

/// Characters of one name, as the node-name pattern's "anything" part.
const FQDN: &str = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)";

/// Why a pattern is malformed.
fn append_fqdn(out: &mut String, pattern: &str) -> Result<(), String> {
    let pattern = pattern.trim();
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern).to_lowercase();
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    if pattern.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    for c in pattern.chars() {
        match c {
            '.' => out.push_str(r"\."),
            '*' => out.push_str("[-.0-9a-z]*"),
            '-' | '_' | '0'..='9' | 'a'..='z' => out.push(c),
            _ => return Err(format!("{c:?}: invalid character in pattern")),
        }
    }
    Ok(())
}

fn append_node_name(out: &mut String, pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    let (cluster, node) = match pattern.split('/').collect::<Vec<_>>()[..] {
        [node] => ("", node),
        [cluster, node] => (cluster, node),
        _ => return Err("too many slashes in pattern".into()),
    };
    if cluster.is_empty() {
        out.push_str(FQDN);
    } else {
        append_fqdn(out, cluster)?;
    }
    out.push('/');
    if node.is_empty() {
        out.push_str(FQDN);
    } else {
        append_fqdn(out, node)?;
    }
    Ok(())
}

fn compile(
    patterns: &[String],
    append: fn(&mut String, &str) -> Result<(), String>,
) -> Result<Regex, (String, String)> {
    let mut re = String::from(r"\A(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        append(&mut re, p).map_err(|e| (p.clone(), e))?;
    }
    re.push_str(r")\z");
    Regex::new(&re).map_err(|e| (patterns.join(","), e.to_string()))
}

/// One regex matching any of the FQDN `patterns`; on error, the bad pattern and why.
pub(super) fn compile_fqdn(patterns: &[String]) -> Result<Regex, (String, String)> {
    compile(patterns, append_fqdn)
}

/// One regex matching `cluster/node` names against any of the node-name `patterns`.
pub(super) fn compile_node_name(patterns: &[String]) -> Result<Regex, (String, String)> {
    compile(patterns, append_node_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fqdn_wildcards() {
        let re = compile_fqdn(&v(&["*.cluster.local", "example.com."])).unwrap();
        assert!(re.is_match("kube-dns.kube-system.svc.cluster.local"));
        assert!(re.is_match("example.com"));
        assert!(!re.is_match("www.example.com"));
        assert!(!re.is_match("cluster.local.evil"));
    }

    #[test]
    fn node_names() {
        let re = compile_node_name(&v(&["kind-*"])).unwrap();
        assert!(re.is_match("default/kind-worker"));
        assert!(!re.is_match("default/node-1"));
        let re = compile_node_name(&v(&["prod/"])).unwrap();
        assert!(re.is_match("prod/anything.example.com"));
        assert!(!re.is_match("default/anything"));
    }

    #[test]
    fn malformed_patterns() {
        assert!(compile_fqdn(&v(&[""])).is_err());
        assert!(compile_fqdn(&v(&["a..", "x"])).is_err());
        assert!(compile_fqdn(&v(&["a b"])).is_err());
        assert!(compile_node_name(&v(&["a/b/c"])).is_err());
    }
}
