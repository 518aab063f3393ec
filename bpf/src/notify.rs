//! Verdict accounting: drop counters by reason and per-endpoint traffic counters.

use plexus_abi::DropReason;

use crate::maps::{PLEXUS_DROPS, PLEXUS_EP_COUNTERS};

/// Counts one dropped packet under its reason.
#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(c) = PLEXUS_DROPS.get_ptr_mut(reason as u32) {
        unsafe { *c += 1 };
    }
}

/// Counts a packet sent by an endpoint.
#[inline(always)]
pub fn count_tx(endpoint_id: u32, bytes: u32) {
    if let Some(c) = PLEXUS_EP_COUNTERS.get_ptr_mut(endpoint_id) {
        let c = unsafe { &mut *c };
        c.tx_packets += 1;
        c.tx_bytes += bytes as u64;
    }
}

/// Counts a packet delivered to an endpoint.
#[inline(always)]
pub fn count_rx(endpoint_id: u32, bytes: u32) {
    if let Some(c) = PLEXUS_EP_COUNTERS.get_ptr_mut(endpoint_id) {
        let c = unsafe { &mut *c };
        c.rx_packets += 1;
        c.rx_bytes += bytes as u64;
    }
}
