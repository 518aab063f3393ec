//! LoadBalancer address pools, shaped like Cilium's `CiliumLoadBalancerIPPool`, and the
//! deterministic, stable allocation of their addresses to `type: LoadBalancer` Services.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{IpFamily, LbError, LbIssue, PoolAddress, ServiceName};

/// The pseudo-label carrying a Service's namespace, which pool selectors can match (as Cilium's).
pub const SERVICE_NAMESPACE_LABEL: &str = "io.kubernetes.service.namespace";

/// The pseudo-label carrying a Service's name, which pool selectors can match (as Cilium's).
pub const SERVICE_NAME_PSEUDO_LABEL: &str = "io.kubernetes.service.name";

/// A pool of LoadBalancer addresses (Cilium's `CiliumLoadBalancerIPPool`, reduced to what
/// allocation needs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LbPool {
    /// `metadata.name`.
    pub name: String,
    /// `spec.blocks[].cidr`: the address blocks, in CIDR notation.
    pub blocks: Vec<String>,
    /// `spec.serviceSelector`: which Services may get addresses from the pool; `None` means all.
    /// Besides the Service's labels it can match [`SERVICE_NAMESPACE_LABEL`] and
    /// [`SERVICE_NAME_PSEUDO_LABEL`].
    pub service_selector: Option<LabelSelector>,
    /// `spec.allowFirstLastIPs`: whether the first and last address of a block (the network and
    /// broadcast addresses of an IPv4 block) may be allocated.
    pub allow_first_last_ips: bool,
}

/// An address block: a network address and a prefix length, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The block of `address/prefix_len`, host bits cleared; `None` if the length is too long
    /// for the family.
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let bits = bits(IpFamily::of(&address));
        if u32::from(prefix_len) > bits {
            return None;
        }
        let network = from_u128(
            IpFamily::of(&address),
            to_u128(address) & mask(prefix_len, bits),
        );
        Some(Self {
            network,
            prefix_len,
        })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The block's family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.network)
    }

    /// Whether the block holds an address.
    pub fn contains(&self, address: &IpAddr) -> bool {
        let family = self.family();
        IpFamily::of(address) == family
            && to_u128(*address) & mask(self.prefix_len, bits(family)) == to_u128(self.network)
    }

    /// The first and last allocatable address (as numbers), leaving out the block's first and
    /// last address unless `allow_first_last` or the block is too small to spare them.
    fn range(&self, allow_first_last: bool) -> (u128, u128) {
        let host_bits = bits(self.family()) - u32::from(self.prefix_len);
        let first = to_u128(self.network);
        let last = if host_bits >= 128 {
            u128::MAX
        } else {
            first | ((1u128 << host_bits) - 1)
        };
        if allow_first_last || host_bits < 2 {
            (first, last)
        } else {
            (first + 1, last - 1)
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/prefix)"))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        Cidr::new(address, len)
            .ok_or_else(|| format!("prefix length {len} is too long for {address}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn bits(family: IpFamily) -> u32 {
    match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    }
}

fn mask(prefix_len: u8, bits: u32) -> u128 {
    let host_bits = bits - u32::from(prefix_len);
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if host_bits >= 128 {
        0
    } else {
        all & !((1u128 << host_bits) - 1)
    }
}

fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(family: IpFamily, n: u128) -> IpAddr {
    match family {
        // Callers only pass numbers of the family's width.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// A pool checked and ready to allocate from.
#[derive(Debug)]
pub(crate) struct ValidPool {
    name: String,
    blocks: Vec<Cidr>,
    selector: Option<Selector>,
    allow_first_last_ips: bool,
}

impl ValidPool {
    /// Checks a pool; errors name the pool and the field.
    pub(crate) fn new(pool: &LbPool) -> Result<Self, LbError> {
        let blocks = pool
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.parse::<Cidr>()
                    .map_err(|e| LbError::pool(&pool.name, format!("spec.blocks[{i}].cidr"), e))
            })
            .collect::<Result<_, _>>()?;
        let selector = pool
            .service_selector
            .as_ref()
            .map(|s| Selector::new(s, &pool.name, "spec.serviceSelector"))
            .transpose()?;
        Ok(Self {
            name: pool.name.clone(),
            blocks,
            selector,
            allow_first_last_ips: pool.allow_first_last_ips,
        })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    fn contains(&self, address: &IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(address))
    }

    /// The lowest address of `family` in the pool that is not taken.
    fn lowest_free(&self, family: IpFamily, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        for block in self.blocks.iter().filter(|b| b.family() == family) {
            let (first, last) = block.range(self.allow_first_last_ips);
            let mut n = first;
            loop {
                let address = from_u128(family, n);
                if !taken.contains(&address) {
                    return Some(address);
                }
                if n == last {
                    break;
                }
                n += 1;
            }
        }
        None
    }
}

/// A checked `metav1.LabelSelector`.
#[derive(Debug)]
struct Selector {
    labels: Vec<(String, String)>,
    expressions: Vec<Expression>,
}

#[derive(Debug)]
enum Expression {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    fn new(selector: &LabelSelector, pool: &str, field: &str) -> Result<Self, LbError> {
        let labels = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut expressions = Vec::new();
        for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            let values = e.values.clone().unwrap_or_default();
            let key = e.key.clone();
            let expression = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(LbError::pool(
                        pool,
                        format!("{at}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(LbError::pool(
                        pool,
                        format!("{at}.values"),
                        format!("operator {} takes no values", e.operator),
                    ))
                }
                "In" => Expression::In(key, values),
                "NotIn" => Expression::NotIn(key, values),
                "Exists" => Expression::Exists(key),
                "DoesNotExist" => Expression::DoesNotExist(key),
                other => {
                    return Err(LbError::pool(
                        pool,
                        format!("{at}.operator"),
                        format!(
                        "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                    ),
                    ))
                }
            };
            expressions.push(expression);
        }
        Ok(Self {
            labels,
            expressions,
        })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                Expression::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
                Expression::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
                Expression::Exists(k) => labels.contains_key(k),
                Expression::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// What allocation needs to know of a `type: LoadBalancer` Service.
#[derive(Debug)]
pub(crate) struct LbRequest<'a> {
    /// The Service.
    pub service: &'a ServiceName,
    /// Its labels.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The families it wants an address of, in order.
    pub families: &'a [IpFamily],
    /// The addresses of its `status.loadBalancer.ingress`; when there are some, nothing is
    /// allocated and those of them that lie in a pool are reserved for it.
    pub ingress: &'a [IpAddr],
    /// Whether pool allocation is for it (no foreign `loadBalancerClass`).
    pub allocate: bool,
}

/// Allocates LoadBalancer addresses to `requests`, which come in priority order (an earlier
/// request wins a contested address).
///
/// Three passes, so that nothing already held moves: first the addresses Services already have
/// in their status are reserved; then each Service keeps its previous allocation if the pool
/// still exists, still selects it and still holds the address; then the remaining Services get,
/// per wanted family, the lowest free address of the first matching pool by pool name.
pub(crate) fn allocate(
    requests: &[LbRequest<'_>],
    pools: &[ValidPool],
    previous: &BTreeMap<ServiceName, Vec<PoolAddress>>,
) -> (BTreeMap<ServiceName, Vec<PoolAddress>>, Vec<LbIssue>) {
    let mut pools: Vec<&ValidPool> = pools.iter().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let no_labels = BTreeMap::new();
    let labels: Vec<BTreeMap<String, String>> = requests
        .iter()
        .map(|r| {
            let mut labels = r.labels.unwrap_or(&no_labels).clone();
            labels.insert(SERVICE_NAMESPACE_LABEL.into(), r.service.namespace.clone());
            labels.insert(SERVICE_NAME_PSEUDO_LABEL.into(), r.service.name.clone());
            labels
        })
        .collect();

    let mut taken = BTreeSet::new();
    let mut allocated: BTreeMap<ServiceName, Vec<PoolAddress>> = BTreeMap::new();

    // 1. Addresses already in status.
    for r in requests {
        for address in r.ingress {
            if let Some(pool) = pools.iter().find(|p| p.contains(address)) {
                if taken.insert(*address) {
                    allocated
                        .entry(r.service.clone())
                        .or_default()
                        .push(PoolAddress {
                            pool: pool.name.clone(),
                            address: *address,
                        });
                }
            }
        }
    }

    // 2. Previous allocations that still hold.
    for (r, labels) in requests.iter().zip(&labels) {
        if !r.ingress.is_empty() || !r.allocate {
            continue;
        }
        for held in previous.get(r.service).into_iter().flatten() {
            let family = IpFamily::of(&held.address);
            let still_valid = r.families.contains(&family)
                && pools
                    .iter()
                    .any(|p| p.name == held.pool && p.matches(labels) && p.contains(&held.address));
            let has_family = allocated
                .get(r.service)
                .is_some_and(|a| a.iter().any(|a| IpFamily::of(&a.address) == family));
            if still_valid && !has_family && taken.insert(held.address) {
                allocated
                    .entry(r.service.clone())
                    .or_default()
                    .push(held.clone());
            }
        }
    }

    // 3. New allocations.
    let mut issues = Vec::new();
    for (r, labels) in requests.iter().zip(&labels) {
        if !r.ingress.is_empty() || !r.allocate {
            continue;
        }
        for &family in r.families {
            let has_family = allocated
                .get(r.service)
                .is_some_and(|a| a.iter().any(|a| IpFamily::of(&a.address) == family));
            if has_family {
                continue;
            }
            let found = pools
                .iter()
                .filter(|p| p.matches(labels))
                .find_map(|p| p.lowest_free(family, &taken).map(|a| (p, a)));
            match found {
                Some((pool, address)) => {
                    taken.insert(address);
                    allocated
                        .entry(r.service.clone())
                        .or_default()
                        .push(PoolAddress {
                            pool: pool.name.clone(),
                            address,
                        });
                }
                None => issues.push(LbIssue::NoAddress {
                    service: r.service.clone(),
                    family,
                }),
            }
        }
    }
    for addresses in allocated.values_mut() {
        addresses.sort_by_key(|a| IpFamily::of(&a.address));
    }
    (allocated, issues)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_clear_host_bits() {
        let c: Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.0/24");
        assert!(c.contains(&ip("10.1.2.255")));
        assert!(!c.contains(&ip("10.1.3.0")));
        assert!(!c.contains(&ip("::1")));
        let c: Cidr = "2001:db8::/64".parse().unwrap();
        assert!(c.contains(&ip("2001:db8::ffff")));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains(&ip("1.2.3.4")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(&ip("::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn first_and_last_addresses_are_skipped_unless_allowed() {
        let c: Cidr = "10.0.0.0/30".parse().unwrap();
        assert_eq!(c.range(false), (0x0a00_0001, 0x0a00_0002));
        assert_eq!(c.range(true), (0x0a00_0000, 0x0a00_0003));
        let c: Cidr = "10.0.0.7/32".parse().unwrap();
        assert_eq!(c.range(false), (0x0a00_0007, 0x0a00_0007));
        let c: Cidr = "::/0".parse().unwrap();
        assert_eq!(c.range(true), (0, u128::MAX));
    }

    #[test]
    fn invalid_pools_name_the_pool_and_field() {
        let pool = LbPool {
            name: "blue".into(),
            blocks: vec!["10.0.0.0/24".into(), "10.0.1.0/99".into()],
            ..LbPool::default()
        };
        let err = ValidPool::new(&pool).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CiliumLoadBalancerIPPool blue: spec.blocks[1].cidr: prefix length 99 is too long for 10.0.1.0"
        );
        let pool = LbPool {
            name: "blue".into(),
            service_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Maybe".into(),
                    values: None,
                }]),
                match_labels: None,
            }),
            ..LbPool::default()
        };
        let err = ValidPool::new(&pool).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "CiliumLoadBalancerIPPool blue: spec.serviceSelector.matchExpressions[0].operator:"
            ),
            "{err}"
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".into(), "web".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "staging".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = Selector::new(&selector, "p", "f").unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&labels(&[("tier", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("tier", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("tier", "web"), ("env", "prod"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        let empty = Selector::new(&LabelSelector::default(), "p", "f").unwrap();
        assert!(empty.matches(&BTreeMap::new()));
    }
}
