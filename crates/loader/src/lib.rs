//! The only crate that talks to the kernel: loads the Plexus datapath, pins its maps and tcx
//! links under `/sys/fs/bpf/plexus/<node>/`, attaches programs to pod interfaces, and reads and
//! writes the maps.
//!
//! Adoption after a restart is the default: maps already pinned are reused (their contents,
//! including conntrack, survive), and a pinned tcx link gets its program swapped atomically with
//! `bpf_link_update`, so traffic never sees a detached hook.

mod bpffs;
mod datapath;
mod error;
pub mod lb_map;
mod maps;
pub mod policy_map;

pub use bpffs::ensure_bpffs;
pub use datapath::{AttachedProgram, Datapath};
pub use error::LoaderError;
pub use maps::{CtRecord, EndpointRecord, PinnedMaps};

/// The compiled kernel object, built by `build.rs` from `bpf/`.
pub static DATAPATH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/plexus-datapath"));

/// Default root of every node's pins.
pub const BPF_ROOT: &str = "/sys/fs/bpf/plexus";
