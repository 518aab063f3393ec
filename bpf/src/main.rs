//! The Plexus datapath: every kernel program in one object, split by attach point
//! (`lxc` = a pod's host-side veth, `netdev` = the node's external devices, `sock` = cgroup
//! socket hooks) over library modules (parse, conntrack, policy, lb, nat, notify, maps).
#![no_std]
#![no_main]

mod conntrack;
mod ipcache;
mod lb;
mod lxc;
mod maps;
mod nat;
mod netdev;
mod notify;
mod parse;
mod policy;
mod sock;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
