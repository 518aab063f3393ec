//! The rule model every policy source is translated into.

use std::fmt;

use plexus_identity::Prefix;
use serde::{Deserialize, Serialize};

use crate::Selector;

/// Traffic direction, seen from the selected endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic arriving at the endpoint.
    Ingress,
    /// Traffic the endpoint sends.
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// What a rule does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allow it.
    Allow,
    /// Deny it (beats every allow).
    Deny,
}

/// Which policy object a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyId {
    /// `NetworkPolicy`, `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`.
    pub kind: String,
    /// Namespace (None for cluster-wide policies).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Where exactly a rule came from: the policy, and the rule's path inside it, e.g.
/// `spec.ingress[1]` or `specs[0].egressDeny[2]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The policy.
    pub policy: PolicyId,
    /// The rule's path inside the policy object.
    pub rule: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.policy, self.rule)
    }
}

/// Cilium's entities: named groups of identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    /// The local node.
    Host,
    /// Other nodes.
    RemoteNode,
    /// Everything outside the cluster (and every CIDR identity), both families.
    World,
    /// IPv4 addresses outside the cluster.
    WorldIpv4,
    /// IPv6 addresses outside the cluster.
    WorldIpv6,
    /// Everything inside the cluster.
    Cluster,
    /// Everything.
    All,
    /// The Kubernetes API server.
    KubeApiserver,
    /// Health endpoints.
    Health,
    /// Endpoints whose identity is not resolved yet.
    Init,
    /// Unmanaged endpoints.
    Unmanaged,
    /// The ingress proxy.
    Ingress,
}

impl Entity {
    /// Parses the name used in `fromEntities`/`toEntities`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "host" => Entity::Host,
            "remote-node" => Entity::RemoteNode,
            "world" => Entity::World,
            "world-ipv4" => Entity::WorldIpv4,
            "world-ipv6" => Entity::WorldIpv6,
            "cluster" => Entity::Cluster,
            "all" => Entity::All,
            "kube-apiserver" => Entity::KubeApiserver,
            "health" => Entity::Health,
            "init" => Entity::Init,
            "unmanaged" => Entity::Unmanaged,
            "ingress" => Entity::Ingress,
            _ => return None,
        })
    }
}

/// The other side of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Peer {
    /// Cluster endpoints whose identity labels match the selector.
    Endpoints(Selector),
    /// An entity.
    Entity(Entity),
    /// Addresses in `cidr` but not in any `except` (never cluster endpoints, as in Cilium).
    Cidr {
        /// The range.
        cidr: Prefix,
        /// Sub-ranges left out.
        except: Vec<Prefix>,
    },
}

/// L4 protocol of a port rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Proto {
    /// TCP (6).
    TCP,
    /// UDP (17).
    UDP,
    /// SCTP (132).
    SCTP,
    /// Any protocol (Cilium's `ANY`).
    ANY,
}

impl Proto {
    /// IP protocol number (0 for ANY).
    pub fn number(self) -> u8 {
        match self {
            Proto::TCP => 6,
            Proto::UDP => 17,
            Proto::SCTP => 132,
            Proto::ANY => 0,
        }
    }

    /// Parses `TCP`, `UDP`, `SCTP` or `ANY` (upper case, as the APIs spell them).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TCP" => Proto::TCP,
            "UDP" => Proto::UDP,
            "SCTP" => Proto::SCTP,
            "ANY" => Proto::ANY,
            _ => return None,
        })
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::TCP => "TCP",
            Proto::UDP => "UDP",
            Proto::SCTP => "SCTP",
            Proto::ANY => "ANY",
        })
    }
}

/// The port part of a port rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortSpec {
    /// Every port.
    Any,
    /// `lo..=hi` (a single port has lo == hi).
    Range(u16, u16),
    /// A named container port: for ingress, of the selected endpoint; for egress, of the peer.
    Named(String),
}

/// One entry of a rule's ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortProto {
    /// Port or range or name.
    pub port: PortSpec,
    /// Protocol.
    pub proto: Proto,
}

/// One rule: `subject` endpoints may (or may not) exchange traffic with `peers` on `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Where it came from.
    pub origin: Origin,
    /// The endpoints it applies to.
    pub subject: Selector,
    /// Direction, from the subject's side.
    pub direction: Direction,
    /// Allow or deny.
    pub action: Action,
    /// The other side; `None` matches every peer (every identity, the world included).
    pub peers: Option<Vec<Peer>>,
    /// Ports; empty means every port of every protocol.
    pub ports: Vec<PortProto>,
    /// The rule carries L7 rules (HTTP, DNS, ...), enforced at L4 only for now.
    pub has_l7: bool,
}

/// A policy puts the endpoints its subject selects into default-deny for a direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// Where it came from (the policy and e.g. `spec.policyTypes`).
    pub origin: Origin,
    /// The endpoints.
    pub subject: Selector,
    /// The direction.
    pub direction: Direction,
}

/// One policy object after parsing and validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedPolicy {
    /// Which object.
    pub id: PolicyId,
    /// Default-deny it puts in force.
    pub enforcements: Vec<Enforcement>,
    /// Its rules.
    pub rules: Vec<Rule>,
}

impl ParsedPolicy {
    /// Whether any rule has L7 parts (applied at L4 only for now).
    pub fn has_l7(&self) -> bool {
        self.rules.iter().any(|r| r.has_l7)
    }
}
