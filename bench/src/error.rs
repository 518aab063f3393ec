//! The benchmark library's error type.

use std::io;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation and its peer, e.g. `connecting to 10.0.0.2:7000`.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// iperf3 reported an error or printed JSON without the expected result.
    #[error("iperf3: {0}")]
    Iperf(String),
    /// A request/response run completed no transaction.
    #[error("no request/response transaction completed against {0}")]
    NoTransactions(String),
}

impl BenchError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
