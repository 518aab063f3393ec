//! The loader's error type: what failed, on which object, with the kernel's word on it.

use std::path::PathBuf;

/// Everything the loader can fail at.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Creating or reading the pin directory failed.
    #[error("pin directory {path}: {source}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The object failed to load (includes verifier logs from aya).
    #[error("loading the datapath object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program is missing from the object or failed to load or attach.
    #[error("program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("attaching {program} to {interface}: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// A pinned link could not be opened or converted.
    #[error("link of {interface}: {source}")]
    Link {
        /// Interface name.
        interface: String,
        /// aya's error.
        source: aya::programs::links::LinkError,
    },
    /// Pinning a link failed.
    #[error("pinning link {path}: {source}")]
    PinLink {
        /// Pin path.
        path: PathBuf,
        /// aya's error.
        source: aya::pin::PinError,
    },
    /// A map is missing from the object or pin directory.
    #[error("map {0} not found")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
}
