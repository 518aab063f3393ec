//! Per-round samples, their medians, ratios to the ceiling setup, and the printed table.

use serde::Serialize;

use crate::{rr::RrResult, stats::median};

/// One round's measurement of one setup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Round number, from 1.
    pub round: u32,
    /// iperf3 TCP throughput (received), Gbit/s.
    pub tcp_gbps: f64,
    /// The request/response run.
    pub rr: RrResult,
}

/// One setup's medians over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetupSummary {
    /// Setup name as printed, e.g. `bare veth`.
    pub setup: String,
    /// Median TCP throughput, Gbit/s.
    pub tcp_gbps: f64,
    /// `tcp_gbps` over the ceiling's; `None` without a ceiling.
    pub tcp_ratio: Option<f64>,
    /// Median RR transactions per second.
    pub rr_tx_per_sec: f64,
    /// `rr_tx_per_sec` over the ceiling's; `None` without a ceiling.
    pub rr_ratio: Option<f64>,
    /// Median of the rounds' median latencies, microseconds.
    pub p50_us: f64,
    /// Median of the rounds' 99th-percentile latencies, microseconds.
    pub p99_us: f64,
    /// Every round's sample.
    pub samples: Vec<Sample>,
}

impl SetupSummary {
    /// Medians of `samples` (which must not be empty); ratios are left for [`Report::new`].
    pub fn from_samples(setup: &str, samples: Vec<Sample>) -> Self {
        let med = |f: fn(&Sample) -> f64| {
            median(&samples.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        Self {
            setup: setup.to_string(),
            tcp_gbps: med(|s| s.tcp_gbps),
            tcp_ratio: None,
            rr_tx_per_sec: med(|s| s.rr.tx_per_sec),
            rr_ratio: None,
            p50_us: med(|s| s.rr.p50_us),
            p99_us: med(|s| s.rr.p99_us),
            samples,
        }
    }
}

/// The benchmark's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Rounds run.
    pub rounds: u32,
    /// Seconds per measurement.
    pub seconds: f64,
    /// The CPU both client and server were pinned to.
    pub cpu: u32,
    /// The setup the ratios are relative to.
    pub ceiling: String,
    /// One summary per setup, in table order.
    pub setups: Vec<SetupSummary>,
    /// Remarks on how the setups were measured, printed under the table.
    pub notes: Vec<String>,
}

impl Report {
    /// A report whose ratios are relative to the setup named `ceiling` (left `None` when that
    /// setup was not run).
    pub fn new(
        rounds: u32,
        seconds: f64,
        cpu: u32,
        ceiling: &str,
        mut setups: Vec<SetupSummary>,
    ) -> Self {
        let base = setups
            .iter()
            .find(|s| s.setup == ceiling)
            .map(|s| (s.tcp_gbps, s.rr_tx_per_sec));
        if let Some((tcp, rr)) = base {
            for s in &mut setups {
                s.tcp_ratio = ratio(s.tcp_gbps, tcp);
                s.rr_ratio = ratio(s.rr_tx_per_sec, rr);
            }
        }
        Self {
            rounds,
            seconds,
            cpu,
            ceiling: ceiling.to_string(),
            setups,
            notes: Vec::new(),
        }
    }

    /// The results table: a title line, a header and one row per setup.
    pub fn table(&self) -> String {
        let rounds = if self.rounds == 1 { "round" } else { "rounds" };
        let mut out = format!(
            "pod-to-pod, {} {rounds}, medians (client and server pinned to CPU {})\n",
            self.rounds, self.cpu
        );
        out.push_str(&row(&[
            "setup",
            "TCP Gbit/s",
            "ratio",
            "RR tx/s",
            "ratio",
            "p50 us",
            "p99 us",
        ]));
        for s in &self.setups {
            out.push_str(&row(&[
                &s.setup,
                &format!("{:.2}", s.tcp_gbps),
                &format_ratio(s.tcp_ratio),
                &group_thousands(s.rr_tx_per_sec),
                &format_ratio(s.rr_ratio),
                &format!("{:.1}", s.p50_us),
                &format!("{:.1}", s.p99_us),
            ]));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

/// Column widths of the table (the last column is not padded).
const WIDTHS: [usize; 7] = [19, 13, 8, 10, 8, 9, 0];

fn row(cells: &[&str; 7]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(WIDTHS) {
        line.push_str(&format!("{cell:<width$}"));
        if cell.len() >= width && width > 0 {
            line.push(' ');
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// Left-aligned columns, each as wide as its widest cell plus three spaces (the last one not
/// padded).
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{c:<width$}", width = w + 3));
        }
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `value / ceiling`; `None` when the ceiling is not a positive number.
pub fn ratio(value: f64, ceiling: f64) -> Option<f64> {
    (ceiling > 0.0 && value.is_finite()).then(|| value / ceiling)
}

/// A ratio with two decimals, or `-` when there is none.
pub fn format_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

/// A count rounded to an integer with `,` between thousands: `60150.4` → `60,150`.
pub fn group_thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let digits = (v.round().abs() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v.round() < 0.0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: u32, tcp: f64, tx: f64, p50: f64, p99: f64) -> Sample {
        Sample {
            round,
            tcp_gbps: tcp,
            rr: RrResult {
                transactions: (tx * 5.0) as u64,
                tx_per_sec: tx,
                p50_us: p50,
                p99_us: p99,
            },
        }
    }

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(0.0), "0");
        assert_eq!(group_thousands(999.4), "999");
        assert_eq!(group_thousands(1000.0), "1,000");
        assert_eq!(group_thousands(60150.4), "60,150");
        assert_eq!(group_thousands(1234567.0), "1,234,567");
        assert_eq!(group_thousands(-1234.0), "-1,234");
        assert_eq!(group_thousands(f64::NAN), "-");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(50.0, 0.0), None);
        assert_eq!(format_ratio(Some(0.834)), "0.83");
        assert_eq!(format_ratio(Some(1.0)), "1.00");
        assert_eq!(format_ratio(None), "-");
    }

    #[test]
    fn summary_takes_medians() {
        let s = SetupSummary::from_samples(
            "bare veth",
            vec![
                sample(1, 40.0, 60000.0, 16.0, 30.0),
                sample(2, 44.0, 58000.0, 17.0, 25.0),
                sample(3, 42.0, 61000.0, 15.0, 40.0),
            ],
        );
        assert_eq!(s.tcp_gbps, 42.0);
        assert_eq!(s.rr_tx_per_sec, 60000.0);
        assert_eq!(s.p50_us, 16.0);
        assert_eq!(s.p99_us, 30.0);
        assert_eq!(s.samples.len(), 3);
    }

    #[test]
    fn table_with_ratios_to_ceiling() {
        let veth =
            SetupSummary::from_samples("bare veth", vec![sample(1, 40.0, 60150.0, 16.1, 30.0)]);
        let br =
            SetupSummary::from_samples("bridge CNI", vec![sample(1, 30.0, 50162.0, 19.5, 35.25)]);
        let r = Report::new(1, 5.0, 1, "bare veth", vec![veth, br]);
        assert_eq!(
            r.setups[1].rr_ratio.map(|x| (x * 100.0).round()),
            Some(83.0)
        );
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "pod-to-pod, 1 round, medians (client and server pinned to CPU 1)"
        );
        assert_eq!(
            lines[1],
            "setup              TCP Gbit/s   ratio   RR tx/s   ratio   p50 us   p99 us"
        );
        assert_eq!(
            lines[2],
            "bare veth          40.00        1.00    60,150    1.00    16.1     30.0"
        );
        assert_eq!(
            lines[3],
            "bridge CNI         30.00        0.75    50,162    0.83    19.5     35.2"
        );
    }

    #[test]
    fn table_without_ceiling_shows_dashes() {
        let p = SetupSummary::from_samples("plexus", vec![sample(1, 38.0, 58000.0, 16.5, 31.0)]);
        let r = Report::new(2, 5.0, 1, "bare veth", vec![p]);
        let t = r.table();
        assert!(t.starts_with("pod-to-pod, 2 rounds,"));
        assert!(t
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("plexus             38.00        -       58,000    -"));
    }
}
