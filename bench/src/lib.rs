//! Plexus benchmarks: a serial TCP request/response client and server, iperf3 result parsing,
//! medians and percentiles, CPU busy readings, and the results table the `pod-to-pod`
//! benchmark prints.

pub mod cpu;
pub mod error;
pub mod iperf;
pub mod report;
pub mod rr;
pub mod stats;

pub use error::BenchError;
