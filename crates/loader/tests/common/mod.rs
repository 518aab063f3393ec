//! What the `BPF_PROG_TEST_RUN` suites share: a pin directory that cleans up after itself and
//! one run of a program over a crafted packet.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use plexus_loader::Datapath;

/// A unique pin directory removed on drop, also when the test fails.
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// A fresh directory name under `/sys/fs/bpf`, unique to this process and call.
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/plexus-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs program `prog` over `pkt`: its return value and the packet as it left (room for a
/// packet that grew, like an ICMP answer).
pub fn run(dp: &mut Datapath, prog: &'static str, pkt: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; pkt.len() + 128];
    let prog = dp.program(prog).expect("program");
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}
