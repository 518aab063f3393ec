//! Every map of the datapath, declared once; names and capacities come from `plexus_abi::maps`.

use aya_ebpf::{
    btf_maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use plexus_abi::{
    maps as m, CtEntry, CtKey, EndpointCounters, EndpointInfo, EndpointKey, IpcacheKey,
    IpcacheValue, PolicyKey, PolicyValue,
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
