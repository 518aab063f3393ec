//! The lab's error type.

use std::path::{Path, PathBuf};

/// What can go wrong running the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A manifest is invalid (the message names file, object and field).
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The request does not fit the running lab (names the object).
    #[error("{0}")]
    Invalid(String),
    /// The lab is not up.
    #[error("lab {0:?} is not up (run `plexus lab up -f ...` first)")]
    NotUp(String),
    /// The lab is already up.
    #[error("lab {0:?} is already up (use `plexus lab apply`, or `plexus lab down` first)")]
    AlreadyUp(String),
    /// The state file is damaged.
    #[error("lab state: {0}")]
    State(String),
    /// A process could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The agent did not come up.
    #[error("agent of node {node} did not become ready: {detail}")]
    Agent {
        /// Node name.
        node: String,
        /// What happened (log tail).
        detail: String,
    },
    /// The CNI plugin failed for a pod.
    #[error("CNI {command} for pod {pod}: {detail}")]
    Cni {
        /// ADD or DEL.
        command: &'static str,
        /// `ns/name`.
        pod: String,
        /// The plugin's error.
        detail: String,
    },
    /// Network set-up failed.
    #[error(transparent)]
    Netdev(#[from] plexus_netdev::NetdevError),
}

impl LabError {
    /// An I/O error on a path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LabError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
