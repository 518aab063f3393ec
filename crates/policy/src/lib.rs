//! Network policy as pure logic: Kubernetes `NetworkPolicy` and Cilium's `CiliumNetworkPolicy`
//! / `CiliumClusterwideNetworkPolicy` parsed into one rule model, label selectors, and the
//! compilation of rules into per-endpoint map state (what the datapath's policy map holds), with
//! a lookup that answers exactly as the datapath does.
//!
//! No I/O, no aya, no tokio: everything here is tested directly.
#![forbid(unsafe_code)]

pub mod cilium;
pub mod compile;
pub mod error;
pub mod k8s;
pub mod parse;
pub mod rule;
pub mod selector;

pub use compile::{
    cidrs, compile, Decision, EndpointInput, EndpointPolicy, Inputs, MapEntry, MapKey, NamedPort,
};
pub use error::PolicyError;
pub use parse::{is_policy_kind, parse_policy};
pub use rule::{
    Action, Direction, Enforcement, Entity, Origin, ParsedPolicy, Peer, PolicyId, PortProto,
    PortSpec, Proto, Rule,
};
pub use selector::{Operator, Requirement, Selector};
