//! Service load balancing: the services map (frontends and their backend slots), backends,
//! reverse NAT, the per-connection backend of translated flows, ClientIP affinity, Maglev
//! tables, and the socket-level maps that let `recvmsg`/`getpeername` show the service address.
//!
//! The services map follows Cilium's shape: one key per frontend and slot. Slot 0 is the
//! service itself (how many backends take new connections, flags, id); slots `1..=count` hold
//! the backend ids that random selection draws from, so choosing a backend is two hash lookups
//! whatever the number of services.

use crate::IpAddr6;

/// Key of the services map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct LbServiceKey {
    /// Frontend address (IPv4-mapped for IPv4).
    pub addr: IpAddr6,
    /// Frontend port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding (always 0).
    pub _pad: u8,
    /// 0 for the service entry, `1..=count` for backend slots.
    pub slot: u16,
    /// Explicit padding (always 0).
    pub _pad2: u16,
}

/// Value of the services map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LbServiceValue {
    /// Slot 0: backends in slots `1..=count` (taking new connections); 0 means new connections
    /// are refused. Other slots: 0.
    pub count: u16,
    /// Slot 0: `LB_F_*` bits.
    pub flags: u16,
    /// Slot 0: the frontend's id (reverse-NAT index). Other slots: the same id.
    pub rev_nat: u32,
    /// Backend slots: the backend id. Slot 0: 0.
    pub backend_id: u32,
    /// Slot 0: ClientIP affinity timeout in seconds (with [`LB_F_AFFINITY`]).
    pub affinity_timeout: u32,
}

/// New connections pick a backend from the service's Maglev table instead of at random.
pub const LB_F_MAGLEV: u16 = 1;
/// `sessionAffinity: ClientIP`: a client keeps its backend for `affinity_timeout` seconds.
pub const LB_F_AFFINITY: u16 = 1 << 1;
/// The frontend is reached from outside the cluster (NodePort, LoadBalancer, external IP).
pub const LB_F_EXTERNAL: u16 = 1 << 2;

/// A backend.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LbBackend {
    /// Address (IPv4-mapped for IPv4).
    pub addr: IpAddr6,
    /// Port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `LB_BACKEND_F_*` bits.
    pub flags: u8,
    /// Explicit padding (always 0).
    pub _pad: u32,
}

/// The backend is terminating: it keeps its connections and gets no new ones.
pub const LB_BACKEND_F_TERMINATING: u8 = 1;

/// Reverse NAT: the frontend a translated connection's replies must appear to come from.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LbRevNat {
    /// Frontend address.
    pub addr: IpAddr6,
    /// Frontend port, network order.
    pub port: u16,
    /// Explicit padding (always 0).
    pub _pad: u16,
}

/// Value of the per-connection backend map of tc-translated flows (key: the flow's original
/// tuple, client → frontend, not canonicalised).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LbFlow {
    /// The backend the flow was sent to.
    pub backend_id: u32,
    /// The frontend's id.
    pub rev_nat: u32,
}

/// Key of the affinity map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct LbAffinityKey {
    /// The client: its address (tc path), or its network namespace cookie in the first two
    /// words (socket path, where the source address is not known yet).
    pub client: IpAddr6,
    /// The frontend's id.
    pub rev_nat: u32,
    /// [`AFFINITY_BY_ADDR`] or [`AFFINITY_BY_NETNS`].
    pub kind: u32,
}

/// Affinity keyed by client address.
pub const AFFINITY_BY_ADDR: u32 = 0;
/// Affinity keyed by the client's network namespace cookie.
pub const AFFINITY_BY_NETNS: u32 = 1;

/// Value of the affinity map.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LbAffinityValue {
    /// `bpf_ktime_get_ns` of the last new connection that used it.
    pub last_used_ns: u64,
    /// The backend.
    pub backend_id: u32,
    /// Explicit padding (always 0).
    pub _pad: u32,
}

/// Slots of one service's Maglev table (a prime: the Maglev paper's condition for a full
/// permutation; large enough that one backend change among 100 moves under 1% of flows).
pub const MAGLEV_M: usize = 65521;

/// Physical slots of a Maglev table: a power of two above [`MAGLEV_M`], so the verifier's
/// (slightly loose) bound on a scaled index still falls inside the value. Slots from
/// `MAGLEV_M` on are never selected.
pub const MAGLEV_SLOTS: usize = 65536;

/// One service's Maglev lookup table: backend ids.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MaglevTable {
    /// `slots[hash scaled into 0..MAGLEV_M]` is the backend of a flow.
    pub slots: [u32; MAGLEV_SLOTS],
}

/// Key of the socket maps: a socket and an address it talks to.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct LbSockKey {
    /// `bpf_get_socket_cookie`.
    pub cookie: u64,
    /// The address (backend for the reverse map, frontend for the forward map).
    pub addr: IpAddr6,
    /// The port, network order.
    pub port: u16,
    /// Explicit padding (always 0).
    pub _pad: [u16; 3],
}

/// Value of the socket reverse map: which frontend a socket meant when it reached a backend.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct LbSockRev {
    /// Frontend address.
    pub addr: IpAddr6,
    /// Frontend port, network order.
    pub port: u16,
    /// Explicit padding (always 0).
    pub _pad: u16,
    /// The frontend's id.
    pub rev_nat: u32,
}
