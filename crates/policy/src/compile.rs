//! Compiling rules into per-endpoint map state: for each endpoint and direction, which
//! `(identity, protocol, port prefix)` keys allow or deny, and whether the direction is in
//! default-deny. [`EndpointPolicy::lookup`] answers exactly as the datapath does with the same
//! entries: a longest-prefix match for the peer's identity and one for the wildcard identity,
//! where a deny from either beats any allow.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use plexus_identity::{reserved, Labels, NumericIdentity, Prefix};
use serde::{Deserialize, Serialize};

use crate::{
    Action, Direction, Entity, Origin, ParsedPolicy, Peer, PolicyId, PortSpec, Proto, Rule,
    Selector,
};

/// A container port an endpoint declares by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    /// The name.
    pub name: String,
    /// The number.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

/// An endpoint as the compiler needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInput {
    /// Endpoint id (keys the policy map).
    pub id: u32,
    /// Its security identity.
    pub identity: NumericIdentity,
    /// Its identity labels.
    pub labels: Labels,
    /// Its named container ports.
    pub named_ports: Vec<NamedPort>,
}

/// Everything the compiler reads.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// Policies in force.
    pub policies: &'a [ParsedPolicy],
    /// Local endpoints (the ones that get map state).
    pub endpoints: &'a [EndpointInput],
    /// Every label-set identity in the cluster with its labels (local endpoints' included).
    pub identities: &'a BTreeMap<NumericIdentity, Labels>,
    /// The identity of every CIDR that policies mention (see [`cidrs`]).
    pub cidr_identities: &'a BTreeMap<Prefix, NumericIdentity>,
}

/// One key of an endpoint's policy state. `proto == 0` means any protocol (then the port is
/// any too); `port_prefix` is how many leading bits of `port` must match (0 = any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MapKey {
    /// Direction.
    pub direction: Direction,
    /// Peer identity; 0 matches any identity.
    pub identity: NumericIdentity,
    /// IP protocol number; 0 for any.
    pub proto: u8,
    /// Port (host order).
    pub port: u16,
    /// Leading bits of `port` that must match.
    pub port_prefix: u8,
}

impl MapKey {
    /// Whether the key matches a packet's protocol and port.
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        if self.proto == 0 {
            return true;
        }
        if self.proto != proto {
            return false;
        }
        let shift = 16 - self.port_prefix as u32;
        self.port_prefix == 0 || (port as u32 >> shift) == (self.port as u32 >> shift)
    }

    /// Matched bits beyond identity and direction: how specific the key is (LPM order).
    pub fn specificity(&self) -> u32 {
        if self.proto == 0 {
            0
        } else {
            8 + self.port_prefix as u32
        }
    }

    /// Whether every packet this key matches is also matched by `self`.
    fn covers(&self, other: &MapKey) -> bool {
        if self.proto == 0 {
            return true;
        }
        if other.proto != self.proto || other.port_prefix < self.port_prefix {
            return false;
        }
        self.matches(other.proto, other.port)
    }
}

/// The value of a key: the action, and every rule that put it there (indexes into the rule
/// table the compile shares among endpoints: millions of entries must not each own strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// Allow or deny.
    pub action: Action,
    /// The rules behind it, as indexes of [`EndpointPolicy::origin`].
    pub origins: Vec<u32>,
}

/// The compiled policy of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Default-deny on ingress, and the policies that put it there.
    pub ingress_enforced: BTreeSet<Origin>,
    /// Default-deny on egress, and the policies that put it there.
    pub egress_enforced: BTreeSet<Origin>,
    /// The entries.
    pub entries: BTreeMap<MapKey, MapEntry>,
    /// The rule table the entries' origins index (shared by every endpoint of one compile).
    pub rules: Arc<Vec<Origin>>,
}

/// The answer of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// The direction has no policy at all: allowed.
    NoPolicy,
    /// Allowed by these rules.
    Allowed(BTreeSet<Origin>),
    /// Denied by these deny rules (Cilium's POLICY_DENY).
    Denied(BTreeSet<Origin>),
    /// Default-deny and no rule allows (POLICY_DENIED); the policies that enforce it.
    NoRuleAllows(BTreeSet<Origin>),
}

impl Decision {
    /// Whether traffic passes.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::NoPolicy | Decision::Allowed(_))
    }
}

impl EndpointPolicy {
    /// The rule behind an entry's origin index.
    pub fn origin(&self, index: u32) -> Option<&Origin> {
        self.rules.get(index as usize)
    }

    /// Whether the direction is in default-deny.
    pub fn enforced(&self, d: Direction) -> bool {
        match d {
            Direction::Ingress => !self.ingress_enforced.is_empty(),
            Direction::Egress => !self.egress_enforced.is_empty(),
        }
    }

    /// Whether the datapath must look anything up in this direction.
    pub fn has_policy(&self, d: Direction) -> bool {
        self.enforced(d) || self.entries.keys().any(|k| k.direction == d)
    }

    /// Longest-prefix match for one identity, as the BPF LPM trie does.
    fn lpm(
        &self,
        d: Direction,
        identity: NumericIdentity,
        proto: u8,
        port: u16,
    ) -> Option<&MapEntry> {
        let lo = MapKey {
            direction: d,
            identity,
            proto: 0,
            port: 0,
            port_prefix: 0,
        };
        let hi = MapKey {
            direction: d,
            identity,
            proto: u8::MAX,
            port: u16::MAX,
            port_prefix: u8::MAX,
        };
        self.entries
            .range(lo..=hi)
            .filter(|(k, _)| k.matches(proto, port))
            .max_by_key(|(k, _)| k.specificity())
            .map(|(_, e)| e)
    }

    /// The verdict for traffic with a peer of `identity` on `proto`/`port` in direction `d`.
    pub fn lookup(
        &self,
        d: Direction,
        identity: NumericIdentity,
        proto: u8,
        port: u16,
    ) -> Decision {
        if !self.has_policy(d) {
            return Decision::NoPolicy;
        }
        let found: Vec<&MapEntry> = [
            self.lpm(d, identity, proto, port),
            self.lpm(d, reserved::UNKNOWN, proto, port),
        ]
        .into_iter()
        .flatten()
        .collect();
        let origins = |a: Action| -> BTreeSet<Origin> {
            found
                .iter()
                .filter(|e| e.action == a)
                .flat_map(|e| e.origins.iter().filter_map(|i| self.origin(*i)).cloned())
                .collect()
        };
        if found.iter().any(|e| e.action == Action::Deny) {
            return Decision::Denied(origins(Action::Deny));
        }
        if !found.is_empty() {
            return Decision::Allowed(origins(Action::Allow));
        }
        if self.enforced(d) {
            let by = match d {
                Direction::Ingress => &self.ingress_enforced,
                Direction::Egress => &self.egress_enforced,
            };
            Decision::NoRuleAllows(by.clone())
        } else {
            Decision::NoPolicy
        }
    }
}

/// Every CIDR the policies mention (ranges and their exceptions): each needs an identity and an
/// ipcache entry.
pub fn cidrs(policies: &[ParsedPolicy]) -> BTreeSet<Prefix> {
    let mut out = BTreeSet::new();
    for r in policies.iter().flat_map(|p| &p.rules) {
        for peer in r.peers.iter().flatten() {
            if let Peer::Cidr { cidr, except } = peer {
                out.insert(*cidr);
                out.extend(except.iter().copied());
            }
        }
    }
    out
}

/// The origin of the implicit rule that lets the node reach its pods (Cilium's
/// `allow-localhost`), so health checks keep working under default-deny.
pub fn allow_localhost_origin() -> Origin {
    Origin {
        policy: PolicyId {
            kind: "Reserved".into(),
            namespace: None,
            name: "allow-localhost".into(),
        },
        rule: "host may reach local endpoints".into(),
    }
}

/// Identities a peer stands for; `None` is every identity (the wildcard).
type IdSet = Option<BTreeSet<NumericIdentity>>;

/// Reserved identities that belong to the cluster.
const CLUSTER_RESERVED: [NumericIdentity; 7] = [
    reserved::HOST,
    reserved::UNMANAGED,
    reserved::HEALTH,
    reserved::INIT,
    reserved::REMOTE_NODE,
    reserved::KUBE_APISERVER,
    reserved::INGRESS,
];

struct SelectorCache<'a> {
    inputs: &'a Inputs<'a>,
    /// Candidates for endpoint selectors: label-set identities plus the cluster's reserved ones.
    candidates: Vec<(NumericIdentity, Labels)>,
    memo: BTreeMap<Selector, BTreeSet<NumericIdentity>>,
}

impl<'a> SelectorCache<'a> {
    fn new(inputs: &'a Inputs<'a>) -> Self {
        let mut candidates: Vec<(NumericIdentity, Labels)> = inputs
            .identities
            .iter()
            .map(|(i, l)| (*i, l.clone()))
            .collect();
        for id in CLUSTER_RESERVED {
            if let Some(name) = reserved::name(id) {
                candidates.push((id, [(format!("reserved:{name}"), String::new())].into()));
            }
        }
        Self {
            inputs,
            candidates,
            memo: BTreeMap::new(),
        }
    }

    fn selector(&mut self, s: &Selector) -> BTreeSet<NumericIdentity> {
        if let Some(v) = self.memo.get(s) {
            return v.clone();
        }
        let v: BTreeSet<NumericIdentity> = self
            .candidates
            .iter()
            .filter(|(_, l)| s.matches(l))
            .map(|(i, _)| *i)
            .collect();
        self.memo.insert(s.clone(), v.clone());
        v
    }

    fn entity(&self, e: Entity) -> IdSet {
        let cidr_ids = || self.inputs.cidr_identities.values().copied();
        Some(match e {
            Entity::All => return None,
            Entity::Host => [reserved::HOST].into(),
            Entity::RemoteNode => [reserved::REMOTE_NODE].into(),
            Entity::World => [reserved::WORLD, reserved::WORLD_IPV4, reserved::WORLD_IPV6]
                .into_iter()
                .chain(cidr_ids())
                .collect(),
            Entity::WorldIpv4 => self.world_of_family(true),
            Entity::WorldIpv6 => self.world_of_family(false),
            Entity::Cluster => self
                .inputs
                .identities
                .keys()
                .copied()
                .chain(CLUSTER_RESERVED)
                .collect(),
            Entity::KubeApiserver => [reserved::KUBE_APISERVER].into(),
            Entity::Health => [reserved::HEALTH].into(),
            Entity::Init => [reserved::INIT].into(),
            Entity::Unmanaged => [reserved::UNMANAGED].into(),
            Entity::Ingress => [reserved::INGRESS].into(),
        })
    }

    /// The world of one address family: its reserved identity and its CIDR identities.
    fn world_of_family(&self, v4: bool) -> BTreeSet<NumericIdentity> {
        std::iter::once(reserved::world_of(v4))
            .chain(
                self.inputs
                    .cidr_identities
                    .iter()
                    .filter(|(p, _)| p.addr.is_ipv4() == v4)
                    .map(|(_, i)| *i),
            )
            .collect()
    }

    fn cidr(&self, cidr: &Prefix, except: &[Prefix]) -> BTreeSet<NumericIdentity> {
        let mut out: BTreeSet<NumericIdentity> = self
            .inputs
            .cidr_identities
            .iter()
            .filter(|(p, _)| cidr.contains(p) && !except.iter().any(|e| e.contains(p)))
            .map(|(_, i)| *i)
            .collect();
        if cidr.len == 0 {
            // Addresses of this family in no known prefix are its world.
            out.insert(reserved::world_of(cidr.addr.is_ipv4()));
        }
        out
    }

    fn peers(&mut self, peers: &Option<Vec<Peer>>) -> IdSet {
        let Some(peers) = peers else { return None };
        let mut out = BTreeSet::new();
        for p in peers {
            match p {
                Peer::Endpoints(s) => out.extend(self.selector(s)),
                Peer::Entity(e) => match self.entity(*e) {
                    None => return None,
                    Some(ids) => out.extend(ids),
                },
                Peer::Cidr { cidr, except } => out.extend(self.cidr(cidr, except)),
            }
        }
        Some(out)
    }
}

/// `[lo, hi]` as (value, prefix bits) blocks, largest first, as an LPM trie stores ranges.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        let mut size = 1u32 << 16;
        while size > 1 && (lo % size != 0 || lo + size - 1 > hi) {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros() as u8));
        lo += size;
    }
    out
}

/// (proto, port, prefix) keys of one numeric port spec.
fn port_keys(proto: Proto, lo: u16, hi: u16, any_port: bool) -> Vec<(u8, u16, u8)> {
    let protos: Vec<u8> = match proto {
        Proto::ANY if any_port => return vec![(0, 0, 0)],
        Proto::ANY => vec![6, 17, 132],
        p => vec![p.number()],
    };
    let mut out = Vec::new();
    for p in protos {
        if any_port {
            out.push((p, 0, 0));
        } else {
            out.extend(
                port_prefixes(lo, hi)
                    .into_iter()
                    .map(|(port, bits)| (p, port, bits)),
            );
        }
    }
    out
}

fn proto_matches(want: Proto, have: Proto) -> bool {
    want == Proto::ANY || want == have
}

/// Compiles the policy state of every local endpoint.
pub fn compile(inputs: &Inputs<'_>) -> BTreeMap<u32, EndpointPolicy> {
    let mut cache = SelectorCache::new(inputs);
    let mut out: BTreeMap<u32, EndpointPolicy> = BTreeMap::new();
    let rules: Vec<&Rule> = inputs.policies.iter().flat_map(|p| &p.rules).collect();
    // Peer identity sets are per rule, not per endpoint: resolve each once.
    let peer_sets: Vec<IdSet> = rules.iter().map(|r| cache.peers(&r.peers)).collect();
    // Rule i of `rules` is origin i; allow-localhost comes last.
    let table: Arc<Vec<Origin>> = Arc::new(
        rules
            .iter()
            .map(|r| r.origin.clone())
            .chain(std::iter::once(allow_localhost_origin()))
            .collect(),
    );
    let localhost = rules.len() as u32;

    for ep in inputs.endpoints {
        let mut pol = EndpointPolicy {
            rules: table.clone(),
            ..Default::default()
        };
        for en in inputs.policies.iter().flat_map(|p| &p.enforcements) {
            if en.subject.matches(&ep.labels) {
                match en.direction {
                    Direction::Ingress => pol.ingress_enforced.insert(en.origin.clone()),
                    Direction::Egress => pol.egress_enforced.insert(en.origin.clone()),
                };
            }
        }
        for (idx, (rule, peers)) in rules.iter().zip(&peer_sets).enumerate() {
            if rule.subject.matches(&ep.labels) {
                add_rule(
                    &mut pol,
                    idx as u32,
                    rule,
                    peers,
                    ep,
                    inputs.endpoints,
                    inputs.identities,
                );
            }
        }
        if pol.enforced(Direction::Ingress) {
            let key = MapKey {
                direction: Direction::Ingress,
                identity: reserved::HOST,
                proto: 0,
                port: 0,
                port_prefix: 0,
            };
            insert(&mut pol, key, Action::Allow, localhost);
        }
        prune_shadowed_allows(&mut pol);
        out.insert(ep.id, pol);
    }
    out
}

fn insert(pol: &mut EndpointPolicy, key: MapKey, action: Action, origin: u32) {
    let e = pol.entries.entry(key).or_insert_with(|| MapEntry {
        action,
        origins: Vec::new(),
    });
    if action == Action::Deny && e.action == Action::Allow {
        // Deny beats allow on the same key; the deny's rules are what decide.
        *e = MapEntry {
            action,
            origins: Vec::new(),
        };
    }
    if e.action == action && !e.origins.contains(&origin) {
        e.origins.push(origin);
    }
}

fn add_rule(
    pol: &mut EndpointPolicy,
    rule_idx: u32,
    rule: &Rule,
    peers: &IdSet,
    ep: &EndpointInput,
    endpoints: &[EndpointInput],
    identities: &BTreeMap<NumericIdentity, Labels>,
) {
    let ids: Vec<NumericIdentity> = match peers {
        None => vec![reserved::UNKNOWN],
        Some(s) => s.iter().copied().collect(),
    };
    let mut put = |identity: NumericIdentity, keys: &[(u8, u16, u8)]| {
        for (proto, port, port_prefix) in keys {
            let key = MapKey {
                direction: rule.direction,
                identity,
                proto: *proto,
                port: *port,
                port_prefix: *port_prefix,
            };
            insert(pol, key, rule.action, rule_idx);
        }
    };
    if rule.ports.is_empty() {
        for id in &ids {
            put(*id, &[(0, 0, 0)]);
        }
        return;
    }
    for pp in &rule.ports {
        match &pp.port {
            PortSpec::Any => {
                for id in &ids {
                    put(*id, &port_keys(pp.proto, 0, 0, true));
                }
            }
            PortSpec::Range(lo, hi) => {
                for id in &ids {
                    put(*id, &port_keys(pp.proto, *lo, *hi, false));
                }
            }
            PortSpec::Named(name) => match rule.direction {
                // Ingress: the selected endpoint's own port of that name.
                Direction::Ingress => {
                    let keys: Vec<(u8, u16, u8)> = ep
                        .named_ports
                        .iter()
                        .filter(|np| &np.name == name && proto_matches(pp.proto, np.proto))
                        .map(|np| (np.proto.number(), np.port, 16))
                        .collect();
                    for id in &ids {
                        put(*id, &keys);
                    }
                }
                // Egress: each peer's port of that name, per peer identity.
                Direction::Egress => {
                    let mut per_id: BTreeMap<NumericIdentity, Vec<(u8, u16, u8)>> = BTreeMap::new();
                    for other in endpoints {
                        let wanted = match peers {
                            None => identities.contains_key(&other.identity),
                            Some(s) => s.contains(&other.identity),
                        };
                        if !wanted {
                            continue;
                        }
                        for np in other
                            .named_ports
                            .iter()
                            .filter(|np| &np.name == name && proto_matches(pp.proto, np.proto))
                        {
                            per_id.entry(other.identity).or_default().push((
                                np.proto.number(),
                                np.port,
                                16,
                            ));
                        }
                    }
                    for (id, keys) in per_id {
                        put(id, &keys);
                    }
                }
            },
        }
    }
}

/// Drops allow entries that a deny of the same identity (or of the wildcard) covers: in an LPM
/// trie a more specific allow would otherwise win over a broader deny.
fn prune_shadowed_allows(pol: &mut EndpointPolicy) {
    let denies: Vec<MapKey> = pol
        .entries
        .iter()
        .filter(|(_, e)| e.action == Action::Deny)
        .map(|(k, _)| *k)
        .collect();
    pol.entries.retain(|k, e| {
        e.action == Action::Deny
            || !denies.iter().any(|d| {
                d.direction == k.direction
                    && (d.identity == k.identity || d.identity == reserved::UNKNOWN)
                    && d.covers(k)
            })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_become_aligned_prefixes() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(8080, 8083), vec![(8080, 14)]);
        assert_eq!(port_prefixes(79, 81), vec![(79, 16), (80, 15)]);
        // Every port of a range is covered exactly once.
        let blocks = port_prefixes(1000, 2999);
        for p in 0u32..=65535 {
            let n = blocks
                .iter()
                .filter(|(v, bits)| {
                    let k = MapKey {
                        direction: Direction::Ingress,
                        identity: 0,
                        proto: 6,
                        port: *v,
                        port_prefix: *bits,
                    };
                    k.matches(6, p as u16)
                })
                .count();
            assert_eq!(n, usize::from((1000..=2999).contains(&p)), "port {p}");
        }
    }

    #[test]
    fn cover_and_specificity() {
        let any = MapKey {
            direction: Direction::Ingress,
            identity: 5,
            proto: 0,
            port: 0,
            port_prefix: 0,
        };
        let tcp = MapKey { proto: 6, ..any };
        let tcp80 = MapKey {
            proto: 6,
            port: 80,
            port_prefix: 16,
            ..any
        };
        assert!(any.covers(&tcp80) && tcp.covers(&tcp80) && !tcp80.covers(&tcp));
        assert!(tcp80.specificity() > tcp.specificity() && tcp.specificity() > any.specificity());
        assert!(!MapKey { proto: 17, ..tcp }.covers(&tcp80));
    }
}
