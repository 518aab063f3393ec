//! Socket-level load balancing, the counterpart of Cilium's `bpf_sock`: cgroup hooks that pick
//! a backend when a socket connects (TCP, connected UDP) or sends (unconnected UDP), so every
//! packet carries the backend address from the start and is never NATed; `recvmsg4` and
//! `getpeername4` show the application the service address it asked for.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use plexus_abi::{lb::AFFINITY_BY_NETNS, IpAddr6, LbAffinityKey, LbBackend, LbSockKey, LbSockRev};

use crate::{
    lb,
    maps::{PLEXUS_LB_SOCK_FWD, PLEXUS_LB_SOCK_REV},
};

/// cgroup hooks allow the operation with 1.
const ALLOW: i32 = 1;

/// `connect()` of TCP and UDP sockets.
#[cgroup_sock_addr(connect4)]
pub fn plexus_sock_connect4(ctx: SockAddrContext) -> i32 {
    xlate(&ctx, false);
    ALLOW
}

/// `sendmsg()` of unconnected UDP sockets: one backend per (socket, service) flow.
#[cgroup_sock_addr(sendmsg4)]
pub fn plexus_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    xlate(&ctx, true);
    ALLOW
}

/// `recvmsg()` of UDP sockets: answers from a backend appear to come from the service.
#[cgroup_sock_addr(recvmsg4)]
pub fn plexus_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

/// `getpeername()`: the peer of a balanced socket is the service.
#[cgroup_sock_addr(getpeername4)]
pub fn plexus_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

fn sock_key(cookie: u64, addr: u32, port: u16) -> LbSockKey {
    LbSockKey {
        cookie,
        addr: IpAddr6::from_v4_raw(addr),
        port,
        _pad: [0; 3],
    }
}

/// Rewrites the destination to a backend when it is a service frontend. A frontend without
/// backends is left alone: the packet then meets the tc program, which refuses it with an ICMP
/// error and counts the drop.
#[inline(always)]
fn xlate(ctx: &SockAddrContext, per_flow: bool) {
    let sa = ctx.sock_addr;
    let (addr, port_raw, proto) = unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    // user_port holds the network-order port in its low 16 bits.
    let port = port_raw as u16;
    let Some(svc) = lb::lookup_v4(addr, port, proto as u8) else {
        return;
    };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let fwd = sock_key(cookie, addr, port);
    let mut chosen: Option<(u32, LbBackend)> = None;
    if per_flow {
        if let Some(id) = unsafe { PLEXUS_LB_SOCK_FWD.get(&fwd) } {
            let id = *id;
            if let Some(b) = lb::backend(id) {
                chosen = Some((id, b));
            }
        }
    }
    let (_, b) = match chosen {
        Some(c) => c,
        None => {
            let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
            let client = LbAffinityKey {
                client: IpAddr6 {
                    words: [netns as u32, (netns >> 32) as u32, 0, 0],
                },
                rev_nat: svc.rev_nat,
                kind: AFFINITY_BY_NETNS,
            };
            let hash = (cookie ^ (cookie >> 32)) as u32;
            let Some(c) = lb::select(&svc, hash, &client) else {
                return;
            };
            if per_flow {
                let _ = PLEXUS_LB_SOCK_FWD.insert(&fwd, &c.0, 0);
            }
            c
        }
    };
    let baddr = b.addr.words[3];
    let rev = LbSockRev {
        addr: IpAddr6::from_v4_raw(addr),
        port,
        _pad: 0,
        rev_nat: svc.rev_nat,
    };
    let _ = PLEXUS_LB_SOCK_REV.insert(&sock_key(cookie, baddr, b.port), &rev, 0);
    unsafe {
        (*sa).user_ip4 = baddr;
        (*sa).user_port = b.port as u32;
    }
}

/// Puts the service address back where the socket sees a backend's.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    let (addr, port_raw) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let Some(rev) = (unsafe { PLEXUS_LB_SOCK_REV.get(&sock_key(cookie, addr, port_raw as u16)) })
    else {
        return;
    };
    let (faddr, fport) = (rev.addr.words[3], rev.port);
    unsafe {
        (*sa).user_ip4 = faddr;
        (*sa).user_port = fport as u32;
    }
}
