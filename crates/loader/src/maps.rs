//! Typed access to the node's pinned maps: the map writer of the endpoints map and readers for
//! the CLI.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues};
use plexus_abi::{
    maps as m, CtEntry, CtKey, DropReason, EndpointCounters, EndpointInfo, EndpointKey, IpcacheKey,
    IpcacheValue,
};

use crate::LoaderError;

/// The node's maps, opened from their pins (works from any process: agent, CLI, tests).
pub struct PinnedMaps {
    dir: PathBuf,
}

/// One row of the endpoints map, with its summed counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The key.
    pub key: EndpointKey,
    /// The value.
    pub info: EndpointInfo,
    /// Counters summed over CPUs.
    pub counters: EndpointCounters,
}

/// One conntrack entry, its key oriented the way the connection was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtRecord {
    /// The opening direction's tuple.
    pub key: CtKey,
    /// Its state.
    pub entry: CtEntry,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> LoaderError {
    move |source| LoaderError::Map { map, source }
}

impl PinnedMaps {
    /// Opens the maps pinned under a node's pin directory.
    pub fn open(pin_dir: &Path) -> Result<Self, LoaderError> {
        let dir = pin_dir.join("maps");
        if !dir.join(m::ENDPOINTS).exists() {
            return Err(LoaderError::MissingMap(m::ENDPOINTS));
        }
        Ok(Self { dir })
    }

    fn data(&self, name: &'static str) -> Result<MapData, LoaderError> {
        MapData::from_pin(self.dir.join(name)).map_err(map_err(name))
    }

    fn endpoints(&self) -> Result<HashMap<MapData, EndpointKey, EndpointInfo>, LoaderError> {
        HashMap::try_from(Map::HashMap(self.data(m::ENDPOINTS)?)).map_err(map_err(m::ENDPOINTS))
    }

    fn counters(&self) -> Result<PerCpuArray<MapData, EndpointCounters>, LoaderError> {
        PerCpuArray::try_from(Map::PerCpuArray(self.data(m::ENDPOINT_COUNTERS)?))
            .map_err(map_err(m::ENDPOINT_COUNTERS))
    }

    /// Zeroes an endpoint's counters (a new endpoint may reuse a freed id).
    pub fn reset_counters(&self, endpoint_id: u32) -> Result<(), LoaderError> {
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| LoaderError::Map {
            map: m::ENDPOINT_COUNTERS,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            }),
        })?;
        let zero =
            PerCpuValues::try_from(vec![EndpointCounters::default(); ncpus]).map_err(|e| {
                LoaderError::Map {
                    map: m::ENDPOINT_COUNTERS,
                    source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call: "percpu",
                        io_error: e,
                    }),
                }
            })?;
        self.counters()?
            .set(endpoint_id, zero, 0)
            .map_err(map_err(m::ENDPOINT_COUNTERS))
    }

    /// Inserts or replaces an endpoint (counters are [`PinnedMaps::reset_counters`]' business).
    pub fn upsert_endpoint(&self, key: EndpointKey, info: EndpointInfo) -> Result<(), LoaderError> {
        self.endpoints()?
            .insert(key, info, 0)
            .map_err(map_err(m::ENDPOINTS))
    }

    /// Removes an endpoint and its counters; missing entries are not an error.
    pub fn remove_endpoint(&self, key: &EndpointKey, endpoint_id: u32) -> Result<(), LoaderError> {
        match self.endpoints()?.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(m::ENDPOINTS)(e)),
        }
        self.reset_counters(endpoint_id)
    }

    /// The endpoints map as it is in the kernel.
    pub fn endpoints_raw(&self) -> Result<BTreeMap<EndpointKey, EndpointInfo>, LoaderError> {
        let eps = self.endpoints()?;
        let mut out = BTreeMap::new();
        for item in eps.iter() {
            let (k, v) = item.map_err(map_err(m::ENDPOINTS))?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Writes an endpoint's entry only (no counters), e.g. to change its identity or flags.
    pub fn put_endpoint(&self, key: EndpointKey, info: EndpointInfo) -> Result<(), LoaderError> {
        self.endpoints()?
            .insert(key, info, 0)
            .map_err(map_err(m::ENDPOINTS))
    }

    fn ipcache(&self) -> Result<LpmTrie<MapData, IpcacheKey, IpcacheValue>, LoaderError> {
        LpmTrie::try_from(Map::LpmTrie(self.data(m::IPCACHE)?)).map_err(map_err(m::IPCACHE))
    }

    /// The ipcache: (prefix length, key) → value.
    pub fn ipcache_entries(&self) -> Result<BTreeMap<(u32, [u8; 16]), IpcacheValue>, LoaderError> {
        let mut out = BTreeMap::new();
        for item in self.ipcache()?.iter() {
            let (k, v) = item.map_err(map_err(m::IPCACHE))?;
            out.insert((k.prefix_len(), k.data().ip.octets()), v);
        }
        Ok(out)
    }

    /// Makes the ipcache hold exactly `desired` (prefix length, address bytes) → value: new and
    /// changed entries first, stale ones last. Returns (written, removed).
    pub fn sync_ipcache(
        &self,
        desired: &BTreeMap<(u32, [u8; 16]), IpcacheValue>,
    ) -> Result<(usize, usize), LoaderError> {
        let actual = self.ipcache_entries()?;
        let mut map = self.ipcache()?;
        let (mut written, mut removed) = (0, 0);
        for ((len, ip), v) in desired {
            if actual.get(&(*len, *ip)) != Some(v) {
                let key = Key::new(
                    *len,
                    IpcacheKey {
                        ip: plexus_abi::IpAddr6::from_octets(*ip),
                    },
                );
                map.insert(&key, *v, 0).map_err(map_err(m::IPCACHE))?;
                written += 1;
            }
        }
        for (len, ip) in actual.keys() {
            if !desired.contains_key(&(*len, *ip)) {
                let key = Key::new(
                    *len,
                    IpcacheKey {
                        ip: plexus_abi::IpAddr6::from_octets(*ip),
                    },
                );
                match map.remove(&key) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => removed += 1,
                    Err(e) => return Err(map_err(m::IPCACHE)(e)),
                }
            }
        }
        Ok((written, removed))
    }

    /// Sets the monitor level and whether captures are active.
    pub fn set_monitor(&self, cfg: plexus_abi::MonitorConfig) -> Result<(), LoaderError> {
        let mut arr: aya::maps::Array<MapData, plexus_abi::MonitorConfig> =
            aya::maps::Array::try_from(Map::Array(self.data(m::CONFIG)?))
                .map_err(map_err(m::CONFIG))?;
        arr.set(0, cfg, 0).map_err(map_err(m::CONFIG))
    }

    /// The monitor settings in force.
    pub fn monitor(&self) -> Result<plexus_abi::MonitorConfig, LoaderError> {
        let arr: aya::maps::Array<MapData, plexus_abi::MonitorConfig> =
            aya::maps::Array::try_from(Map::Array(self.data(m::CONFIG)?))
                .map_err(map_err(m::CONFIG))?;
        arr.get(&0, 0).map_err(map_err(m::CONFIG))
    }

    /// Events the datapath could not queue because the ring buffer was full.
    pub fn events_lost(&self) -> Result<u64, LoaderError> {
        let arr: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(m::EVENTS_LOST)?))
                .map_err(map_err(m::EVENTS_LOST))?;
        Ok(arr
            .get(&0, 0)
            .map_err(map_err(m::EVENTS_LOST))?
            .iter()
            .sum())
    }

    fn capture_map(&self) -> Result<HashMap<MapData, u32, plexus_abi::CaptureSpec>, LoaderError> {
        HashMap::try_from(Map::HashMap(self.data(m::CAPTURE)?)).map_err(map_err(m::CAPTURE))
    }

    /// Starts capturing an endpoint's packets.
    pub fn capture_add(
        &self,
        endpoint_id: u32,
        spec: plexus_abi::CaptureSpec,
    ) -> Result<(), LoaderError> {
        self.capture_map()?
            .insert(endpoint_id, spec, 0)
            .map_err(map_err(m::CAPTURE))
    }

    /// Stops capturing an endpoint; returns how many captures remain.
    pub fn capture_remove(&self, endpoint_id: u32) -> Result<usize, LoaderError> {
        let mut map = self.capture_map()?;
        match map.remove(&endpoint_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(m::CAPTURE)(e)),
        }
        Ok(map.keys().count())
    }

    /// The event ring buffer, for the observer.
    pub fn events(&self) -> Result<aya::maps::RingBuf<MapData>, LoaderError> {
        aya::maps::RingBuf::try_from(Map::RingBuf(self.data(m::EVENTS)?))
            .map_err(map_err(m::EVENTS))
    }

    /// Every endpoint in the map with its counters.
    pub fn endpoints_list(&self) -> Result<Vec<EndpointRecord>, LoaderError> {
        let eps = self.endpoints()?;
        let counters = self.counters()?;
        let mut out = Vec::new();
        for item in eps.iter() {
            let (key, info) = item.map_err(map_err(m::ENDPOINTS))?;
            let mut sum = EndpointCounters::default();
            if let Ok(per_cpu) = counters.get(&info.endpoint_id, 0) {
                for c in per_cpu.iter() {
                    sum.add(c);
                }
            }
            out.push(EndpointRecord {
                key,
                info,
                counters: sum,
            });
        }
        out.sort_by_key(|r| r.info.endpoint_id);
        Ok(out)
    }

    /// Number of entries in the endpoints map.
    pub fn endpoint_count(&self) -> Result<usize, LoaderError> {
        Ok(self.endpoints()?.keys().count())
    }

    /// Every conntrack entry (bounded by the map's capacity).
    pub fn conntrack(&self) -> Result<Vec<CtRecord>, LoaderError> {
        let map: HashMap<MapData, CtKey, CtEntry> =
            HashMap::try_from(Map::LruHashMap(self.data(m::CONNTRACK)?))
                .map_err(map_err(m::CONNTRACK))?;
        let mut out = Vec::new();
        for item in map.iter() {
            // An LRU entry evicted mid-walk ends the walk early; that is not an error.
            let Ok((key, entry)) = item else { break };
            out.push(CtRecord {
                key: entry.oriented(&key),
                entry,
            });
        }
        Ok(out)
    }

    /// Drops by reason, summed over CPUs; only non-zero reasons.
    pub fn drops(&self) -> Result<Vec<(u8, u64)>, LoaderError> {
        let arr: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(self.data(m::DROP_COUNTERS)?))
                .map_err(map_err(m::DROP_COUNTERS))?;
        let mut out = Vec::new();
        for code in 0..m::DROP_COUNTERS_MAX {
            let v = arr.get(&code, 0).map_err(map_err(m::DROP_COUNTERS))?;
            let total: u64 = v.iter().sum();
            if total > 0 {
                out.push((code as u8, total));
            }
        }
        Ok(out)
    }

    /// Drops counted for one reason.
    pub fn drop_count(&self, reason: DropReason) -> Result<u64, LoaderError> {
        Ok(self
            .drops()?
            .into_iter()
            .find(|(c, _)| *c == reason as u8)
            .map_or(0, |(_, n)| n))
    }
}
