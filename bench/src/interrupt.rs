//! Ctrl-C and SIGTERM as a flag: a benchmark checks it between steps and returns an error, so
//! the guards of what it created run their `Drop` on the way out.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::BenchError;

/// Set by SIGINT/SIGTERM once [`install`] ran.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into the flag [`check`] reads.
pub fn install() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// [`BenchError::Interrupted`] once a signal arrived.
pub fn check() -> Result<(), BenchError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(BenchError::Interrupted);
    }
    Ok(())
}
