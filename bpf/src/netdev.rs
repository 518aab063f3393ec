//! The program on the node's external devices, the counterpart of Cilium's `bpf_host`
//! NodePort path: `plexus_from_netdev` (tc ingress) translates traffic from outside the node to
//! a NodePort, LoadBalancer or external IP into traffic to a backend and records the connection,
//! so the backend's replies get the frontend back as their source on the way out (in the pod
//! programs). Everything else passes untouched to the next program or the stack.

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_redirect, macros::classifier, programs::TcContext,
};
use plexus_abi::DropReason;

use crate::{
    conntrack::{self, CtDir},
    ipcache,
    lb::{self, Xlate},
    notify::{self, Meta},
    parse::{self, parse_v4, EthHdr, ETH_P_IP},
};

/// tcx: let the next program (or the stack) have the packet.
const TCX_NEXT: i32 = -1;

/// Packets arriving at the node from outside.
#[classifier]
pub fn plexus_from_netdev(ctx: TcContext) -> i32 {
    let mut m = Meta::new();
    m.cfg = notify::config();
    let res = try_from_netdev(&ctx, &mut m);
    notify::finish(&ctx, res, &m)
}

#[inline(always)]
fn try_from_netdev(ctx: &TcContext, m: &mut Meta) -> Result<i32, DropReason> {
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IP {
        return Ok(TCX_NEXT);
    }
    // What the datapath cannot parse is not for a service: the stack decides about it.
    let Ok(mut pkt) = parse_v4(ctx) else {
        return Ok(TCX_NEXT);
    };
    m.tuple = pkt.ct_key;
    m.tcp_flags = pkt.tcp_flags;
    let rev_nat = match lb::translate_v4(ctx, &mut pkt, false)? {
        Xlate::None => return Ok(TCX_NEXT),
        Xlate::Translated { rev_nat, .. } => rev_nat,
        Xlate::NoBackend => {
            lb::refuse(ctx, m)?;
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            // Back out of the device it came in on.
            return Ok(unsafe { bpf_redirect(ifindex, 0) } as i32);
        }
    };
    m.tuple = pkt.ct_key;
    let ct = conntrack::lookup(&pkt.ct_key);
    ct.set_translation(rev_nat, 0);
    if ct.dir == CtDir::New {
        // Recorded here, with the frontend, so the backend's replies are reverse-translated;
        // the pod's own program still applies its ingress policy on delivery.
        let identity = ipcache::identity_v4(pkt.saddr);
        conntrack::record(&ct, pkt.tcp_flags, identity, rev_nat, 0);
    }
    Ok(TC_ACT_OK as i32)
}
