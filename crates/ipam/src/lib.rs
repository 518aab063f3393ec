//! Pod address allocation from a node's IPv4 pod CIDR.
//!
//! Pure logic with serialisable state: the agent persists [`Ipam`] after every change, so a
//! restart never hands out an address twice. Allocation moves a cursor forward round-robin
//! (as host-local does), so a just-released address is the last to be reused: a late packet
//! for a deleted pod does not reach its successor.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Number of addresses in the block.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }
    /// The n-th address of the block.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr) + n as u32))
    }
    /// Offset of an address in the block.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u64> {
        let (a, base) = (u32::from(ip) as u64, u32::from(self.addr) as u64);
        (a >= base && a - base < self.size()).then(|| a - base)
    }
    /// Whether the block contains the address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.offset(ip).is_some()
    }
}

impl FromStr for Cidr {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::InvalidCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 30 {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix as u32);
        if u32::from(addr) & !mask != 0 {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = IpamError;
    fn try_from(s: String) -> Result<Self, IpamError> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPAM failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Not a valid IPv4 CIDR with a /30 or larger block.
    #[error("invalid pod CIDR {0:?}: want an IPv4 network like 10.244.0.0/24")]
    InvalidCidr(String),
    /// Every address is in use.
    #[error("pod CIDR {0} is exhausted")]
    Exhausted(Cidr),
}

/// The allocation state of one node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    cidr: Cidr,
    /// Address → owner key (e.g. `containerID/ifname`).
    allocated: BTreeMap<Ipv4Addr, String>,
    /// Index (among usable addresses) where the next search starts.
    next: u64,
}

impl Ipam {
    /// A fresh allocator for `cidr`. The first address is the network, the second the
    /// gateway (the node's router address), the last the broadcast; none is handed out.
    pub fn new(cidr: Cidr) -> Self {
        Self {
            cidr,
            allocated: BTreeMap::new(),
            next: 0,
        }
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The gateway (router) address pods route through.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.addr) + 1)
    }

    /// Allocates an address for `owner`; an owner that already has one gets the same one back
    /// (CNI ADD is retried by runtimes).
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.owned_by(owner) {
            return Ok(ip);
        }
        let size = self.cidr.size();
        // Usable offsets are 2..size-1 (network, gateway and broadcast excluded).
        let usable = size.saturating_sub(3);
        for step in 0..usable {
            let idx = (self.next + step) % usable;
            let Some(ip) = self.cidr.nth(2 + idx) else {
                continue;
            };
            if let std::collections::btree_map::Entry::Vacant(e) = self.allocated.entry(ip) {
                e.insert(owner.to_string());
                self.next = (idx + 1) % usable;
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    /// The address held by `owner`, if any.
    pub fn owned_by(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocated
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(ip, _)| *ip)
    }

    /// Releases whatever `owner` holds; returns it. Releasing nothing is not an error.
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let ip = self.owned_by(owner)?;
        self.allocated.remove(&ip);
        Some(ip)
    }

    /// Every allocation: address → owner.
    pub fn allocations(&self) -> &BTreeMap<Ipv4Addr, String> {
        &self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(c: &str) -> Ipam {
        Ipam::new(c.parse().unwrap())
    }

    #[test]
    fn parses_and_rejects_cidrs() {
        assert_eq!("10.244.0.0/24".parse::<Cidr>().unwrap().size(), 256);
        for bad in [
            "10.244.0.1/24",
            "10.244.0.0",
            "10.244.0.0/31",
            "x/24",
            "10.0.0.0/33",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let mut i = ipam("10.1.0.0/29"); // 8 addresses: .2 - .6 usable
        let got: Vec<_> = (0..5)
            .map(|n| i.allocate(&format!("c{n}")).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
        );
        assert_eq!(i.allocate("c9"), Err(IpamError::Exhausted(i.cidr())));
        assert_eq!(i.gateway().to_string(), "10.1.0.1");
    }

    #[test]
    fn same_owner_gets_same_address() {
        let mut i = ipam("10.1.0.0/24");
        let a = i.allocate("x").unwrap();
        assert_eq!(i.allocate("x").unwrap(), a);
        assert_eq!(i.allocations().len(), 1);
    }

    #[test]
    fn released_address_is_not_reused_next() {
        let mut i = ipam("10.1.0.0/24");
        let a = i.allocate("a").unwrap();
        assert_eq!(i.release("a"), Some(a));
        assert_eq!(i.release("a"), None);
        let b = i.allocate("b").unwrap();
        assert_ne!(a, b, "round-robin: the released address is reused last");
    }

    #[test]
    fn wraps_around_and_reuses_freed_addresses() {
        let mut i = ipam("10.1.0.0/29");
        for n in 0..5 {
            i.allocate(&format!("c{n}")).unwrap();
        }
        i.release("c1");
        assert_eq!(i.allocate("new").unwrap().to_string(), "10.1.0.3");
    }

    #[test]
    fn state_survives_serialisation() {
        let mut i = ipam("10.1.0.0/24");
        i.allocate("a").unwrap();
        i.allocate("b").unwrap();
        i.release("a");
        let json = serde_json::to_string(&i).unwrap();
        let mut back: Ipam = serde_json::from_str(&json).unwrap();
        assert_eq!(back, i);
        // The cursor survives too: the restarted allocator continues after "b".
        let c = back.allocate("c").unwrap();
        assert_eq!(c.to_string(), "10.1.0.4");
    }
}
