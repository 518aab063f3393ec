//! Read-only views of what is in force: `policy get`, `policy trace`, `identity list`. All are
//! computed from the same resolved state the maps were written from.

use std::net::IpAddr;

use anyhow::{anyhow, bail};
use plexus_api::{IdentityView, PolicyView, RuleView, Trace, TraceStep};
use plexus_identity::{reserved, NumericIdentity};
use plexus_policy::{Decision, Direction, Peer, PortSpec, Rule};

use crate::endpoints::Agent;

fn peer_text(p: &Peer) -> String {
    match p {
        Peer::Endpoints(s) => format!("endpoints [{s}]"),
        Peer::Entity(e) => format!(
            "entity {}",
            serde_json::to_value(e)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        Peer::Cidr { cidr, except } if except.is_empty() => format!("cidr {cidr}"),
        Peer::Cidr { cidr, except } => {
            format!(
                "cidr {cidr} except {}",
                except
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    }
}

/// One line describing a rule.
fn summary(r: &Rule) -> String {
    let action = match r.action {
        plexus_policy::Action::Allow => "allow",
        plexus_policy::Action::Deny => "deny",
    };
    let side = if r.direction == Direction::Ingress {
        "from"
    } else {
        "to"
    };
    let peers = match &r.peers {
        None => "any peer".to_string(),
        Some(p) if p.is_empty() => "no peer".to_string(),
        Some(p) => p.iter().map(peer_text).collect::<Vec<_>>().join(" or "),
    };
    let ports = if r.ports.is_empty() {
        "any port".to_string()
    } else {
        r.ports
            .iter()
            .map(|pp| match &pp.port {
                PortSpec::Any => format!("{}/any", pp.proto),
                PortSpec::Range(a, b) if a == b => format!("{}/{a}", pp.proto),
                PortSpec::Range(a, b) => format!("{}/{a}-{b}", pp.proto),
                PortSpec::Named(n) => format!("{}/{n}", pp.proto),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{} {action} {side} {peers} on {ports}", r.direction)
}

impl Agent {
    fn pod_name_of(&self, id: u32) -> String {
        self.state
            .endpoints
            .values()
            .find(|e| e.id == id)
            .map_or_else(
                || format!("endpoint {id}"),
                |e| format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name),
            )
    }

    /// `plexus policy get`.
    pub(crate) fn policy_views(&self) -> Vec<PolicyView> {
        let mut out = Vec::new();
        for p in &self.resolved.policies {
            let mut enforces = Vec::new();
            for en in &p.enforcements {
                let eps: Vec<String> = self
                    .resolved
                    .compiled
                    .iter()
                    .filter(|(_, c)| match en.direction {
                        Direction::Ingress => c.ingress_enforced.contains(&en.origin),
                        Direction::Egress => c.egress_enforced.contains(&en.origin),
                    })
                    .map(|(id, _)| self.pod_name_of(*id))
                    .collect();
                enforces.push(format!(
                    "{} default-deny ({}) on {} endpoints: {}",
                    en.direction,
                    en.origin.rule,
                    eps.len(),
                    eps.join(", ")
                ));
            }
            let rules = p
                .rules
                .iter()
                .map(|r| RuleView {
                    rule: r.origin.rule.clone(),
                    summary: summary(r),
                    endpoints: self
                        .state
                        .endpoints
                        .iter()
                        .filter(|(k, _)| {
                            self.state
                                .endpoint_labels
                                .get(*k)
                                .is_some_and(|l| r.subject.matches(l))
                        })
                        .map(|(_, e)| format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name))
                        .collect(),
                    l7_at_l4: r.has_l7,
                })
                .collect();
            out.push(PolicyView {
                kind: p.id.kind.clone(),
                namespace: p.id.namespace.clone(),
                name: p.id.name.clone(),
                enforces,
                rules,
            });
        }
        out
    }

    /// Endpoint ips and identities, for address resolution.
    fn endpoint_ips(&self) -> Vec<(IpAddr, NumericIdentity)> {
        self.state
            .endpoints
            .values()
            .filter_map(|e| e.spec.ipv4.parse().ok().map(|ip| (ip, e.identity)))
            .collect()
    }

    /// Resolves `ns/pod` or an IP to (display, identity, local endpoint id).
    fn resolve(&self, s: &str) -> anyhow::Result<(String, NumericIdentity, Option<u32>)> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            let ep = self.state.endpoints.values().find(|e| e.spec.ipv4 == s);
            let id = self.resolved.identity_of_ip(ip, &self.endpoint_ips());
            return Ok(match ep {
                Some(e) => (
                    format!("{}/{} ({s})", e.spec.pod_namespace, e.spec.pod_name),
                    id,
                    Some(e.id),
                ),
                None => (s.to_string(), id, None),
            });
        }
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?}: want ns/pod or an IP address"))?;
        let e = self
            .state
            .endpoints
            .values()
            .find(|e| e.spec.pod_namespace == ns && e.spec.pod_name == name)
            .ok_or_else(|| anyhow!("no endpoint for pod {s}"))?;
        Ok((s.to_string(), e.identity, Some(e.id)))
    }

    /// `plexus policy trace`.
    pub(crate) fn trace(
        &self,
        from: &str,
        to: &str,
        port: u16,
        protocol: &str,
    ) -> anyhow::Result<Trace> {
        let proto: u8 = match protocol.to_ascii_uppercase().as_str() {
            "TCP" => 6,
            "UDP" => 17,
            "SCTP" => 132,
            "ICMP" => 1,
            other => other
                .parse()
                .map_err(|_| anyhow!("protocol {protocol:?}: want TCP, UDP, SCTP or a number"))?,
        };
        let (from_name, from_id, from_ep) = self.resolve(from)?;
        let (to_name, to_id, to_ep) = self.resolve(to)?;
        if from_ep.is_none() && to_ep.is_none() {
            bail!("neither {from} nor {to} is an endpoint of this node");
        }
        let mut steps = Vec::new();
        let mut verdict = None;
        let stages = [
            (from_ep, Direction::Egress, to_id, &from_name),
            (to_ep, Direction::Ingress, from_id, &to_name),
        ];
        for (ep, dir, peer, name) in stages {
            let Some(ep) = ep else { continue };
            let decision = self
                .resolved
                .compiled
                .get(&ep)
                .map_or(Decision::NoPolicy, |c| c.lookup(dir, peer, proto, port));
            let (text, rules, reason) = match &decision {
                Decision::NoPolicy => ("no policy", vec![], None),
                Decision::Allowed(o) => {
                    ("allowed", o.iter().map(ToString::to_string).collect(), None)
                }
                Decision::Denied(o) => (
                    "denied",
                    o.iter().map(ToString::to_string).collect(),
                    Some("POLICY_DENY"),
                ),
                Decision::NoRuleAllows(o) => (
                    "no rule allows",
                    o.iter().map(|x| format!("default-deny from {x}")).collect(),
                    Some("POLICY_DENIED"),
                ),
            };
            if verdict.is_none() {
                verdict = reason;
            }
            steps.push(TraceStep {
                stage: format!("{dir} of {name}"),
                verdict: text.to_string(),
                rules,
            });
        }
        let name = |n: &str, id: NumericIdentity| match reserved::name(id) {
            Some(r) => format!("{n} (identity {id}, reserved:{r})"),
            None => format!("{n} (identity {id})"),
        };
        Ok(Trace {
            from: name(&from_name, from_id),
            to: name(&to_name, to_id),
            verdict: if verdict.is_some() {
                "denied"
            } else {
                "allowed"
            }
            .into(),
            drop_reason: verdict.map(str::to_string),
            steps,
        })
    }

    /// `plexus identity list`.
    pub(crate) fn identity_views(&self) -> Vec<IdentityView> {
        let mut out: Vec<IdentityView> = reserved::ALL
            .iter()
            .map(|(id, name)| IdentityView {
                id: *id,
                labels: vec![format!("reserved:{name}")],
                endpoints: vec![],
            })
            .collect();
        for (id, labels, _) in self.state.identities.list() {
            let endpoints = self
                .state
                .endpoints
                .values()
                .filter(|e| e.identity == id)
                .map(|e| format!("{}/{}", e.spec.pod_namespace, e.spec.pod_name))
                .collect();
            let labels = labels
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            out.push(IdentityView {
                id,
                labels,
                endpoints,
            });
        }
        out
    }
}
