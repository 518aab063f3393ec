//! Plexus benchmarks: a serial TCP request/response client and server, iperf3 result parsing,
//! medians and percentiles, and the results table the `pod-to-pod` benchmark prints.

pub mod error;
pub mod iperf;
pub mod report;
pub mod rr;
pub mod stats;

pub use error::BenchError;
