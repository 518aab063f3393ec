//! Security identities, as Cilium numbers them: endpoints with the same identity labels share one
//! numeric identity; reserved identities name the host, the world and the like; CIDR identities
//! (node-local) stand for address ranges that policies mention.
#![forbid(unsafe_code)]

mod allocator;
mod labels;
mod prefix;

pub use allocator::{Allocator, IdentityError};
pub use labels::{
    endpoint_labels, is_identity_label, Labels, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX,
    SOURCE_CIDR, SOURCE_K8S, SOURCE_RESERVED,
};
pub use prefix::{Prefix, PrefixError};

/// A numeric security identity.
pub type NumericIdentity = u32;

/// Reserved identities (Cilium's numbers).
pub mod reserved {
    use super::NumericIdentity;
    /// Unknown / any (used as the wildcard in policy maps).
    pub const UNKNOWN: NumericIdentity = 0;
    /// The local node.
    pub const HOST: NumericIdentity = 1;
    /// Everything outside the cluster.
    pub const WORLD: NumericIdentity = 2;
    /// Endpoints not managed by Plexus.
    pub const UNMANAGED: NumericIdentity = 3;
    /// Health-check endpoints.
    pub const HEALTH: NumericIdentity = 4;
    /// Endpoints whose identity is not resolved yet.
    pub const INIT: NumericIdentity = 5;
    /// Other nodes of the cluster.
    pub const REMOTE_NODE: NumericIdentity = 6;
    /// The Kubernetes API server.
    pub const KUBE_APISERVER: NumericIdentity = 7;
    /// The ingress proxy.
    pub const INGRESS: NumericIdentity = 8;
    /// IPv4 addresses outside the cluster that no CIDR identity covers.
    pub const WORLD_IPV4: NumericIdentity = 9;
    /// IPv6 addresses outside the cluster that no CIDR identity covers.
    pub const WORLD_IPV6: NumericIdentity = 10;
    /// First identity allocated for label sets (cluster-wide range).
    pub const FIRST_ALLOCATED: NumericIdentity = 256;
    /// Last identity of the cluster-wide range.
    pub const LAST_ALLOCATED: NumericIdentity = 65_535;
    /// First node-local CIDR identity (Cilium's local scope bit).
    pub const FIRST_LOCAL: NumericIdentity = 1 << 24;

    /// Every reserved identity with its name.
    pub const ALL: [(NumericIdentity, &str); 10] = [
        (HOST, "host"),
        (WORLD, "world"),
        (UNMANAGED, "unmanaged"),
        (HEALTH, "health"),
        (INIT, "init"),
        (REMOTE_NODE, "remote-node"),
        (KUBE_APISERVER, "kube-apiserver"),
        (INGRESS, "ingress"),
        (WORLD_IPV4, "world-ipv4"),
        (WORLD_IPV6, "world-ipv6"),
    ];

    /// The world identity of an address family.
    pub fn world_of(v4: bool) -> NumericIdentity {
        if v4 {
            WORLD_IPV4
        } else {
            WORLD_IPV6
        }
    }

    /// The name of a reserved identity.
    pub fn name(id: NumericIdentity) -> Option<&'static str> {
        ALL.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
    }
}
