//! IP prefixes (IPv4 and IPv6 CIDRs) with containment, for CIDR policy and the ipcache.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

/// An IP prefix with host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

/// A string that is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid CIDR (want e.g. 10.0.0.0/8 or 2001:db8::/32, host bits zero)")]
pub struct PrefixError(pub String);

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Prefix {
    /// Address width of the family.
    pub fn width(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn mask(&self) -> u128 {
        let w = self.width() as u32;
        if self.len == 0 {
            0
        } else {
            (u128::MAX >> (128 - w)) & !((1u128 << (w - self.len as u32)) - 1)
        }
    }

    /// Whether the prefix contains an address.
    pub fn contains_addr(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && bits(a) & self.mask() == bits(self.addr)
    }

    /// Whether this prefix contains (or equals) `other`.
    pub fn contains(&self, other: &Prefix) -> bool {
        other.addr.is_ipv4() == self.addr.is_ipv4()
            && other.len >= self.len
            && self.contains_addr(other.addr)
    }

    /// A host prefix (/32 or /128).
    pub fn host(a: IpAddr) -> Self {
        let len = if a.is_ipv4() { 32 } else { 128 };
        Prefix { addr: a, len }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let bad = || PrefixError(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        let p = Prefix { addr, len };
        if len > p.width() || bits(addr) & !p.mask() != 0 {
            return Err(bad());
        }
        Ok(p)
    }
}

impl TryFrom<String> for Prefix {
    type Error = PrefixError;
    fn try_from(s: String) -> Result<Self, PrefixError> {
        s.parse()
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        assert!(p.contains(&"10.1.0.0/16".parse().unwrap()));
        assert!(!p.contains(&"11.0.0.0/16".parse().unwrap()));
        assert!(!"10.1.0.0/16".parse::<Prefix>().unwrap().contains(&p));
        assert!(p.contains_addr("10.9.9.9".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&p));
        assert!(!all.contains_addr("::1".parse().unwrap()));
        assert!("10.0.0.1/8".parse::<Prefix>().is_err());
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        let v6: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains_addr("2001:db8::1".parse().unwrap()));
    }
}
