//! Child processes of a benchmark: programs pinned to one CPU inside a network namespace (and,
//! when asked, a cgroup), commands run to completion within a time limit, and servers that die
//! with the benchmark.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::BenchError;

/// `nsenter --net=NS -- taskset -c CPU PROGRAM ARGS...`: nsenter and taskset both exec, so the
/// child's pid is the program's.
pub fn pinned(netns: &Path, cpu: u32, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args);
    c
}

/// A command as printed in errors.
pub fn command_line(cmd: &Command) -> String {
    format!("{cmd:?}").replace('"', "")
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Whether it exited with status 0.
    pub success: bool,
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion, killing it if it takes longer than `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Result<Output, BenchError> {
    let line = command_line(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::command(&line, format!("cannot start: {e}")))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let stdout = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let stderr = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| BenchError::command(&line, format!("waiting: {e}")))?
        {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::command(
                &line,
                format!("did not finish within {} s", limit.as_secs()),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        success: status.success(),
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs a short setup command and returns its stdout, or an error with its output.
pub fn run_cmd(mut cmd: Command) -> Result<String, BenchError> {
    let line = command_line(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::command(&line, format!("cannot start: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::command(
            &line,
            format!(
                "failed: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Spawns a server that dies with this process even if it is killed without cleaning up.
pub fn spawn_server(mut cmd: Command) -> Result<Child, BenchError> {
    cmd.stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; the death signal survives nsenter's and taskset's
    // execs.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let line = command_line(&cmd);
    cmd.spawn()
        .map_err(|e| BenchError::command(line, format!("cannot start: {e}")))
}

/// Spawns a server whose standard output says `ready` once it serves (its standard error goes
/// to `log`), and waits for that line.
pub fn spawn_ready_server(mut cmd: Command, log: &Path) -> Result<Servers, BenchError> {
    let line = command_line(&cmd);
    cmd.stdout(Stdio::piped()).stderr(log_file(log)?);
    let mut servers = Servers::default();
    let mut child = spawn_server(cmd)?;
    let stdout = child.stdout.take();
    servers.children.push(child);
    let mut ready = String::new();
    if let Some(out) = stdout {
        BufReader::new(out)
            .read_line(&mut ready)
            .map_err(|e| BenchError::io(format!("reading the output of `{line}`"), e))?;
    }
    if ready.trim() != "ready" {
        return Err(BenchError::command(
            line,
            format!(
                "did not start: {}",
                fs::read_to_string(log).unwrap_or_default().trim()
            ),
        ));
    }
    Ok(servers)
}

/// Waits until something in `netns` listens on TCP `port` (as `ss` shows it), for at most
/// `limit`; fails early when `server` exits, with the end of its `log`.
pub fn wait_listening(
    netns: &Path,
    port: u16,
    server: &mut Child,
    log: &Path,
    limit: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    loop {
        crate::interrupt::check()?;
        let mut ss = Command::new("nsenter");
        ss.arg(format!("--net={}", netns.display()))
            .args(["--", "ss", "-Hltn"])
            .arg(format!("sport = :{port}"));
        if !run_cmd(ss)?.trim().is_empty() {
            return Ok(());
        }
        let exited = matches!(server.try_wait(), Ok(Some(_)));
        if exited || Instant::now() >= deadline {
            return Err(BenchError::Missing(format!(
                "no server listening on TCP port {port} in {}{}: {}",
                netns.display(),
                if exited { " (it exited)" } else { "" },
                fs::read_to_string(log).unwrap_or_default().trim()
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Opens `path` for appending (a server's log).
pub fn log_file(path: &Path) -> Result<fs::File, BenchError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| BenchError::io(format!("creating {}", path.display()), e))
}

/// Fails unless `tool` is an executable file on `PATH`.
pub fn which(tool: &str) -> Result<(), BenchError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        return Err(BenchError::Missing(format!("`{tool}` not found in PATH")));
    }
    Ok(())
}

/// Server processes, killed and reaped when dropped.
#[derive(Debug, Default)]
pub struct Servers {
    /// The processes, in start order.
    pub children: Vec<Child>,
}

impl Servers {
    /// Takes over `other`'s processes.
    pub fn extend(&mut self, mut other: Servers) {
        self.children.append(&mut other.children);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
