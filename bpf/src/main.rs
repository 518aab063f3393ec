//! The Plexus datapath: every kernel program in one object, split by attach point
//! (`lxc` = a pod's host-side veth) over library modules (parse, conntrack, notify, maps).
#![no_std]
#![no_main]

mod conntrack;
mod ipcache;
mod lxc;
mod maps;
mod notify;
mod parse;
mod policy;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
