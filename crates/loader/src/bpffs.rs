//! Making sure the BPF filesystem is mounted where pins go (as Cilium's agent does at start).

use std::{ffi::CString, io, path::Path};

use crate::LoaderError;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs at `/sys/fs/bpf` unless it is already mounted there.
pub fn ensure_bpffs() -> Result<(), LoaderError> {
    let path = Path::new("/sys/fs/bpf");
    let err = |source| LoaderError::PinDir {
        path: path.to_path_buf(),
        source,
    };
    let c = CString::new("/sys/fs/bpf")
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype =
        CString::new("bpf").map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: all pointers are valid C strings or null for data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}
