//! A serial TCP request/response (RR) benchmark: the client sends one byte and waits for one
//! byte back, over one connection with `TCP_NODELAY`, for a fixed time, and records the latency
//! of every transaction; the server echoes each byte it reads.
//!
//! A connect-rate variant opens a new connection for every transaction instead (connect, one
//! byte each way, close), like netperf's TCP_CRR: it shows per-connection costs (connection
//! tracking, policy verdicts, the events a monitor sends per connection).
//!
//! One transaction in flight at a time, so the rate is the inverse of the round-trip latency
//! through the datapath (plus both ends' system calls), which is what a per-packet cost shows up
//! in first.
//!
//! A third client measures what opening a connection costs: connect, read the line the server
//! sends on accept, close; it records the `connect()` latency and which server answered.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{stats::percentile, BenchError};

/// How long the client waits for the TCP handshake, and then for each reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// The outcome of one RR run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RrResult {
    /// Transactions completed.
    pub transactions: u64,
    /// Transactions per second over the run.
    pub tx_per_sec: f64,
    /// Median transaction latency, microseconds.
    pub p50_us: f64,
    /// 99th-percentile transaction latency, microseconds.
    pub p99_us: f64,
}

impl RrResult {
    /// Summarises per-transaction latencies (nanoseconds, any order) measured over `elapsed`.
    /// `None` when there are none.
    pub fn from_latencies(mut latencies_ns: Vec<u64>, elapsed: Duration) -> Option<Self> {
        latencies_ns.sort_unstable();
        let p50 = percentile(&latencies_ns, 50.0)?;
        let p99 = percentile(&latencies_ns, 99.0)?;
        let n = latencies_ns.len() as u64;
        Some(Self {
            transactions: n,
            tx_per_sec: n as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            p50_us: p50 as f64 / 1000.0,
            p99_us: p99 as f64 / 1000.0,
        })
    }
}

/// Binds the RR server's listener on `0.0.0.0:port`.
pub fn bind(port: u16) -> Result<TcpListener, BenchError> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| BenchError::io(format!("binding TCP port {port}"), e))
}

/// Serves connections one after the other, forever: echoes every byte read. Serial on purpose:
/// the benchmark's client is serial too, and the server stays on the one pinned CPU.
pub fn serve(listener: &TcpListener) -> Result<(), BenchError> {
    loop {
        let (conn, _) = listener
            .accept()
            .map_err(|e| BenchError::io("accepting a connection", e))?;
        // A client that goes away mid-transaction ends only its own connection.
        let _ = echo(conn);
    }
}

/// Echoes what `conn` sends until it closes.
fn echo(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = [0u8; 64];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        conn.write_all(&buf[..n])?;
    }
}

/// Opens a client connection with the options every measurement uses.
fn connect(server: SocketAddr) -> Result<TcpStream, BenchError> {
    let conn = TcpStream::connect_timeout(&server, IO_TIMEOUT)
        .map_err(|e| BenchError::io(format!("connecting to {server}"), e))?;
    let setup = |e| BenchError::io(format!("configuring the connection to {server}"), e);
    conn.set_nodelay(true).map_err(setup)?;
    conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
    conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
    Ok(conn)
}

/// One byte to `server` and back over `conn`.
fn exchange(conn: &mut TcpStream, server: SocketAddr) -> Result<(), BenchError> {
    let mut byte = [0u8; 1];
    conn.write_all(&byte)
        .map_err(|e| BenchError::io(format!("sending to {server}"), e))?;
    conn.read_exact(&mut byte)
        .map_err(|e| BenchError::io(format!("waiting for a reply from {server}"), e))
}

/// Runs `transaction` back to back for `duration`; each call returns the latency to record
/// (the whole transaction, or the part of it a test measures). `per_second` sizes the latency
/// buffer so it does not reallocate during the measurement.
fn measure(
    server: SocketAddr,
    duration: Duration,
    per_second: f64,
    mut transaction: impl FnMut() -> Result<Duration, BenchError>,
) -> Result<RrResult, BenchError> {
    let mut latencies: Vec<u64> =
        Vec::with_capacity((duration.as_secs_f64() * per_second).min(1e8) as usize);
    let start = Instant::now();
    let deadline = start + duration;
    let end = loop {
        latencies.push(transaction()?.as_nanos() as u64);
        let now = Instant::now();
        if now >= deadline {
            break now;
        }
    };
    RrResult::from_latencies(latencies, end.duration_since(start))
        .ok_or_else(|| BenchError::NoTransactions(server.to_string()))
}

/// Times `f`.
fn timed(f: impl FnOnce() -> Result<(), BenchError>) -> Result<Duration, BenchError> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed())
}

/// Runs the client against `server` for `duration`: one connection, one byte each way per
/// transaction, every transaction's latency recorded.
pub fn run_client(server: SocketAddr, duration: Duration) -> Result<RrResult, BenchError> {
    let mut conn = connect(server)?;
    measure(server, duration, 200_000.0, || {
        timed(|| exchange(&mut conn, server))
    })
}

/// Runs the connect-rate client against `server` for `duration`: every transaction connects,
/// sends one byte, waits for it back and closes; its latency covers all of that.
///
/// The client closes first, so its side keeps the connections in TIME_WAIT: over a long run
/// the namespace needs a wide `ip_local_port_range` and `tcp_tw_reuse` (see
/// [`tune_for_connect_rate`]).
pub fn run_connect_client(server: SocketAddr, duration: Duration) -> Result<RrResult, BenchError> {
    measure(server, duration, 50_000.0, || {
        timed(|| exchange(&mut connect(server)?, server))
    })
}

/// The outcome of a connect-latency run ([`run_name_client`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// Connections made (`transactions`), their rate (`tx_per_sec`) and the median and
    /// 99th-percentile time `connect()` took (`p50_us`, `p99_us`).
    #[serde(flatten)]
    pub rr: RrResult,
    /// How many connections each server answered, by the name line it sent.
    pub replies: BTreeMap<String, u64>,
}

/// Runs a connect-latency client against `server` for `duration`: every connection connects,
/// reads the line the server sends on accept (the lab workload's `ns/pod` name), and closes.
/// The latency recorded is the `connect()` call's (the TCP handshake and whatever translates
/// the address on the way); the rate counts whole connections.
///
/// Like [`run_connect_client`], it needs [`tune_for_connect_rate`] in the client's namespace.
pub fn run_name_client(
    server: SocketAddr,
    duration: Duration,
) -> Result<ConnectResult, BenchError> {
    let mut replies: BTreeMap<String, u64> = BTreeMap::new();
    let mut line = Vec::with_capacity(128);
    let rr = measure(server, duration, 20_000.0, || {
        let t0 = Instant::now();
        let mut conn = connect(server)?;
        let latency = t0.elapsed();
        read_line(&mut conn, &mut line)
            .map_err(|e| BenchError::io(format!("reading the reply line of {server}"), e))?;
        let name = String::from_utf8_lossy(&line);
        match replies.get_mut(name.as_ref()) {
            Some(n) => *n += 1,
            None => {
                replies.insert(name.into_owned(), 1);
            }
        }
        Ok(latency)
    })?;
    Ok(ConnectResult { rr, replies })
}

/// Reads from `conn` up to the first newline into `line` (without it).
fn read_line(conn: &mut TcpStream, line: &mut Vec<u8>) -> std::io::Result<()> {
    line.clear();
    let mut buf = [0u8; 128];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..end]);
            return Ok(());
        }
        line.extend_from_slice(&buf[..n]);
    }
}

/// Lets the calling thread's network namespace open connections as fast as
/// [`run_connect_client`] does: local ports 1024-65535, and ports in TIME_WAIT reused once
/// they are a second old (`net.ipv4.tcp_tw_reuse = 1`). Run it inside the client's namespace.
pub fn tune_for_connect_rate() -> Result<(), BenchError> {
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535"),
        ("/proc/sys/net/ipv4/tcp_tw_reuse", "1"),
    ] {
        std::fs::write(path, value)
            .map_err(|e| BenchError::io(format!("writing {value:?} to {path}"), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_from_latencies() {
        let lat: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let r = RrResult::from_latencies(lat, Duration::from_secs(2)).unwrap();
        assert_eq!(r.transactions, 1000);
        assert_eq!(r.tx_per_sec, 500.0);
        assert_eq!(r.p50_us, 500.0);
        assert_eq!(r.p99_us, 990.0);
        assert!(RrResult::from_latencies(Vec::new(), Duration::from_secs(1)).is_none());
    }

    #[test]
    fn client_and_server_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(&listener));
        let r = run_client(addr, Duration::from_millis(100)).unwrap();
        assert!(r.transactions > 0);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us);
    }

    #[test]
    fn connect_client_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(&listener));
        let r = run_connect_client(addr, Duration::from_millis(100)).unwrap();
        assert!(r.transactions > 0);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us);
    }

    #[test]
    fn name_client_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                // The name in two writes: the client must read up to the newline.
                let _ = conn.write_all(b"bench/");
                let _ = conn.write_all(b"server-0\nrest");
            }
        });
        let r = run_name_client(addr, Duration::from_millis(100)).unwrap();
        assert!(r.rr.transactions > 0);
        assert_eq!(r.replies.len(), 1);
        assert_eq!(r.replies["bench/server-0"], r.rr.transactions);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ConnectResult>(&json).unwrap(), r);
    }
}
