//! Kubernetes Services load balancing as pure logic: from Services, EndpointSlices, LoadBalancer
//! address pools and the node's addresses, compute every frontend and its backends (what the
//! datapath's service, backend and reverse-NAT maps will hold), with stable numeric ids, stable
//! LoadBalancer address allocations, and the random and Maglev backend selection the datapath
//! performs.
//!
//! No I/O, no aya, no tokio: a later writer turns [`LbState`] into map contents.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod derive;
pub mod desired;
mod endpoints;
pub mod error;
pub mod ids;
pub mod maglev;
pub mod model;
pub mod pool;
pub mod selection;
mod service;
pub mod table;

pub use derive::{derive_slices, PodEndpoint};
pub use desired::desired;
pub use error::LbError;
pub use maglev::{
    maglev_hashes, maglev_lookup, maglev_table, maglev_table_keyed, MaglevBackend,
    MAGLEV_TABLE_SIZE, MAGLEV_TABLE_SIZE_LARGE,
};
pub use model::{
    Algorithm, Backend, BackendId, BackendKey, BackendState, Frontend, FrontendKey, FrontendKind,
    IpFamily, LbAllocations, LbIssue, LbState, NodeInfo, PoolAddress, Proto, ServiceEntry,
    ServiceId, ServiceName,
};
pub use pool::{Cidr, LbPool};
pub use selection::{maglev_table_for, select_random, slot_list, SlotList};
pub use service::{
    ALGORITHM_ANNOTATION, DEFAULT_AFFINITY_TIMEOUT, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};
pub use table::{LbChange, LbTable, LbUpdate};
