//! The local lab: a whole cluster on one machine. Each node is a network namespace running its
//! own agent; each pod is a network namespace wired by the real CNI plugin, running the built-in
//! workload that serves its declared container ports.
pub mod cluster;
mod error;
pub mod probe;
mod process;
pub mod services;
pub mod state;
pub mod workload;

pub use cluster::Lab;
pub use error::LabError;
pub use process::{cgroup2_mount, join_cgroup_before_exec};
pub mod manifest;
