//! `source_fqdn`, `destination_fqdn` (wildcard patterns over the names known for an address) and
//! `dns_query` (regular expressions over the query of DNS records).

use regex::Regex;

use super::patterns::compile_fqdn;
use super::{Check, FilterError};
use crate::flow::{layer7, Flow, FlowFilter};

fn by_fqdn(
    field: &'static str,
    patterns: &[String],
    names: fn(&Flow) -> &[String],
) -> Result<Check, FilterError> {
    let re = compile_fqdn(patterns).map_err(|(p, why)| FilterError::invalid(field, &p, why))?;
    Ok(Box::new(move |flow| {
        names(flow).iter().any(|n| re.is_match(n))
    }))
}

fn dns_query(flow: &Flow) -> Option<&str> {
    match flow.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Dns(dns) => Some(&dns.query),
        _ => None,
    }
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    if !filter.source_fqdn.is_empty() {
        checks.push(by_fqdn("source_fqdn", &filter.source_fqdn, |f| {
            &f.source_names
        })?);
    }
    if !filter.destination_fqdn.is_empty() {
        checks.push(by_fqdn(
            "destination_fqdn",
            &filter.destination_fqdn,
            |f| &f.destination_names,
        )?);
    }
    if !filter.dns_query.is_empty() {
        let queries = filter
            .dns_query
            .iter()
            .map(|q| Regex::new(q).map_err(|e| FilterError::invalid("dns_query", q, e)))
            .collect::<Result<Vec<_>, _>>()?;
        checks.push(Box::new(move |flow| {
            dns_query(flow).is_some_and(|q| queries.iter().any(|re| re.is_match(q)))
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{tcp_flow, udp_flow};
    use super::super::CompiledFilter;
    use crate::flow::{layer7, Dns, FlowFilter, Layer7};

    #[test]
    fn destination_names() {
        let f = CompiledFilter::new(&FlowFilter {
            destination_fqdn: vec!["*.svc.cluster.local".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(f.matches(&udp_flow()));
        assert!(!f.matches(&tcp_flow()));
    }

    #[test]
    fn dns_queries() {
        let f = CompiledFilter::new(&FlowFilter {
            dns_query: vec!["kube.*local".into()],
            ..Default::default()
        })
        .unwrap();
        let mut flow = udp_flow();
        assert!(!f.matches(&flow));
        flow.l7 = Some(Layer7 {
            record: Some(layer7::Record::Dns(Dns {
                query: "kube-dns.kube-system.svc.cluster.local.".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        assert!(f.matches(&flow));
    }

    #[test]
    fn bad_regex_is_an_error() {
        assert!(CompiledFilter::new(&FlowFilter {
            dns_query: vec!["(".into()],
            ..Default::default()
        })
        .is_err());
    }
}
