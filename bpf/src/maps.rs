//! Every map of the datapath, declared once; names and capacities come from `plexus_abi::maps`.

use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use plexus_abi::{
    maps as m, CaptureSpec, CtEntry, CtKey, EndpointCounters, EndpointInfo, EndpointKey, Event,
    IpcacheKey, IpcacheValue, LbAffinityKey, LbAffinityValue, LbBackend, LbFlow, LbRevNat,
    LbServiceKey, LbServiceValue, LbSockKey, LbSockRev, MaglevTable, MonitorConfig, PolicyKey,
    PolicyValue,
};

/// Local pods by IP.
#[btf_map]
pub static PLEXUS_ENDPOINTS: HashMap<EndpointKey, EndpointInfo, { m::ENDPOINTS_MAX as usize }> =
    HashMap::new();

/// Per-endpoint packet and byte counters, indexed by endpoint id (an array: no hashing on
/// the per-packet path).
#[btf_map]
pub static PLEXUS_EP_COUNTERS: PerCpuArray<EndpointCounters, { m::ENDPOINTS_MAX as usize }> =
    PerCpuArray::new();

/// Connection tracking (LRU: the oldest idle flows are evicted first under pressure).
#[btf_map]
pub static PLEXUS_CT: LruHashMap<CtKey, CtEntry, { m::CONNTRACK_MAX as usize }> = LruHashMap::new();

/// Drops by reason code.
#[btf_map]
pub static PLEXUS_DROPS: PerCpuArray<u64, { m::DROP_COUNTERS_MAX as usize }> = PerCpuArray::new();

/// Per-endpoint policy: (endpoint, identity, direction, protocol, port prefix) → verdict.
#[btf_map]
pub static PLEXUS_POLICY: LpmTrie<PolicyKey, PolicyValue, { m::POLICY_MAX as usize }> =
    LpmTrie::new();

/// IP prefix → identity.
#[btf_map]
pub static PLEXUS_IPCACHE: LpmTrie<IpcacheKey, IpcacheValue, { m::IPCACHE_MAX as usize }> =
    LpmTrie::new();

/// Events to userspace.
#[btf_map]
pub static PLEXUS_EVENTS: RingBuf<Event, { m::EVENTS_BYTES as usize }> = RingBuf::new();

/// Events lost because the ring buffer was full (index 0).
#[btf_map]
pub static PLEXUS_EVENTS_LOST: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Monitoring settings (index 0).
#[btf_map]
pub static PLEXUS_CONFIG: Array<MonitorConfig, 1> = Array::new();

/// Endpoints being captured.
#[btf_map]
pub static PLEXUS_CAPTURE: HashMap<u32, CaptureSpec, 256> = HashMap::new();

/// Service frontends and their backend slots.
#[btf_map]
pub static PLEXUS_LB_SERVICES: HashMap<
    LbServiceKey,
    LbServiceValue,
    { m::LB_SERVICES_MAX as usize },
> = HashMap::new();

/// Backends by id.
#[btf_map]
pub static PLEXUS_LB_BACKENDS: HashMap<u32, LbBackend, { m::LB_BACKENDS_MAX as usize }> =
    HashMap::new();

/// Frontends by id, for reverse NAT.
#[btf_map]
pub static PLEXUS_LB_REVNAT: HashMap<u32, LbRevNat, { m::LB_REVNAT_MAX as usize }> = HashMap::new();

/// The backend of each tc-translated flow, by its original tuple.
#[btf_map]
pub static PLEXUS_LB_FLOWS: LruHashMap<CtKey, LbFlow, { m::LB_FLOWS_MAX as usize }> =
    LruHashMap::new();

/// ClientIP session affinity.
#[btf_map]
pub static PLEXUS_LB_AFFINITY: LruHashMap<
    LbAffinityKey,
    LbAffinityValue,
    { m::LB_AFFINITY_MAX as usize },
> = LruHashMap::new();

/// Maglev tables of the services that use Maglev (allocated on demand: they are large).
#[btf_map]
pub static PLEXUS_LB_MAGLEV: HashMap<
    u32,
    MaglevTable,
    { m::LB_MAGLEV_MAX as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// (socket, backend) → the frontend the socket asked for.
#[btf_map]
pub static PLEXUS_LB_SOCK_REV: LruHashMap<LbSockKey, LbSockRev, { m::LB_SOCK_MAX as usize }> =
    LruHashMap::new();

/// (socket, frontend) → backend id of an unconnected UDP flow.
#[btf_map]
pub static PLEXUS_LB_SOCK_FWD: LruHashMap<LbSockKey, u32, { m::LB_SOCK_MAX as usize }> =
    LruHashMap::new();
