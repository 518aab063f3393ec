//! Prometheus metrics in the text format: the agent's (`:9962`, Cilium's names with the
//! `plexus_` prefix) and flow metrics (`:9965`, Hubble's names), served over plain HTTP.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use plexus_hubble::flow::{self, layer4::Protocol, Flow};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::{info, warn};

/// Counters derived from flows.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

fn verdict_name(v: i32) -> &'static str {
    flow::Verdict::try_from(v).map_or("UNKNOWN", |v| v.as_str_name())
}

impl Metrics {
    fn add(&self, name: &'static str, labels: String, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels)).or_insert(0) += n;
        }
    }

    /// Accounts one flow.
    pub fn observe(&self, f: &Flow) {
        let (ty, sub) = f
            .event_type
            .as_ref()
            .map_or((0, 0), |e| (e.r#type, e.sub_type));
        let kind = match ty {
            1 => "Drop",
            4 => "Trace",
            5 => "PolicyVerdict",
            _ => "Other",
        };
        let subtype = if ty == 4 {
            flow::TraceObservationPoint::try_from(f.trace_observation_point)
                .map_or("", |p| p.as_str_name())
                .to_lowercase()
        } else {
            String::new()
        };
        self.add(
            "hubble_flows_processed_total",
            format!(
                "type=\"{kind}\",subtype=\"{subtype}\",verdict=\"{}\"",
                verdict_name(f.verdict)
            ),
            1,
        );
        let proto = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            Some(Protocol::Tcp(_)) => "TCP",
            Some(Protocol::Udp(_)) => "UDP",
            Some(Protocol::Sctp(_)) => "SCTP",
            Some(Protocol::IcmPv4(_)) => "ICMPv4",
            _ => "other",
        };
        if ty == 1 {
            let reason = flow::DropReason::try_from(f.drop_reason_desc)
                .map_or("UNKNOWN", |r| r.as_str_name());
            self.add(
                "hubble_drop_total",
                format!("reason=\"{reason}\",protocol=\"{proto}\""),
                1,
            );
            let dir = flow::TrafficDirection::try_from(f.traffic_direction)
                .map_or("UNKNOWN", |d| d.as_str_name());
            self.add(
                "plexus_drop_count_total",
                format!("reason=\"{reason}\",direction=\"{dir}\""),
                1,
            );
            let _ = sub;
        }
        if let Some(Protocol::Tcp(t)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
            if let Some(fl) = &t.flags {
                for (set, name) in [
                    (fl.syn, "SYN"),
                    (fl.fin, "FIN"),
                    (fl.rst, "RST"),
                    (fl.ack && fl.syn, "SYN-ACK"),
                ] {
                    if set {
                        self.add(
                            "hubble_tcp_flags_total",
                            format!("flag=\"{name}\",family=\"IPv4\""),
                            1,
                        );
                    }
                }
            }
        }
    }

    /// Records lost events by where they were lost.
    pub fn set_lost(&self, source: &str, total: u64) {
        if let Ok(mut c) = self.counters.lock() {
            c.insert(
                ("hubble_lost_events_total", format!("source=\"{source}\"")),
                total,
            );
        }
    }

    /// The flow metrics as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(c) = self.counters.lock() else {
            return out;
        };
        let mut last = "";
        for ((name, labels), v) in c.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        out
    }
}

/// Serves `render()` at `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, error = %e, "metrics: cannot listen");
            return;
        }
    };
    info!(%addr, "metrics listening");
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", render())
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
