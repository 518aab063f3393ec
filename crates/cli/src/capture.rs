//! `plexus capture`: packets of pods chosen by name or label, copied by the datapath, written
//! as a standard pcap file (what tcpdump and Wireshark read).

use std::{io::Write, path::PathBuf};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Args;
use plexus_api::{CaptureRequest, CapturedPacket, Request, Response};

use crate::Cli;

/// Capture options.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Pods by `ns/name` (repeatable).
    #[arg(long = "pod")]
    pods: Vec<String>,
    /// Pods whose labels match `key=value` (repeatable; all must match).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Only packets from or to this port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Stop after this many packets.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Bytes of each packet to keep (headers; at most 128).
    #[arg(long, default_value_t = 128)]
    snaplen: u16,
    /// Stop after this many seconds even with fewer packets.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The pcap file to write.
    #[arg(short = 'w', long = "write")]
    file: PathBuf,
}

/// Encodes packets as a pcap file (little-endian, microseconds, Ethernet).
pub fn pcap(packets: &[CapturedPacket], snaplen: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&snaplen.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for p in packets {
        let data = base64::engine::general_purpose::STANDARD
            .decode(&p.data)
            .context("packet data")?;
        out.extend_from_slice(&((p.ts_ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(((p.ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&p.orig_len.max(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// Runs a capture and writes the file.
pub fn run(cli: &Cli, a: &CaptureArgs) -> anyhow::Result<()> {
    if a.pods.is_empty() && a.labels.is_empty() {
        bail!("say which pods: --pod ns/name or --label key=value");
    }
    let req = Request::Capture(CaptureRequest {
        pods: a.pods.clone(),
        labels: a.labels.clone(),
        port: a.port,
        count: a.count,
        snaplen: a.snaplen,
        timeout_ms: a.timeout * 1000,
    });
    let sock = crate::socket(cli)?;
    let resp = plexus_api::call(&sock, &req, std::time::Duration::from_secs(a.timeout + 10))
        .with_context(|| format!("asking the agent at {}", sock.display()))?;
    let Response::Packets { packets } = resp else {
        bail!("unexpected answer from agent")
    };
    let bytes = pcap(&packets, a.snaplen as u32)?;
    let mut f =
        std::fs::File::create(&a.file).with_context(|| format!("creating {}", a.file.display()))?;
    f.write_all(&bytes)?;
    eprintln!("{} packets written to {}", packets.len(), a.file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_layout() {
        let p = CapturedPacket {
            pod: "x/a".into(),
            ts_ns: 1_700_000_000_123_456_789,
            orig_len: 60,
            data: base64::engine::general_purpose::STANDARD.encode([7u8; 34]),
        };
        let b = pcap(&[p], 128).unwrap();
        assert_eq!(b.len(), 24 + 16 + 34);
        assert_eq!(&b[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(
            u32::from_le_bytes(b[20..24].try_into().unwrap()),
            1,
            "Ethernet"
        );
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 34);
        assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), 60);
    }
}
