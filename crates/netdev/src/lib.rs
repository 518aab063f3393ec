//! Network devices, addresses, routes, neighbours and namespaces.
//!
//! Link configuration goes through iproute2 (`ip -j` for reads), which every node has; running
//! code inside another network namespace uses `setns(2)` on a dedicated thread, since a network
//! namespace is a per-thread attribute and the caller's thread must never move.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;

/// What went wrong with which command.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// A command could not be started.
    #[error("running `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A command exited non-zero.
    #[error("`{cmd}` failed: {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `ip -j` printed something unexpected.
    #[error("parsing output of `{cmd}`: {source}")]
    Parse {
        /// The command line.
        cmd: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Entering a namespace failed.
    #[error("entering network namespace {path}: {source}")]
    Setns {
        /// The namespace path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Runs `ip ARGS...` (optionally inside the network namespace at `netns`) and returns stdout.
pub fn ip(netns: Option<&Path>, args: &[&str]) -> Result<String, NetdevError> {
    let mut cmd = match netns {
        Some(ns) => {
            // `ip netns exec` remounts /sys and hides /sys/fs/bpf; nsenter only switches netns.
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--").arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    cmd.args(args);
    run(cmd)
}

/// Runs a command, returning stdout, or an error carrying stderr.
pub fn run(mut cmd: Command) -> Result<String, NetdevError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| NetdevError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(NetdevError::Failed {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One link as `ip -j link show` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub ifname: String,
    /// MAC address, `aa:bb:..`.
    #[serde(default)]
    pub address: String,
    /// Flags such as `UP`.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// Looks a link up by name; `Ok(None)` when it does not exist.
pub fn link(netns: Option<&Path>, name: &str) -> Result<Option<Link>, NetdevError> {
    match ip(netns, &["-j", "link", "show", "dev", name]) {
        Ok(out) => {
            let links: Vec<Link> =
                serde_json::from_str(&out).map_err(|source| NetdevError::Parse {
                    cmd: format!("ip -j link show dev {name}"),
                    source,
                })?;
            Ok(links.into_iter().next())
        }
        Err(NetdevError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Creates a named network namespace with loopback up.
pub fn netns_add(name: &str) -> Result<PathBuf, NetdevError> {
    ip(None, &["netns", "add", name])?;
    let path = netns_path(name);
    ip(Some(&path), &["link", "set", "lo", "up"])?;
    Ok(path)
}

/// Deletes a named network namespace; a missing one is not an error.
pub fn netns_del(name: &str) -> Result<(), NetdevError> {
    match ip(None, &["netns", "del", name]) {
        Ok(_) => Ok(()),
        Err(NetdevError::Failed { stderr, .. }) if stderr.contains("No such file") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Named network namespaces whose names start with `prefix`.
pub fn netns_list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// PIDs of processes whose network namespace is the one at `path`.
pub fn netns_pids(path: &Path) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(path) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    let (dev, ino) = (target.dev(), target.ino());
    let mut pids = Vec::new();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in proc.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            if m.dev() == dev && m.ino() == ino {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Runs `f` on a new thread that has entered the network namespace at `path`, and returns its
/// result. Sockets created inside `f` stay in that namespace.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetdevError> {
    let file = File::open(path).map_err(|source| NetdevError::Setns {
        path: path.into(),
        source,
    })?;
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd affects only this (fresh) thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetdevError::Setns {
                path: p,
                source: io::Error::last_os_error(),
            });
        }
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetdevError::Setns {
            path: path.into(),
            source: io::Error::other("thread panicked"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:ab:00:10:ff:09").unwrap();
        assert_eq!(m, [2, 0xab, 0, 0x10, 0xff, 9]);
        assert_eq!(format_mac(&m), "02:ab:00:10:ff:09");
        assert_eq!(parse_mac("02:ab"), None);
        assert_eq!(parse_mac("02:ab:00:10:ff:09:01"), None);
        assert_eq!(parse_mac("zz:ab:00:10:ff:09"), None);
    }
}
