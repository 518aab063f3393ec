//! The agent's observer and flow metrics as a library, so benchmarks can drive the exact
//! per-event path (`observer::process`) the agent runs.

pub mod metrics;
pub mod observer;
