//! The measured cells: traffic runs, control-plane churn and memory per allocation.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use turnstone::loadgen::{self, Churn, Credentials, LoadConfig, LoadReport, LoadTransport, Stage};

use crate::cli::{Cell, Plan};
use crate::measure::{Sample, all_busy, core_busy, cpu_secs, others_cpu, others_delta, rss_kib};
use crate::procs::{FastPathEvents, Proc, self_signed, start, start_streams};
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

/// A traffic run's load: a server, or nothing (the generator alone, `loadgen` direct mode).
#[derive(Clone, Copy)]
enum Target<'a> {
    Server(&'a Proc),
    Alone,
}

/// Waits for the fast path's once-a-second publication, then reads its counters.
fn settled_events(server: &Proc) -> Result<FastPathEvents> {
    std::thread::sleep(PUBLISH_WAIT);
    server.fast_path_events()
}

/// Turnstone publishes its metrics once a second.
const PUBLISH_WAIT: Duration = Duration::from_millis(1100);

fn traffic_run(target: Target<'_>, cell: &Cell, rate: u64, plan: &Plan) -> Result<Sample> {
    if cell.allocations >= REUSE_PAUSE_FROM {
        std::thread::sleep(REUSE_PAUSE);
    }
    let (addr, kind, pid) = match target {
        Target::Server(p) => (p.addr_for(cell.transport)?, Some(p.kind), Some(p.pid())),
        Target::Alone => ("127.0.0.1:9".parse()?, None, None),
    };
    let mut config = LoadConfig::new(addr, static_user());
    config.transport = cell.transport;
    // Both servers present the harness's self-signed certificate.
    config.tls_insecure = cell.transport == LoadTransport::Tls;
    config.raw = kind == Some(Kind::Forwarder);
    config.direct = kind.is_none();
    // Sleeping between sends, as real clients do: a spinning generator keeps its core busy
    // whatever happens there, and system-wide busy time would not see the kernel's work.
    config.sleep = true;
    config.allocations = cell.allocations;
    config.payload = cell.payload;
    config.rate = rate;
    config.window = (SATURATION_IN_FLIGHT / cell.allocations).max(1);
    config.duration = plan.duration;
    config.warmup = plan.warmup;
    let me = std::process::id();
    let ours: Vec<u32> = pid.into_iter().chain([me]).collect();
    let server_cpu = || pid.map_or(0.0, cpu_secs);
    let mut rss = 0;
    // (time, server CPU, generator CPU, core 0 busy, core 1 busy, all cores busy, other
    // processes' CPU) at both edges.
    let snap = || {
        (
            Instant::now(),
            server_cpu(),
            cpu_secs(me),
            core_busy(0),
            core_busy(1),
            all_busy(),
            others_cpu(&ours),
        )
    };
    let (mut a, mut b) = (snap(), snap());
    let kernel = kind == Some(Kind::TurnstoneKernel);
    let mut events: [Result<FastPathEvents>; 2] =
        [Ok(FastPathEvents::default()), Ok(FastPathEvents::default())];
    let r: LoadReport = loadgen::run_with(&config, &mut |stage| match stage {
        Stage::Ready => {
            if let Target::Server(p) = target {
                rss = rss_kib(p.pid());
                if kernel {
                    events[0] = settled_events(p);
                }
            }
        }
        Stage::Measuring => a = snap(),
        Stage::Measured => {
            b = snap();
            if let Target::Server(p) = target {
                events[1] = if kernel {
                    settled_events(p)
                } else {
                    p.fast_path_events()
                };
            }
        }
    })
    .with_context(|| format!("load against {}", kind.map_or("nothing", Kind::name)))?;
    let cpu = b.1 - a.1;
    let wall = b.0.duration_since(a.0).as_secs_f64().max(1e-9);
    let foreign = [
        ((b.3 - a.3) - cpu) / wall,
        ((b.4 - a.4) - (b.2 - a.2)) / wall,
    ]
    .map(|f| f.max(0.0));
    let relayed = 2.0 * r.received as f64;
    let [before, after] = events;
    let (before, after) = (before?, after?);
    let kernel_relayed = match kind {
        Some(Kind::TurnstoneKernel) => {
            let d = (
                after.to_peer.saturating_sub(before.to_peer),
                after.to_client.saturating_sub(before.to_client),
            );
            // Every round trip that came back in the measured phase went through the kernel
            // both ways (the counters also hold warmup and drain, so they may be higher).
            let floor = (0.9 * r.received as f64) as u64;
            if d.0 < floor || d.1 < floor {
                bail!(
                    "turnstone-kernel relayed only {} packets to peers and {} to clients in the \
                     kernel, for {} round trips measured: the kernel fast path did not carry \
                     the run",
                    d.0,
                    d.1,
                    r.received
                );
            }
            Some(d)
        }
        Some(Kind::Turnstone) if after.active || after.to_peer > 0 || after.to_client > 0 => {
            bail!("turnstone (userspace) relayed in the kernel: {after:?}")
        }
        _ => None,
    };
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
        sys_busy: (b.5 - a.5) - others_delta(&a.6, &b.6),
        wall,
        relayed,
        gen_core: (b.4 - a.4) / wall,
        sys_us_per_packet: f64::NAN,
        kernel_relayed,
    })
}

/// samples[cell][kind] = one sample per round.
pub(crate) type Traffic = Vec<Vec<Vec<Sample>>>;

/// What a traffic phase measured: the samples, and per cell the generator alone.
pub(crate) struct TrafficResults {
    pub(crate) samples: Traffic,
    /// Per cell, per round: the generator alone in a closed loop (direct mode, the same
    /// window): how many round trips per second it manages with no relay at all. Saturation
    /// cells only.
    pub(crate) alone_max: Vec<Vec<Sample>>,
}

/// The always-running servers, or a kind started for each run (turnstone-kernel: its program
/// sits on `lo` while it runs and would tax every other run's packets).
pub(crate) struct Servers<'a> {
    pub(crate) running: &'a [Proc],
    pub(crate) kinds: &'a [Kind],
    pub(crate) tmp: &'a Path,
}

impl Servers<'_> {
    fn run(&self, kind: Kind, cell: &Cell, plan: &Plan) -> Result<Sample> {
        match self.running.iter().find(|p| p.kind == kind) {
            Some(p) => traffic_run(Target::Server(p), cell, cell.rate, plan),
            None => {
                let p = start(kind, self.tmp, false)?;
                traffic_run(Target::Server(&p), cell, cell.rate, plan)
            }
        }
    }
}

/// The generator alone at `rate` (rounded to 1k packets/s), cached per round.
type Baselines = HashMap<(usize, usize, u64), Sample>;

fn baseline<'a>(
    cache: &'a mut Baselines,
    cell: &Cell,
    rate: u64,
    plan: &Plan,
) -> Result<&'a Sample> {
    let key = (cell.payload, cell.allocations, rate);
    if let std::collections::hash_map::Entry::Vacant(slot) = cache.entry(key) {
        // As noisy runs are: the quietest of up to 1 + NOISY_RETRIES.
        let mut s = traffic_run(Target::Alone, cell, rate, plan)?;
        for _ in 0..NOISY_RETRIES {
            if s.noise() <= NOISY {
                break;
            }
            let again = traffic_run(Target::Alone, cell, rate, plan)?;
            if again.noise() < s.noise() {
                s = again;
            }
        }
        println!(
            "        generator alone {:>5} B {:>5} allocs at {:>4}k pps: {:.0} pps, system CPU \
             {:.0}% of a core, generator core {:.0}%",
            cell.payload,
            cell.allocations,
            rate / 1000,
            s.delivered_pps,
            s.sys_busy / s.wall * 100.0,
            s.gen_core * 100.0
        );
        slot.insert(s);
    }
    Ok(&cache[&key])
}

/// The rate a kind's run is compared at: the round trips per second that came back, in
/// steps of 1k (a fixed-rate cell within 2% of its rate counts as that rate).
fn baseline_rate(cell: &Cell, s: &Sample) -> u64 {
    if cell.rate > 0 && (s.delivered_pps - cell.rate as f64).abs() <= 0.02 * cell.rate as f64 {
        return cell.rate;
    }
    ((s.delivered_pps / 1000.0).round() as u64).max(1) * 1000
}

/// Runs `cells` against every server kind, `plan.rounds` times, alternating the kinds' order,
/// each followed by the generator alone at the rate it reached (system CPU per packet).
pub(crate) fn run_traffic(
    plan: &Plan,
    cells: &[Cell],
    servers: &Servers<'_>,
) -> Result<TrafficResults> {
    let kinds = servers.kinds;
    let mut all: Traffic = vec![vec![Vec::new(); kinds.len()]; cells.len()];
    let mut alone_max = vec![Vec::new(); cells.len()];
    // Reruns of noisy runs, at most a quarter of the planned runs (bounds the total time).
    let mut reruns_left = (plan.rounds * cells.len() * kinds.len()).div_ceil(4);
    for round in 0..plan.rounds {
        let mut baselines = Baselines::new();
        for (c, cell) in cells.iter().enumerate() {
            // Alternate the order so no server always runs first (or right after another).
            for k in 0..kinds.len() {
                let k = (k + round + c) % kinds.len();
                let kind = kinds[k];
                let mut s = quietest(&mut reruns_left, || servers.run(kind, cell, plan))?;
                let base = baseline(&mut baselines, cell, baseline_rate(cell, &s), plan)?;
                if s.relayed > 0.0 {
                    let extra = s.sys_busy / s.wall - base.sys_busy / base.wall;
                    s.sys_us_per_packet = extra * 1e6 / (s.relayed / s.wall);
                }
                println!(
                    "round {} {:>5} B {:>5} allocs {:>10} {:>16}: {:>8.0} pps, loss {:.3}%, \
                     p50 {:.0} µs, p99 {:.0} µs, {:.2} µs/pkt, CPU {:.0}%, system {:.2} µs/pkt, \
                     generator core {:.0}%, foreign {:.0}%/{:.0}%{}",
                    round + 1,
                    cell.payload,
                    cell.allocations,
                    cell.load(),
                    kind.name(),
                    s.delivered_pps,
                    s.loss_pct,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_packet,
                    s.utilisation * 100.0,
                    s.sys_us_per_packet,
                    s.gen_core * 100.0,
                    s.foreign[0] * 100.0,
                    s.foreign[1] * 100.0,
                    s.kernel_relayed.map_or(String::new(), |(p, c)| format!(
                        ", kernel relayed {p} to peers / {c} to clients"
                    )),
                );
                all[c][k].push(s);
            }
            if cell.rate == 0 {
                let s = traffic_run(Target::Alone, cell, 0, plan)?;
                println!(
                    "        generator alone {:>5} B {:>5} allocs, closed loop: {:.0} pps, \
                     generator core {:.0}%",
                    cell.payload,
                    cell.allocations,
                    s.delivered_pps,
                    s.gen_core * 100.0
                );
                alone_max[c].push(s);
            }
        }
    }
    Ok(TrafficResults {
        samples: all,
        alone_max,
    })
}

/// A run, and again up to [`NOISY_RETRIES`] times while other processes took more than
/// [`NOISY`] of core 0 or 1 and `reruns_left` allows: the quietest of them.
fn quietest(reruns_left: &mut usize, mut run: impl FnMut() -> Result<Sample>) -> Result<Sample> {
    let mut s = run()?;
    for _ in 0..NOISY_RETRIES {
        if s.noise() <= NOISY || *reruns_left == 0 {
            break;
        }
        *reruns_left -= 1;
        println!(
            "  other processes took {:.0}% / {:.0}% of cores 0 / 1: run again",
            s.foreign[0] * 100.0,
            s.foreign[1] * 100.0
        );
        let again = run()?;
        if again.noise() < s.noise() {
            s = again;
        }
    }
    Ok(s)
}

/// What the stream phase measured: samples[cell][kind], kinds as in `kinds`.
pub(crate) struct StreamResults {
    pub(crate) kinds: Vec<Kind>,
    pub(crate) samples: Traffic,
}

/// The stream cells (TCP and TLS clients) against Turnstone (userspace) and coturn, started
/// for this phase with TCP and TLS listeners, `plan.rounds` times with the order alternating
/// as in [`run_traffic`]. No system-wide figure: the generator-alone baseline it needs
/// (`loadgen` direct mode) has UDP clients only.
pub(crate) fn run_streams(plan: &Plan, tmp: &Path, coturn: bool) -> Result<StreamResults> {
    let mut kinds = vec![Kind::Turnstone];
    if coturn {
        kinds.push(Kind::Coturn);
    }
    let cells = &plan.streams;
    let mut all: Traffic = vec![vec![Vec::new(); kinds.len()]; cells.len()];
    if cells.is_empty() {
        return Ok(StreamResults {
            kinds,
            samples: all,
        });
    }
    let tls = self_signed(tmp)?;
    let servers: Vec<Proc> = kinds
        .iter()
        .map(|&k| start_streams(k, tmp, &tls))
        .collect::<Result<_>>()?;
    let mut reruns_left = (plan.rounds * cells.len() * kinds.len()).div_ceil(4);
    for round in 0..plan.rounds {
        for (c, cell) in cells.iter().enumerate() {
            for k in 0..kinds.len() {
                let k = (k + round + c) % kinds.len();
                let server = Target::Server(&servers[k]);
                let s = quietest(&mut reruns_left, || {
                    traffic_run(server, cell, cell.rate, plan)
                })?;
                println!(
                    "round {} {} {:>5} B {:>5} allocs {:>10} {:>16}: {:>8.0} pps, loss {:.3}%, \
                     p50 {:.0} µs, p99 {:.0} µs, {:.2} µs/pkt, CPU {:.0}%, foreign {:.0}%/{:.0}%",
                    round + 1,
                    cell.transport_name(),
                    cell.payload,
                    cell.allocations,
                    cell.load(),
                    kinds[k].name(),
                    s.delivered_pps,
                    s.loss_pct,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_packet,
                    s.utilisation * 100.0,
                    s.foreign[0] * 100.0,
                    s.foreign[1] * 100.0,
                );
                all[c][k].push(s);
            }
        }
    }
    Ok(StreamResults {
        kinds,
        samples: all,
    })
}

/// The cell of the p99 target: 100-byte payloads over 10 allocations at half the rate coturn
/// delivered at saturation in `traffic` (None without coturn or that saturation cell).
pub(crate) fn half_coturn_max_cell(
    cells: &[Cell],
    kinds: &[Kind],
    traffic: &Traffic,
) -> Option<Cell> {
    let coturn = kinds.iter().position(|&k| k == Kind::Coturn)?;
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
        half_coturn_max: true,
        ..Cell::udp(100, 10, rate)
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
