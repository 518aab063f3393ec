//! `http_status_code` (`404`, or prefixes `4+`, `50+`), `http_method` (case-insensitive),
//! `http_path` and `http_url` (regular expressions) and `http_header` (exact key and value), over
//! the HTTP record of L7 flows. As in Hubble, they may only be combined with event-type filters
//! that include L7 records.

use regex::Regex;

use super::{Check, FilterError};
use crate::flow::{layer7, Flow, FlowFilter, Http};
use crate::message_type::ACCESS_LOG;

fn http(flow: &Flow) -> Option<&Http> {
    match flow.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Http(h) => Some(h),
        _ => None,
    }
}

/// The path part of a request URL: `/p` of `/p?q`, `http://h/p?q` or `http://h`.
fn path(url: &str) -> Option<&str> {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            &after[after.find('/').unwrap_or(after.len())..]
        }
        None if url.starts_with('/') => url,
        None => return None,
    };
    Some(&rest[..rest.find(['?', '#']).unwrap_or(rest.len())])
}

fn regexes(field: &'static str, entries: &[String]) -> Result<Vec<Regex>, FilterError> {
    entries
        .iter()
        .map(|e| Regex::new(e).map_err(|err| FilterError::invalid(field, e, err)))
        .collect()
}

/// A status-code entry: a full code or a prefix.
fn status_entry(s: &str) -> Option<(String, bool)> {
    let b = s.as_bytes();
    let first_ok = matches!(b.first(), Some(b'1'..=b'5'));
    let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    if first_ok && b.len() == 3 && digits(b) {
        Some((s.to_string(), false))
    } else if first_ok
        && (2..=3).contains(&b.len())
        && s.ends_with('+')
        && digits(&b[..b.len() - 1])
    {
        Some((s[..s.len() - 1].to_string(), true))
    } else {
        None
    }
}

pub(super) fn build(filter: &FlowFilter, checks: &mut Vec<Check>) -> Result<(), FilterError> {
    let l7_compatible =
        filter.event_type.is_empty() || filter.event_type.iter().any(|t| t.r#type == ACCESS_LOG);
    let require_l7 = |field: &'static str, set: bool| {
        if set && !l7_compatible {
            Err(FilterError::invalid(
                field,
                "",
                "needs the event type filter to include L7 records",
            ))
        } else {
            Ok(set)
        }
    };

    if require_l7("http_status_code", !filter.http_status_code.is_empty())? {
        let entries = filter
            .http_status_code
            .iter()
            .map(|s| {
                status_entry(s).ok_or_else(|| {
                    FilterError::invalid("http_status_code", s, "not a status code or prefix")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        checks.push(Box::new(move |flow| {
            let Some(h) = http(flow).filter(|h| h.code != 0) else {
                return false;
            };
            let code = format!("{:03}", h.code);
            entries.iter().any(|(e, prefix)| {
                if *prefix {
                    code.starts_with(e.as_str())
                } else {
                    code == *e
                }
            })
        }));
    }
    if require_l7("http_method", !filter.http_method.is_empty())? {
        let methods = filter.http_method.clone();
        checks.push(Box::new(move |flow| {
            http(flow)
                .filter(|h| !h.method.is_empty())
                .is_some_and(|h| methods.iter().any(|m| m.eq_ignore_ascii_case(&h.method)))
        }));
    }
    if require_l7("http_path", !filter.http_path.is_empty())? {
        let res = regexes("http_path", &filter.http_path)?;
        checks.push(Box::new(move |flow| {
            http(flow)
                .and_then(|h| path(&h.url))
                .is_some_and(|p| res.iter().any(|re| re.is_match(p)))
        }));
    }
    if require_l7("http_url", !filter.http_url.is_empty())? {
        let res = regexes("http_url", &filter.http_url)?;
        checks.push(Box::new(move |flow| {
            http(flow)
                .filter(|h| !h.url.is_empty())
                .is_some_and(|h| res.iter().any(|re| re.is_match(&h.url)))
        }));
    }
    if require_l7("http_header", !filter.http_header.is_empty())? {
        let headers = filter.http_header.clone();
        checks.push(Box::new(move |flow| {
            http(flow).is_some_and(|h| {
                h.headers.iter().any(|have| {
                    headers
                        .iter()
                        .any(|w| w.key == have.key && w.value == have.value)
                })
            })
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::tcp_flow;
    use super::super::CompiledFilter;
    use super::{path, ACCESS_LOG};
    use crate::flow::{layer7, EventTypeFilter, Flow, FlowFilter, Http, HttpHeader, Layer7};

    fn http_flow(code: u32, method: &str, url: &str) -> Flow {
        let mut flow = tcp_flow();
        flow.l7 = Some(Layer7 {
            record: Some(layer7::Record::Http(Http {
                code,
                method: method.into(),
                url: url.into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![HttpHeader {
                    key: "x-request-id".into(),
                    value: "abc".into(),
                }],
            })),
            ..Default::default()
        });
        flow
    }

    fn f(filter: FlowFilter) -> CompiledFilter {
        CompiledFilter::new(&filter).unwrap()
    }

    #[test]
    fn status_codes() {
        let codes = |c: &[&str]| {
            f(FlowFilter {
                http_status_code: c.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
        };
        let not_found = http_flow(404, "GET", "/x");
        assert!(codes(&["404"]).matches(&not_found));
        assert!(codes(&["4+"]).matches(&not_found));
        assert!(codes(&["40+"]).matches(&not_found));
        assert!(!codes(&["5+", "200"]).matches(&not_found));
        assert!(
            !codes(&["4+"]).matches(&http_flow(0, "GET", "/x")),
            "requests carry no code"
        );
        for bad in ["600", "4", "4++", "abc", "+"] {
            assert!(
                CompiledFilter::new(&FlowFilter {
                    http_status_code: vec![bad.into()],
                    ..Default::default()
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn method_path_url_header() {
        let flow = http_flow(200, "GET", "http://backend.shop:8080/api/v1/items?id=3");
        let m = f(FlowFilter {
            http_method: vec!["get".into()],
            ..Default::default()
        });
        assert!(m.matches(&flow));
        let p = f(FlowFilter {
            http_path: vec!["^/api/v[0-9]+/items$".into()],
            ..Default::default()
        });
        assert!(p.matches(&flow));
        let u = f(FlowFilter {
            http_url: vec!["backend\\.shop".into()],
            ..Default::default()
        });
        assert!(u.matches(&flow));
        let h = f(FlowFilter {
            http_header: vec![HttpHeader {
                key: "x-request-id".into(),
                value: "abc".into(),
            }],
            ..Default::default()
        });
        assert!(h.matches(&flow));
        assert!(!h.matches(&tcp_flow()), "not an HTTP flow");
    }

    #[test]
    fn needs_l7_compatible_event_types() {
        let with = |t: i32| {
            CompiledFilter::new(&FlowFilter {
                http_method: vec!["GET".into()],
                event_type: vec![EventTypeFilter {
                    r#type: t,
                    ..Default::default()
                }],
                ..Default::default()
            })
        };
        assert!(with(ACCESS_LOG).is_ok());
        assert!(with(4).is_err());
    }

    #[test]
    fn url_paths() {
        assert_eq!(path("/a/b?c"), Some("/a/b"));
        assert_eq!(path("http://h:1/a#f"), Some("/a"));
        assert_eq!(path("http://h"), Some(""));
        assert_eq!(path("h/a"), None);
    }
}
