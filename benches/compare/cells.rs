//! The measured cells: traffic runs, control-plane churn and memory per allocation.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use turnstone::loadgen::{self, Churn, Credentials, LoadConfig, LoadReport, Stage};

use crate::cli::{Cell, Plan};
use crate::measure::{Sample, core_busy, cpu_secs, rss_kib};
use crate::procs::{Proc, start};
use crate::{CHURN_POOL, Kind, NOISY, NOISY_RETRIES, PASSWORD, SATURATION_IN_FLIGHT, SECRET, USER};

fn static_user() -> Credentials {
    Credentials::Static {
        user: USER.into(),
        password: PASSWORD.into(),
    }
}

/// Runs with at least this many allocations wait [`REUSE_PAUSE`] first: their thousands of
/// client ports are likely to be reused by the next run, and coturn answers an Allocate on a
/// 5-tuple it deleted moments ago with 437 for about a second.
const REUSE_PAUSE_FROM: usize = 1000;
const REUSE_PAUSE: Duration = Duration::from_secs(3);

fn traffic_run(server: &Proc, cell: &Cell, plan: &Plan) -> Result<Sample> {
    if cell.allocations >= REUSE_PAUSE_FROM {
        std::thread::sleep(REUSE_PAUSE);
    }
    let mut config = LoadConfig::new(server.addr, static_user());
    config.raw = server.kind == Kind::Forwarder;
    config.allocations = cell.allocations;
    config.payload = cell.payload;
    config.rate = cell.rate;
    config.window = (SATURATION_IN_FLIGHT / cell.allocations).max(1);
    config.duration = plan.duration;
    config.warmup = plan.warmup;
    let pid = server.pid();
    let me = std::process::id();
    let mut rss = 0;
    // (time, server CPU, generator CPU, core 0 busy, core 1 busy) at both edges.
    let snap = || {
        (
            Instant::now(),
            cpu_secs(pid),
            cpu_secs(me),
            core_busy(0),
            core_busy(1),
        )
    };
    let (mut a, mut b) = (snap(), snap());
    let r: LoadReport = loadgen::run_with(&config, &mut |stage| match stage {
        Stage::Ready => rss = rss_kib(pid),
        Stage::Measuring => a = snap(),
        Stage::Measured => b = snap(),
    })
    .with_context(|| format!("load against {}", server.kind.name()))?;
    let cpu = b.1 - a.1;
    let wall = b.0.duration_since(a.0).as_secs_f64().max(1e-9);
    let foreign = [
        ((b.3 - a.3) - cpu) / wall,
        ((b.4 - a.4) - (b.2 - a.2)) / wall,
    ]
    .map(|f| f.max(0.0));
    let relayed = 2.0 * r.received as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(Sample {
        sent_pps: r.sent_per_sec(),
        delivered_pps: r.delivered_per_sec(),
        loss_pct: r.loss_percent(),
        p50_us: us(r.rtt.p50),
        p99_us: us(r.rtt.p99),
        cpu_us_per_packet: if relayed > 0.0 {
            cpu * 1e6 / relayed
        } else {
            f64::NAN
        },
        utilisation: cpu / r.elapsed.as_secs_f64().max(1e-9),
        rss_kib: rss,
        foreign,
    })
}

/// samples[cell][kind] = one sample per round.
pub(crate) type Traffic = Vec<Vec<Vec<Sample>>>;

/// Runs `cells` against every server, `plan.rounds` times, alternating the servers' order.
pub(crate) fn run_traffic(plan: &Plan, cells: &[Cell], servers: &[Proc]) -> Result<Traffic> {
    let mut all: Traffic = vec![vec![Vec::new(); servers.len()]; cells.len()];
    // Reruns of noisy runs, at most a quarter of the planned runs (bounds the total time).
    let mut reruns_left = (plan.rounds * cells.len() * servers.len()).div_ceil(4);
    for round in 0..plan.rounds {
        for (c, cell) in cells.iter().enumerate() {
            // Alternate the order so no server always runs first (or right after another).
            for k in 0..servers.len() {
                let k = (k + round + c) % servers.len();
                let mut s = traffic_run(&servers[k], cell, plan)?;
                for _ in 0..NOISY_RETRIES {
                    if s.noise() <= NOISY || reruns_left == 0 {
                        break;
                    }
                    reruns_left -= 1;
                    println!(
                        "  other processes took {:.0}% / {:.0}% of cores 0 / 1: run again",
                        s.foreign[0] * 100.0,
                        s.foreign[1] * 100.0
                    );
                    let again = traffic_run(&servers[k], cell, plan)?;
                    if again.noise() < s.noise() {
                        s = again;
                    }
                }
                println!(
                    "round {} {:>5} B {:>5} allocs {:>10} {:>9}: {:>8.0} pps, loss {:.3}%, \
                     p50 {:.0} µs, p99 {:.0} µs, {:.2} µs/pkt, CPU {:.0}%, foreign {:.0}%/{:.0}%",
                    round + 1,
                    cell.payload,
                    cell.allocations,
                    cell.load(),
                    servers[k].kind.name(),
                    s.delivered_pps,
                    s.loss_pct,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_packet,
                    s.utilisation * 100.0,
                    s.foreign[0] * 100.0,
                    s.foreign[1] * 100.0
                );
                all[c][k].push(s);
            }
        }
    }
    Ok(all)
}

/// The cell of the p99 target: 100-byte payloads over 10 allocations at half the rate coturn
/// delivered at saturation in `traffic` (None without coturn or that saturation cell).
pub(crate) fn half_coturn_max_cell(
    cells: &[Cell],
    servers: &[Proc],
    traffic: &Traffic,
) -> Option<Cell> {
    let coturn = servers.iter().position(|s| s.kind == Kind::Coturn)?;
    let base = cells
        .iter()
        .position(|c| c.payload == 100 && c.allocations == 10 && c.rate == 0)?;
    let mut pps: Vec<f64> = traffic[base][coturn]
        .iter()
        .map(|s| s.delivered_pps)
        .collect();
    pps.sort_by(f64::total_cmp);
    let median = *pps.get(pps.len() / 2)?;
    let rate = ((median / 2.0 / 1000.0).round() as u64).max(1) * 1000;
    Some(Cell {
        payload: 100,
        allocations: 10,
        rate,
        half_coturn_max: true,
    })
}

pub(crate) struct ControlRow {
    pub(crate) server: &'static str,
    pub(crate) credentials: &'static str,
    pub(crate) us_per_cycle: Vec<f64>,
    pub(crate) cycles_per_sec: Vec<f64>,
    pub(crate) failures: u64,
    /// What the failures were, e.g. "4032 Allocate (last error 437)".
    pub(crate) failure_kinds: String,
}

pub(crate) fn run_control(
    plan: &Plan,
    servers: &[Proc],
    tmp: &Path,
    coturn: bool,
) -> Result<Vec<ControlRow>> {
    if plan.churn_cycles == 0 {
        return Ok(Vec::new());
    }
    let rest_coturn = if coturn {
        Some(start(Kind::Coturn, tmp, true)?)
    } else {
        None
    };
    let rest = Credentials::Rest {
        secret: SECRET.into(),
    };
    let mut targets: Vec<(&Proc, &'static str, Credentials)> = Vec::new();
    for s in servers.iter().filter(|s| s.kind == Kind::Turnstone) {
        targets.push((s, "static", static_user()));
        targets.push((s, "REST", rest.clone()));
    }
    for s in servers.iter().filter(|s| s.kind == Kind::Coturn) {
        targets.push((s, "static", static_user()));
    }
    if let Some(s) = &rest_coturn {
        targets.push((s, "REST", rest.clone()));
    }
    let mut rows: Vec<ControlRow> = targets
        .iter()
        .map(|(s, c, _)| ControlRow {
            server: s.kind.name(),
            credentials: c,
            us_per_cycle: Vec::new(),
            cycles_per_sec: Vec::new(),
            failures: 0,
            failure_kinds: String::new(),
        })
        .collect();
    for round in 0..plan.rounds {
        for i in 0..targets.len() {
            let i = (i + round) % targets.len();
            let (server, _, credentials) = &targets[i];
            let mut churn = Churn::new(server.addr, credentials, CHURN_POOL)?;
            let cpu0 = cpu_secs(server.pid());
            let r = churn.run(plan.churn_cycles, Duration::from_secs(30))?;
            let cpu = cpu_secs(server.pid()) - cpu0;
            let row = &mut rows[i];
            let us = cpu * 1e6 / r.cycles.max(1) as f64;
            println!(
                "round {} control {:>9} {:>6}: {:.1} µs CPU per cycle, {:.0} cycles/s, {} stale \
                 nonces; failures: {} challenge, {} Allocate, {} Refresh(0), {} timeouts, last \
                 error {:?}",
                round + 1,
                row.server,
                row.credentials,
                us,
                r.cycles_per_sec(),
                r.stale_nonces,
                r.challenge_failures,
                r.allocate_failures,
                r.delete_failures,
                r.timeouts,
                r.last_error
            );
            if r.failures() > 0 {
                row.failure_kinds = format!(
                    "({} challenge, {} Allocate, {} Refresh(0); last error {})",
                    r.challenge_failures,
                    r.allocate_failures,
                    r.delete_failures,
                    r.last_error
                        .map_or("none: timeouts".into(), |c| c.to_string())
                );
            }
            row.us_per_cycle.push(us);
            row.cycles_per_sec.push(r.cycles_per_sec());
            row.failures += r.failures();
        }
    }
    Ok(rows)
}

pub(crate) struct MemoryRow {
    pub(crate) server: &'static str,
    pub(crate) allocations: usize,
    pub(crate) baseline_kib: u64,
    pub(crate) rss_kib: u64,
}

/// Fresh servers (no allocator memory left over from earlier runs): RSS idle before, then
/// with N allocations holding one permission and one channel each.
pub(crate) fn run_memory(plan: &Plan, tmp: &Path, coturn: bool) -> Result<Vec<MemoryRow>> {
    let mut rows = Vec::new();
    let mut kinds = vec![Kind::Turnstone];
    if plan.memory_counts.is_empty() {
        kinds.clear();
    }
    if coturn && !kinds.is_empty() {
        kinds.push(Kind::Coturn);
    }
    for kind in kinds {
        let server = start(kind, tmp, false)?;
        std::thread::sleep(Duration::from_millis(500));
        let baseline = rss_kib(server.pid());
        for &n in &plan.memory_counts {
            // Let coturn forget the 5-tuples of the previous run (about a second).
            std::thread::sleep(Duration::from_secs(2));
            let mut config = LoadConfig::new(server.addr, static_user());
            config.allocations = n;
            config.rate = 1000;
            config.duration = Duration::from_millis(100);
            let pid = server.pid();
            let (mut rss, mut fds) = (0, 0);
            loadgen::run_with(&config, &mut |stage| {
                if stage == Stage::Ready {
                    std::thread::sleep(Duration::from_millis(500));
                    rss = rss_kib(pid);
                    fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
                }
            })
            .with_context(|| format!("{n} allocations on {}", kind.name()))?;
            println!(
                "memory {:>9}: {n} allocations ({fds} fds), RSS {} KiB over a {} KiB baseline: \
                 {:.0} B each",
                kind.name(),
                rss,
                baseline,
                (rss.saturating_sub(baseline) * 1024) as f64 / n as f64
            );
            rows.push(MemoryRow {
                server: kind.name(),
                allocations: n,
                baseline_kib: baseline,
                rss_kib: rss,
            });
        }
    }
    Ok(rows)
}
