//! How busy one CPU is, from two readings of `/proc/stat`: the benchmark notes when something
//! else was using the CPU it pins client and server to.

use std::{fs, thread, time::Duration};

/// The fraction of `window` that CPU `cpu` spent busy, from two readings of `/proc/stat`
/// (`None` when it cannot be read).
pub fn busy(cpu: u32, window: Duration) -> Option<f64> {
    let read = || CpuTimes::parse(&fs::read_to_string("/proc/stat").ok()?, cpu);
    let before = read()?;
    thread::sleep(window);
    Some(before.busy_until(&read()?))
}

/// How long the pinned CPU is watched before a run, to tell whether other work is on it.
pub const BUSY_SAMPLE: Duration = Duration::from_secs(1);
/// Busy at least this fraction of [`BUSY_SAMPLE`] is worth a note under the results.
pub const BUSY_CPU: f64 = 0.1;

/// Watches CPU `cpu` for [`BUSY_SAMPLE`] and returns a note for the results when other work
/// kept it at least [`BUSY_CPU`] busy just before `what` (e.g. `the run`).
pub fn busy_note(cpu: u32, what: &str) -> Option<String> {
    let b = busy(cpu, BUSY_SAMPLE).filter(|b| *b >= BUSY_CPU)?;
    Some(format!(
        "CPU {cpu} was {:.0}% busy with other work just before {what}: expect noise",
        b * 100.0
    ))
}

/// Cumulative time counters of one CPU, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Idle and I/O-wait time.
    pub idle: u64,
    /// All time.
    pub total: u64,
}

impl CpuTimes {
    /// The counters of CPU `cpu` from the text of `/proc/stat` (its `cpuN ...` line).
    pub fn parse(stat: &str, cpu: u32) -> Option<Self> {
        let label = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice, already in user].
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let total = fields.iter().take(8).sum();
        Some(Self { idle, total })
    }

    /// The fraction of time between `self` and the later reading `after` that the CPU was busy
    /// (0.0 when no time passed).
    pub fn busy_until(&self, after: &CpuTimes) -> f64 {
        let total = after.total.saturating_sub(self.total);
        let idle = after.idle.saturating_sub(self.idle);
        if total == 0 {
            return 0.0;
        }
        1.0 - idle.min(total) as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 10 180 0 0 0 0 0 0
cpu0 5 0 5 90 0 0 0 0 0 0
cpu1 5 0 5 80 10 0 0 0 0 0
intr 12345
";

    #[test]
    fn parses_one_cpu() {
        assert_eq!(
            CpuTimes::parse(STAT, 1),
            Some(CpuTimes {
                idle: 90,
                total: 100
            })
        );
        assert_eq!(CpuTimes::parse(STAT, 2), None);
        assert_eq!(CpuTimes::parse("cpu1 x y", 1), None);
    }

    #[test]
    fn busy_fraction() {
        let a = CpuTimes {
            idle: 90,
            total: 100,
        };
        let b = CpuTimes {
            idle: 165,
            total: 200,
        };
        assert!((a.busy_until(&b) - 0.25).abs() < 1e-9);
        assert_eq!(a.busy_until(&a), 0.0);
    }
}
