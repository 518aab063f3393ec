//! Loading the datapath object and attaching its programs to pod interfaces.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
        CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use plexus_abi::maps::{self as m, programs};
use tracing::{debug, info};

use crate::{maps::PinnedMaps, LoaderError, DATAPATH_OBJECT};

/// One program attached to one hook of one interface, as pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// Interface name.
    pub interface: String,
    /// "ingress" or "egress".
    pub direction: &'static str,
    /// Program name.
    pub program: &'static str,
    /// Where its link is pinned.
    pub pin: PathBuf,
}

/// The loaded datapath of one node.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

/// The hooks every endpoint gets: (program, tc direction, pin suffix).
const ENDPOINT_HOOKS: [(&str, TcAttachType, &str); 2] = [
    (programs::FROM_CONTAINER, TcAttachType::Ingress, "ingress"),
    (programs::TO_CONTAINER, TcAttachType::Egress, "egress"),
];

/// The hooks of the node's external devices.
const NETDEV_HOOKS: [(&str, TcAttachType, &str); 1] =
    [(programs::FROM_NETDEV, TcAttachType::Ingress, "netdev")];

/// The socket load-balancing programs, attached to the pods' cgroup.
const SOCK_PROGRAMS: [&str; 4] = [
    programs::SOCK_CONNECT4,
    programs::SOCK_SENDMSG4,
    programs::SOCK_RECVMSG4,
    programs::SOCK_GETPEERNAME4,
];

impl Datapath {
    /// Loads the datapath for the node whose pins live in `pin_dir`, reusing every map already
    /// pinned there (so a restarted agent adopts its predecessor's state) and pinning the rest.
    pub fn load(pin_dir: &Path) -> Result<Self, LoaderError> {
        crate::ensure_bpffs()?;
        for dir in [
            pin_dir.to_path_buf(),
            pin_dir.join("maps"),
            pin_dir.join("links"),
        ] {
            fs::create_dir_all(&dir).map_err(|source| LoaderError::PinDir { path: dir, source })?;
        }
        let map_paths: Vec<(&'static str, PathBuf)> = m::ALL
            .iter()
            .map(|name| (*name, pin_dir.join("maps").join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(DATAPATH_OBJECT)?;
        for name in [
            programs::FROM_CONTAINER,
            programs::TO_CONTAINER,
            programs::FROM_NETDEV,
        ] {
            let prog = classifier(&mut ebpf, name)?;
            prog.load().map_err(|source| LoaderError::Program {
                program: name,
                source,
            })?;
        }
        for name in SOCK_PROGRAMS {
            sock_program(&mut ebpf, name)?
                .load()
                .map_err(|source| LoaderError::Program {
                    program: name,
                    source,
                })?;
        }
        info!(pin_dir = %pin_dir.display(), "datapath loaded");
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
        })
    }

    /// Where this node's pins live.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The node's maps.
    pub fn maps(&self) -> Result<PinnedMaps, LoaderError> {
        PinnedMaps::open(&self.pin_dir)
    }

    fn link_pin(&self, interface: &str, suffix: &str) -> PathBuf {
        link_pin(&self.pin_dir, interface, suffix)
    }

    /// Attaches the endpoint programs to a pod's host-side interface. An existing pinned link
    /// (from an earlier agent) gets the new program swapped in atomically; otherwise a new tcx
    /// link is created and pinned, so it outlives this process.
    pub fn attach_endpoint(
        &mut self,
        interface: &str,
    ) -> Result<Vec<AttachedProgram>, LoaderError> {
        self.attach_tc(interface, &ENDPOINT_HOOKS)
    }

    /// Attaches the external-device program (NodePort, LoadBalancer, external IPs) to tc
    /// ingress of one of the node's devices, the same way as [`Datapath::attach_endpoint`].
    pub fn attach_netdev(&mut self, interface: &str) -> Result<Vec<AttachedProgram>, LoaderError> {
        self.attach_tc(interface, &NETDEV_HOOKS)
    }

    /// Detaches the external-device program from an interface (idempotent).
    pub fn detach_netdev(pin_dir: &Path, interface: &str) {
        for (_, _, suffix) in NETDEV_HOOKS {
            let _ = fs::remove_file(link_pin(pin_dir, interface, suffix));
        }
    }

    /// Attaches the socket load-balancing programs to a cgroup (v2 directory): every process
    /// in it or below it gets its service connections balanced at `connect()`. A link pinned by
    /// an earlier agent gets the new program swapped in (`BPF_LINK_UPDATE`), so the hook is
    /// never empty.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<Vec<AttachedProgram>, LoaderError> {
        let iface = cgroup.display().to_string();
        let file = fs::File::open(cgroup).map_err(|source| LoaderError::PinDir {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut out = Vec::new();
        for name in SOCK_PROGRAMS {
            let pin = self.pin_dir.join("links").join(format!("cgroup_{name}"));
            let prog = sock_program(&mut self.ebpf, name)?;
            let attach_err = |source| LoaderError::Attach {
                program: name,
                interface: iface.clone(),
                source,
            };
            let link_err = |source| LoaderError::Link {
                interface: iface.clone(),
                source,
            };
            let swapped = pin.exists() && {
                let prog_fd = prog.fd().map_err(attach_err)?;
                link_update(&pin, prog_fd).is_ok()
            };
            if !swapped {
                let _ = fs::remove_file(&pin);
                let id = prog
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(attach_err)?;
                let link = prog.take_link(id).map_err(attach_err)?;
                let fd_link: FdLink = link.try_into().map_err(link_err)?;
                fd_link.pin(&pin).map_err(|source| LoaderError::PinLink {
                    path: pin.clone(),
                    source,
                })?;
            }
            out.push(AttachedProgram {
                interface: iface.clone(),
                direction: "cgroup",
                program: name,
                pin,
            });
        }
        Ok(out)
    }

    fn attach_tc(
        &mut self,
        interface: &str,
        hooks: &[(&'static str, TcAttachType, &'static str)],
    ) -> Result<Vec<AttachedProgram>, LoaderError> {
        let mut out = Vec::new();
        for &(name, attach_type, suffix) in hooks {
            let pin = self.link_pin(interface, suffix);
            let prog = classifier(&mut self.ebpf, name)?;
            let attach_err = |source| LoaderError::Attach {
                program: name,
                interface: interface.to_string(),
                source,
            };
            let link_err = |source| LoaderError::Link {
                interface: interface.to_string(),
                source,
            };
            let fresh = |prog: &mut SchedClassifier| {
                prog.attach_with_options(
                    interface,
                    attach_type,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
            };
            let link_id = if pin.exists() {
                let old = PinnedLink::from_pin(&pin).map_err(link_err)?;
                let link = FdLink::from(old).try_into().map_err(link_err)?;
                match prog.attach_to_link(link) {
                    Ok(id) => {
                        debug!(
                            interface,
                            program = name,
                            "swapped program behind pinned link"
                        );
                        id
                    }
                    Err(e) => {
                        // The interface behind the old link is gone (pod re-created): start over.
                        debug!(interface, error = %e, "stale pinned link; attaching afresh");
                        let _ = fs::remove_file(&pin);
                        fresh(prog).map_err(attach_err)?
                    }
                }
            } else {
                fresh(prog).map_err(attach_err)?
            };
            let link = prog.take_link(link_id).map_err(attach_err)?;
            let fd_link: FdLink = link.try_into().map_err(link_err)?;
            if pin.exists() {
                // Swapped behind an existing pin: the pin already refers to this link.
                drop(fd_link);
            } else {
                fd_link.pin(&pin).map_err(|source| LoaderError::PinLink {
                    path: pin.clone(),
                    source,
                })?;
            }
            out.push(AttachedProgram {
                interface: interface.to_string(),
                direction: suffix,
                program: name,
                pin,
            });
        }
        Ok(out)
    }

    /// Detaches the endpoint programs from an interface by removing their pinned links.
    /// Missing pins are not an error: detaching is idempotent.
    pub fn detach_endpoint(pin_dir: &Path, interface: &str) {
        for (_, _, suffix) in ENDPOINT_HOOKS {
            let _ = fs::remove_file(link_pin(pin_dir, interface, suffix));
        }
    }

    /// Every endpoint program pinned under `pin_dir`.
    pub fn attached(pin_dir: &Path) -> Vec<AttachedProgram> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(pin_dir.join("links")) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((interface, suffix)) = name.rsplit_once('_') else {
                continue;
            };
            if let Some((program, _, direction)) = ENDPOINT_HOOKS
                .iter()
                .chain(NETDEV_HOOKS.iter())
                .find(|h| h.2 == suffix)
            {
                out.push(AttachedProgram {
                    interface: interface.to_string(),
                    direction,
                    program,
                    pin: entry.path(),
                });
            }
        }
        out.sort_by(|a, b| (&a.interface, a.direction).cmp(&(&b.interface, b.direction)));
        out
    }

    /// The loaded program by name, for `BPF_PROG_TEST_RUN` tests.
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, LoaderError> {
        classifier(&mut self.ebpf, name)
    }
}

/// Raw bpf(2) with a zero-padded attribute buffer.
fn bpf_syscall(cmd: libc::c_long, attr: &[u8]) -> std::io::Result<libc::c_long> {
    let mut buf = [0u8; 128];
    buf[..attr.len()].copy_from_slice(attr);
    // SAFETY: bpf(2) reads at most `buf.len()` bytes of the attribute buffer we own.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, buf.as_mut_ptr(), buf.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `BPF_LINK_UPDATE` on the link pinned at `pin`: puts `prog` behind it atomically (aya offers
/// this for tc links only).
fn link_update(pin: &Path, prog: &aya::programs::ProgramFd) -> std::io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_UPDATE: libc::c_long = 29;
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())?;
    let mut get = [0u8; 16];
    get[..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    let fd = bpf_syscall(BPF_OBJ_GET, &get)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that we now own.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // union bpf_attr, link_update: link_fd, new_prog_fd, flags, old_prog_fd (u32 each).
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(link.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_fd().as_raw_fd() as u32).to_ne_bytes());
    bpf_syscall(BPF_LINK_UPDATE, &attr).map(|_| ())
}

/// A program of the object by name, as its type.
fn typed_program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoaderError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoaderError::Program {
        program: name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    prog.try_into().map_err(|source| LoaderError::Program {
        program: name,
        source,
    })
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, LoaderError> {
    typed_program(ebpf, name)
}

fn sock_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, LoaderError> {
    typed_program(ebpf, name)
}

/// Pin path of one hook's link. bpffs refuses '.' in names (reserved), hence the underscore.
fn link_pin(pin_dir: &Path, interface: &str, suffix: &str) -> PathBuf {
    pin_dir.join("links").join(format!("{interface}_{suffix}"))
}
