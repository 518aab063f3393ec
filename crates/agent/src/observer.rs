//! The observer: reads events from the datapath's ring buffer, turns each into a Hubble
//! `Flow` enriched with Kubernetes names (namespace, pod, labels, workload, identity, node,
//! the policy behind a verdict), and keeps the last flows in a ring that the Hubble-compatible
//! gRPC API and the metrics read.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use plexus_abi::{
    event::{
        point, verdict, EVENT_CAPTURE, EVENT_DROP, EVENT_F_EGRESS, EVENT_F_NEW, EVENT_F_REPLY,
        EVENT_POLICY_VERDICT, EVENT_TRACE,
    },
    Event, IpAddr6,
};
use plexus_hubble::flow::{self, layer4::Protocol, Flow};
use tokio::{io::unix::AsyncFd, sync::broadcast};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// What the observer knows about one local endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointMeta {
    /// Endpoint id.
    pub id: u32,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Identity labels, `source:key=value`.
    pub labels: Vec<String>,
    /// Owning workload (kind, name).
    pub workload: Option<(String, String)>,
}

/// Names for addresses, identities and rules, refreshed by every reconcile.
#[derive(Debug, Default)]
pub struct Directory {
    /// The node's name.
    pub node: String,
    /// Local endpoints by address.
    pub endpoints: HashMap<IpAddr, EndpointMeta>,
    /// Labels of every identity.
    pub identity_labels: HashMap<u32, Vec<String>>,
    /// Rule id → (policy kind, namespace, name, rule path).
    pub rules: HashMap<u32, (String, String, String, String)>,
}

/// One captured packet, for `plexus capture`.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The endpoint captured.
    pub endpoint_id: u32,
    /// Unix time, nanoseconds.
    pub ts_ns: u64,
    /// Length on the wire.
    pub orig_len: u32,
    /// The bytes copied.
    pub data: Vec<u8>,
}

/// Shared handles of the observer.
#[derive(Clone)]
pub struct ObserverHandle {
    /// The flow ring served over gRPC.
    pub ring: Arc<plexus_hubble::FlowRing>,
    /// Names used for enrichment.
    pub directory: Arc<RwLock<Directory>>,
    /// Captured packets, for capture sessions.
    pub captures: broadcast::Sender<Arc<Captured>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

fn ip_of(a: &IpAddr6) -> IpAddr {
    match a.to_v4_octets() {
        Some(o) => IpAddr::from(o),
        None => IpAddr::from(a.octets()),
    }
}

/// Offset from `bpf_ktime_get_ns` (monotonic) to Unix time.
fn boot_offset_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as i128;
    now - mono
}

/// Hubble's observation point number for one of ours.
fn observation_point(p: u8) -> i32 {
    match p {
        point::TO_LXC => flow::TraceObservationPoint::ToEndpoint as i32,
        // Cilium's other trace points share Hubble's numbers.
        other => other as i32,
    }
}

fn tcp_flags(f: u8) -> flow::TcpFlags {
    flow::TcpFlags {
        fin: f & 0x01 != 0,
        syn: f & 0x02 != 0,
        rst: f & 0x04 != 0,
        psh: f & 0x08 != 0,
        ack: f & 0x10 != 0,
        urg: f & 0x20 != 0,
        ece: f & 0x40 != 0,
        cwr: f & 0x80 != 0,
        ns: false,
    }
}

fn endpoint(dir: &Directory, ip: IpAddr, identity: u32) -> flow::Endpoint {
    let mut e = flow::Endpoint {
        identity,
        ..Default::default()
    };
    if let Some(m) = dir.endpoints.get(&ip) {
        e.id = m.id;
        e.namespace = m.namespace.clone();
        e.pod_name = m.pod.clone();
        e.labels = m.labels.clone();
        e.workloads = m
            .workload
            .iter()
            .map(|(kind, name)| flow::Workload {
                kind: kind.clone(),
                name: name.clone(),
            })
            .collect();
    } else if let Some(l) = dir.identity_labels.get(&identity) {
        e.labels = l.clone();
    }
    e
}

/// Builds a flow from an event. The deprecated `reply` and `drop_reason` fields are still set:
/// older Hubble clients read them.
#[allow(deprecated)]
pub fn to_flow(ev: &Event, dir: &Directory, offset_ns: i128) -> Flow {
    let ts = (ev.ts_ns as i128 + offset_ns).max(0) as u128;
    let (src, dst) = (ip_of(&ev.saddr), ip_of(&ev.daddr));
    let (sport, dport) = (u16::from_be(ev.sport) as u32, u16::from_be(ev.dport) as u32);
    let l4 = match ev.proto {
        6 => Some(Protocol::Tcp(flow::Tcp {
            source_port: sport,
            destination_port: dport,
            flags: Some(tcp_flags(ev.tcp_flags)),
        })),
        17 => Some(Protocol::Udp(flow::Udp {
            source_port: sport,
            destination_port: dport,
        })),
        132 => Some(Protocol::Sctp(flow::Sctp {
            source_port: sport,
            destination_port: dport,
        })),
        // ICMP type and code from the copied header: Ethernet 14 + IPv4 20 (options aside).
        1 => Some(Protocol::IcmPv4(flow::IcmPv4 {
            r#type: ev.data.get(34).copied().unwrap_or(0) as u32,
            code: ev.data.get(35).copied().unwrap_or(0) as u32,
        })),
        _ => None,
    };
    let egress = ev.flags & EVENT_F_EGRESS != 0;
    let mut f = Flow {
        time: Some(prost_types::Timestamp {
            seconds: (ts / 1_000_000_000) as i64,
            nanos: (ts % 1_000_000_000) as i32,
        }),
        ip: Some(flow::Ip {
            source: src.to_string(),
            destination: dst.to_string(),
            ip_version: if src.is_ipv4() {
                flow::IpVersion::IPv4 as i32
            } else {
                flow::IpVersion::IPv6 as i32
            },
            ..Default::default()
        }),
        l4: Some(flow::Layer4 { protocol: l4 }),
        source: Some(endpoint(dir, src, ev.src_identity)),
        destination: Some(endpoint(dir, dst, ev.dst_identity)),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: dir.node.clone(),
        event_type: Some(flow::CiliumEventType {
            r#type: ev.kind as i32,
            sub_type: ev.subtype as i32,
        }),
        is_reply: Some(ev.flags & EVENT_F_REPLY != 0),
        reply: ev.flags & EVENT_F_REPLY != 0,
        ..Default::default()
    };
    match ev.kind {
        EVENT_DROP => {
            f.verdict = flow::Verdict::Dropped as i32;
            f.drop_reason = ev.subtype as u32;
            f.drop_reason_desc = ev.subtype as i32;
            f.traffic_direction = direction(ev.subtype, egress);
        }
        EVENT_POLICY_VERDICT => {
            f.verdict = if ev.subtype == verdict::DENIED {
                flow::Verdict::Dropped
            } else {
                flow::Verdict::Forwarded
            } as i32;
            f.traffic_direction = if egress {
                flow::TrafficDirection::Egress
            } else {
                flow::TrafficDirection::Ingress
            } as i32;
        }
        EVENT_TRACE => {
            f.verdict = flow::Verdict::Forwarded as i32;
            f.trace_observation_point = observation_point(ev.subtype);
            f.traffic_direction = if ev.subtype == point::TO_LXC {
                flow::TrafficDirection::Ingress
            } else {
                flow::TrafficDirection::Egress
            } as i32;
        }
        _ => {}
    }
    if let Some((kind, ns, name, rule)) = dir.rules.get(&ev.rule_id) {
        let p = flow::Policy {
            name: name.clone(),
            namespace: ns.clone(),
            labels: vec![format!("rule={rule}")],
            revision: 0,
            kind: kind.clone(),
        };
        let denied = ev.kind == EVENT_DROP
            || (ev.kind == EVENT_POLICY_VERDICT && ev.subtype == verdict::DENIED);
        match (egress, denied) {
            (true, false) => f.egress_allowed_by.push(p),
            (false, false) => f.ingress_allowed_by.push(p),
            (true, true) => f.egress_denied_by.push(p),
            (false, true) => f.ingress_denied_by.push(p),
        }
    }
    let _ = ev.flags & EVENT_F_NEW;
    f
}

/// Direction of a drop: policy drops know theirs; others are seen leaving the source.
fn direction(reason: u8, egress: bool) -> i32 {
    let policy = reason == plexus_abi::DropReason::PolicyDenied as u8
        || reason == plexus_abi::DropReason::PolicyDeny as u8;
    if policy && !egress {
        flow::TrafficDirection::Ingress as i32
    } else {
        flow::TrafficDirection::Egress as i32
    }
}

/// Reads the ring buffer until the process ends.
pub async fn run(rb: aya::maps::RingBuf<aya::maps::MapData>, obs: ObserverHandle) {
    let offset = boot_offset_ns();
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
    let mut fd = match unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
    {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "observer: cannot poll the event ring buffer; flows are off");
            return;
        }
    };
    info!("observer reading datapath events");
    // The datapath wakes us only when a batch is waiting; a short timer picks up the rest, so a
    // flow is at most this late and a quiet datapath costs no wake-ups per event.
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut(), &obs, offset);
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!(error = %e, "observer: ring buffer poll failed");
                    return;
                }
            },
            _ = tick.tick() => drain(fd.get_mut(), &obs, offset),
        }
    }
}

/// How often the observer drains the ring without being woken.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Reads every event waiting in the ring.
fn drain(rb: &mut aya::maps::RingBuf<aya::maps::MapData>, obs: &ObserverHandle, offset: i128) {
    while let Some(item) = rb.next() {
        if item.len() < std::mem::size_of::<Event>() {
            continue;
        }
        // SAFETY: the datapath writes whole `Event`s; the length was checked; read_unaligned
        // copes with the ring's 8-byte alignment.
        let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
        process(&ev, obs, offset);
    }
}

/// The per-event path: a captured packet goes to capture sessions; any other event becomes a
/// flow, is counted in the metrics and stored in the ring. `offset` is the monotonic-to-Unix
/// time offset.
pub fn process(ev: &Event, obs: &ObserverHandle, offset: i128) {
    if ev.kind == EVENT_CAPTURE {
        let ts = (ev.ts_ns as i128 + offset).max(0) as u64;
        let n = (ev.cap_len as usize).min(ev.data.len());
        let _ = obs.captures.send(Arc::new(Captured {
            endpoint_id: ev.endpoint_id,
            ts_ns: ts,
            orig_len: ev.pkt_len,
            data: ev.data[..n].to_vec(),
        }));
        return;
    }
    let flow = match obs.directory.read() {
        Ok(d) => to_flow(ev, &d, offset),
        Err(_) => return,
    };
    obs.metrics.observe(&flow);
    obs.ring.push(flow);
}
