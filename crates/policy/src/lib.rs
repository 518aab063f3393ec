//! Network policy as pure logic: Kubernetes `NetworkPolicy` and Cilium's `CiliumNetworkPolicy`
//! / `CiliumClusterwideNetworkPolicy` parsed into one rule model, label selectors, and the
//! compilation of rules into per-endpoint map state (what the datapath's policy map holds), with
//! a lookup that answers exactly as the datapath does.
//!
//! No I/O, no aya, no tokio: everything here is tested directly.
#![forbid(unsafe_code)]

pub mod rule;
pub mod selector;

pub use rule::{
    Action, Direction, Enforcement, Entity, Origin, ParsedPolicy, Peer, PolicyId, PortProto,
    PortSpec, Proto, Rule,
};
pub use selector::{Operator, Requirement, Selector};
