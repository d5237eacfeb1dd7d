//! Server CPU and RSS from /proc, core business (noise), system-wide busy time and the load
//! average.

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
    /// Busy seconds of all cores during the measured phase (/proc/stat: user, nice, system,
    /// irq, softirq, steal), less the CPU time of every other process (see [`others_cpu`]).
    pub(crate) sys_busy: f64,
    /// Wall seconds of the measured phase.
    pub(crate) wall: f64,
    /// Relayed packets of the measured phase (2 per round trip that came back).
    pub(crate) relayed: f64,
    /// Busy share of the generator's core (1) during the measured phase, whatever ran there
    /// (the generator, softirq work charged to it, anything else).
    pub(crate) gen_core: f64,
    /// System CPU µs per relayed packet: (`sys_busy` − a generator-only run's at the same
    /// rate, per second) ÷ relayed packets per second. NaN until that baseline ran.
    pub(crate) sys_us_per_packet: f64,
    /// The kernel fast path's relayed_to_peer / relayed_to_client growth over the run
    /// (warmup, measured phase and drain; turnstone-kernel only).
    pub(crate) kernel_relayed: Option<(u64, u64)>,
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

/// Busy seconds of all cores together from /proc/stat (the `cpu` line).
pub(crate) fn all_busy() -> f64 {
    busy_of("cpu ")
}

/// Busy seconds of one core from /proc/stat (user, nice, system, irq, softirq, steal).
pub(crate) fn core_busy(core: usize) -> f64 {
    busy_of(&format!("cpu{core} "))
}

fn busy_of(prefix: &str) -> f64 {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(prefix))?.to_owned();
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

/// utime + stime seconds of every process but `ours` (the server and this one), keyed by PID.
/// ksoftirqd threads are left out too: the softirq work they pick up on a busy core is this
/// benchmark's packets. Subtracting their growth from all-core busy time removes other
/// people's builds from a system-wide figure. Processes that exit between two readings are
/// missed (their time after the first reading counts as this benchmark's), so a noisy machine
/// still shows, only less.
pub(crate) fn others_cpu(ours: &[u32]) -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if ours.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat.contains("(ksoftirqd/") {
            continue;
        }
        out.insert(pid, stat_cpu(&stat));
    }
    out
}

/// CPU seconds other processes used between two [`others_cpu`] readings (a process new in the
/// second counts whole).
pub(crate) fn others_delta(
    a: &std::collections::HashMap<u32, f64>,
    b: &std::collections::HashMap<u32, f64>,
) -> f64 {
    b.iter()
        .map(|(pid, t)| (t - a.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// /proc/PID/stat utime + stime (fields 14 and 15) in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    stat_cpu(&stat)
}

fn stat_cpu(stat: &str) -> f64 {
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
