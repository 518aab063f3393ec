//! The policy map: an LPM trie keyed by endpoint, peer identity, direction, protocol and port,
//! so port ranges are prefixes and "any protocol" / "any port" are shorter prefixes.

/// The data part of a policy key. Multi-byte fields are big-endian so the trie's bit prefixes
/// run from the endpoint id down to the port's low bits.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Endpoint id, big-endian.
    pub endpoint_id: [u8; 4],
    /// Peer identity (0 = any), big-endian.
    pub identity: [u8; 4],
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u8,
    /// IP protocol number (0 with a prefix that stops before it = any).
    pub proto: u8,
    /// Destination port, big-endian.
    pub dport: [u8; 2],
}

/// Prefix length covering endpoint, identity and direction: "any protocol".
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
/// Prefix length adding the protocol: "any port of this protocol".
pub const POLICY_PREFIX_ANY_PORT: u32 = 80;
/// Full prefix length: an exact port.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Ingress (traffic to the endpoint).
pub const DIR_INGRESS: u8 = 0;
/// Egress (traffic from the endpoint).
pub const DIR_EGRESS: u8 = 1;

impl PolicyKey {
    /// Builds a key from host-order values.
    #[inline(always)]
    pub fn new(endpoint_id: u32, identity: u32, direction: u8, proto: u8, dport: u16) -> Self {
        Self {
            endpoint_id: endpoint_id.to_be_bytes(),
            identity: identity.to_be_bytes(),
            direction,
            proto,
            dport: dport.to_be_bytes(),
        }
    }
}

/// Value of a policy entry.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PolicyValue {
    /// [`POLICY_ALLOW`] or [`POLICY_DENY`].
    pub action: u8,
    /// Reserved, 0.
    pub flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// The agent's id of the (first) rule behind the entry, for flows and traces.
    pub rule_id: u32,
}

/// The entry allows.
pub const POLICY_ALLOW: u8 = 1;
/// The entry denies.
pub const POLICY_DENY: u8 = 2;
