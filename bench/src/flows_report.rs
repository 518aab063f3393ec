//! The `flows` benchmark's results: observer throughput, and request/response rate and latency
//! per monitor level with ratios to monitoring off; medians, the printed tables and JSON.

use serde::Serialize;

use crate::{
    report::{columns, format_ratio, group_thousands, ratio},
    rr::RrResult,
    stats::median,
    synthetic::Mix,
};

/// Timings of one per-event path over the whole synthetic trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathTiming {
    /// What was timed, as printed.
    pub path: String,
    /// Nanoseconds per event of every run.
    pub ns_per_event_runs: Vec<f64>,
    /// Median of `ns_per_event_runs`.
    pub ns_per_event: f64,
    /// Events per second at the median.
    pub events_per_sec: f64,
}

impl PathTiming {
    /// The median of `runs` (nanoseconds per event; must not be empty).
    pub fn from_runs(path: &str, runs: Vec<f64>) -> Self {
        let ns = median(&runs).unwrap_or(f64::NAN);
        Self {
            path: path.to_string(),
            ns_per_event_runs: runs,
            ns_per_event: ns,
            events_per_sec: 1e9 / ns,
        }
    }
}

/// Observer throughput on one core.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObserverResult {
    /// Events in the synthetic trace.
    pub events: usize,
    /// Local endpoints in the directory.
    pub endpoints: usize,
    /// The trace's mix.
    pub mix: Mix,
    /// Runs over the trace per path.
    pub runs: u32,
    /// The CPU the thread was pinned to.
    pub cpu: u32,
    /// The paths timed: the agent's full per-event path first.
    pub paths: Vec<PathTiming>,
}

impl ObserverResult {
    /// The observer table.
    pub fn table(&self) -> String {
        let pct = |x: u64| 100.0 * x as f64 / self.events.max(1) as f64;
        let mut out = format!(
            "observer throughput: {} events ({:.0}% trace, {:.1}% drop, {:.1}% policy verdict; \
             {} connections) between {} endpoints, one thread pinned to CPU {}, median of {} runs\n",
            group_thousands(self.events as f64),
            pct(self.mix.traces),
            pct(self.mix.drops),
            pct(self.mix.verdicts),
            group_thousands(self.mix.connections as f64),
            self.endpoints,
            self.cpu,
            self.runs,
        );
        let rows: Vec<Vec<String>> = self
            .paths
            .iter()
            .map(|p| {
                vec![
                    p.path.clone(),
                    group_thousands(p.events_per_sec),
                    format!("{:.0}", p.ns_per_event),
                ]
            })
            .collect();
        out.push_str(&columns(&["path", "events/s", "ns/event"], &rows));
        out
    }
}

/// The two request/response tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RrTest {
    /// One long-lived connection, one byte each way per transaction.
    Rr,
    /// A new connection per transaction.
    Crr,
}

impl RrTest {
    /// As printed.
    pub fn label(self) -> &'static str {
        match self {
            Self::Rr => "RR",
            Self::Crr => "CRR",
        }
    }
}

/// One round's measurement of one test at one monitor level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MonitorSample {
    /// Round number, from 1.
    pub round: u32,
    /// The client's result.
    pub rr: RrResult,
    /// Flows the agent's observer processed per second meanwhile (from its flow metrics).
    pub events_per_sec: Option<f64>,
    /// CPU time the agent used meanwhile, as a fraction of one CPU.
    pub agent_cpu: Option<f64>,
    /// Events the datapath could not queue meanwhile (ring buffer full).
    pub lost: Option<u64>,
}

/// One test at one monitor level over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorSummary {
    /// The test.
    pub test: RrTest,
    /// The monitor level's name: `off`, `aggregated`, `all`.
    pub monitor: String,
    /// Median transactions (or connections) per second.
    pub tx_per_sec: f64,
    /// `tx_per_sec` over monitoring off's.
    pub tx_ratio: Option<f64>,
    /// Median of the rounds' median latencies, microseconds.
    pub p50_us: f64,
    /// `p50_us` over monitoring off's.
    pub p50_ratio: Option<f64>,
    /// Median of the rounds' 99th-percentile latencies, microseconds.
    pub p99_us: f64,
    /// `p99_us` over monitoring off's.
    pub p99_ratio: Option<f64>,
    /// Median events (flows) per second the observer processed.
    pub events_per_sec: Option<f64>,
    /// Median agent CPU use, percent of one CPU.
    pub agent_cpu_percent: Option<f64>,
    /// Events lost over all rounds.
    pub lost: Option<u64>,
    /// Every round's sample.
    pub samples: Vec<MonitorSample>,
}

impl MonitorSummary {
    /// Medians of `samples` (which must not be empty); ratios are left for
    /// [`MonitoringResult::new`].
    pub fn from_samples(test: RrTest, monitor: &str, samples: Vec<MonitorSample>) -> Self {
        let med = |f: &dyn Fn(&MonitorSample) -> f64| {
            median(&samples.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let med_opt = |f: &dyn Fn(&MonitorSample) -> Option<f64>| {
            let v: Vec<f64> = samples.iter().filter_map(f).collect();
            median(&v)
        };
        let lost = samples
            .iter()
            .map(|s| s.lost)
            .sum::<Option<u64>>()
            .filter(|_| !samples.is_empty());
        Self {
            test,
            monitor: monitor.to_string(),
            tx_per_sec: med(&|s| s.rr.tx_per_sec),
            tx_ratio: None,
            p50_us: med(&|s| s.rr.p50_us),
            p50_ratio: None,
            p99_us: med(&|s| s.rr.p99_us),
            p99_ratio: None,
            events_per_sec: med_opt(&|s| s.events_per_sec),
            agent_cpu_percent: med_opt(&|s| s.agent_cpu.map(|c| c * 100.0)),
            lost,
            samples,
        }
    }
}

/// The cost of monitoring on pod-to-pod request/response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitoringResult {
    /// Rounds run.
    pub rounds: u32,
    /// Seconds per measurement.
    pub seconds: f64,
    /// The CPU client and server were pinned to.
    pub cpu: u32,
    /// One row per test and level, in table order.
    pub rows: Vec<MonitorSummary>,
}

/// The level every ratio is relative to.
pub const BASELINE: &str = "off";

impl MonitoringResult {
    /// Fills in each row's ratios to the `off` row of the same test.
    pub fn new(rounds: u32, seconds: f64, cpu: u32, mut rows: Vec<MonitorSummary>) -> Self {
        let bases: Vec<(RrTest, f64, f64, f64)> = rows
            .iter()
            .filter(|r| r.monitor == BASELINE)
            .map(|r| (r.test, r.tx_per_sec, r.p50_us, r.p99_us))
            .collect();
        for r in &mut rows {
            if let Some(&(_, tx, p50, p99)) = bases.iter().find(|b| b.0 == r.test) {
                r.tx_ratio = ratio(r.tx_per_sec, tx);
                r.p50_ratio = ratio(r.p50_us, p50);
                r.p99_ratio = ratio(r.p99_us, p99);
            }
        }
        Self {
            rounds,
            seconds,
            cpu,
            rows,
        }
    }

    /// The monitoring table.
    pub fn table(&self) -> String {
        let rounds = if self.rounds == 1 { "round" } else { "rounds" };
        let mut out = format!(
            "cost of monitoring, pod-to-pod in a Plexus lab, {} {rounds} of {} s, medians \
             (client and server pinned to CPU {}; ratios to monitor off)\n",
            self.rounds, self.seconds, self.cpu
        );
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.test.label().to_string(),
                    r.monitor.clone(),
                    group_thousands(r.tx_per_sec),
                    format_ratio(r.tx_ratio),
                    format!("{:.1}", r.p50_us),
                    format_ratio(r.p50_ratio),
                    format!("{:.1}", r.p99_us),
                    format_ratio(r.p99_ratio),
                    opt(r.events_per_sec, &group_thousands),
                    opt(r.agent_cpu_percent, &|c| format!("{c:.1}")),
                    r.lost.map_or("-".to_string(), |l| l.to_string()),
                ]
            })
            .collect();
        out.push_str(&columns(
            &[
                "test",
                "monitor",
                "tx/s",
                "ratio",
                "p50 us",
                "ratio",
                "p99 us",
                "ratio",
                "events/s",
                "agent CPU %",
                "lost",
            ],
            &rows,
        ));
        out
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowsReport {
    /// Observer throughput, when measured.
    pub observer: Option<ObserverResult>,
    /// The cost of monitoring, when measured.
    pub monitoring: Option<MonitoringResult>,
    /// Remarks printed under the tables.
    pub notes: Vec<String>,
}

impl FlowsReport {
    /// Both tables and the notes.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if let Some(o) = &self.observer {
            out.push_str(&o.table());
        }
        if let Some(m) = &self.monitoring {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&m.table());
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: u32, tx: f64, p50: f64, p99: f64) -> MonitorSample {
        MonitorSample {
            round,
            rr: RrResult {
                transactions: (tx * 5.0) as u64,
                tx_per_sec: tx,
                p50_us: p50,
                p99_us: p99,
            },
            events_per_sec: Some(tx * 2.0),
            agent_cpu: Some(0.05),
            lost: Some(0),
        }
    }

    #[test]
    fn ratios_to_off_per_test() {
        let rows = vec![
            MonitorSummary::from_samples(RrTest::Rr, "off", vec![sample(1, 40_000.0, 24.0, 40.0)]),
            MonitorSummary::from_samples(
                RrTest::Rr,
                "all",
                vec![
                    sample(1, 30_000.0, 32.0, 60.0),
                    sample(2, 36_000.0, 28.0, 50.0),
                    sample(3, 20_000.0, 50.0, 90.0),
                ],
            ),
            MonitorSummary::from_samples(
                RrTest::Crr,
                "all",
                vec![sample(1, 5_000.0, 190.0, 400.0)],
            ),
        ];
        let m = MonitoringResult::new(3, 5.0, 1, rows);
        assert_eq!(m.rows[0].tx_ratio, Some(1.0));
        assert_eq!(m.rows[1].tx_per_sec, 30_000.0);
        assert_eq!(m.rows[1].tx_ratio, Some(0.75));
        assert_eq!(m.rows[1].p50_ratio, Some(32.0 / 24.0));
        assert_eq!(m.rows[1].agent_cpu_percent, Some(5.0));
        assert_eq!(m.rows[1].lost, Some(0));
        // No CRR baseline: no ratio.
        assert_eq!(m.rows[2].tx_ratio, None);
        let t = m.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("cost of monitoring, pod-to-pod in a Plexus lab, 3 rounds"));
        assert!(lines[1].starts_with("test   monitor   tx/s     ratio   p50 us   ratio"));
        assert!(lines[2].starts_with("RR     off       40,000   1.00    24.0     1.00"));
        assert!(lines[3].starts_with("RR     all       30,000   0.75    32.0     1.33"));
        assert!(lines[4].starts_with("CRR    all       5,000    -"));
    }

    #[test]
    fn observer_table() {
        let o = ObserverResult {
            events: 1_000,
            endpoints: 200,
            mix: Mix {
                traces: 900,
                drops: 20,
                verdicts: 80,
                connections: 70,
            },
            runs: 3,
            cpu: 1,
            paths: vec![PathTiming::from_runs(
                "agent path",
                vec![900.0, 1000.0, 1100.0],
            )],
        };
        assert_eq!(o.paths[0].events_per_sec, 1e6);
        let t = o.table();
        assert!(t.starts_with("observer throughput: 1,000 events (90% trace, 2.0% drop, 8.0%"));
        assert!(t.contains("\npath         events/s    ns/event\nagent path   1,000,000   1000\n"));
    }
}
