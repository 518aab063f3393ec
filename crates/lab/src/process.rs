//! Starting and stopping the lab's long-running processes (agents, workloads) inside network
//! namespaces and the node's cgroup, detached from the CLI so they outlive it; and the node
//! cgroups themselves.

use std::{
    ffi::CString,
    fs::{self, OpenOptions},
    io,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::LabError;

/// Makes `cmd`'s child join the cgroup (v2) directory `cgroup` before it execs, so everything it
/// runs (nsenter, then the program nsenter execs) is in that cgroup from its first instruction.
pub fn join_cgroup_before_exec(cmd: &mut Command, cgroup: &Path) -> Result<(), LabError> {
    let procs = cgroup.join("cgroup.procs");
    let path = CString::new(procs.as_os_str().as_bytes()).map_err(|_| {
        LabError::io(
            &procs,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    // SAFETY: only async-signal-safe calls (open, write, close) on memory prepared before the
    // fork; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0" means the writing process itself.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Spawns `program args...` inside the network namespace at `netns` (and, when given, the cgroup
/// directory `cgroup`), in its own session, with output appended to `log`. Returns its PID.
pub fn spawn_in_netns(
    netns: &Path,
    program: &Path,
    args: &[String],
    log: &Path,
    cgroup: Option<&Path>,
) -> Result<i32, LabError> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io(log, e))?;
    let err = out.try_clone().map_err(|e| LabError::io(log, e))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program)
        .args(args);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    if let Some(cgroup) = cgroup {
        join_cgroup_before_exec(&mut cmd, cgroup)?;
    }
    // SAFETY: setsid is async-signal-safe; it detaches the child from the CLI's session so a
    // terminal hang-up or the CLI's exit does not take it down.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| LabError::Spawn {
        program: program.display().to_string(),
        source: e,
    })?;
    // nsenter execs the program, so the child's PID is the program's.
    Ok(child.id() as i32)
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone or reaped.
pub fn stop(pid: i32, grace: Duration) {
    if pid <= 1 {
        return;
    }
    // SAFETY: plain kill(2) on a pid we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        reap(pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < deadline {
            reap(pid);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    reap(pid);
}

/// Reaps the process if it is our child; harmless otherwise.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: WNOHANG waitpid on a specific pid never blocks and fails harmlessly (ECHILD) if it
    // is not our child.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/mounts` (the first `cgroup2` mount).
pub fn cgroup2_mount() -> Result<PathBuf, LabError> {
    let mounts = Path::new("/proc/mounts");
    let text = fs::read_to_string(mounts).map_err(|e| LabError::io(mounts, e))?;
    cgroup2_mount_in(&text).ok_or_else(|| {
        LabError::Invalid(
            "no cgroup2 file system is mounted (see /proc/mounts); the lab needs cgroup v2 for \
             its pods (mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`)"
                .into(),
        )
    })
}

/// The mount point of the first `cgroup2` file system in `/proc/mounts`-formatted `text`.
fn cgroup2_mount_in(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        // Mount points escape spaces and the like as octal (`\040`).
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(point)))
    })
}

/// Undoes the octal escapes of `/proc/mounts` (`\040` for a space).
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The PIDs listed in a cgroup's `cgroup.procs` (none when it cannot be read).
pub fn cgroup_pids(cgroup: &Path) -> Vec<i32> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes a cgroup directory (its child cgroups first): processes still in it are killed, and
/// `rmdir` is retried while the kernel reports it busy. Returns whether it is gone.
pub fn remove_cgroup(cgroup: &Path) -> Result<bool, LabError> {
    if !cgroup.exists() {
        return Ok(false);
    }
    if let Ok(entries) = fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path())?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in cgroup_pids(cgroup) {
            stop(pid, Duration::from_millis(200));
        }
        match fs::remove_dir(cgroup) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) if Instant::now() >= deadline => return Err(LabError::io(cgroup, e)),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child joins the cgroup before it runs; `remove_cgroup` kills what is left and removes
    /// the directory. Needs root and a cgroup2 mount; skipped without them.
    #[test]
    fn children_join_the_cgroup_and_removal_kills_them() {
        let Ok(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let cgroup = mount.join(format!("plexus-unittest-{}", std::process::id()));
        if fs::create_dir(&cgroup).is_err() {
            eprintln!("skipped: cannot create {}", cgroup.display());
            return;
        }
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        join_cgroup_before_exec(&mut cmd, &cgroup).expect("prepare");
        let child = cmd.spawn();
        let pids = cgroup_pids(&cgroup);
        let removed = remove_cgroup(&cgroup);
        let mut child = child.expect("spawn sleep");
        let _ = child.wait();
        assert!(pids.contains(&(child.id() as i32)), "{pids:?}");
        assert!(removed.expect("remove"), "removed");
        assert!(!cgroup.exists());
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let mounts = "\
sysfs /sys sysfs rw,nosuid 0 0
tmpfs /sys/fs/cgroup tmpfs ro 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0
";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("sysfs /sys sysfs rw 0 0\n"), None);
        assert_eq!(
            cgroup2_mount_in("none /mnt/my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }
}
