//! Message types of Cilium's monitor protocol, the numbers Hubble expects in
//! `CiliumEventType.type` and `EventTypeFilter.type` (Hubble's CLI names them `drop`, `trace`,
//! `l7`, ...).

/// A packet drop (`drop`).
pub const DROP: i32 = 1;
/// A datapath debug message (`debug`).
pub const DEBUG: i32 = 2;
/// A datapath debug packet capture (`capture`).
pub const CAPTURE: i32 = 3;
/// A packet trace (`trace`).
pub const TRACE: i32 = 4;
/// A policy verdict (`policy-verdict`).
pub const POLICY_VERDICT: i32 = 5;
/// A socket-level trace (`trace-sock`).
pub const TRACE_SOCK: i32 = 7;
/// An L7 proxy access-log record (`l7`).
pub const ACCESS_LOG: i32 = 129;
/// An agent notification (`agent`).
pub const AGENT: i32 = 130;
