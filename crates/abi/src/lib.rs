//! Types shared by the Plexus kernel programs and userspace: the single source of truth for
//! map names, capacities, keys, values and reason codes.
//!
//! Every type here is `#[repr(C)]`, `Copy`, and laid out without implicit padding (explicit
//! `_pad` fields instead), so the kernel and userspace cannot disagree on a layout. Tests at
//! the bottom assert each size.
#![no_std]

pub mod addr;
pub mod conntrack;
pub mod counters;
pub mod drop;
pub mod endpoint;
pub mod event;
pub mod ipcache;
pub mod lb;
pub mod maps;
pub mod policy;

pub use addr::IpAddr6;
pub use conntrack::{CtEntry, CtKey};
pub use counters::EndpointCounters;
pub use drop::DropReason;
pub use endpoint::{EndpointInfo, EndpointKey};
pub use event::{CaptureSpec, Event, MonitorConfig};
pub use ipcache::{IpcacheKey, IpcacheValue};
pub use lb::{
    LbAffinityKey, LbAffinityValue, LbBackend, LbFlow, LbRevNat, LbServiceKey, LbServiceValue,
    LbSockKey, LbSockRev, MaglevTable,
};
pub use policy::{PolicyKey, PolicyValue};

/// Implements `aya::Pod` for ABI types in userspace builds.
#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and byte arrays, and
    // have no implicit padding (see the layout tests), so any bit pattern is valid.
    unsafe impl aya::Pod for IpAddr6 {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for EndpointInfo {}
    unsafe impl aya::Pod for EndpointCounters {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for IpcacheKey {}
    unsafe impl aya::Pod for IpcacheValue {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for MonitorConfig {}
    unsafe impl aya::Pod for CaptureSpec {}
    unsafe impl aya::Pod for LbServiceKey {}
    unsafe impl aya::Pod for LbServiceValue {}
    unsafe impl aya::Pod for LbBackend {}
    unsafe impl aya::Pod for LbRevNat {}
    unsafe impl aya::Pod for LbFlow {}
    unsafe impl aya::Pod for LbAffinityKey {}
    unsafe impl aya::Pod for LbAffinityValue {}
    unsafe impl aya::Pod for MaglevTable {}
    unsafe impl aya::Pod for LbSockKey {}
    unsafe impl aya::Pod for LbSockRev {}
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn sizes_have_no_hidden_padding() {
        assert_eq!(size_of::<IpAddr6>(), 16);
        assert_eq!(size_of::<EndpointKey>(), 16);
        assert_eq!(size_of::<EndpointInfo>(), 28);
        assert_eq!(align_of::<EndpointInfo>(), 4);
        assert_eq!(size_of::<EndpointCounters>(), 32);
        assert_eq!(size_of::<CtKey>(), 40);
        assert_eq!(size_of::<CtEntry>(), 48);
        assert_eq!(size_of::<PolicyKey>(), 12);
        assert_eq!(size_of::<PolicyValue>(), 8);
        assert_eq!(size_of::<IpcacheKey>(), 16);
        assert_eq!(size_of::<IpcacheValue>(), 24);
        assert_eq!(size_of::<Event>(), 80 + 128);
        assert_eq!(size_of::<MonitorConfig>(), 8);
        assert_eq!(size_of::<CaptureSpec>(), 4);
        assert_eq!(size_of::<LbServiceKey>(), 24);
        assert_eq!(size_of::<LbServiceValue>(), 16);
        assert_eq!(size_of::<LbBackend>(), 24);
        assert_eq!(size_of::<LbRevNat>(), 20);
        assert_eq!(size_of::<LbFlow>(), 8);
        assert_eq!(size_of::<LbAffinityKey>(), 24);
        assert_eq!(size_of::<LbAffinityValue>(), 16);
        assert_eq!(size_of::<MaglevTable>(), 4 * lb::MAGLEV_SLOTS);
        assert_eq!(size_of::<LbSockKey>(), 32);
        assert_eq!(size_of::<LbSockRev>(), 24);
    }
}
