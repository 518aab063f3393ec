//! Verdict accounting and events: drop counters by reason, per-endpoint traffic counters, and
//! the events the observer turns into flows (drops always, traces as the monitor level asks,
//! policy verdicts of new connections, captured packets).

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_ringbuf_query, bpf_skb_load_bytes},
    programs::TcContext,
};
use plexus_abi::{
    event::{EVENT_CAPTURE, EVENT_DATA_LEN, EVENT_DROP, EVENT_POLICY_VERDICT, EVENT_TRACE},
    CtKey, DropReason, IpAddr6, MonitorConfig,
};

use crate::maps::{
    PLEXUS_CAPTURE, PLEXUS_CONFIG, PLEXUS_DROPS, PLEXUS_EP_COUNTERS, PLEXUS_EVENTS,
    PLEXUS_EVENTS_LOST,
};

/// What the stages learned about a packet, for the events that describe it.
#[derive(Clone, Copy)]
pub struct Meta {
    /// Source and destination, ports in network order.
    pub tuple: CtKey,
    /// TCP flags.
    pub tcp_flags: u8,
    /// `EVENT_F_*` bits.
    pub flags: u8,
    /// Source identity.
    pub src_identity: u32,
    /// Destination identity.
    pub dst_identity: u32,
    /// The endpoint the event is about.
    pub endpoint_id: u32,
    /// Rule behind a policy decision.
    pub rule_id: u32,
    /// Trace observation point, if this packet is to be reported.
    pub trace: Option<u8>,
    /// Policy verdict to report (`verdict::*`), 0 for none.
    pub verdict: u8,
    /// Endpoints whose capture should see this packet (source, destination).
    pub capture: [u32; 2],
    /// The monitor settings, read once per packet.
    pub cfg: MonitorConfig,
}

impl Meta {
    /// Nothing known yet.
    #[inline(always)]
    pub const fn new() -> Self {
        Meta {
            tuple: CtKey {
                saddr: IpAddr6 { words: [0; 4] },
                daddr: IpAddr6 { words: [0; 4] },
                sport: 0,
                dport: 0,
                proto: 0,
                _pad: [0; 3],
            },
            tcp_flags: 0,
            flags: 0,
            src_identity: 0,
            dst_identity: 0,
            endpoint_id: 0,
            rule_id: 0,
            trace: None,
            verdict: 0,
            capture: [0; 2],
            cfg: MonitorConfig {
                level: 0,
                capture: 0,
            },
        }
    }
}

/// The monitor settings.
#[inline(always)]
pub fn config() -> MonitorConfig {
    match PLEXUS_CONFIG.get(0) {
        Some(c) => *c,
        None => MonitorConfig {
            level: 0,
            capture: 0,
        },
    }
}

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

fn lost() {
    if let Some(c) = PLEXUS_EVENTS_LOST.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
}

/// Sends one event; `copy` bytes of the packet (at most `EVENT_DATA_LEN`) ride along.
#[inline(always)]
pub fn emit(ctx: &TcContext, kind: u8, subtype: u8, m: &Meta, copy: u32) {
    let Some(mut entry) = PLEXUS_EVENTS.reserve(0) else {
        lost();
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.kind = kind;
    ev.subtype = subtype;
    ev.flags = m.flags;
    ev.proto = m.tuple.proto;
    ev.tcp_flags = m.tcp_flags;
    ev._pad = [0; 3];
    ev.src_identity = m.src_identity;
    ev.dst_identity = m.dst_identity;
    ev.endpoint_id = m.endpoint_id;
    ev.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ev.rule_id = m.rule_id;
    let len = ctx.len();
    ev.pkt_len = len;
    ev.saddr = m.tuple.saddr;
    ev.daddr = m.tuple.daddr;
    ev.sport = m.tuple.sport;
    ev.dport = m.tuple.dport;
    ev._pad2 = 0;
    // The helper needs a length the verifier can prove is in 1..=EVENT_DATA_LEN: mask, then
    // add one (aya's `load_bytes` clamps in a way the verifier cannot bound away from zero).
    let want = if copy < len { copy } else { len };
    if want == 0 {
        ev.cap_len = 0;
    } else {
        let n = ((want - 1) & (EVENT_DATA_LEN as u32 - 1)) + 1;
        let skb = ctx.skb.skb as *const core::ffi::c_void;
        let dst = ev.data.as_mut_ptr() as *mut core::ffi::c_void;
        let ok = unsafe { bpf_skb_load_bytes(skb, 0, dst, n) } == 0;
        ev.cap_len = if ok { n as u16 } else { 0 };
    }
    // Wake the reader only when a good batch is waiting: a wake-up per event costs the CPU
    // more than the event itself (the agent also drains the ring on a short timer).
    let queued = unsafe {
        bpf_ringbuf_query(
            core::ptr::from_ref(&PLEXUS_EVENTS).cast_mut().cast(),
            BPF_RB_AVAIL_DATA as u64,
        )
    };
    let flags = if queued >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Queued event bytes that make the datapath wake the observer (the rest waits for its timer).
const WAKEUP_BYTES: u64 = 64 * 1024;

/// Events for a packet that was let through: its trace (if reported), its policy verdict, and
/// a copy for any capture watching its endpoints.
#[inline(always)]
pub fn forwarded(ctx: &TcContext, m: &Meta) {
    let cfg = m.cfg;
    if cfg.level >= plexus_abi::event::MONITOR_AGGREGATED {
        if m.verdict != 0 {
            emit(ctx, EVENT_POLICY_VERDICT, m.verdict, m, 0);
        }
        if let Some(point) = m.trace {
            emit(ctx, EVENT_TRACE, point, m, EVENT_DATA_LEN as u32);
        }
    }
    if cfg.capture != 0 {
        capture(ctx, m);
    }
}

/// A drop event (always, unless monitoring is off).
#[inline(always)]
pub fn dropped(ctx: &TcContext, reason: DropReason, m: &Meta) {
    let cfg = m.cfg;
    if cfg.level >= plexus_abi::event::MONITOR_DROPS {
        emit(ctx, EVENT_DROP, reason as u8, m, EVENT_DATA_LEN as u32);
    }
    if cfg.capture != 0 {
        capture(ctx, m);
    }
}

#[inline(always)]
fn capture(ctx: &TcContext, m: &Meta) {
    for ep in m.capture {
        if ep == 0 {
            continue;
        }
        if let Some(spec) = unsafe { PLEXUS_CAPTURE.get(&ep) } {
            let (sport, dport) = (u16::from_be(m.tuple.sport), u16::from_be(m.tuple.dport));
            if spec.port == 0 || spec.port == sport || spec.port == dport {
                let mut mm = *m;
                mm.endpoint_id = ep;
                emit(ctx, EVENT_CAPTURE, 0, &mm, spec.snaplen as u32);
                return;
            }
        }
    }
}

/// The single exit of every program: a drop is counted by reason and reported with what the
/// stages learned, a forwarded packet gets the events the monitor asks for. No result is ever
/// thrown away.
#[inline(always)]
pub fn finish(ctx: &TcContext, res: Result<i32, DropReason>, m: &Meta) -> i32 {
    match res {
        Ok(action) => {
            forwarded(ctx, m);
            action
        }
        Err(reason) => {
            count_drop(reason);
            dropped(ctx, reason, m);
            TC_ACT_SHOT as i32
        }
    }
}
