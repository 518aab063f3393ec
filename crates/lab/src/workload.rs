//! The workload server each lab pod runs inside its network namespace: it answers every TCP
//! connection and UDP datagram on its declared ports with the pod's name, and echoes what it is
//! sent, so one server serves reachability probes, request/response latency and bulk streams.
//!
//! Threads, not async: one accept loop per TCP port, one short-lived thread per connection, one
//! receive loop per UDP port. Everything is bound before anything is served, so a port that
//! cannot be bound is reported at start, not discovered by a failing probe later.

use std::{
    io::{self, Read, Write},
    mem,
    net::{TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    thread,
    time::Duration,
};

/// Pending-connection queue length for each listener; the kernel caps it at `somaxconn`.
const BACKLOG: libc::c_int = 4096;

/// Stack size for per-connection threads: they only copy bytes, and hundreds may be alive.
const CONN_STACK: usize = 128 * 1024;

/// Largest UDP payload read (and echoed) in one datagram.
const MAX_DATAGRAM: usize = 65_536;

/// Prefix of a UDP payload that asks for the payload itself back instead of the name.
pub const UDP_ECHO_PREFIX: &[u8] = b"echo:";

/// What a workload serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadSpec {
    /// The pod's name, `namespace/pod`; sent as the first line of every answer.
    pub name: String,
    /// TCP ports to serve.
    pub tcp: Vec<u16>,
    /// UDP ports to serve.
    pub udp: Vec<u16>,
}

/// Binds every port of `spec` on `0.0.0.0` and serves them forever.
///
/// Returns an error, naming the protocol and port, when a port cannot be bound; otherwise it
/// never returns (a spec without ports keeps the calling thread parked, like a pause container).
pub fn serve(spec: &WorkloadSpec) -> io::Result<()> {
    Workload::bind(spec)?.run()
}

/// A workload whose ports are all bound but not yet served.
#[derive(Debug)]
pub struct Workload {
    /// The name line sent in answers, newline included.
    name: Arc<[u8]>,
    /// Bound TCP listeners with their ports.
    tcp: Vec<(u16, TcpListener)>,
    /// Bound UDP sockets with their ports.
    udp: Vec<(u16, UdpSocket)>,
}

impl Workload {
    /// Binds every port of `spec`; the error names the protocol and port that failed.
    pub fn bind(spec: &WorkloadSpec) -> io::Result<Self> {
        let tcp = spec
            .tcp
            .iter()
            .map(|&port| {
                Ok((
                    port,
                    bind_tcp(port).map_err(|e| bind_error("TCP", port, e))?,
                ))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let udp = spec
            .udp
            .iter()
            .map(|&port| {
                Ok((
                    port,
                    bind_udp(port).map_err(|e| bind_error("UDP", port, e))?,
                ))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            name: format!("{}\n", spec.name).into_bytes().into(),
            tcp,
            udp,
        })
    }

    /// Serves the bound ports forever; returns only if a serving thread cannot be started or
    /// dies.
    pub fn run(self) -> io::Result<()> {
        let mut loops = Vec::new();
        for (port, listener) in self.tcp {
            let name = Arc::clone(&self.name);
            let handle = thread::Builder::new()
                .name(format!("tcp-{port}"))
                .spawn(move || accept_loop(listener, port, name))?;
            loops.push(handle);
        }
        for (port, socket) in self.udp {
            let name = Arc::clone(&self.name);
            let handle = thread::Builder::new()
                .name(format!("udp-{port}"))
                .spawn(move || udp_loop(socket, port, name))?;
            loops.push(handle);
        }
        if loops.is_empty() {
            loop {
                thread::park();
            }
        }
        for handle in loops {
            // The loops never end; a panic in one is the only way here.
            if handle.join().is_err() {
                return Err(io::Error::other("a serving thread panicked"));
            }
        }
        Ok(())
    }
}

/// Wraps a bind error with the protocol and port it was for.
fn bind_error(proto: &str, port: u16, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("binding {proto} port {port} on 0.0.0.0: {e}"),
    )
}

/// The IPv4 wildcard address with `port`, as the kernel wants it.
fn any_v4(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: libc::INADDR_ANY.to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Turns a libc return value into an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A TCP listener on `0.0.0.0:port` with `SO_REUSEADDR` and a deep backlog.
fn bind_tcp(port: u16) -> io::Result<TcpListener> {
    // SAFETY: plain socket(2); the returned descriptor is owned by `fd` right away.
    let raw =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the length passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let addr = any_v4(port);
    // SAFETY: `addr` is a valid sockaddr_in of the length passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen(2) on a bound stream socket we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) })?;
    Ok(TcpListener::from(fd))
}

/// A UDP socket on `0.0.0.0:port`.
fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    UdpSocket::bind(("0.0.0.0", port))
}

/// Accepts connections forever, each handled on its own thread.
fn accept_loop(listener: TcpListener, port: u16, name: Arc<[u8]>) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let name = Arc::clone(&name);
                let spawned = thread::Builder::new()
                    .name(format!("tcp-{port}-conn"))
                    .stack_size(CONN_STACK)
                    .spawn(move || handle_conn(stream, &name));
                if let Err(e) = spawned {
                    // The stream was moved into the closure and is closed with it.
                    tracing::warn!(port, error = %e, "no thread for a TCP connection; closed it");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(port, error = %e, "accept failed");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Sends the name line, then echoes everything until the peer closes.
fn handle_conn(mut stream: TcpStream, name: &[u8]) {
    // Best effort: small request/response exchanges should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    if stream.write_all(name).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// What the server answers to one UDP datagram.
pub fn udp_answer<'a>(payload: &'a [u8], name: &'a [u8]) -> &'a [u8] {
    if payload.starts_with(UDP_ECHO_PREFIX) {
        payload
    } else {
        name
    }
}

/// Answers every datagram forever.
fn udp_loop(socket: UdpSocket, port: u16, name: Arc<[u8]>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if let Err(e) = socket.send_to(udp_answer(&buf[..n], &name), peer) {
                    tracing::debug!(port, %peer, error = %e, "UDP reply failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(port, error = %e, "UDP receive failed");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_answers_name_unless_echo_requested() {
        assert_eq!(udp_answer(b"probe", b"x/a\n"), b"x/a\n");
        assert_eq!(udp_answer(b"echo:hi", b"x/a\n"), b"echo:hi");
        assert_eq!(udp_answer(b"", b"x/a\n"), b"x/a\n");
    }

    #[test]
    fn bind_error_names_protocol_and_port() {
        let e = bind_error("TCP", 80, io::Error::from(io::ErrorKind::AddrInUse));
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let msg = e.to_string();
        assert!(msg.contains("TCP port 80"), "{msg}");
    }

    #[test]
    fn second_bind_of_a_tcp_port_fails() {
        let first = bind_tcp(0).expect("bind an ephemeral port");
        let port = first.local_addr().expect("local address").port();
        let err = bind_tcp(port).expect_err("the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
