//! Plexus benchmarks: a serial TCP request/response client and server (and the subcommands that
//! run them inside pods), iperf3 result parsing, medians and percentiles, CPU busy readings, child
//! processes and a Plexus lab with cleanup guards, a synthetic node for the observer, and the
//! results tables the `pod-to-pod` and `flows` benchmarks print.

pub mod cpu;
pub mod error;
pub mod flows_report;
pub mod interrupt;
pub mod iperf;
pub mod kube_proxy;
pub mod lab;
pub mod process;
pub mod report;
pub mod rr;
pub mod service_set;
pub mod services_report;
pub mod stats;
pub mod synthetic;
pub mod worker;

pub use error::BenchError;
