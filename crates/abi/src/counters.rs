//! Per-endpoint traffic counters (a per-CPU map: the BPF target has no atomic add).

/// Packets and bytes of one endpoint on one CPU. "tx" is what the pod sent, "rx" what was
/// delivered to it.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EndpointCounters {
    /// Packets sent by the pod.
    pub tx_packets: u64,
    /// Bytes sent by the pod (L2 frame length).
    pub tx_bytes: u64,
    /// Packets delivered to the pod.
    pub rx_packets: u64,
    /// Bytes delivered to the pod.
    pub rx_bytes: u64,
}

impl EndpointCounters {
    /// Adds another CPU's counters to these.
    pub fn add(&mut self, o: &Self) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
    }
}
