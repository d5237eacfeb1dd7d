//! Server CPU and RSS from /proc, core business (noise) and the load average.

use std::time::Duration;

use crate::procs::Proc;

/// One traffic run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) sent_pps: f64,
    pub(crate) delivered_pps: f64,
    pub(crate) loss_pct: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Server CPU µs per relayed packet (see `CPU_DEFINITION`).
    pub(crate) cpu_us_per_packet: f64,
    /// Server CPU seconds per wall second of the measured phase.
    pub(crate) utilisation: f64,
    pub(crate) rss_kib: u64,
    /// CPU share other processes took on the server's core (0) and the generator's (1)
    /// during the measured phase: a sign of a noisy machine.
    pub(crate) foreign: [f64; 2],
}

impl Sample {
    pub(crate) fn noise(&self) -> f64 {
        self.foreign[0].max(self.foreign[1])
    }
}

/// CPU % of each server idling for 2 s, e.g. "forwarder 0.0%, turnstone 0.5%".
pub(crate) fn idle_cpu(servers: &[Proc]) -> String {
    let before: Vec<f64> = servers.iter().map(|s| cpu_secs(s.pid())).collect();
    std::thread::sleep(Duration::from_secs(2));
    let idle: Vec<String> = servers
        .iter()
        .zip(before)
        .map(|(s, b)| format!("{} {:.1}%", s.kind.name(), (cpu_secs(s.pid()) - b) * 50.0))
        .collect();
    println!("compare: idle CPU {}", idle.join(", "));
    idle.join(", ")
}

/// Busy seconds of one core from /proc/stat (user, nice, system, irq, softirq, steal).
pub(crate) fn core_busy(core: usize) -> f64 {
    let prefix = format!("cpu{core} ");
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(&prefix))?.to_owned();
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum())
        })
        .unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// /proc/PID/stat utime + stime (fields 14 and 15) in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = clock_ticks();
    // After ')' comes field 3 (state), so field 14 is index 11.
    (ticks(11) + ticks(12)) as f64 / hz
}

/// /proc/PID/status VmRSS in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
