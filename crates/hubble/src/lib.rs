//! Hubble-compatible Observer API for Plexus: Hubble's `flow` and `observer` protobuf schema
//! (same names and numbers, so Hubble's CLI and UI and any gRPC client generated from Hubble's
//! files can read Plexus flows), flow filters with Hubble's semantics, an in-memory flow ring and
//! the gRPC server that streams it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Hubble's `flow` package: flows, endpoints, filters, drop reasons (generated).
#[allow(clippy::all, missing_docs)]
pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
}

/// Hubble Relay's `relay` package: node states (generated).
#[allow(clippy::all, missing_docs)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
}

/// Hubble's `observer` package: the Observer service, its client and server (generated).
#[allow(clippy::all, missing_docs)]
pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
}

pub mod filters;
pub mod message_type;
mod query;
mod ring;
mod server;
mod service;
mod source;

pub use ring::FlowRing;
pub use server::{serve, HubbleServer, ServeError, DEFAULT_PORT};
pub use service::ObserverService;
pub use source::{FlowSource, Status};
