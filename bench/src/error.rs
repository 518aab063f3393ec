//! The benchmark library's error type.

use std::io;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket or file operation failed.
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
    /// A command could not start, failed, timed out or printed something unexpected.
    #[error("`{command}`: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// What happened, with what it printed.
        detail: String,
    },
    /// A required tool or file is missing.
    #[error("{0}")]
    Missing(String),
    /// The Plexus lab did not look as expected.
    #[error("plexus lab {lab}: {detail}")]
    Lab {
        /// The lab's name.
        lab: String,
        /// What was wrong.
        detail: String,
    },
    /// SIGINT or SIGTERM arrived; the run stops so its guards can clean up.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A command that went wrong: `command` is its printed line.
    pub fn command(command: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Command {
            command: command.into(),
            detail: detail.into(),
        }
    }
}
