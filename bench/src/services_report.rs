//! The `services` benchmark's results: per setup and number of Services, the new-connection rate
//! to the last Service with connect latency, the time programming the Services took and the
//! times to add one more; ratios to the setup's "no service" rate and to iptables-legacy at the
//! same number of Services; the printed table and JSON.

use serde::Serialize;

use crate::{
    report::{columns, format_ratio, group_thousands, ratio},
    rr::ConnectResult,
    stats::median,
};

/// The setup the `/legacy` column divides by.
pub const LEGACY: &str = "iptables-legacy";

/// One measured line: a setup at one number of Services (or with none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Setup, as printed (`iptables-legacy`, `plexus socket LB`, ...).
    pub setup: String,
    /// Services programmed; `None` for the "no service" line (the client connects straight to
    /// a server's pod IP).
    pub services: Option<usize>,
    /// The client's result.
    pub conn: Option<ConnectResult>,
    /// `conn/s` over the setup's "no service" rate.
    pub ratio_none: Option<f64>,
    /// `conn/s` over iptables-legacy's at the same number of Services.
    pub ratio_legacy: Option<f64>,
    /// Seconds programming the Services took (from the previous size's state, see the README).
    pub program_s: Option<f64>,
    /// Each time adding one Service took, seconds (kube-proxy's full sync for iptables).
    pub add_one_s: Vec<f64>,
    /// The time limit, when an add was killed at it (later ones, also at larger sizes, are not
    /// tried).
    pub add_one_over: Option<f64>,
    /// For iptables: each time a kube-proxy partial sync adding one Service took, seconds.
    pub add_partial_s: Vec<f64>,
    /// The time limit, when a partial sync was killed at it.
    pub add_partial_over: Option<f64>,
    /// What the agent reported about its own time for each added Service, if anything.
    pub agent_times: Vec<String>,
    /// Why the line has no measurement.
    pub error: Option<String>,
}

impl Row {
    /// A line for `setup` with `services`, nothing measured yet.
    pub fn new(setup: &str, services: Option<usize>) -> Self {
        Self {
            setup: setup.to_string(),
            services,
            conn: None,
            ratio_none: None,
            ratio_legacy: None,
            program_s: None,
            add_one_s: Vec::new(),
            add_one_over: None,
            add_partial_s: Vec::new(),
            add_partial_over: None,
            agent_times: Vec::new(),
            error: None,
        }
    }

    fn rate(&self) -> Option<f64> {
        self.conn.as_ref().map(|c| c.rr.tx_per_sec)
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicesReport {
    /// Seconds per measurement.
    pub seconds: f64,
    /// The CPU client and servers were pinned to.
    pub cpu: u32,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// Every line, in the order measured.
    pub rows: Vec<Row>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
}

impl ServicesReport {
    /// A report over `rows`, with both ratio columns filled in.
    pub fn new(seconds: f64, cpu: u32, endpoints: usize, mut rows: Vec<Row>) -> Self {
        let rate_of = |rows: &[Row], setup: &str, services: Option<usize>| {
            rows.iter()
                .find(|r| r.setup == setup && r.services == services)
                .and_then(Row::rate)
        };
        let ratios: Vec<(Option<f64>, Option<f64>)> = rows
            .iter()
            .map(|r| {
                let Some(rate) = r.rate() else {
                    return (None, None);
                };
                let none = rate_of(&rows, &r.setup, None).and_then(|b| ratio(rate, b));
                let legacy = r
                    .services
                    .and_then(|n| rate_of(&rows, LEGACY, Some(n)))
                    .and_then(|b| ratio(rate, b));
                (none, legacy)
            })
            .collect();
        for (r, (none, legacy)) in rows.iter_mut().zip(ratios) {
            r.ratio_none = none;
            r.ratio_legacy = legacy;
        }
        Self {
            seconds,
            cpu,
            endpoints,
            rows,
            notes: Vec::new(),
        }
    }

    /// The table, the errors and the notes.
    pub fn table(&self) -> String {
        let mut out = format!(
            "services: new TCP connections to the last of N Services ({} endpoints each), serial \
             client, {} s per measurement, client and servers pinned to CPU {}\n",
            self.endpoints, self.seconds, self.cpu
        );
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| {
                let c = r.conn.as_ref();
                vec![
                    r.setup.clone(),
                    r.services
                        .map_or("none".to_string(), |n| group_thousands(n as f64)),
                    c.map_or("-".into(), |c| group_thousands(c.rr.tx_per_sec)),
                    format_ratio(r.ratio_none),
                    format_ratio(r.ratio_legacy),
                    c.map_or("-".into(), |c| format!("{:.1}", c.rr.p50_us)),
                    c.map_or("-".into(), |c| format!("{:.1}", c.rr.p99_us)),
                    r.program_s.map_or("-".into(), format_duration),
                    format_added(&r.add_one_s, r.add_one_over),
                    format_added(&r.add_partial_s, r.add_partial_over),
                ]
            })
            .collect();
        out.push_str(&columns(
            &[
                "setup",
                "services",
                "conn/s",
                "/none",
                "/legacy",
                "connect p50 us",
                "p99 us",
                "program",
                "add one",
                "add one (partial sync)",
            ],
            &cells,
        ));
        for r in self.rows.iter().filter(|r| r.error.is_some()) {
            let at = r.services.map_or("with no service".to_string(), |n| {
                format!("at {n} services")
            });
            out.push_str(&format!(
                "error: {} {at}: {}\n",
                r.setup,
                r.error.as_deref().unwrap_or_default()
            ));
        }
        for r in self.rows.iter().filter(|r| !r.agent_times.is_empty()) {
            out.push_str(&format!(
                "agent's own time adding one Service, {} at {}: {}\n",
                r.setup,
                r.services.unwrap_or(0),
                r.agent_times.join("; ")
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

/// A duration in seconds as printed: `420 us`, `12.3 ms`, `3.52 s`.
pub fn format_duration(s: f64) -> String {
    if !s.is_finite() {
        "-".to_string()
    } else if s < 1e-3 {
        format!("{:.0} us", s * 1e6)
    } else if s < 0.1 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// The median of `times`, with the range when there are several: `3.52 s (3.41-4.10)`.
pub fn format_times(times: &[f64]) -> String {
    let Some(m) = median(times) else {
        return "-".to_string();
    };
    if times.len() == 1 {
        return format_duration(m);
    }
    let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{} ({}-{})",
        format_duration(m),
        format_duration(lo),
        format_duration(hi)
    )
}

/// [`format_times`], or `> LIMIT` when one went over the time limit.
pub fn format_added(times: &[f64], over: Option<f64>) -> String {
    match over {
        Some(limit) => format!("> {}", format_duration(limit)),
        None => format_times(times),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rr::RrResult;

    fn row(setup: &str, services: Option<usize>, rate: f64) -> Row {
        let mut r = Row::new(setup, services);
        r.conn = Some(ConnectResult {
            rr: RrResult {
                transactions: (rate * 3.0) as u64,
                tx_per_sec: rate,
                p50_us: 60.0,
                p99_us: 120.0,
            },
            replies: Default::default(),
        });
        r
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.00042), "420 us");
        assert_eq!(format_duration(0.0123), "12.3 ms");
        assert_eq!(format_duration(0.52), "520 ms");
        assert_eq!(format_duration(3.521), "3.52 s");
        assert_eq!(format_times(&[]), "-");
        assert_eq!(format_times(&[0.5]), "500 ms");
        assert_eq!(format_times(&[3.5, 5.0, 4.0]), "4.00 s (3.50 s-5.00 s)");
        assert_eq!(format_added(&[3.5], Some(60.0)), "> 60.00 s");
        assert_eq!(format_added(&[3.5], None), "3.50 s");
    }

    #[test]
    fn ratios_to_none_and_legacy() {
        let mut failed = Row::new("nftables", Some(100));
        failed.error = Some("nft: boom".into());
        let r = ServicesReport::new(
            3.0,
            1,
            3,
            vec![
                row(LEGACY, None, 6000.0),
                row(LEGACY, Some(100), 7200.0),
                row(LEGACY, Some(50_000), 900.0),
                row("plexus socket LB", None, 8000.0),
                row("plexus socket LB", Some(50_000), 7200.0),
                failed,
            ],
        );
        assert_eq!(r.rows[1].ratio_none, Some(1.2));
        assert_eq!(r.rows[1].ratio_legacy, Some(1.0));
        assert_eq!(r.rows[0].ratio_legacy, None);
        assert_eq!(r.rows[4].ratio_none, Some(0.9));
        assert_eq!(r.rows[4].ratio_legacy, Some(8.0));
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].starts_with("setup "));
        assert!(lines[3].starts_with("iptables-legacy    100 "));
        assert!(lines[6].starts_with("plexus socket LB   50,000     7,200    0.90    8.00"));
        assert_eq!(lines[7], "error: nftables at 100 services: nft: boom");
    }
}
