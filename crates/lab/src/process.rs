//! Starting and stopping the lab's long-running processes (agents, workloads) inside network
//! namespaces, detached from the CLI so they outlive it.

use std::{
    fs::OpenOptions,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::LabError;

/// Spawns `program args...` inside the network namespace at `netns`, in its own session, with
/// output appended to `log`. Returns its PID.
pub fn spawn_in_netns(
    netns: &Path,
    program: &Path,
    args: &[String],
    log: &Path,
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
